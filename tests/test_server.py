"""The real server on localhost (tiny models), driven with gradio_client like a browser would."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client
from helpers import anonymous_post, converse, running_server

from ui.server import hash_password

REVIEWER = ("ana", "correct horse battery staple")


@pytest.fixture()
def server(tiny_home):
    reviewers = json.dumps({REVIEWER[0]: hash_password(REVIEWER[1])})
    with running_server(tiny_home, tiny_home / "server.log", SUPPORTBOT_REVIEWERS=reviewers) as (url, _):
        yield url, tiny_home


def test_three_concurrent_conversations_feedback_and_exact_rows(server):
    url, home = server
    scripts = [["please refund my order", "I want to talk to a human"],
               ["can you track my parcel", "my email is jo@example.com"],
               ["please cancel the purchase", "invoice my order"]]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda texts: converse(url, texts), scripts))
    for (client, infos), rating in zip(results, (1, -1, -1)):
        assert client.predict(infos[0]["turn_id"], rating, "ok" if rating > 0 else "wrong",
                              api_name="/feedback") == "thanks for the feedback"
    stranger = results[0][0]
    with pytest.raises(Exception, match="not part of this conversation"):
        stranger.predict(results[1][1][0]["turn_id"], 1, "", api_name="/feedback")

    db = sqlite3.connect(home / "conversations.db")
    turns = db.execute("SELECT conversation_id, idx, user_text, status, classifier_version, route, id "
                       "FROM turns ORDER BY conversation_id, idx").fetchall()
    assert len(turns) == 6
    assert len({t[0] for t in turns}) == 3
    by_conversation = {}
    for conversation_id, idx, text, status, version, route, turn_id in turns:
        by_conversation.setdefault(conversation_id, []).append((idx, text, status, version))
    expected = [[(0, a, "complete", "v1"), (1, b.replace("jo@example.com", "<EMAIL>"), "complete", "v1")]
                for a, b in scripts]
    assert sorted(by_conversation.values()) == sorted(expected)
    handoff = [t for t in turns if t[2] == "I want to talk to a human"][0]
    assert handoff[5] == "handoff"
    assert db.execute("SELECT needs_human FROM conversations WHERE id = ?", [handoff[0]]).fetchone() == (1,)
    feedback = db.execute("SELECT t.user_text, f.rating, f.comment FROM feedback f JOIN turns t ON t.id = f.turn_id "
                          "ORDER BY t.user_text").fetchall()
    assert feedback == [("can you track my parcel", -1, "wrong"), ("please cancel the purchase", -1, "wrong"),
                        ("please refund my order", 1, "ok")]
    info = results[0][1][0]
    assert info == {"turn_id": info["turn_id"]}    # the public page shows no intent, score or reason


def test_the_intent_panel_is_a_setting_on_for_reviewers(server, tiny_home):
    """Off on the public page by default; the reviewers' "Try the bot" tab has it; the
    ``chat.show_internals`` setting turns it on for the public page too."""
    url, _ = server
    reviewer = Client(url + "review/", auth=REVIEWER, verbose=False)
    _, _, info = reviewer.predict("please refund my order", api_name="/try_send")
    assert {"turn_id", "route", "reason", "intent", "confidence", "top3", "oos_score"} <= set(info)
    with running_server(tiny_home, tiny_home / "server2.log", SUPPORTBOT_CHAT__SHOW_INTERNALS="true") as (other, _):
        _, infos = converse(other, ["please refund my order"])
    assert {"turn_id", "route", "intent", "confidence"} <= set(infos[0])


REVIEWER_ENDPOINTS = ["next_item", "review_action", "undo_review", "try_send", "try_feedback", "dashboard",
                      "start_retrain", "retrain_status", "models", "promote", "rollback"]


def test_review_pages_need_a_login(server):
    url, home = server
    for endpoint in REVIEWER_ENDPOINTS:
        assert anonymous_post(f"{url}review/gradio_api/call/{endpoint}") in (401, 403), endpoint
    with pytest.raises(Exception):
        Client(url + "review/", verbose=False).predict(api_name="/next_item")
    with pytest.raises(Exception):
        Client(url + "review/", auth=(REVIEWER[0], "wrong password"), verbose=False)
    reviewer = Client(url + "review/", auth=REVIEWER, verbose=False)
    counts, item, conversation, _, _, _ = reviewer.predict("", "", "", "", "", api_name="/next_item")
    assert counts.startswith("**Left to review:**")
    assert item == {} or "turn_id" in item
    table = reviewer.predict(api_name="/models")
    assert table["data"][0][:3] == ["intents", "v1", "production"]
    assert (home / "registry.json").is_file()


def test_unknown_functions_get_a_clean_404_without_a_traceback(server):
    """Gradio answers an unknown API name or ``fn_index`` with 500 and a traceback in the log."""
    url, home = server
    calls = [("gradio_api/call/", "no_such_function", None),
             ("gradio_api/run/", "no_such_function", None),
             ("gradio_api/queue/", "join", {"data": [], "fn_index": 999, "session_hash": "x1"}),
             ("gradio_api/queue/", "join", {"data": [], "fn_index": -1, "session_hash": "x2"}),
             ("gradio_api/api/", "predict", {"data": [], "fn_index": 999}),
             ("review/gradio_api/queue/", "join", {"data": [], "fn_index": 999, "session_hash": "x3"})]
    statuses = [anonymous_post(url + path + endpoint, body) for path, endpoint, body in calls]
    assert statuses[:5] == [404] * 5 and statuses[5] in (401, 403, 404)
    converse(url, ["still answering?"])
    assert "Traceback" not in (home / "server.log").read_text()


def test_a_lone_surrogate_gets_a_reply_and_one_logged_turn(server):
    """"hello\\ud83d" (half an emoji; a browser's JSON.stringify sends it as the escape
    ``\\ud83d``) used to fail with a raw codec error in a toast and log nothing."""
    url, home = server
    body = json.dumps({"data": ["hello\ud83d \u202eevil\x00"]}).encode("ascii")   # the escapes, as a browser sends
    request = urllib.request.Request(url + "gradio_api/call/send", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(url + f"gradio_api/call/send/{event_id}", timeout=120) as response:
        stream = response.read().decode("utf-8")
    assert "event: complete" in stream and "event: error" not in stream, stream[-2000:]
    messages, cleared, info = json.loads(stream.split("event: complete\ndata: ")[1].splitlines()[0])[:3]
    assert messages[-2]["content"] == [{"type": "text", "text": "hello\ufffd evil"}]
    assert "dropped characters that cannot be stored" in messages[-1]["content"][0]["text"]
    rows = sqlite3.connect(home / "conversations.db").execute(
        "SELECT id, user_text, status, text_changes FROM turns").fetchall()
    assert rows == [(info["turn_id"], "hello\ufffd evil", "complete", "surrogate,control,bidi")]
    assert "Traceback" not in (home / "server.log").read_text()
