"""The conversation store on real SQLite files: schema and migrations, turns, feedback, threads."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from dataclasses import replace

import pytest
from sqlite_utils import Database

from bot.errors import SupportbotError
from bot.records import Decision, Prediction, Turn
from bot.store import MIGRATIONS, ConversationStore

PREDICTION = Prediction("cancel_order", 0.91, [("cancel_order", 0.91), ("track_order", 0.05),
                                                ("get_refund", 0.02), ("place_order", 0.01)], 0.12)


@pytest.fixture
def store(tmp_path):
    with ConversationStore(tmp_path / "conversations.db") as opened:
        yield opened


def _query(path, sql: str) -> list[tuple]:
    """Rows of ``sql`` read through a plain sqlite3 connection of our own."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def _complete(store, conversation_id, text="I want to cancel my order", route="answer", reply="Sure."):
    turn = store.start_turn(conversation_id, text)
    decision = Decision(route, f"because {route}", PREDICTION.intent, 0.5)
    return store.finish_turn(replace(turn, prediction=PREDICTION, decision=decision, reply=reply,
                                     missing_slots=["Case 1"], classifier_version="v1",
                                     generator_version="v2", latency_ms=12.5))


def test_new_file_is_wal_with_its_migrations_recorded(tmp_path):
    path = tmp_path / "sub" / "conversations.db"
    ConversationStore(path).close()
    assert _query(path, "PRAGMA journal_mode") == [("wal",)]
    recorded = _query(path, "SELECT migration_set, name FROM _sqlite_migrations")
    tables = {row[0] for row in _query(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert recorded == [(MIGRATIONS.name, m.name) for m in MIGRATIONS.pending(Database(memory=True))]
    assert {"conversations", "turns", "feedback"} <= tables


def test_empty_file_is_migrated_and_reopening_changes_nothing(tmp_path):
    path = tmp_path / "conversations.db"
    path.touch()
    with ConversationStore(path) as first:
        conversation = first.new_conversation()
        applied = first.applied_migrations()
    schema = _query(path, "SELECT group_concat(sql) FROM sqlite_master")
    with ConversationStore(path) as again:
        assert again.applied_migrations() == applied
        assert again.conversation(conversation) == []
    assert _query(path, "SELECT group_concat(sql) FROM sqlite_master") == schema
    assert _query(path, "SELECT count(*) FROM _sqlite_migrations") == [(len(applied),)]


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "conversations.db"
    path.write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(SupportbotError, match="conversations.db"):
        ConversationStore(path)


def test_turn_is_incomplete_until_finished_then_round_trips(store):
    conversation = store.new_conversation()
    started = store.start_turn(conversation, "I want to cancel my order")
    assert (started.status, started.index, started.finished_at) == ("incomplete", 0, None)
    assert store.turn(started.id) == started
    done = _complete(store, conversation, text="second")
    first = store.finish_turn(replace(started, reply="Here is how.", latency_ms=None))
    assert first.status == "complete" and first.finished_at >= first.started_at
    assert first.latency_ms is not None and first.latency_ms >= 0
    assert done.index == 1 and done.prediction.top_k == PREDICTION.top_k[:3]
    assert done.decision == Decision("answer", "because answer", "cancel_order", 0.5)
    assert (done.missing_slots, done.classifier_version, done.latency_ms) == (["Case 1"], "v1", 12.5)
    assert store.conversation(conversation) == [first, done]


def test_a_completed_turn_is_never_overwritten(store):
    turn = _complete(store, store.new_conversation(), reply="original")
    with pytest.raises(SupportbotError, match="already complete"):
        store.finish_turn(replace(turn, reply="changed"))
    assert store.turn(turn.id).reply == "original"


def test_incomplete_turn_survives_reopen_and_is_marked_interrupted(tmp_path):
    path = tmp_path / "conversations.db"
    with ConversationStore(path) as crashed:
        conversation = crashed.new_conversation()
        left = crashed.start_turn(conversation, "where is my parcel?")
    with ConversationStore(path) as restarted:
        current = restarted.start_turn(conversation, "hello?")
        assert restarted.mark_interrupted() == [left.id]
        assert restarted.mark_interrupted() == []
        assert [restarted.turn(t.id).interrupted for t in (left, current)] == [True, False]
        kept = restarted.turn(left.id)
    assert (kept.status, kept.finished_at, kept.user_text) == ("incomplete", None, "where is my parcel?")


def test_feedback_is_linked_to_its_turn(store):
    turn = _complete(store, store.new_conversation())
    up = store.add_feedback(turn.id, 1)
    down = store.add_feedback(turn.id, -1, "wrong order")
    assert [(f.id, f.rating, f.comment) for f in store.feedback_for(turn.id)] == [
        (up, 1, None), (down, -1, "wrong order")]
    joined = store.db.execute(
        "SELECT turns.user_text FROM feedback JOIN turns ON turns.id = feedback.turn_id WHERE feedback.id = ?",
        [down]).fetchone()
    assert joined == ("I want to cancel my order",)
    with pytest.raises(sqlite3.IntegrityError):
        store.db["feedback"].insert({"turn_id": 999, "rating": 1, "created_at": "now"})


def test_toggled_feedback_keeps_its_history_and_one_current_rating(store):
    """Like, unlike, dislike, undislike: every click is a row, the latest one counts."""
    turn = _complete(store, store.new_conversation())
    other = _complete(store, store.new_conversation())
    current = []
    for rating in (1, 0, -1, 0, 1, -1):
        store.add_feedback(turn.id, rating)
        current.append(store.current_rating(turn.id))
    assert current == [1, 0, -1, 0, 1, -1]
    assert [f.rating for f in store.feedback_for(turn.id)] == [1, 0, -1, 0, 1, -1]
    assert store.current_rating(other.id) == 0
    assert _query(store.path, "SELECT turn_id, rating FROM current_feedback") == [(turn.id, -1)]
    store.add_feedback(turn.id, 0)
    assert _query(store.path, "SELECT count(*) FROM current_feedback") == [(0,)]


def test_text_changes_and_redactions_are_recorded_on_the_turn(store):
    conversation = store.new_conversation()
    turn = store.start_turn(conversation, "card <CARD>", text_changes=("control", "bidi"), redacted={"CARD": 1})
    assert (turn.text_changes, turn.redacted) == (("control", "bidi"), {"CARD": 1})
    done = store.finish_turn(replace(turn, prediction=PREDICTION, decision=Decision("answer", "x"),
                                     reply="ok <PHONE>", redacted={"CARD": 1, "PHONE": 1}))
    assert (done.text_changes, done.redacted) == (("control", "bidi"), {"CARD": 1, "PHONE": 1})
    plain = store.start_turn(conversation, "hi")
    assert (store.turn(plain.id).text_changes, store.turn(plain.id).redacted) == ((), {})
    assert _query(store.path, f"SELECT text_changes, redacted FROM turns WHERE id = {plain.id}") == [(None, None)]


def test_a_file_from_before_migration_0003_keeps_its_rows(tmp_path):
    """An older log (migrations 0001-0002 only) is upgraded in place; its turns and feedback read back."""
    path = tmp_path / "old.db"
    db = Database(path)
    MIGRATIONS.apply(db, stop_before="0004_text_changes_redactions_undo_current_feedback")
    db["conversations"].insert({"id": "c", "started_at": "2026-01-01", "needs_human": 0})
    db["turns"].insert({"id": 1, "conversation_id": "c", "idx": 0, "user_text": "hi", "status": "complete",
                        "started_at": "2026-01-01", "route": "answer", "reply": "hello"})
    db["feedback"].insert({"turn_id": 1, "rating": -1, "created_at": "2026-01-01"})
    db.conn.close()
    with ConversationStore(path) as store:
        assert store.turn(1).user_text == "hi" and store.turn(1).text_changes == ()
        assert store.current_rating(1) == -1


@pytest.mark.parametrize("rating", [2, -2, True, None])
def test_ratings_other_than_plus_or_minus_one_are_refused(store, rating):
    turn = _complete(store, store.new_conversation())
    with pytest.raises(SupportbotError, match="rating"):
        store.add_feedback(turn.id, rating)


def test_an_incomplete_turn_cannot_be_rated(store):
    turn = store.start_turn(store.new_conversation(), "hi")
    with pytest.raises(SupportbotError, match="no reply yet"):
        store.add_feedback(turn.id, 1)


@pytest.mark.parametrize("call", [
    lambda s: s.start_turn("nope", "hi"),
    lambda s: s.conversation("nope"),
    lambda s: s.mark_handoff("nope", "why"),
    lambda s: s.needs_human("nope"),
    lambda s: s.turn_context("nope", 2),
    lambda s: s.turn(999),
    lambda s: s.add_feedback(999, 1),
    lambda s: s.feedback_for(999),
    lambda s: s.finish_turn(Turn("nope", 0, "hi", id=999)),
])
def test_unknown_ids_are_refused(store, call):
    with pytest.raises(SupportbotError, match="unknown (conversation 'nope'|turn 999)"):
        call(store)


def test_a_turn_not_from_the_store_cannot_be_finished(store):
    with pytest.raises(SupportbotError, match="start_turn"):
        store.finish_turn(Turn("c", 0, "hi"))


def test_routes_fallbacks_and_history(store):
    conversation = store.new_conversation()
    _complete(store, conversation, "hi", route="answer", reply="Hello!")
    _complete(store, conversation, "blah", route="rephrase", reply="Rephrase?")
    assert store.turn_context(conversation, 2).fallbacks_in_a_row == 1
    _complete(store, conversation, "blah blah", route="rephrase", reply="Rephrase?")
    store.start_turn(conversation, "still typing")
    context = store.turn_context(conversation, 2)
    assert (context.fallbacks_in_a_row, context.previous.user_text, context.handoff) == (2, "blah blah", None)
    assert context.history == [("blah", "Rephrase?"), ("blah blah", "Rephrase?")]
    assert store.turn_context(conversation, 0).history == []
    _complete(store, conversation, "cancel", route="answer")
    assert store.turn_context(conversation, 2).fallbacks_in_a_row == 0


def test_handoff_flags_the_conversation_and_keeps_the_first_reason(store):
    conversation = store.new_conversation()
    assert not store.needs_human(conversation)
    store.mark_handoff(conversation, "customer asked for a person")
    store.mark_handoff(conversation, "later reason")
    assert store.needs_human(conversation)
    assert store.open_handoff(conversation).reason == "customer asked for a person"


def test_concurrent_writes_from_threads_and_a_second_store(tmp_path):
    path = tmp_path / "conversations.db"
    shared, other = ConversationStore(path), ConversationStore(path)
    conversation = shared.new_conversation()
    errors: list[BaseException] = []

    def work(store: ConversationStore, worker: int) -> None:
        try:
            own = store.new_conversation()
            for n in range(10):
                _complete(store, conversation, f"w{worker} m{n}")
                store.start_turn(own, f"w{worker} own {n}")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(shared if i % 2 else other, i)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    turns = shared.conversation(conversation)
    assert [t.index for t in turns] == list(range(60))
    assert all(t.status == "complete" for t in turns)
    assert sum(row["status"] == "incomplete" for row in other.export_rows()) == 60
    shared.close()
    other.close()


# -- retention: prune ---------------------------------------------------------------------------

def _backdate(store, conversation_id, days):
    """Move every timestamp of a conversation (and its turns' feedback and reviews) ``days`` back."""
    shift = f"-{days} days"
    turns = "SELECT id FROM turns WHERE conversation_id = ?"
    with store.writing() as db:
        db.execute("UPDATE conversations SET started_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', "
                   "started_at, ?) WHERE id = ?", [shift, conversation_id])
        db.execute("UPDATE turns SET started_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', started_at, ?), "
                   "finished_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', finished_at, ?) "
                   "WHERE conversation_id = ?", [shift, shift, conversation_id])
        for table in ("feedback", "reviews"):
            db.execute(f"UPDATE {table} SET created_at = strftime('%Y-%m-%dT%H:%M:%f000+00:00', created_at, ?) "
                       f"WHERE turn_id IN ({turns})", [shift, conversation_id])


def _rated_and_reviewed(store, text):
    """A conversation with two completed turns, one thumbs-down and one review; returns its id."""
    from bot.reviews import ReviewLog

    conversation = store.new_conversation()
    first = _complete(store, conversation, text)
    _complete(store, conversation, text + " again")
    store.add_feedback(first.id, -1, "wrong")
    ReviewLog(store).record(first.id, "ana", "relabel", intent="get_refund")
    return conversation


def _snapshot(path):
    return {table: _query(path, f"SELECT * FROM {table} ORDER BY 1")
            for table in ("conversations", "turns", "feedback", "reviews")}


def test_prune_deletes_old_conversations_with_their_rows_and_keeps_recent_ones(store):
    old = _rated_and_reviewed(store, "old secret message")
    recent = _rated_and_reviewed(store, "recent message")
    revived = _rated_and_reviewed(store, "old start, recent turn")
    _backdate(store, old, 40)
    _backdate(store, revived, 40)
    _complete(store, revived, "I am back")  # last activity today
    old_turns = {turn.id for turn in store.conversation(old)}
    before = _snapshot(store.path)

    expected = {"conversations": 1, "turns": 2, "feedback": 1, "reviews": 1}
    assert store.prune(30, dry_run=True) == expected
    assert store.prune(30) == expected
    assert store.prune(30) == {"conversations": 0, "turns": 0, "feedback": 0, "reviews": 0}

    assert _snapshot(store.path) == {  # every other row intact, column by column
        "conversations": [row for row in before["conversations"] if row[0] != old],
        "turns": [row for row in before["turns"] if row[0] not in old_turns],
        "feedback": [row for row in before["feedback"] if row[1] not in old_turns],
        "reviews": [row for row in before["reviews"] if row[1] not in old_turns]}
    assert [t.user_text for t in store.conversation(recent)] == ["recent message", "recent message again"]
    with pytest.raises(SupportbotError, match="unknown conversation"):
        store.conversation(old)
    assert _query(store.path, "PRAGMA integrity_check") == [("ok",)]
    assert _query(store.path, "PRAGMA foreign_key_check") == []


def test_recent_feedback_keeps_an_old_conversation_but_a_review_does_not(store):
    from bot.reviews import ReviewLog

    rated, reviewed = store.new_conversation(), store.new_conversation()
    rated_turn, reviewed_turn = _complete(store, rated), _complete(store, reviewed)
    _backdate(store, rated, 10)
    _backdate(store, reviewed, 10)
    store.add_feedback(rated_turn.id, 1)
    ReviewLog(store).record(reviewed_turn.id, "ana", "approve")
    assert store.prune(5) == {"conversations": 1, "turns": 1, "feedback": 0, "reviews": 1}
    assert [turn.id for turn in store.conversation(rated)] == [rated_turn.id]


def test_prune_uses_now_and_fractional_days(store):
    from datetime import datetime, timedelta, timezone

    conversation = store.new_conversation()
    _complete(store, conversation)
    later = datetime.now(timezone.utc) + timedelta(hours=13)
    assert store.prune(0.75, now=later)["conversations"] == 0   # 13 h < 18 h
    assert store.prune(0.5, now=later)["conversations"] == 1    # 13 h > 12 h


def test_pruned_text_is_gone_from_the_file_and_its_write_ahead_log(tmp_path):
    path = tmp_path / "conversations.db"
    with ConversationStore(path) as store:
        for n in range(30):
            conversation = store.new_conversation()
            _complete(store, conversation, f"my card is SECRET{n:04d} please")
            _backdate(store, conversation, 100 if n % 2 else 1)
        store.prune(30)
        on_disk = b"".join(file.read_bytes() for file in tmp_path.iterdir())  # store still open
    assert b"SECRET0000" in on_disk  # the recent ones are kept ...
    assert not any(f"SECRET{n:04d}".encode() in on_disk for n in range(1, 30, 2))  # ... the old ones gone


@pytest.mark.parametrize("days", [0, -3, float("nan"), float("inf"), "30", True])
def test_prune_refuses_a_period_that_is_not_a_positive_number(store, days):
    _complete(store, store.new_conversation())
    with pytest.raises(SupportbotError, match="positive number of days"):
        store.prune(days)
    assert _query(store.path, "SELECT count(*) FROM turns") == [(1,)]


def test_a_very_long_period_deletes_nothing(store):
    _complete(store, store.new_conversation())
    assert store.prune(1e300)["conversations"] == 0


def test_the_context_that_decided_a_turn_is_stored_and_the_previous_turn_read_back(store):
    conversation = store.new_conversation()
    assert store.turn_context(conversation, 0).previous is None
    first = store.finish_turn(replace(store.start_turn(conversation, "cancel my order"), reply="Which order?",
                                      decision=Decision("answer", "intent 'cancel_order'", "cancel_order", 0.5)))
    store.start_turn(conversation, "still typing")  # incomplete: never the previous turn
    assert store.turn_context(conversation, 0).previous == first
    decision = Decision("answer", "intent 'cancel_order' (kept)", "cancel_order", 0.5, context="kept the intent of turn 0")
    second = store.finish_turn(replace(store.start_turn(conversation, "it's 4471"), reply="Done.", decision=decision))
    assert second.decision.context == "kept the intent of turn 0" and store.turn_context(conversation, 0).previous == second
