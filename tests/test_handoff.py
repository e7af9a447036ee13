"""Human handoff with the real router (tiny models) and a real SQLite store: the inbox's
actions, the bot's silence while a person holds a conversation, notices, working hours."""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot import stats
from bot.errors import SupportbotError
from bot.handoff import load_working_hours
from bot.reviews import ReviewLog
from bot.runtime import load_router
from bot.settings import DEFAULT_PROFILE, load_settings
from bot.store import ConversationStore


def profile_with_hours(folder: Path, hours: str | None) -> Path:
    """The repository's company profile with its ``[working_hours]`` table replaced by ``hours``
    (None: no table, always open)."""
    text = DEFAULT_PROFILE.read_text()
    text = re.sub(r"\[working_hours\].*?(?=\n# Other slot names)", hours or "", text, flags=re.S)
    path = folder / "profile.toml"
    path.write_text(text)
    return path


def always_open(folder: Path) -> Path:
    return profile_with_hours(folder, None)


@pytest.fixture()
def router(tiny_home, tmp_path, monkeypatch):
    monkeypatch.setenv("SUPPORTBOT_PROFILE", str(always_open(tmp_path)))
    return load_router(load_settings())


def reply(router, conversation, text):
    chunks = list(router.respond(conversation, text))
    return chunks[-1].turn


def test_agent_takes_replies_hands_back_and_the_bot_is_silent_meanwhile(router, tiny_home):
    conversation = router.store.new_conversation("web")
    asked = reply(router, conversation, "I want to talk to a human")
    assert asked.decision.route == "handoff" and "555" in asked.reply
    waiting = reply(router, conversation, "hello? my email is jo@example.com")
    assert (waiting.decision.route, waiting.decision.code) == ("human", "waiting_for_agent")
    assert waiting.reply.startswith("Thanks, your message has been passed on") and "number 1 in line" in waiting.reply
    assert waiting.decision.reason == "waiting for an agent; acknowledged: passed on, number 1 in line"
    again = reply(router, conversation, "is anyone there?")  # a line right after: no second acknowledgement
    assert (again.decision.route, again.reply, again.decision.reason) == ("human", "", "waiting for an agent")
    [(handoff, seconds)] = router.inbox.waiting()
    assert handoff.conversation_id == conversation and handoff.reason == "customer asked for a person"
    assert 0 <= seconds < 60

    router.inbox.take(conversation, "ana")
    with pytest.raises(SupportbotError, match="held by ana"):
        router.inbox.take(conversation, "bo")
    with pytest.raises(SupportbotError, match="held by ana"):
        router.inbox.reply(conversation, "bo", "let me help")
    agent = router.inbox.reply(conversation, "ana", "Hi, I'm Ana. Call me on +44 20 7946 0958.")
    assert agent.reply == "Hi, I'm Ana. Call me on <PHONE>." and agent.agent == "ana"
    held = reply(router, conversation, "please refund my order")
    assert (held.decision.route, held.reply, held.decision.reason) == ("human", "", "held by agent ana")
    assert held.prediction is not None  # the agent sees the intent

    router.inbox.hand_back(conversation, "ana")
    back = reply(router, conversation, "please refund my order")
    assert back.decision.route not in ("human", "handoff") and back.reply
    assert router.inbox.waiting() == []

    rows = sqlite3.connect(tiny_home / "conversations.db").execute(
        "SELECT idx, user_text, route, agent, classifier_version, generator_version, reply != '' "
        "FROM turns WHERE conversation_id = ? ORDER BY idx", [conversation]).fetchall()
    assert [row[:4] for row in rows] == [
        (0, "I want to talk to a human", "handoff", None),
        (1, "hello? my email is <EMAIL>", "human", None),
        (2, "is anyone there?", "human", None),
        (3, "", "notice", "ana"),
        (4, "", "agent", "ana"),
        (5, "please refund my order", "human", None),
        (6, "", "notice", "ana"),
        (7, "please refund my order", back.decision.route, None)]
    assert [row[6] for row in rows[1:3]] == [1, 0] and rows[5][6] == 0  # acknowledged once; held: no bot reply
    assert all(row[4] is None and row[5] is None for row in rows if row[2] in ("agent", "notice"))
    notices = [turn.reply for turn in router.store.conversation(conversation) if turn.decision.route == "notice"]
    assert notices[0].startswith("ana from our support team has joined")
    assert "handed the conversation back" in notices[1]


def test_close_and_dashboard_figures(router):
    first, second = router.store.new_conversation(), router.store.new_conversation()
    for conversation in (first, second):
        list(router.request_human(conversation))
    router.inbox.take(first, "ana")
    time.sleep(0.05)
    router.inbox.reply(first, "ana", "hello")
    router.inbox.close(first, "ana")
    with pytest.raises(SupportbotError, match="not waiting for a person"):
        router.inbox.reply(first, "ana", "still there?")
    figures = stats.handoffs(router.store)
    assert figures["waiting"] == 1 and figures["held"] == 0 and figures["closed_by_agents"] == 1
    assert 0.05 <= figures["first_agent_reply_p50_s"] == figures["first_agent_reply_p95_s"] < 30
    assert stats.handoffs(ConversationStore(router.store.path.parent / "empty.db"))["first_agent_reply_p50_s"] is None
    # agents' replies and notices are not the bot's: out of the rates and the review queue
    assert stats.totals(router.store)["turns"] == 2 and stats.totals(router.store)["handoff_rate"] == 1.0
    assert sum(ReviewLog(router.store).counts().values()) == 2


def test_an_admin_may_act_in_another_agents_conversation(router):
    conversation = router.store.new_conversation()
    list(router.request_human(conversation))
    router.inbox.take(conversation, "ana")
    with pytest.raises(SupportbotError, match="held by ana"):
        router.inbox.close(conversation, "root")
    router.inbox.close(conversation, "root", admin=True)
    assert router.store.handoffs(open_only=False)[0].ended_by == "root"


def test_no_agent_in_time_tells_the_customer_once(tiny_home, tmp_path, monkeypatch):
    monkeypatch.setenv("SUPPORTBOT_PROFILE", str(always_open(tmp_path)))
    monkeypatch.setenv("SUPPORTBOT_HANDOFF__WAIT_MINUTES", "0.01")  # 0.6 s
    router = load_router(load_settings())
    conversation = router.store.new_conversation()
    list(router.request_human(conversation))
    assert router.updates(conversation, 0) == []
    time.sleep(0.8)
    [notice] = router.updates(conversation, 0)
    assert notice.decision.route == "notice" and "no one from our support team is free" in notice.reply
    assert "help@acme-outfitters.example" in notice.reply and "555" in notice.reply
    assert router.updates(conversation, notice.index) == []
    assert [h.conversation_id for h, _ in router.inbox.waiting()] == [conversation]  # still in the inbox


def test_a_waiting_customer_is_acknowledged_again_after_a_while_with_the_place_in_line(tiny_home, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setenv("SUPPORTBOT_PROFILE", str(always_open(tmp_path)))
    monkeypatch.setenv("SUPPORTBOT_HANDOFF__ACKNOWLEDGE_EVERY_MINUTES", "0.01")  # 0.6 s
    monkeypatch.setenv("SUPPORTBOT_HANDOFF__WAITING_REPLY", "Got it ({position}); {{Customer Support Email}}.")
    router = load_router(load_settings())
    first, second = router.store.new_conversation(), router.store.new_conversation()
    for conversation in (first, second):
        list(router.request_human(conversation))
    assert reply(router, second, "hello?").reply == "Got it (2); help@acme-outfitters.example."
    assert reply(router, second, "hello??").reply == ""
    time.sleep(0.8)
    assert reply(router, second, "still there?").reply == "Got it (2); help@acme-outfitters.example."
    router.inbox.take(first, "ana")  # the first one leaves the line
    time.sleep(0.8)
    assert reply(router, second, "and now?").reply == "Got it (1); help@acme-outfitters.example."
    assert router.store.waiting_position(router.store.open_handoff(first).id) == 0  # taken: not in line
    router.inbox.take(second, "bo")
    time.sleep(0.8)
    assert reply(router, second, "thanks bo").reply == ""  # held: the agent answers, never the bot


def test_outside_working_hours_the_customer_gets_the_contact_details(tiny_home, tmp_path, monkeypatch):
    closed = profile_with_hours(tmp_path, '[working_hours]\ntimezone = "UTC"\n')  # no day open
    monkeypatch.setenv("SUPPORTBOT_PROFILE", str(closed))
    monkeypatch.setenv("SUPPORTBOT_HANDOFF__WAIT_MINUTES", "0.01")
    router = load_router(load_settings())
    conversation = router.store.new_conversation()
    turn = reply(router, conversation, "can I speak to a person")
    assert turn.decision.route == "handoff"
    assert "not available right now" in turn.reply and "Monday to Friday" in turn.reply
    assert "help@acme-outfitters.example" in turn.reply
    time.sleep(0.8)
    assert router.updates(conversation, turn.index) == []  # already told: no second notice
    assert router.inbox.waiting()[0][0].conversation_id == conversation
    waiting = reply(router, conversation, "hello?")
    assert waiting.reply.startswith("Thanks, your message is kept for our support team")
    assert "Monday to Friday" in waiting.reply and waiting.decision.route == "human"


def test_working_hours_from_the_profile(tmp_path):
    hours = load_working_hours(profile_with_hours(
        tmp_path, '[working_hours]\ntimezone = "America/New_York"\nmonday = "08:00-12:00, 13:00-20:00"\n'))
    monday = lambda hh, mm: datetime(2026, 11, 30, hh, mm, tzinfo=timezone.utc)  # UTC-5 in winter
    assert [hours.is_open(monday(h, m)) for h, m in ((12, 59), (13, 0), (17, 30), (18, 0), (0, 59))] == \
        [False, True, False, True, False]
    assert not hours.is_open(datetime(2026, 12, 1, 14, 0, tzinfo=timezone.utc))  # Tuesday: not listed
    assert load_working_hours(always_open(tmp_path)) is None
    assert load_working_hours(DEFAULT_PROFILE).ranges[4] == [
        (datetime(1, 1, 1, 8).time(), datetime(1, 1, 1, 20).time())]
    for table, message in (('timezone = "Mars/Olympus"', "unknown time zone"),
                           ('funday = "08:00-09:00"', "funday: not a weekday"),
                           ('monday = "20:00-08:00"', "monday: '20:00-08:00' is not like")):
        with pytest.raises(SupportbotError, match=message):
            load_working_hours(profile_with_hours(tmp_path, f"[working_hours]\n{table}\n"))


def test_old_handoffs_join_the_inbox_on_migration(tmp_path):
    path = tmp_path / "old.db"
    with ConversationStore(path) as store:
        conversation = store.new_conversation()
        store.mark_handoff(conversation, "customer asked for a person")
        with store.writing() as db:  # as a store before migration 0003 left it
            db.execute("DELETE FROM handoffs")
            db.execute("DELETE FROM _sqlite_migrations WHERE name = '0004_handoffs_and_channels'")
            db.execute("DROP TABLE handoffs")
            for table, column in (("conversations", "channel"), ("conversations", "client"),
                                  ("conversations", "token_hash"), ("turns", "agent")):
                db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    with ConversationStore(path) as store:
        assert [h.conversation_id for h in store.handoffs()] == [conversation]
        assert store.handoffs()[0].reason == "customer asked for a person"


def test_staff_roles_and_api_keys_in_settings(monkeypatch):
    monkeypatch.setenv("SUPPORTBOT_REVIEWERS", '{"rex": "hash-r"}')
    monkeypatch.setenv("SUPPORTBOT_STAFF", '{"ana": {"password_hash": "hash-a"}, '
                                           '"root": {"password_hash": "hash-x", "role": "admin"}}')
    settings = load_settings()
    assert {name: a.role for name, a in settings.accounts().items()} == {"rex": "reviewer", "ana": "agent", "root": "admin"}
    assert set(settings.accounts("inbox")) == {"ana", "root"} and set(settings.accounts("review")) == {"rex", "root"}
    monkeypatch.setenv("SUPPORTBOT_STAFF", '{"rex": {"password_hash": "h", "role": "agent"}}')
    with pytest.raises(SupportbotError, match="rex named in both"):
        load_settings()
    monkeypatch.delenv("SUPPORTBOT_STAFF")
    monkeypatch.setenv("SUPPORTBOT_STAFF", '{"bo": {"password_hash": "h", "role": "boss"}}')
    with pytest.raises(SupportbotError, match="staff.bo.role"):
        load_settings()
    monkeypatch.delenv("SUPPORTBOT_STAFF")
    monkeypatch.setenv("SUPPORTBOT_API__KEYS", '{"website": "sb_the_key_itself"}')
    with pytest.raises(SupportbotError, match="not the key itself"):
        load_settings()
    monkeypatch.setenv("SUPPORTBOT_API__KEYS", "{}")
    monkeypatch.setenv("SUPPORTBOT_API__KEY_RATE", "lots")
    with pytest.raises(SupportbotError, match="not a rate"):
        load_settings()
