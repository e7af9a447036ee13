"""Reviewers' work on the conversation log: the review queue, review actions, corrections.

Actions are rows of the ``reviews`` table (written and read by :mod:`bot.store`); a turn is never
edited, nor is a review: ``undo`` adds a row that supersedes the review it undoes (view
``effective_reviews``). The queue puts first what most needs a person:

0. turns whose current rating (view ``current_feedback``) is a thumbs-down,
1. interrupted turns (the server died before the reply was stored),
2. fallbacks (``rephrase``) and handoffs,
3. answered turns by rising confidence, below :data:`LOW_CONFIDENCE`,
4. the confident rest, in a fixed pseudo-random order (a quality-check sample).

A turn leaves the queue once it has an effective action other than ``skip``; skipped turns go to
the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.errors import SupportbotError
from bot.records import CLASSIFIED_ROUTES, NOT_ANSWERED_ROUTES, OUT_OF_SCOPE, Route, Turn
from bot.store import ConversationStore

ACTIONS = ("relabel", "rewrite", "approve", "skip")
"""``relabel``: set the correct intent; ``rewrite``: give the reply the bot should have given
(may also set the intent); ``approve``: the turn is right as it is (on a fallback or handoff:
out of scope was right, unless an intent is given); ``skip``: look later. :meth:`ReviewLog.undo`
adds the fifth, ``undo``."""

LOW_CONFIDENCE = 0.7
BUCKETS = ("thumbs-down", "interrupted", "fallback or handoff", "low confidence", "quality sample")
"""The queue's buckets, most urgent first (:meth:`bot.store.ConversationStore.review_queue`)."""


@dataclass(frozen=True)
class ReviewFilter:
    """Which turns to show. Dates are ``YYYY-MM-DD`` (inclusive, UTC); ``feedback`` is ``"down"``,
    ``"up"`` or ``"none"``; None means any."""

    since: str | None = None
    until: str | None = None
    intent: str | None = None
    route: str | None = None
    feedback: str | None = None


@dataclass(frozen=True)
class QueueItem:
    """One turn waiting for review: the turn, why it is in the queue, its current rating
    (+1, -1, or 0 for none)."""

    turn: Turn
    bucket: str
    rating: int


@dataclass(frozen=True)
class Correction:
    """What reviewers settled for one turn, for retraining.

    Attributes:
        turn_id: the reviewed turn.
        text: the customer's utterance (as stored, i.e. redacted).
        intent: the correct intent (``out_of_scope`` allowed), or None if not settled.
        reply: the reply to learn from (rewritten, or approved without a thumbs-down), or None.
        review_id: the review row it comes from.
        reply_intent: the intent ``reply`` answers: the reviewer's, else the one the turn was
            answered for (an approved answer of :mod:`bot.answers`); None without a reply.
    """

    turn_id: int
    text: str
    intent: str | None
    reply: str | None
    review_id: int
    reply_intent: str | None = None


class ReviewLog:
    """Review queue and actions over a :class:`~bot.store.ConversationStore`."""

    def __init__(self, store: ConversationStore):
        self.store = store

    def queue(self, filters: ReviewFilter = ReviewFilter(), limit: int = 20) -> list[QueueItem]:
        """The turns to review next, most useful first (see the module docstring)."""
        return [QueueItem(turn, BUCKETS[bucket], rating)
                for turn, bucket, rating in self.store.review_queue(filters, LOW_CONFIDENCE, limit)]

    def counts(self, filters: ReviewFilter = ReviewFilter()) -> dict[str, int]:
        """How many turns are left in each bucket of the queue (all of :data:`BUCKETS`)."""
        found = self.store.review_counts(filters, LOW_CONFIDENCE)
        return {bucket: found.get(i, 0) for i, bucket in enumerate(BUCKETS)}

    def record(self, turn_id: int, reviewer: str, action: str, intent: str | None = None,
               reply: str | None = None, note: str | None = None) -> int:
        """Store one review action; returns its id.

        Raises:
            SupportbotError: unknown turn, empty reviewer, unknown action, ``relabel`` without an
                intent or ``rewrite`` without a reply.
        """
        intent, reply = (intent or "").strip() or None, (reply or "").strip() or None
        if not (reviewer or "").strip():
            raise SupportbotError("a review needs the reviewer's name")
        if action not in ACTIONS:
            raise SupportbotError(f"unknown review action '{action}'; expected one of {', '.join(ACTIONS)}")
        if action == "relabel" and intent is None:
            raise SupportbotError("'relabel' needs the correct intent")
        if action == "rewrite" and reply is None:
            raise SupportbotError("'rewrite' needs the reply the bot should have given")
        return self.store.add_review(turn_id, reviewer.strip(), action, intent, reply, note)

    def undo(self, reviewer: str, turn_id: int | None = None, note: str | None = None) -> tuple[int, int]:
        """Undo the latest effective review of a turn, or (``turn_id`` None) the latest effective
        review by ``reviewer``: an ``undo`` row that supersedes it; the turn's earlier effective
        review, if any, counts again, else the turn is back in the queue.

        Returns:
            ``(undo row id, turn id)``.

        Raises:
            SupportbotError: empty reviewer, unknown turn, or nothing left to undo.
        """
        if not (reviewer or "").strip():
            raise SupportbotError("an undo needs the reviewer's name")
        if turn_id is not None:
            self.store.turn(turn_id)
        undone = self.store.latest_effective_review(turn_id=turn_id, reviewer=None if turn_id else reviewer.strip())
        if undone is None:
            whose = f"turn {turn_id}" if turn_id is not None else f"reviewer {reviewer.strip()}"
            raise SupportbotError(f"nothing to undo: {whose} has no review in effect")
        undo_id = self.store.add_review(undone["turn_id"], reviewer.strip(), "undo", note=note, supersedes=undone["id"])
        return undo_id, undone["turn_id"]

    def actions(self, turn_id: int) -> list[dict[str, Any]]:
        """The review rows of a turn (undos included), oldest first."""
        return self.store.reviews_of(turn_id)

    def corrections(self) -> list[Correction]:
        """The latest effective settling review (not ``skip``, not undone) of every reviewed turn,
        as training material.

        The intent is the reviewer's (``relabel``/``rewrite``/``approve`` with an intent) or,
        for ``approve`` without one, the predicted intent of an answered (or small-talk) turn and
        ``out_of_scope`` for a fallback or handoff (the rejected guess never becomes a label).
        The reply is the rewritten one, or for ``approve`` of an answered turn the bot's reply
        unless the customer's current rating is a thumbs-down: a thumbs-down reply is never
        learned from without a correction, and fallback or handoff messages are never learned
        as replies.
        """
        return [correction(row) for row in self.store.settled_reviews()]


def correction(row: dict[str, Any]) -> Correction:
    """The :class:`Correction` of one :meth:`bot.store.ConversationStore.settled_reviews` row
    (see :meth:`ReviewLog.corrections`)."""
    approved = row["action"] == "approve"
    answered = row["route"] in (Route.ANSWER, Route.TEMPLATE)
    predicted = (row["intent"] if row["route"] in CLASSIFIED_ROUTES
                 else OUT_OF_SCOPE if row["route"] in NOT_ANSWERED_ROUTES else None)
    intent = row["fixed_intent"] or (predicted if approved else None)
    reply = row["fixed_reply"] or (row["reply"] if approved and answered and not row["disliked"] else None)
    acted_on = row["decision_intent"] or row["intent"] if row["route"] in CLASSIFIED_ROUTES else None
    reply_intent = (row["fixed_intent"] or acted_on) if reply else None
    return Correction(row["turn_id"], row["user_text"], intent, reply, row["review_id"], reply_intent)
