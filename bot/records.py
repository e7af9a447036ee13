"""Records passed between modules; names are kept the same everywhere (see docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class Prediction:
    """The classifier's answer for one utterance.

    Attributes:
        intent: the most probable intent label.
        confidence: its softmax probability, in [0, 1].
        top_k: the ``k`` most probable ``(intent, probability)`` pairs, best first.
        oos_score: out-of-scope score; higher means more likely out of scope. Its scale depends
            on the method named in the model's manifest; compare it with that manifest's
            threshold only.
        oos_class: the classifier's explicit out-of-scope class is more probable than every
            intent (the message is plainly not a request the bot handles).
    """

    intent: str
    confidence: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    oos_score: float = 0.0
    oos_class: bool = False


OUT_OF_SCOPE = "out_of_scope"
"""The label of out-of-scope utterances: in training data (after the file's own out-of-scope
label is mapped to it), as the classifier's explicit out-of-scope class, and in review
corrections."""

SMALL_TALK_PREFIX = "smalltalk_"
"""Intents named ``smalltalk_<kind>`` (greeting, thanks, goodbye, bot, affirm, negate, ...) are
small talk: answered from a configurable template, never a fallback or a handoff."""


def is_small_talk(intent: str | None) -> bool:
    """True for a small-talk intent (``smalltalk_*``)."""
    return bool(intent) and intent.startswith(SMALL_TALK_PREFIX)


class Route(str, Enum):
    """The routes a :class:`Decision` can take; a ``str`` so it is stored and compared as its value.

    ``answer`` (generate a reply), ``rephrase`` (unsure: ask the customer to rephrase),
    ``fallback`` (plainly out of scope: say what the bot can do), ``handoff`` (a person takes
    over), ``template`` (a fixed reply from configuration), ``smalltalk`` (greeting, thanks,
    goodbye, ...: a short templated reply); and, once a conversation waits for or is held by a
    person (:mod:`bot.handoff`): ``human`` (a customer message left for the agent, no bot reply),
    ``agent`` (an agent's reply) and ``notice`` (a status message: an agent joined, left, ...).
    """

    ANSWER = "answer"
    REPHRASE = "rephrase"
    FALLBACK = "fallback"
    HANDOFF = "handoff"
    TEMPLATE = "template"
    SMALLTALK = "smalltalk"
    HUMAN = "human"
    AGENT = "agent"
    NOTICE = "notice"

    def __str__(self) -> str:
        return self.value


ROUTES = tuple(Route)
BOT_ROUTES = (Route.ANSWER, Route.REPHRASE, Route.FALLBACK, Route.HANDOFF, Route.TEMPLATE, Route.SMALLTALK)
"""Routes of the bot's own replies: the ones a customer may rate."""
STAFF_ROUTES = (Route.AGENT, Route.NOTICE)
"""Turns written by people or the handoff (:mod:`bot.handoff`), not by the bot: never reviewed,
left out of the rates."""
FALLBACK_ROUTES = (Route.REPHRASE, Route.FALLBACK)
"""Routes counted as fallbacks (the dashboard's fallback rate)."""
NOT_ANSWERED_ROUTES = (*FALLBACK_ROUTES, Route.HANDOFF)
"""Routes on which the bot did not act on an intent: reviewing ``approve`` without an intent
means the utterance is out of scope."""
CLASSIFIED_ROUTES = (Route.ANSWER, Route.TEMPLATE, Route.SMALLTALK)
"""Routes that acted on the predicted intent."""


class Reason(str, Enum):
    """Why a :class:`Decision` took its route, for code (the decision's ``reason`` says it in words)."""

    EMPTY = "empty"
    NO_WORDS = "no_words"
    ASKED_FOR_PERSON = "asked_for_person"
    PRESSED_HUMAN = "pressed_human"
    OUT_OF_SCOPE_CLASS = "out_of_scope_class"
    OUT_OF_SCOPE = "out_of_scope"
    OUT_OF_SCOPE_AGAIN = "out_of_scope_again"
    SMALL_TALK = "small_talk"
    HANDOFF_INTENT = "handoff_intent"
    TEMPLATE_INTENT = "template_intent"
    INTENT = "intent"
    WAITING_FOR_AGENT = "waiting_for_agent"
    HELD_BY_AGENT = "held_by_agent"
    APPROVED_ANSWER = "approved_answer"
    NO_CLOSE_ANSWER = "no_close_answer"
    STRAYED = "strayed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class AnswerRef:
    """One approved reply retrieved for a turn (:mod:`bot.answers`), as the turn record keeps it.

    Attributes:
        id: the answer's id in the answer store: ``t<n>`` a training reply of the generator
            version, ``r<n>`` the reply of review ``n``, ``a<n>`` team-written answer ``n``.
        score: cosine similarity of the customer's message to the answer's request (or, for an
            answer without one, to the reply), in [-1, 1].
        source: ``"training"``, ``"review"`` or ``"team"``.
        review_id: the review the reply comes from (source ``review``), else None.
        excerpt: the reply's first 200 characters, so the record stays readable after the store
            changes.
    """

    id: str
    score: float
    source: str
    review_id: int | None = None
    excerpt: str = ""


TURN_STATUSES = ("complete", "incomplete")
"""A turn is ``incomplete`` from the moment it is logged until its reply is stored."""


@dataclass(frozen=True)
class Decision:
    """What the router chose to do with one message, and why.

    Attributes:
        route: a :class:`Route` (its value is accepted too).
        reason: why, in words (shown to reviewers), e.g. ``"out of scope: score 0.91 > 0.80"``.
        intent: the intent the route acts on (None when there is none, e.g. an empty message).
        threshold: the out-of-scope threshold in force, on the scale of the classifier's
            ``oos_score``; None when no classifier was consulted.
        context: how the previous turn decided this one, in words (e.g. ``"classified with the
            previous message"``); None when the message alone decided.
        code: the reason as a :class:`Reason`; None for a decision not made by the router
            (a staff turn) or stored before codes were.

    Raises:
        ValueError: ``route`` is not a :class:`Route` (or ``code`` not a :class:`Reason`).
    """

    route: Route
    reason: str
    intent: str | None = None
    threshold: float | None = None
    context: str | None = None
    code: Reason | None = None

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"route must be one of {', '.join(ROUTES)}, not {self.route!r}")
        object.__setattr__(self, "route", Route(self.route))
        if self.code is not None:
            object.__setattr__(self, "code", Reason(self.code))


@dataclass(frozen=True)
class Turn:
    """One customer message and the bot's reply, as logged in the conversation store.

    Attributes:
        conversation_id: the conversation it belongs to.
        index: its position in the conversation, 0 for the first message.
        user_text: the customer's message.
        prediction: the classifier's prediction; None when the classifier was not run.
        decision: the router's decision; None until it is made.
        reply: the text the customer saw (placeholders filled), redacted as stored; None while
            incomplete.
        missing_slots: ``{{Slot}}`` names the reply held that the company profile and the
            message could not fill.
        classifier_version: version folder name of the classifier used, if any.
        generator_version: version folder name of the generator used, if any.
        latency_ms: time from message to finished reply, in milliseconds.
        status: ``"incomplete"`` until the reply is stored, then ``"complete"``.
        started_at: when the message was logged, UTC ISO 8601 (``2026-01-31T12:00:00.000000+00:00``).
        finished_at: when the reply was stored, UTC ISO 8601; None while incomplete.
        id: the store's turn id (for feedback); None for a turn not stored yet.
        agent: the staff member who wrote ``reply`` (routes ``agent`` and ``notice``), else None.
        text_changes: what normalisation changed in the customer's text (:data:`bot.text.CHANGES`).
        redacted: items of personal data removed before storing, per tag (``{"CARD": 1}``), from
            the customer's text and the reply together.
        interrupted: the process died before the reply was stored (found at the next start).
        retrieved: the approved replies retrieved for the reply (best first), empty when none were.
        answers_version: the answer store's version the turn used (:mod:`bot.answers`), if any.

    Raises:
        ValueError: ``status`` is not one of :data:`TURN_STATUSES`.
    """

    conversation_id: str
    index: int
    user_text: str
    prediction: Prediction | None = None
    decision: Decision | None = None
    reply: str | None = None
    missing_slots: list[str] = field(default_factory=list)
    classifier_version: str | None = None
    generator_version: str | None = None
    latency_ms: float | None = None
    status: str = "incomplete"
    started_at: str | None = None
    finished_at: str | None = None
    id: int | None = None
    agent: str | None = None
    text_changes: tuple[str, ...] = ()
    redacted: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    retrieved: tuple[AnswerRef, ...] = ()
    answers_version: str | None = None

    def __post_init__(self) -> None:
        if self.status not in TURN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(TURN_STATUSES)}, not {self.status!r}")
