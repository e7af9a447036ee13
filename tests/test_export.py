"""Export of the log and of reviewed examples; the examples file trains again."""

from __future__ import annotations

import json
import subprocess
import shutil
from dataclasses import replace

from bot.records import Decision, Prediction
from bot.reviews import ReviewLog
from bot.store import ConversationStore
from training.data import load


def test_export_conversations_and_examples(tmp_path):
    db = tmp_path / "c.db"
    with ConversationStore(db) as store:
        conversation = store.new_conversation()
        turn = store.start_turn(conversation, "refund to jo@example.com please")
        turn = store.finish_turn(replace(turn, prediction=Prediction("get_refund", 0.4, [], 0.6),
                                         decision=Decision("answer", "x", "get_refund", 0.5), reply="Sure."))
        ReviewLog(store).record(turn.id, "ana", "rewrite", intent="get_refund", reply="Refunds take 5 days.")
    exe = shutil.which("supportbot")
    out = tmp_path / "turns.jsonl"
    result = subprocess.run([exe, "export", "--what", "conversations", "--format", "jsonl", "--output", str(out),
                             "--db", str(db)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["user_text"] == "refund to <EMAIL> please"
    assert (row["intent"], row["route"], row["status"]) == ("get_refund", "answer", "complete")
    examples = tmp_path / "examples.csv"
    subprocess.run([exe, "export", "--what", "examples", "--format", "csv", "--output", str(examples),
                    "--db", str(db)], check=True, capture_output=True)
    [example] = load(str(examples)).examples
    assert (example.text, example.intent, example.reply) == ("refund to <EMAIL> please", "get_refund",
                                                              "Refunds take 5 days.")
    bad = subprocess.run([exe, "export", "--format", "xml", "--output", str(tmp_path / "x"), "--db", str(db)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "error: Invalid value for '--format'" in bad.stderr
    assert "'xml' is not one of 'jsonl', 'csv'" in bad.stderr  # typer checks the Literal choices
    missing = tmp_path / "nonexistent" / "dir" / "x.jsonl"
    typo = subprocess.run([exe, "export", "--output", str(missing), "--db", str(db)], capture_output=True, text=True)
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert f"error: {missing}: the folder {missing.parent} does not exist" in typo.stderr
    assert not (tmp_path / "nonexistent").exists()             # no folder created
