"""The review page's own endpoints, driven like the page does (each action sends the form as the
previous answer left it), on the real server with tiny models; then the training set that
``retrain`` builds from the log (:func:`training.retrain.build_training_set`)."""

from __future__ import annotations

from dataclasses import replace

from gradio_client import Client
from helpers import converse

from bot.records import AnswerRef, Decision, Prediction
from bot.reviews import OUT_OF_SCOPE, ReviewLog
from bot.store import ConversationStore
from test_server import REVIEWER, server  # noqa: F401  (the real-server fixture, with a reviewer)
from training.data import load
from training.retrain import build_training_set

NO_FILTERS = ("", "", "", "", "")


class Form:
    """The review form as the page holds it: what the last answer put in each field."""

    def __init__(self, client: Client):
        self.client = client
        self.status, (self.counts, self.item, self.conversation, self.intent, self.reply, self.note) = \
            None, client.predict(*NO_FILTERS, api_name="/next_item")

    def _show(self, answer) -> None:
        self.status, self.counts, self.item, self.conversation, self.intent, self.reply, self.note = answer

    def act(self, action: str, **typed) -> None:
        """Click an action button after typing ``typed`` (intent, reply, note) into the form."""
        values = {"intent": self.intent, "reply": self.reply, "note": self.note, **typed}
        self._show(self.client.predict(self.item["turn_id"], action, values["intent"], values["reply"],
                                       values["note"], *NO_FILTERS, api_name="/review_action"))

    def undo(self) -> None:
        self._show(self.client.predict(*NO_FILTERS, api_name="/undo_review"))

    def go_to(self, turn_id: int) -> None:
        """Skip items until ``turn_id`` is shown (skips do not settle anything)."""
        for _ in range(10):
            if self.item["turn_id"] == turn_id:
                return
            self.act("skip")
        raise AssertionError(f"turn {turn_id} never came up")


def test_review_sequences_give_the_training_set_the_reviewer_chose(server, tiny_intents_csv):
    url, home = server
    converse(url, ["I want to talk to a human about my refund"])             # a handoff
    converse(url, ["please cancel the purchase"])
    converse(url, ["can you track my parcel"])
    with ConversationStore(home / "conversations.db") as store:
        turns = {turn.user_text: turn for turn in map(store.turn, (1, 2, 3))}  # one message per conversation
    handoff, cancel, track = (turns[text] for text in ("I want to talk to a human about my refund",
                                                       "please cancel the purchase", "can you track my parcel"))
    assert handoff.decision.route == "handoff" and handoff.prediction is not None

    form = Form(Client(url + "review/", auth=REVIEWER, verbose=False))
    form.go_to(handoff.id)
    assert (form.intent, form.note) == (None, "")        # no rejected guess pre-filled on a handoff
    form.act("approve")                                  # "out of scope was right"

    form.go_to(cancel.id)
    form.act("relabel", intent="refund", note="customer meant the refund")
    assert form.note == "" and form.status.startswith("saved review")    # the form is reset
    form.go_to(track.id)
    expected_track = track.prediction.intent if track.decision.route in ("answer", "template") else None
    assert form.intent == expected_track and form.note == ""
    form.act("relabel", intent="track")                  # the previous item's note is not sent again
    form.undo()                                          # undoes the relabel of `track`
    form.go_to(track.id)                                 # back in the queue
    form.act("relabel", intent="invoice")                # a second thought: the latest action counts

    with ConversationStore(home / "conversations.db") as store:
        log = ReviewLog(store)
        rows = {turn.id: log.actions(turn.id) for turn in (handoff, cancel, track)}
        corrections = {c.turn_id: c for c in log.corrections()}
    notes = {turn_id: [(r["action"], r["note"]) for r in actions if r["action"] != "skip"]
             for turn_id, actions in rows.items()}
    assert notes == {handoff.id: [("approve", None)], cancel.id: [("relabel", "customer meant the refund")],
                     track.id: [("relabel", None), ("undo", None), ("relabel", None)]}
    undo = [r for r in rows[track.id] if r["action"] == "undo"][0]
    assert undo["supersedes"] == [r for r in rows[track.id] if r["action"] == "relabel"][0]["id"]
    assert {turn_id: c.intent for turn_id, c in corrections.items()} == {
        handoff.id: OUT_OF_SCOPE, cancel.id: "refund", track.id: "invoice"}

    material = build_training_set(load(str(tiny_intents_csv)), list(corrections.values()), 42, "intents")
    learned = {e.text: e.intent for e in material.train + material.slice if e.source.startswith("review:")}
    assert learned == {"please cancel the purchase": "refund", "can you track my parcel": "invoice"}
    assert material.counts["out_of_scope"] == 1          # the handoff is not trained as its predicted intent
    assert all(e.text != handoff.user_text for e in material.train + material.slice)


def test_the_review_page_names_the_approved_answers_retrieved_for_a_turn(server):
    url, home = server
    refs = (AnswerRef("r4", 0.9123, "review", 4, "It left <b>today</b>."), AnswerRef("t0", 0.5, "training"))
    with ConversationStore(home / "conversations.db") as store:
        turn = store.start_turn(store.new_conversation(), "where is my parcel")
        store.finish_turn(replace(turn, prediction=Prediction("track", 0.4, [("track", 0.4)], 0.6),
                                  decision=Decision("answer", "why", "track", 0.5), reply="On its way.",
                                  status="complete", retrieved=refs, answers_version="v1+r4.a0"))
    form = Form(Client(url + "review/", auth=REVIEWER, verbose=False))
    assert form.item["turn_id"] == turn.id
    assert form.item["retrieved"] == [
        {"id": "r4", "score": 0.9123, "source": "review", "review_id": 4, "excerpt": "It left <b>today</b>."},
        {"id": "t0", "score": 0.5, "source": "training", "review_id": None, "excerpt": ""}]
    assert form.item["answers_version"] == "v1+r4.a0"
