"""Review queue order, filters, counts, actions and the corrections used for retraining."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.errors import SupportbotError
from bot.records import Decision, Prediction
from bot.reviews import ReviewFilter, ReviewLog
from bot.store import ConversationStore


def logged(store, conversation, text, intent, confidence, route, reply="A reply."):
    turn = store.start_turn(conversation, text)
    prediction = Prediction(intent, confidence, [(intent, confidence)], 1 - confidence)
    return store.finish_turn(replace(turn, prediction=prediction, decision=Decision(route, "why", intent, 0.5),
                                     reply=reply, latency_ms=10.0, status="complete")).id


@pytest.fixture()
def log(tmp_path):
    store = ConversationStore(tmp_path / "c.db")
    conversation = store.new_conversation()
    ids = {
        "confident": logged(store, conversation, "track my parcel", "track_order", 0.99, "answer"),
        "low": logged(store, conversation, "uh the thing", "track_order", 0.40, "answer"),
        "lower": logged(store, conversation, "hmm", "cancel_order", 0.30, "answer"),
        "fallback": logged(store, conversation, "tell me a joke", "get_refund", 0.2, "rephrase", "Could you rephrase?"),
        "disliked": logged(store, conversation, "refund now", "get_refund", 0.95, "answer", "Bad answer."),
    }
    store.add_feedback(ids["disliked"], -1, "wrong")
    store.add_feedback(ids["confident"], 1)
    return ReviewLog(store), ids


def test_queue_order_and_counts(log):
    reviews, ids = log
    order = [item.turn.id for item in reviews.queue()]
    assert order == [ids["disliked"], ids["fallback"], ids["lower"], ids["low"], ids["confident"]]
    assert [item.bucket for item in reviews.queue(limit=2)] == ["thumbs-down", "fallback or handoff"]
    assert reviews.counts() == {"thumbs-down": 1, "interrupted": 0, "fallback or handoff": 1, "low confidence": 2,
                                "quality sample": 1}


def test_actions_remove_from_queue_and_skip_goes_last(log):
    reviews, ids = log
    reviews.record(ids["disliked"], "ana", "skip")
    assert reviews.queue()[-1].turn.id == ids["disliked"]
    reviews.record(ids["fallback"], "ana", "approve")
    assert ids["fallback"] not in [item.turn.id for item in reviews.queue()]
    assert reviews.counts()["fallback or handoff"] == 0
    assert [a["action"] for a in reviews.actions(ids["disliked"])] == ["skip"]


def test_filters(log):
    reviews, ids = log
    assert [i.turn.id for i in reviews.queue(ReviewFilter(feedback="down"))] == [ids["disliked"]]
    assert {i.turn.id for i in reviews.queue(ReviewFilter(intent="track_order"))} == {ids["low"], ids["confident"]}
    assert [i.turn.id for i in reviews.queue(ReviewFilter(route="rephrase"))] == [ids["fallback"]]
    assert len(reviews.queue(ReviewFilter(feedback="none"))) == 3
    assert reviews.queue(ReviewFilter(until="2000-01-01")) == []
    assert len(reviews.queue(ReviewFilter(since="2000-01-01"))) == 5


def test_corrections_follow_the_rules(log):
    reviews, ids = log
    reviews.record(ids["low"], "ana", "relabel", intent="cancel_order")
    reviews.record(ids["disliked"], "ana", "approve")          # thumbs-down reply is not learned
    reviews.record(ids["confident"], "ana", "approve")
    reviews.record(ids["fallback"], "ana", "approve")          # approved fallback = out of scope
    reviews.record(ids["lower"], "bo", "rewrite", intent="cancel_order", reply="To cancel, open Orders.")
    got = {c.turn_id: (c.intent, c.reply) for c in reviews.corrections()}
    assert got == {
        ids["low"]: ("cancel_order", None),
        ids["disliked"]: ("get_refund", None),
        ids["confident"]: ("track_order", "A reply."),
        ids["fallback"]: ("out_of_scope", None),
        ids["lower"]: ("cancel_order", "To cancel, open Orders."),
    }
    reviews.record(ids["low"], "bo", "relabel", intent="track_order")   # the latest review wins
    assert {c.turn_id: c.intent for c in reviews.corrections()}[ids["low"]] == "track_order"


@pytest.mark.parametrize("kwargs,message", [
    ({"reviewer": "", "action": "approve"}, "needs the reviewer's name"),
    ({"reviewer": "a", "action": "delete"}, "unknown review action 'delete'"),
    ({"reviewer": "a", "action": "relabel"}, "'relabel' needs the correct intent"),
    ({"reviewer": "a", "action": "rewrite", "reply": "  "}, "'rewrite' needs the reply"),
])
def test_bad_actions_are_refused_and_nothing_is_written(log, kwargs, message):
    reviews, ids = log
    with pytest.raises(SupportbotError, match=message):
        reviews.record(ids["low"], **kwargs)
    assert reviews.actions(ids["low"]) == []


def test_unknown_turn(log):
    reviews, _ = log
    with pytest.raises(SupportbotError, match="unknown turn 999"):
        reviews.record(999, "ana", "approve")


def test_approve_on_a_fallback_or_handoff_means_out_of_scope_unless_an_intent_is_chosen(log):
    """The predicted intent of a fallback or handoff was rejected by the bot; approving the turn
    must not make it a training label."""
    reviews, ids = log
    store = reviews.store
    conversation = store.new_conversation()
    handoff = logged(store, conversation, "get me a person now", "get_refund", 0.6, "handoff", "Passing you on.")
    chosen = logged(store, conversation, "refund to a new card?", "track_order", 0.3, "rephrase", "Rephrase?")
    reviews.record(ids["fallback"], "ana", "approve")
    reviews.record(handoff, "ana", "approve")
    reviews.record(chosen, "ana", "approve", intent="get_refund")
    got = {c.turn_id: (c.intent, c.reply) for c in reviews.corrections()}
    assert got[ids["fallback"]] == got[handoff] == ("out_of_scope", None)
    assert got[chosen] == ("get_refund", None)


def test_a_review_can_be_undone_by_a_new_row_and_the_latest_effective_action_counts(log):
    reviews, ids = log
    first = reviews.record(ids["low"], "ana", "relabel", intent="cancel_order")
    second = reviews.record(ids["low"], "bo", "relabel", intent="get_refund")
    assert {c.turn_id: c.intent for c in reviews.corrections()}[ids["low"]] == "get_refund"
    undo_id, turn_id = reviews.undo("ana", turn_id=ids["low"])              # undoes bo's, the latest
    assert turn_id == ids["low"]
    assert {c.turn_id: c.intent for c in reviews.corrections()}[ids["low"]] == "cancel_order"
    reviews.undo("ana", turn_id=ids["low"])                                 # and then ana's
    assert ids["low"] not in {c.turn_id for c in reviews.corrections()}
    assert ids["low"] in [item.turn.id for item in reviews.queue()]         # back in the queue
    rows = reviews.actions(ids["low"])
    assert [(r["id"], r["action"], r["intent"], r["supersedes"]) for r in rows] == [
        (first, "relabel", "cancel_order", None), (second, "relabel", "get_refund", None),
        (undo_id, "undo", None, second), (undo_id + 1, "undo", None, first)]   # nothing edited
    with pytest.raises(SupportbotError, match="nothing to undo"):
        reviews.undo("ana", turn_id=ids["low"])
    reviews.record(ids["fallback"], "bo", "approve")
    assert reviews.undo("bo") == (undo_id + 3, ids["fallback"])             # bo's latest, any turn


def test_the_queue_follows_the_current_rating(log):
    reviews, ids = log
    store = reviews.store
    store.add_feedback(ids["disliked"], 0)                  # the customer withdrew the thumbs-down
    assert reviews.queue()[0].turn.id != ids["disliked"]
    assert reviews.counts()["thumbs-down"] == 0
    store.add_feedback(ids["confident"], -1)                # changed their mind from up to down
    first = reviews.queue()[0]
    assert (first.turn.id, first.bucket, first.rating) == (ids["confident"], "thumbs-down", -1)


def test_interrupted_turns_wait_in_the_queue_marked(tmp_path):
    path = tmp_path / "c.db"
    with ConversationStore(path) as store:
        conversation = store.new_conversation()
        logged(store, conversation, "track my parcel", "track_order", 0.99, "answer")
        left = store.start_turn(conversation, "where is my refund")          # the server dies here
    with ConversationStore(path) as restarted:
        reviews = ReviewLog(restarted)
        assert left.id not in [item.turn.id for item in reviews.queue()]     # not before it is marked
        restarted.mark_interrupted()
        first = reviews.queue()[0]
        assert (first.turn.id, first.bucket, first.turn.interrupted) == (left.id, "interrupted", True)
        assert reviews.counts()["interrupted"] == 1
        reviews.record(left.id, "ana", "relabel", intent="get_refund")
        assert {c.turn_id: (c.intent, c.reply) for c in reviews.corrections()} == {left.id: ("get_refund", None)}
