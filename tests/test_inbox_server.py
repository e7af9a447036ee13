"""Human handoff end to end on the real server (tiny models): a customer (REST with httpx, or the
chat page through gradio_client) and a logged-in agent (the inbox through gradio_client); and
no agent action for an anonymous caller through the inbox page, Gradio's API or REST."""

from __future__ import annotations

import re
import sqlite3
import time

import httpx
import pytest
from gradio_client import Client
from helpers import anonymous_post

from test_api import STAFF, server  # noqa: F401  (the real-server fixture: staff accounts, keys)

AGENT = ("ana", STAFF["ana"][1])
INBOX_ENDPOINTS = ["inbox", "open_conversation", "take", "reply", "hand_back", "close"]


def wait_for(fetch, done, seconds: float = 2.0, step: float = 0.1):
    """Call ``fetch()`` every ``step`` s until ``done(result)``; returns (result, seconds taken).

    Raises:
        AssertionError: not done within ``seconds``.
    """
    start = time.monotonic()
    while True:
        result = fetch()
        if done(result):
            return result, time.monotonic() - start
        if time.monotonic() - start > seconds:
            raise AssertionError(f"not done within {seconds} s: {result}")
        time.sleep(step)


def test_customer_and_agent_over_rest_and_the_inbox(server):
    url, home = server
    customer = httpx.Client(base_url=url + "api/v1", timeout=120)
    created = customer.post("/conversations").json()
    conversation, headers = created["conversation_id"], {"X-Conversation-Token": created["token"]}
    say = lambda text: customer.post(f"/conversations/{conversation}/messages", json={"text": text},  # noqa: E731
                                     headers=headers).json()["turn"]
    # 1. the customer asks for a person
    assert say("I want to talk to a human")["route"] == "handoff"
    # 1b. while it waits, a message is acknowledged once (passed on, place in line), not every line
    waiting = say("hello? is anyone there?")
    assert waiting["route"] == "human" and waiting["reply"].startswith("Thanks, your message has been passed on")
    assert re.search(r"You're number \d+ in line\.$", waiting["reply"])
    assert (say("it is about my refund")["reply"], say("please hurry")["route"]) == ("", "human")
    # 2. the logged-in agent sees it, takes it and replies
    agent = Client(url + "inbox/", auth=AGENT, verbose=False)
    table, _ = agent.predict(api_name="/inbox")
    row = next(row for row in table["data"] if row[0] == conversation)
    assert row[2] == "waiting" and row[3] == "customer asked for a person" and row[4] == "please hurry"  # the last message
    status, chat, turns, state = agent.predict(conversation, api_name="/take")
    assert status == "You hold this conversation." and "Held by you" in state
    assert ["customer", "I want to talk to a human"] == turns["data"][0][1:3]
    sent_at = time.monotonic()
    status, chat, turns, state, cleared = agent.predict(conversation, "Hello, I'm Ana. How can I help?",
                                                        api_name="/reply")
    assert status == "Sent." and cleared == ""
    # 3. the customer receives the agent's reply within 2 s (polling the history)
    history, waited = wait_for(
        lambda: customer.get(f"/conversations/{conversation}", params={"after": 3}, headers=headers).json(),
        lambda h: any(t["route"] == "agent" for t in h["turns"]))
    assert time.monotonic() - sent_at < 2.0
    assert [(t["route"], t["agent"]) for t in history["turns"]] == [("notice", "ana"), ("agent", "ana")]
    assert history["turns"][0]["reply"].startswith("ana from our support team has joined")
    assert history["turns"][1]["reply"] == "Hello, I'm Ana. How can I help?"
    assert (history["handled_by"], history["agent"]) == ("agent", "ana")
    # 4. the customer's next message gets no bot reply; the agent sees it
    held = say("my order 12345 never arrived")
    assert (held["route"], held["reply"]) == ("human", "")
    _, turns, _ = agent.predict(conversation, api_name="/open_conversation")
    assert ["customer", "my order 12345 never arrived"] == turns["data"][-1][1:3]
    assert turns["data"][-1][5] == "human"
    # 5. hand back: the bot answers again
    status, *_ = agent.predict(conversation, api_name="/hand_back")
    assert status == "Handed back to the bot."
    back = say("please refund my order")
    assert back["route"] not in ("human", "handoff", "agent", "notice") and back["reply"]
    table, _ = agent.predict(api_name="/inbox")
    assert conversation not in [row[0] for row in table["data"]]

    db = sqlite3.connect(home / "conversations.db")
    rows = db.execute("SELECT idx, user_text, route, agent, classifier_version, generator_version, reply = '' "
                      "FROM turns WHERE conversation_id = ? ORDER BY idx", [conversation]).fetchall()
    assert [row[:4] for row in rows] == [
        (0, "I want to talk to a human", "handoff", None), (1, "hello? is anyone there?", "human", None),
        (2, "it is about my refund", "human", None), (3, "please hurry", "human", None),
        (4, "", "notice", "ana"), (5, "", "agent", "ana"),
        (6, "my order 12345 never arrived", "human", None), (7, "", "notice", "ana"),
        (8, "please refund my order", back["route"], None)]
    assert [row[4:] for row in rows if row[2] in ("notice", "agent")] == [(None, None, 0)] * 3
    assert [row[6] for row in rows if row[2] == "human"] == [0, 1, 1, 1]  # acknowledged once, then silent
    assert rows[6][4] == "v1" and rows[6][5] is None  # classified, not answered
    handoff = db.execute("SELECT reason, agent, taken_at < first_reply_at, first_reply_at < ended_at, outcome, "
                         "ended_by FROM handoffs WHERE conversation_id = ?", [conversation]).fetchall()
    assert handoff == [("customer asked for a person", "ana", 1, 1, "handed back", "ana")]
    assert db.execute("SELECT needs_human FROM conversations WHERE id = ?", [conversation]).fetchone() == (0,)


def test_the_chat_page_shows_the_agents_reply_and_stays_silent(server):
    url, home = server
    customer = Client(url, verbose=False)
    messages, _, info = customer.predict("can I speak to a person please", api_name="/send")
    db = sqlite3.connect(home / "conversations.db")
    route_of = lambda turn_id: db.execute("SELECT route FROM turns WHERE id = ?", [turn_id]).fetchone()[0]  # noqa: E731
    assert set(info) == {"turn_id"} and route_of(info["turn_id"]) == "handoff"  # the public page shows no internals
    conversation = db.execute("SELECT conversation_id FROM turns WHERE id = ?", [info["turn_id"]]).fetchone()[0]
    # waiting for an agent: the first message is acknowledged, the next one shows as sent, no bot message
    messages, _, info = customer.predict("hello?", api_name="/send")
    assert route_of(info["turn_id"]) == "human"
    assert texts(messages)[-2:] == ["hello?", db.execute("SELECT reply FROM turns WHERE id = ?",
                                                          [info["turn_id"]]).fetchone()[0]]
    assert texts(messages)[-1].startswith("Thanks, your message has been passed on")
    messages, _, info = customer.predict("hello??", api_name="/send")
    assert route_of(info["turn_id"]) == "human" and messages[-1]["role"] == "user" and texts(messages)[-1] == "hello??"
    agent = Client(url + "inbox/", auth=AGENT, verbose=False)
    agent.predict(conversation, api_name="/take")
    agent.predict(conversation, "Ana here, let me look at it.", api_name="/reply")
    chat, waited = wait_for(lambda: texts(customer.predict(api_name="/updates")),
                            lambda chat: any("Ana here" in text for text in chat), 2.0, 0.2)
    assert chat[-1] == "ana (support team): Ana here, let me look at it."
    assert chat[-2] == "ana from our support team has joined the conversation."
    messages, _, info = customer.predict("thanks", api_name="/send")
    assert route_of(info["turn_id"]) == "human" and messages[-1]["role"] == "user"  # held: the agent answers
    assert texts(messages)[-2:] == ["ana (support team): Ana here, let me look at it.", "thanks"]
    agent.predict(conversation, api_name="/close")
    wait_for(lambda: texts(customer.predict(api_name="/updates")),
             lambda chat: chat and "has closed this conversation" in chat[-1], 2.0, 0.2)
    totals, *_ = Client(url + "review/", auth=("root", STAFF["root"][1]), verbose=False).predict(api_name="/dashboard")
    figures = totals["handoffs"]
    assert figures["closed_by_agents"] >= 1 and 0 < figures["first_agent_reply_p50_s"] <= figures["first_agent_reply_p95_s"]


def texts(update) -> list[str]:
    """The message texts of a chat update from ``/updates`` (empty when nothing changed)."""
    chat = update.get("value", []) if isinstance(update, dict) else update
    return [message["content"][0]["text"] if isinstance(message["content"], list) else message["content"]
            for message in chat or [] if message["content"]]


def test_no_agent_action_without_an_agents_login(server):
    url, home = server
    conversation = httpx.post(url + "api/v1/conversations").json()["conversation_id"]
    # Gradio's API of the inbox: every endpoint refused anonymously
    for endpoint in INBOX_ENDPOINTS:
        assert anonymous_post(url + f"inbox/gradio_api/call/{endpoint}", {"data": ["x", "y"]}) in (401, 403), endpoint
        assert anonymous_post(url + f"inbox/gradio_api/run/{endpoint}", {"data": ["x", "y"]}) in (401, 403, 404), endpoint
    # the page itself: the login form, not the inbox
    page = httpx.get(url + "inbox/").text
    assert "Conversations waiting for a person" not in page
    assert httpx.get(url + "inbox/config").status_code in (401, 403)
    with pytest.raises(Exception):
        Client(url + "inbox/", verbose=False).predict(api_name="/inbox")
    for name, wrong in (("ana", "wrong password"), ("rex", STAFF["rex"][1]), ("nobody", "x")):
        with pytest.raises(Exception):  # a wrong password, or a reviewer who is no agent
            Client(url + "inbox/", auth=(name, wrong), verbose=False)
    with pytest.raises(Exception):  # an agent is no reviewer
        Client(url + "review/", auth=AGENT, verbose=False)
    Client(url + "review/", auth=("root", STAFF["root"][1]), verbose=False)  # an admin is both
    Client(url + "inbox/", auth=("root", STAFF["root"][1]), verbose=False)
    # the chat's Gradio API has no agent action
    endpoints = set(Client(url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert endpoints == {"/send", "/feedback", "/human", "/new_conversation", "/updates"}
    # REST has none either: each agent action is refused
    for action in ("take", "reply", "hand_back", "close", "agent"):
        response = httpx.post(url + f"api/v1/conversations/{conversation}/{action}", json={"text": "hi"})
        assert response.status_code in (404, 405), action
    assert not [path for path in httpx.get(url + "api/v1/openapi.json").json()["paths"]
                if any(word in path for word in ("take", "reply", "hand_back", "close", "inbox", "agent"))]
    assert sqlite3.connect(home / "conversations.db").execute(
        "SELECT count(*) FROM turns WHERE conversation_id = ?", [conversation]).fetchone() == (0,)
