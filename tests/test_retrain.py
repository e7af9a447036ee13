"""Review -> retrain -> gated promotion -> the bot answers with the new version -> rollback."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import pytest

from bot.registry import Registry
from bot.reviews import ReviewLog
from bot.runtime import load_router
from bot.settings import load_settings
from training import jobs
from training.retrain import RetrainConfig, build_training_set, retrain, unfill
from training.data import load, split


@pytest.fixture()
def env(tiny_home, tiny_encoder_dir, tiny_lm_dir, monkeypatch):
    monkeypatch.setenv("SUPPORTBOT_INTENT_BASE", str(tiny_encoder_dir))
    monkeypatch.setenv("SUPPORTBOT_REPLY_BASE", str(tiny_lm_dir))
    return tiny_home


def chat(router, conversation, text):
    return list(router.respond(conversation, text))[-1].turn


def test_review_retrain_promote_switch_rollback(env, tiny_intents_csv, reply_csv):
    router = load_router(load_settings())
    conversation = router.store.new_conversation()
    first = chat(router, conversation, "I want to reimburse the purchase")
    second = chat(router, conversation, "can you cancel the purchase")
    assert first.classifier_version == "v1"
    reviews = ReviewLog(router.store)
    reviews.record(first.id, "ana", "relabel", intent="refund")
    reviews.record(second.id, "ana", "rewrite", intent="cancel",
                   reply="Sure. Call us on +1 (555) 010-4477 and we cancel it.")

    settings = load_settings()
    job = jobs.new_job(settings.home)
    # The tiny encoder is random: a retrained head differs by a row or so on the 7-row frozen
    # split, so this test gates with a wide tolerance; the next test checks the default one.
    lenient = RetrainConfig(what="intents", data=str(tiny_intents_csv), macro_f1_tolerance=0.35)
    report = retrain(settings, lenient, job)["intents"]
    new = report["new"]
    assert new != "v1" and report["old"] == "v1"
    assert report["counts"]["corrections"] == 2
    assert json.loads((env / "models" / "intents" / new / "eval" / "retrain.json").read_text())["new"] == new
    assert report["promoted"], report
    registry = Registry(env)
    assert registry.production("intents") == new
    assert chat(router, conversation, "track my parcel").classifier_version == new

    assert registry.rollback("intents") == "v1"
    assert chat(router, conversation, "track my parcel").classifier_version == "v1"

    replies = retrain(settings, RetrainConfig(what="replies", data=str(reply_csv), reply_max_steps=2), job)["replies"]
    rows = list(csv.DictReader((job / "replies.csv").open()))
    rewritten = [r for r in rows if r["text"] == "can you cancel the purchase"]
    assert len(rewritten) in (0, 1)  # in the training rows unless held out for the slice
    if rewritten:
        assert rewritten[0]["reply"] == "Sure. Call us on {{Customer Support Phone Number}} and we cancel it."
    assert replies["new"] in registry.versions("replies")


def test_regressing_version_stays_a_candidate(env, tiny_intents_csv):
    """Reviewers wrongly relabel every 'refund' utterance as 'cancel': the new version cannot
    recognise refunds, macro-F1 on the frozen test split drops, and it is not promoted."""
    settings = load_settings()
    router = load_router(settings)
    reviews = ReviewLog(router.store)
    conversation = router.store.new_conversation()
    refunds = [r["text"] for r in csv.DictReader(tiny_intents_csv.open()) if r["intent"] == "refund"]
    for text in refunds:
        reviews.record(chat(router, conversation, text).id, "mallory", "relabel", intent="cancel")
    report = retrain(settings, RetrainConfig(what="intents", data=str(tiny_intents_csv)),
                     jobs.new_job(settings.home))["intents"]
    assert not report["promoted"]
    assert report["scores"]["new"]["macro_f1"] < report["scores"]["old"]["macro_f1"] - 0.005
    registry = Registry(env)
    assert registry.production("intents") == "v1"
    assert report["new"] in registry.state("intents")["candidates"]
    assert chat(router, conversation, "track my parcel").classifier_version == "v1"


def test_training_set_refuses_frozen_test_rows_and_dedupes(tiny_intents_csv):
    from bot.reviews import Correction

    data = load(str(tiny_intents_csv))
    test_text = split(data, seed=42).test[0].text
    train_text = split(data, seed=42).train[0].text
    corrections = [Correction(1, test_text, "track", None, 1), Correction(2, train_text, "invoice", None, 2),
                   Correction(3, "a brand new utterance", "out_of_scope", None, 3)]
    material = build_training_set(data, corrections, 42, "intents")
    assert material.counts["refused_in_test"] == 1
    assert material.counts["out_of_scope"] == 1
    assert test_text not in {e.text for e in material.train}
    labels = {e.text: e.intent for e in material.train}
    if train_text in labels:
        assert labels[train_text] == "invoice"
    assert material.counts["duplicates_removed"] == 1 - material.counts["held_out"]


def test_unfill_puts_placeholders_back():
    profile = {"customer_support_phone_number": "+1 (555) 010-4477", "company_name": "Acme"}
    assert unfill("Call +1 (555) 010-4477, Acme", profile) == \
        "Call {{Customer Support Phone Number}}, {{Company Name}}"


def test_interrupted_job_is_marked_failed_and_scratch_removed(tmp_path):
    job = jobs.new_job(tmp_path)
    jobs.write_status(job, pid=999999)
    scratch = tmp_path / "models" / "intents" / ".20260101-000000.tmp-999999"
    scratch.mkdir(parents=True)
    assert jobs.recover(tmp_path) == [job.name]
    assert jobs.status(job)["state"] == "failed"
    assert not scratch.exists()


def test_background_retrain_is_a_training_job(env, tiny_intents_csv):
    """The Retrain page's job runs training.jobs in its own process (no command line involved)."""
    process = jobs.start_background(env, "nothing-such")
    assert process.wait(timeout=300) != 0
    state = jobs.status(jobs.latest(env))
    assert state["state"] == "failed" and state["error"] == "what must be intents, replies or both, not 'nothing-such'"


def test_failed_retrain_says_why_in_its_job_log(isolated_home, tmp_path):
    """A background retraining's console output is discarded: its job log must say why it failed."""
    missing = tmp_path / "missing.csv"
    result = subprocess.run([shutil.which("supportbot"), "retrain", "--what", "intents", "--data", str(missing)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    state = jobs.status(jobs.latest(isolated_home))
    assert state["state"] == "failed" and str(missing) in state["error"]
    assert state["log"].splitlines()[-1].endswith(f"failed: {state['error']}")


def test_retrain_without_corrections_trains_nothing(env, tiny_intents_csv):
    """No reviewed corrections: nothing to learn, so no new version and production unchanged."""
    router = load_router(load_settings())
    conversation = router.store.new_conversation()
    ReviewLog(router.store).record(chat(router, conversation, "where is my parcel").id, "ana", "approve",
                                   intent="out_of_scope")
    settings = load_settings()
    before = Registry(env).versions("intents")
    report = retrain(settings, RetrainConfig(what="intents", data=str(tiny_intents_csv)), jobs.new_job(settings.home))
    assert report["intents"]["decision"] == "skipped: no reviewed intents corrections to learn from"
    assert not report["intents"]["promoted"] and Registry(env).versions("intents") == before
    assert Registry(env).production("intents") == "v1"
