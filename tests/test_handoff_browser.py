"""The handoff in a real headless Chromium: an agent logs in to the inbox page, takes the
conversation and replies there; the customer's chat page shows the reply within 2 s without a
reload, and keeps the conversation after one. Screenshots go to $SUPPORTBOT_SHOTS (default
/tmp/shots), outside the repository."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from test_api import STAFF, server  # noqa: F401  (the real-server fixture with staff accounts)
from test_xss_browser import browser, wait_for_text  # noqa: F401  (headless Chromium)

SHOTS = Path(os.environ.get("SUPPORTBOT_SHOTS", "/tmp/shots"))
REPLY = "Hello, this is Ana from support. I can see your order; the refund is on its way."


def test_agent_replies_in_the_inbox_and_the_customer_sees_it(server, browser):
    url, home = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    chat = browser.new_page(viewport={"width": 1280, "height": 900})
    chat.goto(url)
    box = chat.get_by_label("Your message")
    box.fill("I want to talk to a human about my refund")
    box.press("Enter")
    wait_for_text(chat, ["passing this conversation to a member of our support team"])
    db = sqlite3.connect(home / "conversations.db")
    conversation = db.execute("SELECT conversation_id FROM handoffs ORDER BY id DESC LIMIT 1").fetchone()[0]

    inbox = browser.new_page(viewport={"width": 1400, "height": 1100})
    inbox.goto(url + "inbox/")
    inbox.get_by_label("username").fill("ana")
    inbox.get_by_label("password").fill(STAFF["ana"][1])
    inbox.get_by_role("button", name="Login").click()
    wait_for_text(inbox, ["Conversations waiting for a person", conversation, "customer asked for a person"])
    picker = inbox.get_by_label("Conversation", exact=True)
    picker.fill(conversation)
    picker.press("Enter")
    inbox.get_by_role("button", name="Open").click()
    wait_for_text(inbox, ["Waiting for an agent", "I want to talk to a human about my refund"])
    inbox.get_by_role("button", name="Take").click()
    wait_for_text(inbox, ["You hold this conversation", "Held by you"])
    inbox.get_by_label("Your reply to the customer").fill(REPLY)
    inbox.get_by_role("button", name="Send reply").click()
    sent = time.monotonic()
    wait_for_text(chat, [f"ana (support team): {REPLY}"])
    shown_after = time.monotonic() - sent
    print(f"the agent's reply was shown in the customer's page {shown_after:.2f} s after the click")
    assert shown_after < 2.5  # the page polls every second (the click itself takes a little)
    wait_for_text(inbox, ["Sent.", f"[ana (agent)] {REPLY}"])
    inbox.screenshot(path=str(SHOTS / "inbox_taken_conversation.png"), full_page=True)
    chat.screenshot(path=str(SHOTS / "customer_chat_agent_reply.png"), full_page=True)

    # the customer's next message gets no bot reply; the agent sees it
    box.fill("Thank you! When will it arrive?")
    box.press("Enter")
    wait_for_text(inbox, ["Thank you! When will it arrive?"])
    assert db.execute("SELECT route, reply FROM turns WHERE conversation_id = ? ORDER BY idx DESC LIMIT 1",
                      [conversation]).fetchone() == ("human", "")
    # a reload keeps the conversation (id and token kept in the browser, history from the store)
    chat.reload()
    wait_for_text(chat, ["I want to talk to a human about my refund", f"ana (support team): {REPLY}",
                         "Thank you! When will it arrive?"])
    chat.get_by_role("button", name="New conversation").click()
    wait_for_text(chat, [], lambda: REPLY not in chat.locator("body").inner_text())
    chat.wait_for_timeout(1000)  # the browser stores the emptied state
    chat.reload()
    wait_for_text(chat, ["Your message"])
    chat.wait_for_timeout(1500)
    assert REPLY not in chat.locator("body").inner_text()
