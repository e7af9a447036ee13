"""Crashes: the real server is killed (SIGKILL) while it streams a reply, and a real retraining
while it trains. After a restart the conversation log passes ``PRAGMA integrity_check``, every
completed turn is there unchanged, the interrupted turn is marked, the production models are
untouched, the dead retraining is marked failed and nothing half-written is left."""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest
from helpers import converse, integrity_check, running_server, save_chain_lm

from bot.registry import KINDS, Registry
from bot.reviews import ReviewLog
from bot.runtime import load_router
from bot.settings import load_settings
from training import jobs

LONG_REPLIES = {"SUPPORTBOT_ROUTER__MAX_NEW_TOKENS": "1024"}
"""With this cap the chatter LM's replies stream for seconds."""

CHATTER = "Hello there, how can I help you today?"
"""The chatter LM's sentence (its tokens all differ, as a chain LM needs)."""


@pytest.fixture(scope="session")
def chatter_lm_dir(tmp_path_factory, tiny_lm_dir) -> Path:
    """A tiny Llama that says :data:`CHATTER` on a line of its own again and again, never
    ``<|im_end|>``: its reply streams a sentence every 11 tokens until ``max_new_tokens``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    sentence = tokenizer(CHATTER, add_special_tokens=False)["input_ids"]
    chain = sentence + tokenizer.convert_tokens_to_ids(["Ċ"]) + sentence[:1]
    return save_chain_lm(tiny_lm_dir, tmp_path_factory.mktemp("chatter-lm"), chain, default=sentence[0])


@pytest.fixture()
def chatty_home(tiny_home, chatter_lm_dir) -> Path:
    """``tiny_home`` whose production replies version, ``chatter``, is the chatter LM."""
    version = tiny_home / "models" / "replies" / "chatter"
    shutil.copytree(chatter_lm_dir, version / "merged")
    shutil.copy(version.with_name("v1") / "manifest.json", version)
    Registry(tiny_home).promote("replies", "chatter", "a reply that streams for seconds", by="test")
    return tiny_home


def wait_for(condition: Callable[[], Any], what: str, seconds: float = 120.0) -> Any:
    """Poll ``condition`` every 20 ms until it returns something true, and return that.

    Raises:
        AssertionError: ``seconds`` passed first (the message names ``what``).
    """
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.02)
    return result


def turn_rows(db: Path) -> list[dict[str, Any]]:
    """Every row of the ``turns`` table (the columns a crash could damage), oldest first."""
    with closing(sqlite3.connect(db)) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute(
            "SELECT id, conversation_id, idx, user_text, status, reply, classifier_version, generator_version, "
            "finished_at, interrupted_at FROM turns ORDER BY id")]


def shown_text(message: dict) -> str:
    """The text of one chat message as gradio_client returns it."""
    return message["content"][0]["text"]


def test_server_killed_while_streaming_a_reply(chatty_home):
    home, db = chatty_home, chatty_home / "conversations.db"
    # two turns with fixed replies (quick: the tiny classifier finds the first out of scope, the
    # second has a template; not a request for a person, after which the bot stays silent), then
    # one the chatter LM answers for seconds
    texts = ["please refund my order", "please cancel the purchase", "can you track my parcel"]
    fixed = {"SUPPORTBOT_ROUTER__REPHRASE_LIMIT": "5", "SUPPORTBOT_ROUTER__TEMPLATES": json.dumps(
        {intent: "A fixed reply." for intent in ("refund", "cancel", "invoice")})}
    with running_server(home, home / "server.log", **LONG_REPLIES, **fixed) as (url, server):
        client, infos = converse(url, texts[:2])
        reply = client.submit(texts[2], api_name="/send")
        wait_for(lambda: len(reply.outputs()) >= 2 and not reply.done(), "the third reply to stream")
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    chat = reply.outputs()[-1][0]  # the chat as the customer saw it when the server died
    client.close()

    assert integrity_check(db) == [("ok",)]
    before = turn_rows(db)
    assert [(r["idx"], r["user_text"], r["status"]) for r in before] == [
        (0, texts[0], "complete"), (1, texts[1], "complete"), (2, texts[2], "incomplete")]
    assert [r["id"] for r in before[:2]] == [info["turn_id"] for info in infos]
    assert [html.escape(r["reply"], quote=False) for r in before[:2]] == [shown_text(chat[1]), shown_text(chat[3])]
    assert shown_text(chat[5]).startswith(CHATTER)  # part of the third reply had been shown
    assert (before[2]["reply"], before[2]["finished_at"], before[2]["interrupted_at"]) == (None, None, None)

    log = home / "restart.log"
    with running_server(home, log, **LONG_REPLIES) as (url, _):
        assert "1 turn(s) interrupted by an earlier stop" in log.read_text()
        _, [info] = converse(url, ["please refund my order"])
    after = turn_rows(db)
    assert integrity_check(db) == [("ok",)]
    assert after[:2] == before[:2]
    interrupted = after[2]
    assert (interrupted["status"], interrupted["reply"], interrupted["finished_at"]) == ("incomplete", None, None)
    assert interrupted["interrupted_at"] is not None
    new = after[3]
    assert (len(after), new["id"], new["idx"], new["status"]) == (4, info["turn_id"], 0, "complete")
    assert new["conversation_id"] != interrupted["conversation_id"]


def add_corrections() -> None:
    """Reviewers rewrite the replies of two logged turns (the home is SUPPORTBOT_HOME): the
    material of a retraining."""
    router = load_router(load_settings())
    with router.store:
        reviews = ReviewLog(router.store)
        conversation = router.store.new_conversation()
        for text, intent in (("can you track my parcel", "track"), ("please cancel the purchase", "cancel")):
            turn = list(router.respond(conversation, text))[-1].turn
            reviews.record(turn.id, "ana", "rewrite", intent=intent, reply="Sure. Open {{Order Section}} now.")


def folder_sha256(folder: Path) -> str:
    """One sha256 over every file's relative path and bytes under ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def production(home: Path) -> dict[str, str]:
    """sha256 of ``registry.json`` and of each production version's files, by name."""
    registry = Registry(home)
    hashes = {"registry.json": hashlib.sha256(registry.path.read_bytes()).hexdigest()}
    for kind in KINDS:
        hashes[f"{kind}/{registry.production(kind)}"] = folder_sha256(registry.production_folder(kind))
    return hashes


def training_job(home: Path, retraining: subprocess.Popen, output: Path) -> Path | None:
    """The retraining's job folder once its replies Trainer has logged a training step (the job
    log says training started, the Trainer prints ``{'loss': ...}`` to ``output``), else None.

    Raises:
        AssertionError: the retraining exited.
    """
    if retraining.poll() is not None:
        raise AssertionError(f"the retraining exited with status {retraining.returncode}: {output.read_text()}")
    job = jobs.latest(home)
    log = job / "log.txt" if job else None
    started = log is not None and log.exists() and "training replies on" in log.read_text()
    return job if started and "{'loss'" in output.read_text() else None


def scratch_folders(home: Path, temp: Path) -> list[str]:
    """The hidden (scratch) folders beside the model versions, and whatever lies in ``temp``."""
    return sorted(str(p) for p in (home / "models").glob("*/.*")) + sorted(os.listdir(temp))


def test_retrain_killed_while_training(tiny_home, reply_csv, tmp_path):
    add_corrections()
    before = production(tiny_home)
    temp = tmp_path / "temp"  # the retraining's TMPDIR: nothing may be left there either
    temp.mkdir()
    command = [shutil.which("supportbot"), "retrain", "--what", "replies", "--data", str(reply_csv),
               "--reply-max-steps", "100000"]
    output = tmp_path / "retrain.log"
    with output.open("w") as handle:
        retraining = subprocess.Popen(command, env={**os.environ, "TMPDIR": str(temp), "PYTHONUNBUFFERED": "1"},
                                      stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        job = wait_for(lambda: training_job(tiny_home, retraining, output), "a training step", 180)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(retraining.pid, signal.SIGKILL)  # the whole group, as kill -9 -PGID
        retraining.wait(timeout=10)
    assert jobs.status(job)["state"] == "running"  # as the killed process left it
    assert sorted(os.listdir(job)) == ["log.txt", "replies.csv", "status.json"]
    assert scratch_folders(tiny_home, temp), "the killed retraining left no half-written folder"

    log = tiny_home / "server.log"
    with running_server(tiny_home, log) as (url, _):
        _, [info] = converse(url, ["can you track my parcel"])
    assert f"marked failed: {job.name}" in " ".join(log.read_text().split())
    state = jobs.status(job)
    assert (state["state"], state["error"]) == ("failed", "interrupted: the process stopped")
    assert "2 reviewed corrections found" in state["log"]
    assert state["log"].rstrip().endswith("failed: interrupted: the process stopped")
    assert production(tiny_home) == before
    assert scratch_folders(tiny_home, temp) == []
    assert Registry(tiny_home).versions("replies") == ["v1"]
    assert Registry(tiny_home).state("replies")["candidates"] == []
    # the tiny classifier routes this message to the generator, so both versions answered it
    served = [r for r in turn_rows(tiny_home / "conversations.db") if r["id"] == info["turn_id"]]
    assert [(r["classifier_version"], r["generator_version"]) for r in served] == [("v1", "v1")]
    assert integrity_check(tiny_home / "conversations.db") == [("ok",)]
