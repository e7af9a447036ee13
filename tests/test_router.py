"""The router end to end with tiny real models and a real SQLite store."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from bot.records import Reason
from bot.router import QUEUE_MESSAGE
from bot.runtime import load_router
from bot.settings import RouterConfig, load_settings


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
    assert (empty.decision.route, empty.decision.reason, empty.decision.code) == ("rephrase", "empty message", "empty")
    assert router.store.turn(empty.id).decision.code == Reason.EMPTY  # the code is stored with the turn
    human = run(router, conversation, "Can I talk to a human? my email is jo@example.com")[-1].turn
    assert human.decision.route == "handoff"
    assert human.user_text == "Can I talk to a human? my email is <EMAIL>"
    assert router.store.needs_human(conversation)
    assert "555" in human.reply  # the profile's phone number filled the handoff message


def test_feedback_comments_are_redacted_and_cut_like_messages(router):
    conversation = router.store.new_conversation()
    turn = run(router, conversation, "where is my parcel")[-1].turn
    router.feedback(turn.id, -1, "call me on +44 20 7946 0958 or jane.doe@example.org, card 4111111111111111")
    router.feedback(turn.id, 1, "x" * 100_000)
    comments = [f.comment for f in router.store.feedback_for(turn.id)]
    assert comments[0] == "call me on <PHONE> or <EMAIL>, card <CARD>"
    assert len(comments[1]) == 2000


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


@pytest.mark.parametrize("text", ["???", "x" * 2500, "!!! ... ¿¿"])
def test_a_message_without_words_is_asked_to_rephrase_and_logged_as_sent(router, text):
    chunks = run(router, router.store.new_conversation(), text)
    turn = chunks[-1].turn
    assert (turn.decision.route, turn.decision.code) == ("rephrase", Reason.NO_WORDS)
    assert chunks[-1].text.startswith("Sorry, I'm not sure I understood")
    assert turn.user_text == text[:2000] and turn.prediction is not None   # the guess is kept for review


def test_emoji_are_named_for_the_classifier_and_stored_as_sent(router):
    classifier, _ = router.models.current()
    named = classifier.predict(["my parcel never came enraged face"])[0]
    assert named.top_k != classifier.predict(["my parcel never came 😡"])[0].top_k  # the emoji alone reads as [UNK]
    turn = run(router, router.store.new_conversation(), "my parcel never came 😡")[-1].turn
    assert turn.user_text == "my parcel never came 😡" and turn.text_changes == ()
    assert router.store.turn(turn.id).user_text == "my parcel never came 😡"
    assert turn.prediction.intent == named.intent
    assert turn.prediction.confidence == pytest.approx(named.confidence, abs=1e-5)
    assert turn.prediction.oos_score == pytest.approx(named.oos_score, abs=1e-5)


def test_a_turn_that_waits_for_a_generation_slot_sees_its_place_then_only_its_reply(tiny_home):
    router = load_router(load_settings(router=RouterConfig(max_concurrent_generations=1)))
    first_conversation, second_conversation = router.store.new_conversation(), router.store.new_conversation()
    first = router.respond(first_conversation, "can you track my parcel")
    next(first)                                  # generating: holds the only slot
    assert router.queue.running == 1
    second = []
    waiting = threading.Thread(target=lambda: second.extend(router.respond(second_conversation, "invoice my order")))
    waiting.start()
    deadline = time.monotonic() + 60
    while not (second and router.queue.waiting == 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert second[0].text == QUEUE_MESSAGE.format(position=1)
    first_turn = list(first)[-1].turn
    waiting.join(120)
    second_turn = second[-1].turn
    assert second_turn is not None and second_turn.decision.route == "answer"
    texts = [chunk.text for chunk in second]
    cleared = texts.index("")                   # the place in line is cleared once generation starts
    assert set(texts[:cleared]) == {QUEUE_MESSAGE.format(position=1)}   # repeated every 2 s meanwhile
    assert not any("queue" in text for text in texts[cleared:])
    assert second_turn.reply == second[-1].text and "queue" not in second_turn.reply
    stored = [turn.reply for turn in router.store.conversation(second_conversation)]
    assert stored == [second_turn.reply] and "queue" not in first_turn.reply
    assert (router.queue.running, router.queue.waiting) == (0, 0)


# -- hostile and messy input (issue 17) ------------------------------------------------------------

def test_a_lone_surrogate_never_loses_the_turn(router):
    """Half an emoji ("hello\\ud83d") used to fail ``start_turn`` with a UnicodeEncodeError."""
    conversation = router.store.new_conversation()
    chunks = run(router, conversation, "hello\ud83d")
    turn = chunks[-1].turn
    assert (turn.user_text, turn.status, turn.text_changes) == ("hello\ufffd", "complete", ("surrogate",))
    assert "characters that cannot be stored" in chunks[-1].notice
    assert [t.id for t in router.store.conversation(conversation)] == [turn.id]


def test_nul_control_and_bidi_characters_are_dropped_and_recorded(router, tiny_home):
    conversation = router.store.new_conversation()
    turn = run(router, conversation, "where\x00 is my\x1b[31m \u202eparcel\u202c\r\nthanks\t!")[-1].turn
    assert turn.user_text == "where is my[31m parcel\nthanks\t!"
    assert turn.text_changes == ("control", "bidi")
    row = sqlite3.connect(tiny_home / "conversations.db").execute(
        "SELECT length(user_text), text_changes FROM turns WHERE id = ?", [turn.id]).fetchone()
    assert row == (len(turn.user_text), "control,bidi")   # sqlite's length() stopped at a NUL before


@pytest.mark.parametrize("text,tag", [
    ("please refund to my card number: 4111 1111 1111 1111", "CARD"),
    ("refund it to card no. 4111111111111111 please", "CARD"),
    ("my number is 4155550199", "PHONE"),
])
def test_the_reported_personal_data_is_redacted_and_the_customer_told(router, text, tag):
    conversation = router.store.new_conversation()
    chunks = run(router, conversation, text)
    turn = chunks[-1].turn
    assert f"<{tag}>" in turn.user_text and turn.redacted == {tag: 1}
    assert "from our record of this chat" in chunks[-1].notice
    assert "4111" not in router.store.turn(turn.id).user_text and "4155550199" not in turn.user_text


def test_replies_are_redacted_before_storing_but_the_company_profile_stays(tiny_home):
    """A reply that repeats a card number (here a template) is stored redacted; the company's own
    phone number, filled from the profile, is kept."""
    intents = ["refund", "cancel", "track", "invoice"]
    reply = "We refund card 4111 1111 1111 1111; questions: {{Customer Support Phone Number}}."
    router = load_router(load_settings(router=RouterConfig(templates={i: reply for i in intents})))
    classifier, _ = router.models.current()
    classifier.threshold = float("inf")                 # never out of scope: the template route
    conversation = router.store.new_conversation()
    chunks = run(router, conversation, "please refund my order")
    turn = chunks[-1].turn
    assert turn.decision.route == "template"
    assert "4111 1111 1111 1111" in chunks[-1].text     # the customer sees the reply as sent
    assert "4111" not in turn.reply and "<CARD>" in turn.reply and turn.redacted == {"CARD": 1}
    assert router.profile["customer_support_phone_number"] in turn.reply
    assert chunks[-1].notice == "Note: we removed a card number from our record of this chat."
    assert router.store.turn_context(conversation, 2).history == [("please refund my order", turn.reply)]


def test_thumbs_toggle_on_the_chat_page_gives_one_current_rating_with_history(router):
    """Like, click like again (Gradio sends ``liked=""``), dislike, click dislike again: the
    current rating follows; every click is kept. Before, the second click stored -1."""
    import gradio as gr

    from ui.chat import ChatHandlers

    handlers = ChatHandlers(router)
    *_, (messages, _, info, session) = handlers.send("where is my parcel", None)
    index = len(messages) - 1
    current = []
    for liked in (True, "", False, "", "Like"):
        handlers.like(session, gr.LikeData(None, {"index": index, "value": messages[index]["content"], "liked": liked}))
        current.append(router.store.current_rating(info["turn_id"]))
    assert current == [1, 0, -1, 0, 1]
    assert [f.rating for f in router.store.feedback_for(info["turn_id"])] == [1, 0, -1, 0, 1]
    assert set(info) == {"turn_id"}                    # the public handlers show no internals


def test_a_customer_who_leaves_mid_reply_leaves_an_interrupted_turn_for_review(tiny_home):
    router = load_router(load_settings(router=RouterConfig(max_concurrent_generations=1)))
    busy, leaving = router.store.new_conversation(), router.store.new_conversation()
    holder = router.respond(busy, "can you track my parcel")
    next(holder)                                 # generating: holds the only slot
    left = router.respond(leaving, "invoice my order")
    assert next(left).text == QUEUE_MESSAGE.format(position=1)
    left.close()                                 # the browser or the HTTP client went away
    list(holder)
    [turn] = router.store.conversation(leaving)
    assert turn.status == "incomplete" and turn.interrupted and turn.user_text == "invoice my order"
    assert (router.queue.running, router.queue.waiting) == (0, 0)
