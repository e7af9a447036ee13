"""The router end to end with tiny real models and a real SQLite store."""

from __future__ import annotations

import sqlite3

import pytest

from bot.runtime import load_router
from bot.settings import load_settings


@pytest.fixture()
def router(tiny_home):
    return load_router(load_settings())


def run(router, conversation, text):
    chunks = list(router.respond(conversation, text))
    assert chunks[-1].turn is not None
    return chunks


def test_answer_is_logged_with_provenance(router, tiny_home):
    conversation = router.store.new_conversation()
    chunks = run(router, conversation, "please refund my order")
    turn = chunks[-1].turn
    assert turn.status == "complete"
    assert turn.classifier_version == "v1"
    assert turn.prediction.intent in {"cancel", "invoice", "refund", "track"}
    assert "{{" not in turn.reply and "}}" not in turn.reply
    assert turn.reply == chunks[-1].text
    row = sqlite3.connect(tiny_home / "conversations.db").execute(
        "SELECT user_text, route, status, classifier_version, latency_ms > 0 FROM turns").fetchall()
    assert row == [("please refund my order", turn.decision.route, "complete", "v1", 1)]
    if turn.decision.route == "answer":
        assert turn.generator_version == "v1"


def test_empty_message_human_request_and_redaction(router):
    conversation = router.store.new_conversation()
    empty = run(router, conversation, "   ")[-1].turn
    assert (empty.decision.route, empty.decision.reason) == ("rephrase", "empty message")
    human = run(router, conversation, "Can I talk to a human? my email is jo@example.com")[-1].turn
    assert human.decision.route == "handoff"
    assert human.user_text == "Can I talk to a human? my email is <EMAIL>"
    assert router.store.needs_human(conversation)
    assert "555" in human.reply  # the profile's phone number filled the handoff message


def test_long_message_is_cut_and_logged(router):
    conversation = router.store.new_conversation()
    turn = run(router, conversation, "refund " * 5000)[-1].turn
    assert len(turn.user_text) == 2000
    assert turn.status == "complete"


def test_promoted_version_answers_the_next_turn_and_rollback_restores(router, tiny_home):
    import shutil

    from bot.registry import Registry

    shutil.copytree(tiny_home / "models" / "intents" / "v1", tiny_home / "models" / "intents" / "v2")
    conversation = router.store.new_conversation()
    assert run(router, conversation, "track my parcel")[-1].turn.classifier_version == "v1"
    registry = Registry(tiny_home)
    registry.promote("intents", "v2", "test")
    assert run(router, conversation, "track my parcel")[-1].turn.classifier_version == "v2"
    registry.rollback("intents")
    assert run(router, conversation, "track my parcel")[-1].turn.classifier_version == "v1"


BAD_INPUTS = ["", "x" * 20000, "😀🙏🔥", "<script>alert('x')</script><img src=x onerror=alert(1)>",
              "¿Dónde está mi pedido? Quiero cancelarlo."]


def test_bad_inputs_get_a_reply_and_every_turn_is_logged(router):
    conversation = router.store.new_conversation()
    for text in BAD_INPUTS:
        turn = run(router, conversation, text)[-1].turn
        assert turn.status == "complete"
        assert turn.reply.strip()
    logged = router.store.conversation(conversation)
    assert [t.user_text for t in logged] == [t[:2000] for t in BAD_INPUTS]
    assert all(t.status == "complete" for t in logged)
