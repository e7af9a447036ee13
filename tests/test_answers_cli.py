"""``supportbot answers list|add|remove|import`` as a user runs it (the installed script), on a
real conversation log and a real registry with a replies version that has an answer store."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from dataclasses import replace

import numpy as np
from helpers import integrity_check
from helpers import run_cli as run

from bot.answers import Answer, write_base
from bot.records import Decision, Prediction
from bot.registry import Registry
from bot.reviews import ReviewLog
from bot.store import ConversationStore



def wide() -> dict[str, str]:
    """The environment (this test's SUPPORTBOT_HOME) with a terminal wide enough for the tables."""
    return {**os.environ, "COLUMNS": "200"}


def _rows(path, sql):
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def _home_with_models(home):
    """A registry whose production classifier knows track_order and cancel_order, and whose
    production replies version has two training answers (embeddings are not used here)."""
    intents = home / "models" / "intents" / "v1"
    intents.mkdir(parents=True)
    (intents / "manifest.json").write_text(json.dumps({
        "kind": "intents", "data": {"name": "x"}, "labels": ["track_order", "cancel_order", "out_of_scope"],
        "oos": {"method": "msp", "threshold": 0.5}}))
    replies = home / "models" / "replies" / "r1"
    replies.mkdir(parents=True)
    (replies / "manifest.json").write_text(json.dumps({"kind": "replies", "data": {"name": "x"}}))
    write_base(replies, [Answer("t0", "track_order", "Your parcel is on its way.", "where is my parcel"),
                         Answer("t1", "cancel_order", "Open Orders and press Cancel.", "cancel my order")],
               np.eye(2, 4, dtype=np.float32))
    registry = Registry(home)
    registry.promote("intents", "v1", "test")
    registry.promote("replies", "r1", "test")


def test_add_import_list_remove_round_trip(isolated_home, tmp_path):
    home, db = isolated_home, isolated_home / "conversations.db"
    _home_with_models(home)
    result = run("answers", "add", "--intent", "track_order", "--reply", "Track it at {{Order Tracking URL}}.",
                 "--request", "where is my stuff", "--by", "ana", env=wide())
    assert (result.returncode, result.stdout) == (0, "added team answer a1 (track_order)\n"), result.stderr

    faq = tmp_path / "faq.md"
    faq.write_text("# cancel_order\n## Can I cancel?\nYes, under Orders.\n\n# track_order\n## Late parcel\n"
                   "Give it two more days.\n")
    result = run("answers", "import", str(faq), env=wide())
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"imported 2 team answer(s) from {faq} (a2-a3)\n"
    result = run("answers", "import", str(faq), env=wide())      # the same file again: nothing twice
    assert result.stdout == f"imported 0 team answer(s) from {faq}; 2 already in effect, skipped\n"

    # a reviewer's rewrite is an answer too (r<review id>)
    with ConversationStore(db) as store:
        turn = store.start_turn(store.new_conversation(), "stop the order please")
        store.finish_turn(replace(turn, prediction=Prediction("cancel_order", 0.9, [("cancel_order", 0.9)], 0.1),
                                  decision=Decision("answer", "why", "cancel_order", 0.5), reply="Hm.",
                                  status="complete"))
        review = ReviewLog(store).record(turn.id, "bo", "rewrite", intent="cancel_order", reply="Cancelled for you.")

    result = run("answers", "list", env=wide())
    assert result.returncode == 0, result.stderr
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.stdout.splitlines() if "│" in line]
    assert rows == [
        ["t0", "training", "track_order", "where is my parcel", "Your parcel is on its way."],
        ["t1", "training", "cancel_order", "cancel my order", "Open Orders and press Cancel."],
        [f"r{review}", "review", "cancel_order", "stop the order please", "Cancelled for you."],
        ["a1", "team", "track_order", "where is my stuff", "Track it at {{Order Tracking URL}}."],
        ["a2", "team", "cancel_order", "Can I cancel?", "Yes, under Orders."],
        ["a3", "team", "track_order", "Late parcel", "Give it two more days."],
    ]
    assert result.stdout.endswith("6 answer(s): 2 training, 1 review, 3 team\n")
    result = run("answers", "list", "--intent", "track_order", "--source", "team", env=wide())
    assert [line.split("│")[1].strip() for line in result.stdout.splitlines() if "│" in line] == ["a1", "a3"]

    result = run("answers", "remove", "a1", "--note", "outdated", "--by", "ana")
    assert (result.returncode, result.stdout) == (0, "withdrew team answer a1\n"), result.stderr
    result = run("answers", "remove", "3")
    assert (result.returncode, result.stdout) == (0, "withdrew team answer a3\n"), result.stderr
    result = run("answers", "list", "--source", "team", env=wide())
    assert [line.split("│")[1].strip() for line in result.stdout.splitlines() if "│" in line] == ["a2"]
    # append-only: the removals are rows of their own, naming who and why
    assert _rows(db, "SELECT id, action, removes, actor, note, origin FROM answers ORDER BY id") == [
        (1, "add", None, "ana", None, "added by hand"), (2, "add", None, "cli", None, "faq.md"),
        (3, "add", None, "cli", None, "faq.md"), (4, "remove", 1, "ana", "outdated", None),
        (5, "remove", 3, "cli", None, None)]
    assert integrity_check(db) == [("ok",)]


def test_remove_refuses_what_it_cannot_remove_in_one_line(isolated_home):
    db = isolated_home / "conversations.db"
    with ConversationStore(db) as store:
        store.add_answers([{"intent": "track_order", "reply": "Under Orders."}], "cli", "added by hand")
        store.remove_answer(1, "cli")
    for answer_id, message in [
        ("a1", "error: team answer a1 is already withdrawn\n"),
        ("a7", "error: no team answer a7\n"),
        ("t3", "error: t3 is a training reply of the replies version; it cannot be removed here: "
               "edit the training data and retrain (supportbot train replies)\n"),
        ("r2", "error: r2 is the reply of review 2; it cannot be removed here: undo that review on the review "
               "page (its reviewer's \"Undo my last review\"), or review the turn again\n"),
        ("x1", "error: 'x1' is not an answer id; expected a<n> or <n> (see: supportbot answers list)\n"),
    ]:
        result = run("answers", "remove", answer_id)
        assert (result.returncode, result.stderr) == (2, message)
    assert _rows(db, "SELECT count(*) FROM answers") == [(2,)]


def test_bad_input_stores_nothing(isolated_home, tmp_path):
    """A file with one bad row is refused whole; an unknown intent names the known ones; a file
    that is not a conversation log is left alone."""
    db = isolated_home / "conversations.db"
    _home_with_models(isolated_home)
    bad = tmp_path / "answers.csv"
    bad.write_text("intent,reply,question\ntrack_order,Under Orders.,where\nrefund,Money back.,refund?\n")
    result = run("answers", "import", str(bad))
    assert (result.returncode, result.stderr) == (2, f"error: {bad}, row 2, field 'intent': 'refund' is not an "
                                                     "intent the production classifier knows (known: cancel_order, "
                                                     "track_order)\n")
    result = run("answers", "add", "--intent", "track_order", "--reply", "  ")
    assert (result.returncode, result.stderr) == (2, "error: --reply must not be empty (the answer's text)\n")
    assert not db.exists()                  # nothing was written, not even an empty log
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn, conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    before = other.read_bytes()
    result = run("answers", "add", "--intent", "track_order", "--reply", "Under Orders.", "--db", str(other))
    assert result.returncode == 2 and "not a supportbot conversation log" in result.stderr
    assert other.read_bytes() == before


def test_list_without_models_or_log_and_a_version_without_answer_store(isolated_home):
    result = run("answers", "list")
    assert (result.returncode, result.stdout) == (0, "0 answer(s)\n"), result.stderr
    result = run("answers", "list", "--source", "training")
    assert result.returncode == 2 and "no trained replies model" in result.stderr
    replies = isolated_home / "models" / "replies" / "old"
    replies.mkdir(parents=True)
    (replies / "manifest.json").write_text(json.dumps({"kind": "replies", "data": {"name": "x"}}))
    result = run("answers", "list", "--source", "training")
    assert result.stdout == "replies version old was trained without an answer store: no training answers\n0 answer(s)\n"

