"""The bot's policy: classify, decide a route, produce the reply, log the turn.

One call of :meth:`Router.respond` handles one customer message:

0. the text is normalised once (:func:`bot.text.normalise`: lone surrogates, control and
   bidi characters, length), so no text can fail a later step;
1. the turn is written to the store as *incomplete* before any model runs (a crash leaves it so),
   and what the turn needs of the conversation is read in one call
   (:meth:`bot.store.ConversationStore.turn_context`: open handoff, fallbacks in a row, previous
   turn, history, answers version); no other store read happens until the turn is finished,
   but one (:meth:`bot.store.ConversationStore.live_answer_rows`) when an answered turn finds
   that an approved answer was added or withdrawn since the answer store last loaded;
2. the classifier predicts the intent (:class:`bot.records.Prediction`) from the text with its
   emoji named in words (:func:`bot.text.for_classifier`; the stored text keeps the emoji);
3. :func:`decide` picks a route, with its reason: ``answer`` (generate), ``template`` (a fixed
   reply from config), ``smalltalk`` (greeting, thanks, "are you a bot?", ...: a configured
   short reply, never a fallback), ``fallback`` (plainly out of scope: the classifier's
   out-of-scope class wins; says what the bot can do, never counts towards a handoff),
   ``rephrase`` (unsure: ask to rephrase; repeated, it hands off; and a message without words,
   :func:`bot.text.has_words`, whatever the classifier says) or
   ``handoff`` (a human takes over: asked for, configured intent, or too many fallbacks in a
   row); a message that is unclear alone right after an answered turn is decided in the
   context of that turn (:func:`follow_up`), and the decision says so; while a conversation
   waits for or is held by a person (:mod:`bot.handoff`) the message is logged with route
   ``human`` for the agent: held, there is no bot reply; waiting, the reply is an
   acknowledgement (passed on, place in line) at most once every
   ``[handoff] acknowledge_every_minutes`` (:meth:`bot.handoff.Inbox.acknowledgement`), else none;
4. for an answer, when the replies version has an answer store (:mod:`bot.answers`), the
   approved answers of the intent nearest to the message are retrieved: a near-identical
   request gets its approved answer as it is; when none is close enough, the closest one or a
   handoff (``[answers] unsure``); otherwise they go into the generator's prompt, and a
   generated reply that strays from them (a number, URL or e-mail address in no source, or too
   dissimilar to all) is replaced by that same safety net, the reason saying which;
   the reply is generated (streamed) or taken from a template, and its ``{{Slot}}`` placeholders
   are filled from the company profile and the message's entities, sentence by sentence as it
   streams, so a raw placeholder never reaches the customer; at most
   ``config.max_concurrent_generations`` replies are generated at once, a later turn waits in
   line (:mod:`bot.queue`) and streams :data:`QUEUE_MESSAGE` with its place meanwhile, which the
   reply replaces once it starts; a reply that repeats the system prompt is held back and
   replaced by the refusal :data:`NO_SAFE_REPLY` (:mod:`bot.guard`), which is also the reply
   when generation fails (:class:`bot.errors.GenerationFailed`, e.g. a remote backend down or
   sending garbage), the reason added to the decision's;
5. the turn is completed in the store with prediction, decision, reply, missing slots, model
   versions and latency (a handoff opens in the same write). The customer's text and the reply
   are stored redacted (:mod:`bot.redaction`; the company profile's own values stay), and the
   last chunk carries a :func:`notice` telling the customer what was removed from the log or
   their message.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace

from bot.answers import AnswerLibrary, Retrieved, embed, looping, new_facts
from bot.errors import GenerationFailed, SupportbotError
from bot.guard import echoes_system_prompt, guarded, may_show_partial
from bot.handoff import Inbox, WorkingHours
from bot.interfaces import Classifier, Generator, Models
from bot.placeholders import extract_entities, fill, only_entities
from bot.queue import GenerationQueue, Ticket
from bot.records import Decision, Prediction, Reason, Route, Turn, is_small_talk
from bot.redaction import PHONE_REGIONS, redact
from bot.settings import AnswersConfig, HandoffConfig, RouterConfig
from bot.store import Handoff, Owner
from bot.text import MAX_CHARS, for_classifier, has_words, normalise

log = logging.getLogger(__name__)

REMOVED = {"CARD": "a card number", "PHONE": "a phone number", "EMAIL": "an e-mail address", "IBAN": "an IBAN"}
"""How :func:`notice` names each redaction tag to the customer."""
CHANGED = {"surrogate": "characters that cannot be stored", "control": "control characters",
           "bidi": "text-direction controls", "cut": "everything after the first {max_chars} characters"}
"""How :func:`notice` names each change of :func:`bot.text.normalise` to the customer."""

REPHRASE_REPLY = (
    "Sorry, I'm not sure I understood. Could you rephrase your question? For example: "
    "\"I want to cancel my order\" or \"How do I change my shipping address?\""
)
EMPTY_REPLY = "It looks like your message was empty. How can I help you today?"
NO_SAFE_REPLY = (
    "I'm sorry, I can't give a complete answer to that here. Please contact our support team on "
    "{{Customer Support Phone Number}}."
)

QUEUE_MESSAGE = "You're number {position} in the queue; your reply starts as soon as a place is free…"
"""Streamed, never stored, while a turn waits for a generation slot; the reply replaces it."""

_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+|\n")


@dataclass(frozen=True)
class ReplyChunk:
    """One step of a streamed reply.

    Attributes:
        text: the whole reply so far, as the customer should see it (placeholders filled); while
            the turn waits for a generation slot, :data:`QUEUE_MESSAGE` with its place instead.
        turn: the finished turn on the last chunk, else None.
    """

    text: str
    turn: Turn | None = None
    notice: str | None = None


_BARE_MARKER = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,2}[.)]|[-*\u2022])$")
"""A list item's marker with nothing after it, at the end of a text."""


def complete_sentences(text: str) -> str:
    """``text`` without its unfinished last sentence, for a reply that the token cap cut
    (``"... call us on {{Customer Support Pho"`` -> ``"..."``); a sentence announcing what was
    cut (ending in ``:``) and a bare list marker go too. ``text`` itself when no sentence is
    complete (better a cut sentence than no reply)."""
    done = text[: len(text) - len(_SENTENCE_END.split(text)[-1])].rstrip()
    while done.endswith(":") or _BARE_MARKER.search(done):
        shorter = done[: len(done) - len(_SENTENCE_END.split(done)[-1])].rstrip()
        if not shorter:
            break
        done = shorter
    return done or text


def notice(turn: Turn, max_chars: int) -> str | None:
    """A sentence for the customer saying what of their turn was not stored as sent (personal
    data redacted from their message or the reply, characters dropped, text cut), or None."""
    parts = []
    if turn.redacted:
        removed = [REMOVED[tag] for tag in REMOVED if tag in turn.redacted]
        parts.append(f"we removed {_listing(removed)} from our record of this chat")
    changed = [CHANGED[change].format(max_chars=max_chars) for change in CHANGED if change in turn.text_changes]
    if changed:
        parts.append(f"we dropped {_listing(changed)} from your message")
    return f"Note: {'; '.join(parts)}." if parts else None


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


SMALL_TALK_MAJORITY = 0.5
"""A small-talk intent with more probability than all other classes together (out-of-scope class
included) gets its small-talk reply even above the out-of-scope threshold: a greeting or a thanks
is never asked to rephrase, and a wrong small-talk reply costs less than a rephrase."""


def decide(
    text: str,
    prediction: Prediction | None,
    threshold: float,
    fallbacks_in_a_row: int,
    config: RouterConfig,
) -> Decision:
    """Pick the route for one message.

    Args:
        text: the customer's message (already normalised, :func:`bot.text.normalise`).
        prediction: the classifier's prediction, None for an empty message.
        threshold: out-of-scope threshold; ``prediction.oos_score > threshold`` is out of scope.
        fallbacks_in_a_row: ``rephrase`` routes that directly precede this message.
        config: routing policy.

    Returns:
        A :class:`Decision` whose ``code`` says why and ``reason`` says it in words.
    """
    if prediction is None:
        return Decision(Route.REPHRASE, "empty message", None, threshold, code=Reason.EMPTY)
    intent, score = prediction.intent, prediction.oos_score
    if not has_words(text):  # "???", "x" * 2500: the classifier's guess is noise (it said "yes" to both)
        return Decision(Route.REPHRASE, "no words to classify", intent, threshold, code=Reason.NO_WORDS)

    def decision(route: Route, code: Reason, reason: str) -> Decision:
        return Decision(route, reason, intent, threshold, code=code)

    if re.search(config.human_request, text, flags=re.IGNORECASE) and not re.search(
            config.identity_question, text, flags=re.IGNORECASE):
        return decision(Route.HANDOFF, Reason.ASKED_FOR_PERSON, "customer asked for a person")
    if score > threshold and prediction.oos_class:
        return decision(Route.FALLBACK, Reason.OUT_OF_SCOPE_CLASS,
                        f"out of scope: the out-of-scope class wins (score {score:.3f} > {threshold:.3f})")
    if is_small_talk(intent) and (score <= threshold or prediction.confidence > SMALL_TALK_MAJORITY):
        return decision(Route.SMALLTALK, Reason.SMALL_TALK,
                        f"small talk '{intent}' with confidence {prediction.confidence:.2f}")
    if score > threshold:
        if fallbacks_in_a_row + 1 >= config.rephrase_limit:
            return decision(Route.HANDOFF, Reason.OUT_OF_SCOPE_AGAIN,
                            f"out of scope again ({fallbacks_in_a_row + 1} fallbacks in a row)")
        return decision(Route.REPHRASE, Reason.OUT_OF_SCOPE,
                        f"out of scope: score {score:.3f} > threshold {threshold:.3f}")
    if intent in config.handoff_intents:
        return decision(Route.HANDOFF, Reason.HANDOFF_INTENT, f"intent '{intent}' is handed off by configuration")
    if intent in config.templates:
        return decision(Route.TEMPLATE, Reason.TEMPLATE_INTENT, f"intent '{intent}' has a fixed reply")
    return decision(Route.ANSWER, Reason.INTENT, f"intent '{intent}' with confidence {prediction.confidence:.2f}")


AFFIRM = "smalltalk_affirm"
"""A bare "yes" / "ok" continues an answer's topic when the answer ended with a question (or the
message gives an order number); after any other answer it acknowledges it (its small-talk reply)."""


def unclear_alone(prediction: Prediction, threshold: float, entities: dict[str, str], text: str = "") -> bool:
    """Whether a message may need the previous turn to be understood: it is out of scope alone
    (``oos_score > threshold``), a bare affirmation (:data:`AFFIRM`), or it gives an entity
    (order, invoice or tracking number) and either says nothing else (:func:`only_entities`:
    "order 3310" names an order, not which request about it) or its own intent has no majority
    (confidence at most :data:`SMALL_TALK_MAJORITY`). :func:`follow_up` decides."""
    return (prediction.oos_score > threshold or prediction.intent == AFFIRM
            or _unclear_entity(prediction, entities, text))


def _unclear_entity(prediction: Prediction, entities: dict[str, str], text: str) -> bool:
    return bool(entities) and (prediction.confidence <= SMALL_TALK_MAJORITY or only_entities(text, entities))


def follow_up(prediction: Prediction, threshold: float, previous: Turn | None, combined: Prediction | None,
              entities: dict[str, str], text: str = "") -> tuple[Prediction, str] | None:
    """The prediction to decide an unclear follow-up message on, and why, or None when the
    message decides alone.

    A message is unclear when it is out of scope alone (``oos_score > threshold``), a bare
    affirmation (:data:`AFFIRM`) that answers the reply's closing question or gives an entity,
    or it gives an entity with no intent of majority confidence (:func:`unclear_alone`), and it
    follows a turn that was answered; a message the out-of-scope class itself wins
    (``oos_class``) and that gives no entity is off topic, not unclear. (An "ok" after an answer
    that asked nothing is an acknowledgement: only about 1 % of Bitext's replies end with a
    question, and repeating the answer helps nobody.) Then:

    1. ``combined``, the prediction for the previous message and this one together, is taken
       when it is in scope and not small talk ("cancel my order" + "it's order 4471");
    2. else, when the message gives an entity (order, invoice or tracking number), the
       previous intent is kept.

    Args:
        prediction: this message's own prediction.
        threshold: the classifier's out-of-scope threshold.
        previous: the conversation's last completed turn, or None.
        combined: the prediction for ``previous.user_text + " " + message``, or None.
        entities: from :func:`bot.placeholders.extract_entities` of this message.
        text: the message (for :func:`bot.placeholders.only_entities`).
    """
    off_topic = prediction.oos_class and not entities  # "tell me a joke" after an answer stays off topic
    answered = previous is not None and previous.decision is not None and previous.decision.route == Route.ANSWER
    asked = answered and (previous.reply or "").rstrip().endswith("?")
    unclear = ((prediction.oos_score > threshold and not off_topic)
               or (prediction.intent == AFFIRM and (asked or bool(entities)))
               or _unclear_entity(prediction, entities, text))
    if not (unclear and answered and previous.decision.intent):
        return None
    if combined is not None and combined.oos_score <= threshold and not is_small_talk(combined.intent):
        return combined, f"classified with the previous message (turn {previous.index})"
    if entities:
        kept = Prediction(previous.decision.intent, prediction.confidence, prediction.top_k, threshold)
        return kept, (f"kept the intent of turn {previous.index}: the message gives "
                      f"{', '.join(k.replace('_', ' ') for k in sorted(entities))}")
    return None


class Router:
    """Composes classifier, generator, placeholder filling and the conversation store.

    Args:
        models: ``current() -> (classifier, generator)`` (:class:`bot.interfaces.Models`, e.g.
            :mod:`bot.models`), asked once at the start of each turn, so a promoted version
            answers from the next turn on; the two meet :class:`bot.interfaces.Classifier` and
            :class:`bot.interfaces.Generator`.
        store: a :class:`bot.store.ConversationStore`.
        profile: company profile (slot name -> value), see :mod:`bot.placeholders`.
        config: routing policy.
        redact: store the customer's text and the reply with personal data redacted
            (:mod:`bot.redaction`); the models still see the original text.
        redact_regions: regions whose national phone formats redaction recognises.
        max_chars: customer texts are cut to this many characters (:func:`bot.text.normalise`).
        handoff: human handoff settings (default :class:`bot.settings.HandoffConfig`).
        hours: the company's working hours (:func:`bot.handoff.load_working_hours`); None: always open.
        answers: the approved answers of each replies version (:class:`bot.answers.AnswerLibrary`);
            None, or a version trained without retrieval: replies are generated from the prompt alone.
        answers_config: retrieval thresholds and the safety net (default :class:`bot.settings.AnswersConfig`).

    Attributes:
        inbox: the agents' side of handoffs (:class:`bot.handoff.Inbox`) on the same store.
    """

    def __init__(self, models: Models, store, profile: dict[str, str], config: RouterConfig, redact: bool = True,
                 redact_regions=PHONE_REGIONS, max_chars: int = MAX_CHARS,
                 handoff: HandoffConfig | None = None, hours: WorkingHours | None = None,
                 answers: AnswerLibrary | None = None, answers_config: AnswersConfig | None = None):
        self.models = models
        self.store = store
        self.profile = profile
        self.config = config
        self.redact = redact
        self.redact_regions = tuple(redact_regions)
        self.max_chars = max_chars
        self.queue = GenerationQueue(config.max_concurrent_generations)
        self.answers, self.answers_config = answers, answers_config or AnswersConfig()
        self.inbox = Inbox(store, profile, handoff or HandoffConfig(), hours, redact)

    def new_conversation(self, channel: str | None = None, client: str | None = None,
                         token_hash: str | None = None) -> str:
        """Start a conversation; returns its id (see :meth:`bot.store.ConversationStore.new_conversation`)."""
        return self.store.new_conversation(channel, client, token_hash)

    def respond(self, conversation_id: str, text: str) -> Iterator[ReplyChunk]:
        """Handle one customer message; yields the growing reply, the last chunk with its Turn.

        Raises:
            SupportbotError: unknown conversation id (from the store).
        """
        return self._turn(conversation_id, text, requested_human=False)

    def request_human(self, conversation_id: str) -> Iterator[ReplyChunk]:
        """The customer pressed "talk to a human": a handoff turn with an empty user text."""
        return self._turn(conversation_id, "", requested_human=True)

    def updates(self, conversation_id: str, after: int = -1) -> list[Turn]:
        """The conversation's complete turns with an index above ``after``, first first; a
        customer waiting too long for an agent is told so first (:meth:`bot.handoff.Inbox.notify_overdue`).
        Chat pages and REST clients poll this for agents' replies.

        Raises:
            SupportbotError: unknown conversation id.
        """
        self.inbox.notify_overdue(conversation_id)
        return [turn for turn in self.store.conversation(conversation_id)
                if turn.index > after and turn.status == "complete"]

    def feedback(self, turn_id: int, rating: int, comment: str | None = None) -> int:
        """Store a customer's thumbs up (+1), down (-1) or its withdrawal (0) for a turn; the
        comment is normalised and redacted like a message. Returns the feedback id.

        Raises:
            SupportbotError: see :meth:`bot.store.ConversationStore.add_feedback`.
        """
        return self.store.add_feedback(turn_id, rating, self._stored(self._normal(comment).text)[0] or None)

    def owner(self, conversation_id: str) -> Owner:
        """Who created a conversation (channel, client, token digest), for the channels' access checks.

        Raises:
            SupportbotError: unknown conversation id.
        """
        return self.store.owner(conversation_id)

    def ratings(self, conversation_id: str) -> dict[int, int]:
        """Turn id -> the customer's current rating (+1 or -1) of the conversation's rated turns.

        Raises:
            SupportbotError: unknown conversation id.
        """
        return self.store.ratings(conversation_id)

    def open_handoff(self, conversation_id: str) -> Handoff | None:
        """The handoff that waits for or is held by a person, else None."""
        return self.store.open_handoff(conversation_id)

    def turn_of(self, conversation_id: str, turn_id: int) -> Turn:
        """Turn ``turn_id``, which must belong to the conversation.

        Raises:
            SupportbotError: no such turn in that conversation.
        """
        try:
            turn = self.store.turn(turn_id)
        except SupportbotError:
            turn = None
        if turn is None or turn.conversation_id != conversation_id:
            raise SupportbotError(f"no turn {turn_id} in conversation {conversation_id}")
        return turn

    def _normal(self, text: str | None):
        return normalise(text, self.max_chars)

    def _stored(self, text: str, allowed: tuple[str, ...] = ()) -> tuple[str, dict[str, int]]:
        """Text as it is logged, with what was redacted per tag: redacted when configured (the
        ``allowed`` values, the company's own, stay), then cut again (a tag such as ``<EMAIL>``
        may be longer than what it replaces)."""
        if not self.redact:
            return text, {}
        redacted = redact(text, self.redact_regions, allowed=allowed)
        return self._normal(redacted.text).text, redacted.counts

    def _turn(self, conversation_id: str, text: str, requested_human: bool) -> Iterator[ReplyChunk]:
        started = time.perf_counter()
        normal = self._normal(text)
        text = normal.text
        stored, redacted = self._stored(text)
        turn = self.store.start_turn(conversation_id, stored, normal.changes, redacted)
        known = self.store.turn_context(conversation_id, self.config.history_turns)  # the turn's one read
        classifier, generator = self.models.current()
        prediction = classifier.predict([for_classifier(text)])[0] if text.strip() else None
        # a bare "88213" answers the bot's question for a number, asked in one of its last two replies
        entities = extract_entities(text, [reply for _, reply in known.history[-2:]])
        held, acknowledgement = known.handoff, None
        if held is not None:  # a person has it: never answer, log the message for the agent
            code, reason = ((Reason.HELD_BY_AGENT, f"held by agent {held.agent}") if held.agent
                            else (Reason.WAITING_FOR_AGENT, "waiting for an agent"))
            acknowledgement = self.inbox.acknowledgement(held, known.waiting_position)  # waiting: "passed on", not on every message
            if acknowledgement is not None:
                reason = f"{reason}; {acknowledgement[1]}"
            decision = Decision(Route.HUMAN, reason, prediction.intent if prediction else None, classifier.threshold,
                                code=code)
        elif requested_human:
            decision = Decision(Route.HANDOFF, "customer pressed 'talk to a human'", None, classifier.threshold,
                                code=Reason.PRESSED_HUMAN)
        else:
            decided_on, context = prediction, None
            if prediction is not None and self.config.use_context:
                found = self._follow_up(classifier, known.previous, text, prediction, entities)
                if found is not None:
                    decided_on, context = found
            decision = decide(text, decided_on, classifier.threshold, known.fallbacks_in_a_row, self.config)
            if context is not None:
                decision = replace(decision, reason=f"{decision.reason} ({context})", context=context)
        reply, missing = "", []
        told_off_hours = False
        answers, found, approved = None, [], None
        if decision.route == Route.ANSWER and self.answers is not None and generator.replies_version:
            answers = self.answers.for_version(generator.replies_version)
        if answers is not None:  # bot/answers.py: retrieve approved answers, then the safety net
            # a follow-up decided with the previous message is looked up with it too ("yes", "order 4471")
            query = f"{known.previous.user_text} {text}" if decision.context and known.previous else text
            found = answers.search(decision.intent, query, live_version=known.answers_version)
            decision, approved = self._answer_plan(decision, found, entities,
                                                   known.previous.reply if known.previous else None)
        sources = [r.answer.reply for r in found] + [text, *(part for pair in known.history for part in pair),
                                                     *self.profile.values()]
        generating = decision.route == Route.ANSWER and approved is None
        if decision.route == Route.HANDOFF:
            handoff_reply, told_off_hours = self.inbox.handoff_reply()
            stream = (pair for pair in [(handoff_reply, [])])
        elif decision.route == Route.HUMAN:  # the agent answers; the bot at most acknowledges
            stream = (pair for pair in [(acknowledgement[0] if acknowledgement else "", [])])
        elif approved is not None:
            stream = (pair for pair in [self._fill(approved.reply, entities)])
        else:
            stream = self._reply_stream(generator, known.history, text, decision, entities,
                                        [r.answer.reply for r in found])
        try:
            for reply, missing in stream:
                if echoes_system_prompt(reply):  # bot/guard.py: never show or store the system prompt
                    stream.close()  # stops the generation
                    (reply, missing), decision = self._fill(NO_SAFE_REPLY, entities), guarded(decision)
                    break
                if generating and found and (strays := new_facts(reply, sources)):
                    stream.close()
                    decision, reply, missing, told_off_hours = self._strayed(
                        decision, found, entities, f"new facts {', '.join(sorted(strays))}")
                    break
                if generating and found and (loop := looping(reply, sources)):
                    stream.close()  # a decoding loop runs to the token cap: stop it now
                    decision, reply, missing, told_off_hours = self._strayed(decision, found, entities,
                                                                             f"repeats {loop}")
                    break
                if may_show_partial(reply):
                    yield ReplyChunk(reply)
            else:
                if generating and found and decision.route == Route.ANSWER:
                    similarity = self._source_similarity(answers, reply, found)
                    if similarity < self.answers_config.min_source_similarity:
                        decision, reply, missing, told_off_hours = self._strayed(
                            decision, found, entities, f"similarity to the approved answers {similarity:.2f} < "
                                                       f"{self.answers_config.min_source_similarity:.2f}")
        except GenerationFailed as exc:  # e.g. a remote backend down, slow or garbled: reply, log why
            log.warning("turn %s: generation failed: %s", turn.id, exc)
            (reply, missing) = self._fill(NO_SAFE_REPLY, entities)
            decision = replace(decision, reason=f"{decision.reason}; generation failed: {exc}")
        except GeneratorExit:  # the customer left mid-reply: the message is kept, marked for review
            stream.close()
            self.store.interrupt_turn(turn.id)
            raise
        stored_reply, reply_redacted = self._stored(reply, allowed=tuple(self.profile.values()))
        redacted = {tag: redacted.get(tag, 0) + reply_redacted.get(tag, 0) for tag in {**redacted, **reply_redacted}}
        finished = replace(
            turn, prediction=prediction, decision=decision, reply=stored_reply, missing_slots=missing,
            classifier_version=classifier.version,
            generator_version=generator.version if generating else None,  # a served approved answer: none
            latency_ms=(time.perf_counter() - started) * 1000.0, status="complete", redacted=redacted,
            retrieved=tuple(r.ref() for r in found), answers_version=answers.version if answers else None,
        )
        stored_turn = self.store.finish_turn(finished, hand_off=decision.route == Route.HANDOFF, notified=told_off_hours,
                                             acknowledged=acknowledgement is not None)
        yield ReplyChunk(reply, stored_turn, notice(stored_turn, self.max_chars))

    def _answer_plan(self, decision: Decision, found: list[Retrieved], entities, last_reply: str | None
                     ) -> tuple[Decision, object]:
        """The decision and, when no generation is needed, the approved answer to reply with:
        a near-identical request's answer as it is (``verbatim_score``); none close enough
        (``min_score``): the ``unsure`` rule (:class:`bot.settings.AnswersConfig`). An answer
        that, filled, is ``last_reply`` again ("yes" or "88213" to its question, the request
        repeated) is never sent twice word for word: the reply is generated from it."""
        planned, (decision, approved) = decision, self._approved_plan(decision, found)
        if approved is not None and self._fill(approved.reply, entities)[0] == last_reply:
            return replace(planned, reason=f"{planned.reason}; approved answer {approved.id} is the last reply "
                                           "again: generated from it instead"), None
        return decision, approved

    def _approved_plan(self, decision: Decision, found: list[Retrieved]) -> tuple[Decision, object]:
        config, best = self.answers_config, (found[0] if found else None)
        if best is not None and best.score >= config.verbatim_score:
            return replace(decision, reason=f"{decision.reason}; approved answer {best.answer.id} for a "
                                            f"near-identical request (similarity {best.score:.2f})",
                           code=Reason.APPROVED_ANSWER), best.answer
        if best is None or best.score < config.min_score:
            why = (f"no approved answer close enough (best {best.answer.id}: {best.score:.3f} < {config.min_score:.3f})"
                   if best else f"no approved answer for intent '{decision.intent}'")
            if config.unsure == "closest" and best is not None:
                return replace(decision, reason=f"{decision.reason}; {why}: the closest one",
                               code=Reason.NO_CLOSE_ANSWER), best.answer
            return replace(decision, route=Route.HANDOFF, reason=f"{decision.reason}; {why}: handed off",
                           code=Reason.NO_CLOSE_ANSWER), None
        return decision, None

    def _strayed(self, decision: Decision, found: list[Retrieved], entities, why: str):
        """The safety net for a generated reply that strayed from its approved answers: the
        closest one (filled) or a handoff, per ``answers_config.unsure``. Returns ``(decision,
        reply, missing slots, told the customer it is off hours)``."""
        best = found[0].answer
        if self.answers_config.unsure == "closest":
            reply, missing = self._fill(best.reply, entities)
            return (replace(decision, reason=f"{decision.reason}; the generated reply strayed ({why}): "
                                             f"approved answer {best.id} instead", code=Reason.STRAYED),
                    reply, missing, False)
        reply, told = self.inbox.handoff_reply()
        return (replace(decision, route=Route.HANDOFF, reason=f"{decision.reason}; the generated reply strayed "
                                                              f"({why}): handed off", code=Reason.STRAYED),
                reply, [], told)

    @staticmethod
    def _source_similarity(answers, reply: str, found: list[Retrieved]) -> float:
        """Highest cosine similarity of ``reply`` to the retrieved answers' replies."""
        vectors = embed(answers.encoder, [reply, *(r.answer.reply for r in found)])
        return float((vectors[1:] @ vectors[0]).max())

    def _follow_up(self, classifier: Classifier, previous: Turn | None, text: str, prediction: Prediction,
                   entities: dict[str, str]) -> tuple[Prediction, str] | None:
        """:func:`follow_up` with the combined prediction (the classifier runs again only for an
        unclear message after an answered turn)."""
        if not unclear_alone(prediction, classifier.threshold, entities, text):
            return None
        if previous is None or previous.decision is None or previous.decision.route != Route.ANSWER:
            return None
        combined = classifier.predict([for_classifier(f"{previous.user_text} {text}")])[0]
        return follow_up(prediction, classifier.threshold, previous, combined, entities, text)

    def _reply_stream(self, generator: Generator, history, text, decision, entities, references=()
                      ) -> Iterator[tuple[str, list[str]]]:
        if decision.route == Route.ANSWER:
            with self.queue.ticket() as ticket:
                yield from self._queue_messages(ticket)
                extra = {"references": list(references)} if references else {}
                with closing(generator.stream(history=history, user_text=text, intent=decision.intent,
                                              max_new_tokens=self.config.max_new_tokens, **extra)) as pieces:
                    yield from self._filled_stream(pieces, entities)
            return
        fixed = {
            Route.REPHRASE: EMPTY_REPLY if decision.code == Reason.EMPTY else REPHRASE_REPLY,
            Route.TEMPLATE: self.config.templates.get(decision.intent or "", ""),
            Route.FALLBACK: self.config.out_of_scope_reply,
            Route.SMALLTALK: self.config.small_talk.get(decision.intent or "", self.config.small_talk.get("smalltalk_other", "")),
        }[decision.route]
        yield self._fill(fixed, entities)

    @staticmethod
    def _queue_messages(ticket: Ticket) -> Iterator[tuple[str, list[str]]]:
        """While the ticket waits: :data:`QUEUE_MESSAGE` with its place; once served, an empty
        reply (shown as "…") so the message does not linger until the first sentence."""
        waited = False
        for position in ticket.positions():
            waited = True
            yield QUEUE_MESSAGE.format(position=position), []
        if waited:
            yield "", []

    def _filled_stream(self, pieces: Iterator[str], entities) -> Iterator[tuple[str, list[str]]]:
        """Fill placeholders in complete sentences only, so no half slot is ever shown; a reply
        cut at the token cap (finish reason ``"length"``) ends at its last complete sentence."""
        raw, finish = "", None
        while True:
            try:
                raw += next(pieces)
            except StopIteration as end:
                finish = end.value
                break
            parts = _SENTENCE_END.split(raw)
            if len(parts) > 1:
                done = raw[: len(raw) - len(parts[-1])]
                yield self._fill(done, entities)
        if finish == "length":
            raw = complete_sentences(raw)
        filled = fill(raw, self.profile, entities)
        if filled.needs_fallback:
            text, more = self._fill(NO_SAFE_REPLY, entities)
            yield text, filled.missing_slots + more
        else:
            yield filled.text, filled.missing_slots

    def _fill(self, reply: str, entities) -> tuple[str, list[str]]:
        filled = fill(reply, self.profile, entities)
        return filled.text, filled.missing_slots
