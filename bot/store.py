"""The conversation store: every turn, its prediction, decision and reply, and customer feedback.

One SQLite file (default ``<home>/conversations.db``) in WAL mode, so readers (a review page)
never block the writer (the chat server). The schema is created and changed by code: each change
is a function registered on :data:`MIGRATIONS` (``sqlite_utils.migrations.Migrations``), which
records the migrations applied in the file itself (table ``_sqlite_migrations``); opening a store
applies the pending ones. Never edit an applied migration: add a new one.

Threads: a :class:`ConversationStore` may be shared by all threads of a server (Gradio runs
handlers in a thread pool). Each thread gets its own SQLite connection on first use; writes are
serialised by a lock inside the process and by ``BEGIN IMMEDIATE`` (with a busy timeout) across
processes.

A turn is written *before* any model runs (:meth:`ConversationStore.start_turn`, status
``incomplete``) and completed once (:meth:`ConversationStore.finish_turn`); a completed turn is
never overwritten. All timestamps are UTC ISO 8601 strings with microseconds, so they sort as text.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError
from sqlite_utils.migrations import Migrations

from bot.errors import SupportbotError
from bot.records import (FALLBACK_ROUTES, NOT_ANSWERED_ROUTES, STAFF_ROUTES, AnswerRef, Decision, Prediction, Route,
                         Turn)

BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's write to finish, in seconds."""

if TYPE_CHECKING:
    from bot.reviews import ReviewFilter

MIGRATIONS = Migrations("supportbot.conversations")
"""The schema's history; the names of the applied ones are stored in the database file."""


@MIGRATIONS(name="0001_conversations_turns_feedback")
def _create_tables(db: Database) -> None:
    db["conversations"].create(
        {"id": str, "started_at": str, "needs_human": int, "handoff_reason": str, "handoff_at": str},
        pk="id", not_null={"started_at", "needs_human"}, defaults={"needs_human": 0},
    )
    db["turns"].create(
        {
            "id": int, "conversation_id": str, "idx": int, "user_text": str,
            "intent": str, "confidence": float, "top3": str, "oos_score": float,
            "route": str, "reason": str, "decision_intent": str, "threshold": float,
            "reply": str, "missing_slots": str, "classifier_version": str,
            "generator_version": str, "latency_ms": float, "status": str,
            "started_at": str, "finished_at": str, "interrupted_at": str,
        },
        pk="id", foreign_keys=[("conversation_id", "conversations", "id")],
        not_null={"conversation_id", "idx", "user_text", "status", "started_at"},
    )
    db["feedback"].create(
        {"id": int, "turn_id": int, "rating": int, "comment": str, "created_at": str},
        pk="id", foreign_keys=[("turn_id", "turns", "id")],
        not_null={"turn_id", "rating", "created_at"},
    )
    db["conversations"].create_index(["started_at"])
    db["conversations"].create_index(["needs_human"])
    db["turns"].create_index(["conversation_id", "idx"], unique=True)
    for column in ("started_at", "route", "intent", "status"):
        db["turns"].create_index([column])
    for column in ("turn_id", "rating", "created_at"):
        db["feedback"].create_index([column])


@MIGRATIONS(name="0002_reviews")
def _create_reviews(db: Database) -> None:
    db["reviews"].create(
        {"id": int, "turn_id": int, "reviewer": str, "action": str, "intent": str, "reply": str,
         "note": str, "created_at": str},
        pk="id", foreign_keys=[("turn_id", "turns", "id")],
        not_null={"turn_id", "reviewer", "action", "created_at"},
    )
    for column in ("turn_id", "action", "created_at"):
        db["reviews"].create_index([column])


@MIGRATIONS(name="0003_turn_context")
def _add_turn_context(db: Database) -> None:
    db["turns"].add_column("context", str)


@MIGRATIONS(name="0004_handoffs_and_channels")
def _create_handoffs(db: Database) -> None:
    db["conversations"].add_column("channel", str)      # "web" (chat page) or "api" (REST)
    db["conversations"].add_column("client", str)       # the API key's name that created it, if any
    db["conversations"].add_column("token_hash", str)   # sha256 of the conversation token
    db["turns"].add_column("agent", str)                # staff member who wrote the reply
    db["handoffs"].create(
        {"id": int, "conversation_id": str, "reason": str, "requested_at": str, "notified_at": str,
         "agent": str, "taken_at": str, "first_reply_at": str, "ended_at": str, "ended_by": str,
         "outcome": str},
        pk="id", foreign_keys=[("conversation_id", "conversations", "id")],
        not_null={"conversation_id", "reason", "requested_at"},
    )
    for column in ("conversation_id", "requested_at", "ended_at"):
        db["handoffs"].create_index([column])
    # Conversations handed off before this migration wait in the inbox.
    db.execute("""INSERT INTO handoffs (conversation_id, reason, requested_at)
                  SELECT id, coalesce(handoff_reason, ''), coalesce(handoff_at, started_at)
                  FROM conversations WHERE needs_human = 1""")
@MIGRATIONS(name="0005_text_changes_redactions_undo_current_feedback")
def _record_changes_undo_and_current_feedback(db: Database) -> None:
    """Turns record what normalisation changed (``text_changes``, see :mod:`bot.text`) and what
    redaction removed (``redacted``, JSON counts per tag); a review may undo an earlier one
    (``supersedes``); two views give the current state: ``current_feedback`` (the latest rating
    of each turn, none when withdrawn) and ``effective_reviews`` (reviews neither undone nor
    undos)."""
    db["turns"].add_column("text_changes", str)
    db["turns"].add_column("redacted", str)
    db["reviews"].add_column("supersedes", int)  # the id of the review it undoes
    db["reviews"].create_index(["supersedes"])
    db.create_view("current_feedback", """
        SELECT f.* FROM feedback f
        WHERE f.id = (SELECT MAX(f2.id) FROM feedback f2 WHERE f2.turn_id = f.turn_id) AND f.rating != 0""")
    db.create_view("effective_reviews", """
        SELECT r.* FROM reviews r
        WHERE r.action != 'undo' AND NOT EXISTS (SELECT 1 FROM reviews u WHERE u.supersedes = r.id)""")


@MIGRATIONS(name="0006_reason_code")
def _add_reason_code(db: Database) -> None:
    """Turns record the decision's reason as a code too (:class:`bot.records.Reason`)."""
    db["turns"].add_column("reason_code", str)


@MIGRATIONS(name="0007_answers")
def _create_answers(db: Database) -> None:
    """Team-written approved answers (:mod:`bot.answers`), append-only: an ``add`` row is an
    answer, a ``remove`` row withdraws the answer it names (``removes``); turns record the
    approved replies retrieved for them and the answer store's version."""
    db["answers"].create(
        {"id": int, "action": str, "intent": str, "request": str, "reply": str, "origin": str,
         "removes": int, "actor": str, "note": str, "created_at": str},
        pk="id", not_null={"action", "actor", "created_at"},
    )
    db["answers"].create_index(["removes"])
    db["turns"].add_column("retrieved", str)  # JSON list of AnswerRef fields
    db["turns"].add_column("answers_version", str)


@MIGRATIONS(name="0008_handoff_acknowledged")
def _add_handoff_acknowledged(db: Database) -> None:
    """Handoffs record when a customer message was last acknowledged while waiting for an agent
    (:meth:`bot.handoff.Inbox.acknowledgement`)."""
    db["handoffs"].add_column("acknowledged_at", str)


def sql_routes(routes) -> str:
    """``routes`` (:class:`bot.records.Route` values) as an SQL list, e.g. ``('agent', 'notice')``."""
    return "(" + ", ".join(f"'{Route(route).value}'" for route in routes) + ")"


_STALE_CONVERSATIONS = """
SELECT c.id FROM conversations c
WHERE max(c.started_at,
          coalesce((SELECT max(coalesce(t.finished_at, t.started_at)) FROM turns t
                    WHERE t.conversation_id = c.id), ''),
          coalesce((SELECT max(f.created_at) FROM feedback f JOIN turns t ON t.id = f.turn_id
                    WHERE t.conversation_id = c.id), '')) < ?"""
"""Ids of the conversations whose last activity (start, turn start or finish, customer feedback)
is before the parameter, a UTC ISO 8601 time."""

_PRUNED_ROWS = {
    "handoffs": "conversation_id IN (SELECT id FROM temp.pruned)",
    "feedback": "turn_id IN (SELECT id FROM turns WHERE conversation_id IN (SELECT id FROM temp.pruned))",
    "reviews": "turn_id IN (SELECT id FROM turns WHERE conversation_id IN (SELECT id FROM temp.pruned))",
    "turns": "conversation_id IN (SELECT id FROM temp.pruned)",
    "conversations": "id IN (SELECT id FROM temp.pruned)",
}
"""Table -> ``WHERE`` clause of its rows that belong to the conversations in ``temp.pruned``,
in an order that deletes no row still referenced by another."""


def utc_now() -> str:
    """The current time, UTC ISO 8601 with microseconds (sorts correctly as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Handoff:
    """One request for a person in a conversation, from the handoff to its end.

    A handoff is *waiting* (no ``agent``), *held* (``agent`` set) or *ended* (``ended_at`` set,
    ``outcome`` ``"handed back"`` or ``"closed"``). Times are UTC ISO 8601.

    Attributes:
        id: the handoff row id.
        conversation_id: its conversation.
        reason: why the router handed off (the decision's reason).
        requested_at: when.
        notified_at: when the customer was told that no agent is free (outside working hours,
            or no agent took it in time), else None.
        agent: who holds the conversation, None while waiting.
        taken_at: when the agent took it.
        first_reply_at: the agent's first reply.
        ended_at: when it was handed back or closed.
        ended_by: the agent who ended it.
        outcome: ``"handed back"`` or ``"closed"``; None while open.
        acknowledged_at: when a customer message was last told, while waiting, that it was
            passed on (:meth:`bot.handoff.Inbox.acknowledgement`), else None.
    """

    id: int
    conversation_id: str
    reason: str
    requested_at: str
    notified_at: str | None = None
    agent: str | None = None
    taken_at: str | None = None
    first_reply_at: str | None = None
    ended_at: str | None = None
    ended_by: str | None = None
    outcome: str | None = None
    acknowledged_at: str | None = None


@dataclass(frozen=True)
class Owner:
    """Who may use a conversation through a channel.

    Attributes:
        channel: ``"web"`` (the chat page) or ``"api"`` (REST).
        client: name of the API key that created it; None for an anonymous client.
        token_hash: sha256 hex digest of the conversation token given at creation, or None.
    """

    channel: str | None
    client: str | None
    token_hash: str | None


@dataclass(frozen=True)
class TurnContext:
    """A conversation as the router sees it when a message comes in
    (:meth:`ConversationStore.turn_context`).

    Attributes:
        handoff: the handoff that waits for or is held by a person, else None.
        fallbacks_in_a_row: how many of the latest completed turns, counting back from the
            newest, were ``rephrase`` fallbacks (0 when the newest was not).
        previous: the last completed turn, or None.
        history: the last completed exchanges with a customer text and a reply, oldest first,
            as ``(customer text, reply)`` pairs (the generator's context).
        answers_version: :meth:`ConversationStore.answers_version` (the answer store reloads its
            live answers only when it changed, :meth:`bot.answers.AnswerStore.search`).
        waiting_position: the handoff's place in line while no agent has taken it
            (:meth:`ConversationStore.waiting_position`), else 0.
    """

    handoff: Handoff | None
    fallbacks_in_a_row: int
    previous: Turn | None
    history: list[tuple[str, str]]
    answers_version: str
    waiting_position: int = 0


@dataclass(frozen=True)
class Feedback:
    """A customer's rating of one turn.

    Attributes:
        id: the feedback row id.
        turn_id: the rated turn.
        rating: +1 (thumbs up), -1 (thumbs down) or 0 (the customer withdrew the rating).
        comment: free text, or None.
        created_at: UTC ISO 8601.
    """

    id: int
    turn_id: int
    rating: int
    comment: str | None
    created_at: str


def turn_from_row(row: dict[str, Any]) -> Turn:
    """A :class:`~bot.records.Turn` from a ``turns`` row (also used by :mod:`bot.reviews`)."""
    prediction = None
    if row["intent"] is not None:
        top_k = [(str(intent), float(prob)) for intent, prob in json.loads(row["top3"] or "[]")]
        prediction = Prediction(row["intent"], row["confidence"], top_k, row["oos_score"] or 0.0)
    decision = None
    if row["route"] is not None:
        decision = Decision(row["route"], row["reason"] or "", row["decision_intent"], row["threshold"],
                            row.get("context"), row.get("reason_code"))
    return Turn(
        conversation_id=row["conversation_id"], index=row["idx"], user_text=row["user_text"],
        prediction=prediction, decision=decision, reply=row["reply"],
        missing_slots=json.loads(row["missing_slots"] or "[]"),
        classifier_version=row["classifier_version"], generator_version=row["generator_version"],
        latency_ms=row["latency_ms"], status=row["status"], started_at=row["started_at"],
        finished_at=row["finished_at"], id=row["id"], agent=row.get("agent"),
        text_changes=tuple(filter(None, (row.get("text_changes") or "").split(","))),
        redacted=json.loads(row.get("redacted") or "{}"), interrupted=bool(row.get("interrupted_at")),
        retrieved=tuple(AnswerRef(**ref) for ref in json.loads(row.get("retrieved") or "[]")),
        answers_version=row.get("answers_version"),
    )


def _outcome_columns(turn: Turn) -> dict[str, Any]:
    """The columns :meth:`ConversationStore.finish_turn` writes, from a finished :class:`Turn`."""
    prediction, decision = turn.prediction, turn.decision
    return {
        "intent": prediction.intent if prediction else None,
        "confidence": prediction.confidence if prediction else None,
        "top3": json.dumps([list(pair) for pair in prediction.top_k[:3]]) if prediction else None,
        "oos_score": prediction.oos_score if prediction else None,
        "route": decision.route if decision else None,
        "reason": decision.reason if decision else None,
        "reason_code": decision.code if decision else None,
        "decision_intent": decision.intent if decision else None,
        "threshold": decision.threshold if decision else None,
        "context": decision.context if decision else None,
        "reply": turn.reply or "",
        "missing_slots": json.dumps(list(turn.missing_slots)),
        "classifier_version": turn.classifier_version,
        "generator_version": turn.generator_version,
        "latency_ms": turn.latency_ms,
        "redacted": json.dumps(turn.redacted) if turn.redacted else None,
        "retrieved": json.dumps([vars(ref) for ref in turn.retrieved]) if turn.retrieved else None,
        "answers_version": turn.answers_version,
    }


class ConversationStore:
    """Conversations, turns and feedback in one SQLite file; safe to share between threads.

    Opening creates the file and its folder when missing, switches it to WAL mode and applies
    pending migrations; reopening an up-to-date file changes nothing.

    Args:
        path: the SQLite file.

    Raises:
        SupportbotError: the file cannot be opened or is not a SQLite database.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.opened_at = utc_now()
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db.enable_wal()
            with self.writing() as db:
                MIGRATIONS.apply(db)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise SupportbotError(f"cannot open conversation store {self.path}: {exc}") from None

    @classmethod
    def existing(cls, path: str | Path) -> "ConversationStore":
        """Open a conversation log that must already exist (for export, prune): nothing is
        created or written in a file that is not one.

        Raises:
            SupportbotError: no file at ``path``, not an SQLite file, or one without the log's
                ``conversations`` and ``turns`` tables.
        """
        path = Path(path)
        if not path.is_file():
            raise SupportbotError(f"{path}: no conversation log there")
        try:
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise SupportbotError(f"cannot open conversation store {path}: {exc}") from None
        if not {"conversations", "turns"} <= tables:
            raise SupportbotError(f"{path}: not a supportbot conversation log (no conversations/turns tables)")
        return cls(path)

    # -- connections -------------------------------------------------------------------------

    @property
    def db(self) -> Database:
        """This thread's connection (opened on first use) as a sqlite-utils ``Database``."""
        db = getattr(self._local, "db", None)
        if db is None:
            # check_same_thread=False only so close() may close it from another thread; the
            # connection itself is used by the thread that opened it alone.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")  # deleted text is overwritten, not left in free pages
            db = self._local.db = Database(conn)
            with self._connections_lock:
                self._connections.append(conn)
        return db

    @contextmanager
    def writing(self) -> Iterator[Database]:
        """One write transaction: the process lock, then ``BEGIN IMMEDIATE``; rolled back on error."""
        db = self.db
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.rollback()
                raise
            db.commit()

    def close(self) -> None:
        """Close every thread's connection; the store must not be used afterwards."""
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def applied_migrations(self) -> list[str]:
        """Names of the schema migrations applied to this file, oldest first."""
        return [migration.name for migration in MIGRATIONS.applied(self.db)]

    # -- lookups -----------------------------------------------------------------------------

    def _row(self, db: Database, table: str, key: str | int, what: str) -> dict[str, Any]:
        try:
            return db[table].get(key)
        except NotFoundError:
            raise SupportbotError(f"unknown {what} {key!r} in {self.path}") from None

    def _conversation_row(self, conversation_id: str, db: Database | None = None) -> dict[str, Any]:
        return self._row(db or self.db, "conversations", conversation_id, "conversation")

    def turn(self, turn_id: int) -> Turn:
        """The turn with this id.

        Raises:
            SupportbotError: no such turn.
        """
        return turn_from_row(self._row(self.db, "turns", turn_id, "turn"))

    def _turns(self, where: str, params: list[Any], order_by: str, limit: int | None = None) -> list[Turn]:
        rows = self.db["turns"].rows_where(where, params, order_by=order_by, limit=limit)
        return [turn_from_row(row) for row in rows]

    # -- conversations -----------------------------------------------------------------------

    def new_conversation(self, channel: str | None = None, client: str | None = None,
                         token_hash: str | None = None) -> str:
        """Start a conversation; returns its id (32 hex characters).

        Args:
            channel: ``"web"`` or ``"api"`` (None: not recorded, e.g. the terminal chat).
            client: the API key name that creates it, if any.
            token_hash: sha256 hex digest of the conversation token handed to the client.
        """
        conversation_id = uuid.uuid4().hex
        with self.writing() as db:
            db["conversations"].insert({"id": conversation_id, "started_at": utc_now(), "needs_human": 0,
                                        "channel": channel, "client": client, "token_hash": token_hash})
        return conversation_id

    def owner(self, conversation_id: str) -> Owner:
        """The channel and client that created a conversation.

        Raises:
            SupportbotError: unknown conversation id.
        """
        row = self._conversation_row(conversation_id)
        return Owner(row["channel"], row["client"], row["token_hash"])

    def conversation(self, conversation_id: str) -> list[Turn]:
        """All turns of a conversation, first message first (incomplete ones included).

        Raises:
            SupportbotError: unknown conversation id.
        """
        self._conversation_row(conversation_id)
        return self._turns("conversation_id = ?", [conversation_id], "idx")

    def mark_handoff(self, conversation_id: str, reason: str, notified: bool = False) -> None:
        """Flag a conversation for a person and put it in the inbox (a waiting :class:`Handoff`);
        while a handoff is open, the first reason and time are kept.

        Args:
            notified: the customer was already told that no agent is free (outside working hours).

        Raises:
            SupportbotError: unknown conversation id.
        """
        with self.writing() as db:
            self._mark_handoff(db, conversation_id, reason, notified)

    def _mark_handoff(self, db: Database, conversation_id: str, reason: str, notified: bool) -> None:
        row = self._conversation_row(conversation_id, db)
        now = utc_now()
        if not row["needs_human"]:
            db["conversations"].update(conversation_id, {"needs_human": 1, "handoff_reason": reason, "handoff_at": now})
        if self._open_handoff(db, conversation_id) is None:
            db["handoffs"].insert({"conversation_id": conversation_id, "reason": reason, "requested_at": now,
                                   "notified_at": now if notified else None})

    @staticmethod
    def _open_handoff(db: Database, conversation_id: str) -> Handoff | None:
        rows = list(db["handoffs"].rows_where("conversation_id = ? AND ended_at IS NULL", [conversation_id],
                                              order_by="id DESC", limit=1))
        return Handoff(**rows[0]) if rows else None

    def open_handoff(self, conversation_id: str) -> Handoff | None:
        """The conversation's handoff that waits for or is held by an agent, else None."""
        return self._open_handoff(self.db, conversation_id)

    def waiting_position(self, handoff_id: int) -> int:
        """The place of a waiting handoff among those no agent has taken, oldest request first
        (1 = next; the inbox's order, :meth:`bot.handoff.Inbox.waiting`); 0 when it is not
        waiting (taken, ended or unknown)."""
        row = self.db.execute("""SELECT COUNT(*) FROM handoffs w, handoffs h
            WHERE h.id = ? AND h.agent IS NULL AND h.ended_at IS NULL AND w.agent IS NULL AND w.ended_at IS NULL
              AND (w.requested_at < h.requested_at OR (w.requested_at = h.requested_at AND w.id <= h.id))""",
                              [handoff_id]).fetchone()
        return row[0]

    def handoffs(self, open_only: bool = True) -> list[Handoff]:
        """Handoffs, oldest request first: the open ones (waiting and held), or all."""
        where = "ended_at IS NULL" if open_only else None
        return [Handoff(**row) for row in self.db["handoffs"].rows_where(where, order_by="requested_at, id")]

    def staff_turn(self, conversation_id: str, route: str, reply: str, reason: str, agent: str | None,
                   db: Database | None = None) -> Turn:
        """Log a complete turn that has no customer text: an agent's reply (route ``agent``) or a
        status notice (route ``notice``), ``route`` a :class:`~bot.records.Route`. No model versions, no prediction.

        Args:
            db: a connection inside an open :meth:`writing` transaction; default: one of its own.

        Raises:
            SupportbotError: unknown conversation id.
        """
        if db is None:
            with self.writing() as db:
                return self.staff_turn(conversation_id, route, reply, reason, agent, db)
        self._conversation_row(conversation_id, db)
        last = db.execute("SELECT MAX(idx) FROM turns WHERE conversation_id = ?", [conversation_id]).fetchone()[0]
        now = utc_now()
        turn_id = db["turns"].insert({
            "conversation_id": conversation_id, "idx": 0 if last is None else last + 1, "user_text": "",
            "route": route, "reason": reason, "reply": reply, "missing_slots": "[]", "agent": agent,
            "latency_ms": 0.0, "status": "complete", "started_at": now, "finished_at": now}).last_pk
        return turn_from_row(db["turns"].get(turn_id))

    def _held(self, db: Database, conversation_id: str, agent: str, admin: bool = False,
              taking: bool = False) -> Handoff:
        """The conversation's open handoff, held by ``agent`` (any agent for an ``admin``; or
        still waiting when ``taking``)."""
        handoff = self._open_handoff(db, conversation_id)
        if handoff is None:
            self._conversation_row(conversation_id, db)
            raise SupportbotError(f"conversation {conversation_id} is not waiting for a person")
        if handoff.agent is None and not taking:
            raise SupportbotError(f"conversation {conversation_id} is not taken yet: take it first")
        if handoff.agent not in (None, agent) and not admin:
            raise SupportbotError(f"conversation {conversation_id} is held by {handoff.agent}")
        return handoff

    def take_handoff(self, conversation_id: str, agent: str, notice: str) -> Handoff:
        """``agent`` takes the conversation's waiting handoff; ``notice`` (e.g. "Ana has joined")
        is logged as a ``notice`` turn in the same transaction.

        Raises:
            SupportbotError: unknown conversation, no open handoff, or another agent holds it.
        """
        with self.writing() as db:
            handoff = self._held(db, conversation_id, agent, taking=True)
            if handoff.agent == agent:
                return handoff
            db["handoffs"].update(handoff.id, {"agent": agent, "taken_at": utc_now()})
            self.staff_turn(conversation_id, Route.NOTICE, notice, f"taken by {agent}", agent, db)
            return Handoff(**db["handoffs"].get(handoff.id))

    def agent_reply(self, conversation_id: str, agent: str, text: str, admin: bool = False) -> Turn:
        """Log an agent's reply (already redacted) as an ``agent`` turn.

        Args:
            admin: an admin may write in a conversation another agent holds.

        Raises:
            SupportbotError: unknown conversation, no open handoff, not taken, or held by another agent.
        """
        with self.writing() as db:
            handoff = self._held(db, conversation_id, agent, admin)
            turn = self.staff_turn(conversation_id, Route.AGENT, text, f"reply by agent {agent}", agent, db)
            if handoff.first_reply_at is None:
                db["handoffs"].update(handoff.id, {"first_reply_at": turn.finished_at})
            return turn

    def end_handoff(self, conversation_id: str, agent: str, outcome: str, notice: str, admin: bool = False) -> Handoff:
        """End the held handoff: ``outcome`` ``"handed back"`` (the bot answers again) or
        ``"closed"``; ``notice`` is logged as a ``notice`` turn; the conversation no longer
        needs a person.

        Raises:
            SupportbotError: unknown outcome or conversation, no open handoff, not taken, or held
                by another agent (unless ``admin``).
        """
        if outcome not in ("handed back", "closed"):
            raise SupportbotError(f"outcome must be 'handed back' or 'closed', not {outcome!r}")
        with self.writing() as db:
            handoff = self._held(db, conversation_id, agent, admin)
            db["handoffs"].update(handoff.id, {"ended_at": utc_now(), "ended_by": agent, "outcome": outcome})
            db["conversations"].update(conversation_id, {"needs_human": 0})
            self.staff_turn(conversation_id, Route.NOTICE, notice, f"{outcome} by {agent}", agent, db)
            return Handoff(**db["handoffs"].get(handoff.id))

    def notify_waiting(self, handoff_id: int, notice: str, requested_before: str) -> Turn | None:
        """Tell the customer of a handoff still waiting since before ``requested_before`` (UTC
        ISO 8601) that no agent is free: ``notice`` is logged as a ``notice`` turn and the
        handoff marked notified, once (concurrent callers log it once).

        Returns:
            The notice turn, or None when the handoff was taken, ended, notified already or is
            more recent.
        """
        with self.writing() as db:
            rows = list(db["handoffs"].rows_where(
                "id = ? AND agent IS NULL AND ended_at IS NULL AND notified_at IS NULL AND requested_at < ?",
                [handoff_id, requested_before]))
            if not rows:
                return None
            turn = self.staff_turn(rows[0]["conversation_id"], Route.NOTICE, notice, "no agent took it in time", None, db)
            db["handoffs"].update(handoff_id, {"notified_at": turn.finished_at})
            return turn

    def needs_human(self, conversation_id: str) -> bool:
        """Whether the conversation was handed to a person.

        Raises:
            SupportbotError: unknown conversation id.
        """
        return bool(self._conversation_row(conversation_id)["needs_human"])

    def ratings(self, conversation_id: str) -> dict[int, int]:
        """Turn id -> the customer's latest rating (+1 or -1) of the conversation's rated turns.

        Raises:
            SupportbotError: unknown conversation id.
        """
        self._conversation_row(conversation_id)
        rows = self.db.query("""SELECT f.turn_id, f.rating FROM feedback f JOIN turns t ON t.id = f.turn_id
                                WHERE t.conversation_id = ? ORDER BY f.id""", [conversation_id])
        return {row["turn_id"]: row["rating"] for row in rows}

    def turn_context(self, conversation_id: str, history_turns: int) -> TurnContext:
        """What the router needs to know of a conversation for its next turn, in one read
        (see :class:`TurnContext`).

        Args:
            history_turns: how many exchanges ``history`` holds at most.

        Raises:
            SupportbotError: unknown conversation id.
        """
        self._conversation_row(conversation_id)
        done = "conversation_id = ? AND status = 'complete'"
        fallbacks = self.db.execute(f"""SELECT COUNT(*) FROM turns WHERE {done} AND route = '{Route.REPHRASE}'
            AND idx > COALESCE((SELECT MAX(idx) FROM turns WHERE {done} AND route != '{Route.REPHRASE}'), -1)""",
                                    [conversation_id, conversation_id]).fetchone()[0]
        previous = self._turns(done, [conversation_id], "idx DESC", 1)
        exchanges = self._turns(f"{done} AND user_text != '' AND reply != ''", [conversation_id], "idx DESC",
                                history_turns) if history_turns > 0 else []
        handoff = self.open_handoff(conversation_id)
        return TurnContext(handoff, fallbacks, previous[0] if previous else None,
                           [(turn.user_text, turn.reply or "") for turn in reversed(exchanges)],
                           self.answers_version(),
                           self.waiting_position(handoff.id) if handoff and handoff.agent is None else 0)

    # -- turns -------------------------------------------------------------------------------

    def start_turn(self, conversation_id: str, user_text: str, text_changes: tuple[str, ...] = (),
                   redacted: dict[str, int] | None = None) -> Turn:
        """Log a customer message as an ``incomplete`` turn, before any model runs.

        Args:
            conversation_id: the conversation.
            user_text: the message as it is to be stored (normalised and redacted by the router).
            text_changes: what normalisation changed in it (:data:`bot.text.CHANGES`).
            redacted: items redacted from it, per tag (:data:`bot.redaction.TAGS`).

        Returns:
            The turn with its ``id``, ``index`` (0 for the conversation's first) and ``started_at``.

        Raises:
            SupportbotError: unknown conversation id.
        """
        with self.writing() as db:
            self._conversation_row(conversation_id, db)
            last = db.execute(
                "SELECT MAX(idx) FROM turns WHERE conversation_id = ?", [conversation_id]
            ).fetchone()[0]
            row = {"conversation_id": conversation_id, "idx": 0 if last is None else last + 1,
                   "user_text": user_text, "status": "incomplete", "started_at": utc_now(),
                   "text_changes": ",".join(text_changes) or None,
                   "redacted": json.dumps(redacted) if redacted else None}
            turn_id = db["turns"].insert(row).last_pk
        return Turn(conversation_id, row["idx"], user_text, started_at=row["started_at"], id=turn_id,
                    text_changes=tuple(text_changes), redacted=dict(redacted or {}))

    def finish_turn(self, turn: Turn, hand_off: bool = False, notified: bool = False,
                    acknowledged: bool = False) -> Turn:
        """Store the outcome of a turn started with :meth:`start_turn` and mark it ``complete``.

        Written from ``turn``: prediction, decision, reply, missing slots, model versions,
        redaction counts (of the user text and the reply together) and latency (milliseconds;
        when None, the time since ``started_at``). Its id, conversation,
        index, user text and start time are the stored ones. With ``hand_off``, in the same
        transaction, the conversation is handed to a person for the decision's reason
        (:meth:`mark_handoff`, with ``notified``). With ``acknowledged`` (the reply told the
        customer, while waiting for an agent, that the message was passed on) the open handoff's
        ``acknowledged_at`` is set to the turn's finish time.

        Returns:
            The completed turn as stored.

        Raises:
            SupportbotError: ``turn.id`` is None or unknown, or that turn is already complete
                (a completed turn is never overwritten).
        """
        if turn.id is None:
            raise SupportbotError("finish_turn needs a turn from start_turn (its id is None)")
        with self.writing() as db:
            row = self._row(db, "turns", turn.id, "turn")
            if row["status"] == "complete":
                raise SupportbotError(f"turn {turn.id} is already complete; it is never overwritten")
            values = _outcome_columns(turn)
            values.update(status="complete", finished_at=utc_now())
            if values["latency_ms"] is None:
                elapsed = datetime.fromisoformat(values["finished_at"]) - datetime.fromisoformat(row["started_at"])
                values["latency_ms"] = elapsed.total_seconds() * 1000.0
            db["turns"].update(turn.id, values)
            if hand_off:
                self._mark_handoff(db, row["conversation_id"], turn.decision.reason if turn.decision else "", notified)
            if acknowledged and (handoff := self._open_handoff(db, row["conversation_id"])) is not None:
                db["handoffs"].update(handoff.id, {"acknowledged_at": values["finished_at"]})
            return turn_from_row(db["turns"].get(turn.id))

    def interrupt_turn(self, turn_id: int) -> bool:
        """Mark one ``incomplete`` turn as interrupted now (the customer left while its reply was
        streaming); it stays ``incomplete`` and waits in the review queue, marked.

        Returns:
            True when the turn was incomplete and is marked now.
        """
        with self.writing() as db:
            row = self._row(db, "turns", turn_id, "turn")
            if row["status"] != "incomplete" or row["interrupted_at"]:
                return False
            db["turns"].update(turn_id, {"interrupted_at": utc_now()})
            return True

    def mark_interrupted(self) -> list[int]:
        """Mark the turns left ``incomplete`` by earlier processes (started before this store
        was opened) as interrupted: they stay ``incomplete`` with ``finished_at`` None, and get
        ``interrupted_at``. Call once when a server starts.

        Returns:
            The ids of the turns marked now, oldest first.
        """
        with self.writing() as db:
            ids = [row["id"] for row in db["turns"].rows_where(
                "status = 'incomplete' AND interrupted_at IS NULL AND started_at < ?",
                [self.opened_at], order_by="id", select="id")]
            now = utc_now()
            for turn_id in ids:
                db["turns"].update(turn_id, {"interrupted_at": now})
        return ids

    # -- retention ---------------------------------------------------------------------------

    def prune(self, older_than_days: float, now: datetime | None = None, dry_run: bool = False) -> dict[str, int]:
        """Delete the conversations whose last activity is more than ``older_than_days`` days
        before ``now``, with their turns, feedback and reviews, in one transaction.

        Last activity is the latest of the conversation's start, its turns' start and finish
        times and the customer feedback on them (a reviewer's review does not keep a
        conversation). Deleted content is overwritten in the file (the store's connections use
        ``PRAGMA secure_delete``) and the write-ahead log is checkpointed and truncated
        afterwards, so the text does not linger on disk.

        Args:
            older_than_days: retention period in days (fractions allowed), > 0.
            now: the reference time (timezone-aware; naive means local time); default: now.
            dry_run: only count what would be deleted.

        Returns:
            Rows deleted (or that would be) per table: ``conversations``, ``turns``,
            ``feedback``, ``reviews``.

        Raises:
            SupportbotError: ``older_than_days`` is not a finite number > 0.
        """
        cutoff = _cutoff(older_than_days, now)
        with self.writing() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS pruned (id TEXT PRIMARY KEY)")
            db.execute("DELETE FROM temp.pruned")
            db.execute(f"INSERT INTO temp.pruned {_STALE_CONVERSATIONS}", [cutoff])
            counts = {table: db.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
                      for table, where in _PRUNED_ROWS.items()}
            if not dry_run:
                for table, where in _PRUNED_ROWS.items():
                    db.execute(f"DELETE FROM {table} WHERE {where}")
            db.execute("DELETE FROM temp.pruned")
        if not dry_run:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {table: counts[table] for table in ("conversations", "turns", "feedback", "reviews")}

    # -- feedback ----------------------------------------------------------------------------

    def add_feedback(self, turn_id: int, rating: int, comment: str | None = None) -> int:
        """Store a customer's thumbs up (+1), thumbs down (-1) or the withdrawal of their rating
        (0), with an optional comment. Every call adds a row (the history is kept); the turn's
        current rating is the latest one (:meth:`current_rating`, view ``current_feedback``).

        Returns:
            The feedback id.

        Raises:
            SupportbotError: ``rating`` is not +1, -1 or 0, the turn is unknown, or it has no
                reply yet (still incomplete).
        """
        if rating not in (1, -1, 0) or isinstance(rating, bool):
            raise SupportbotError(f"rating must be 1, -1 or 0 (withdrawn), not {rating!r}")
        with self.writing() as db:
            if self._row(db, "turns", turn_id, "turn")["status"] != "complete":
                raise SupportbotError(f"turn {turn_id} has no reply yet; it cannot be rated")
            row = {"turn_id": turn_id, "rating": rating, "comment": comment, "created_at": utc_now()}
            return db["feedback"].insert(row).last_pk

    def feedback_for(self, turn_id: int) -> list[Feedback]:
        """The feedback given on a turn, oldest first.

        Raises:
            SupportbotError: unknown turn id.
        """
        self._row(self.db, "turns", turn_id, "turn")
        rows = self.db["feedback"].rows_where("turn_id = ?", [turn_id], order_by="id")
        return [Feedback(**row) for row in rows]

    def latest_effective_review(self, turn_id: int | None = None, reviewer: str | None = None) -> dict[str, Any] | None:
        """The newest settling review in effect (view ``effective_reviews``: not undone, not an
        undo, not a skip) of the turn ``turn_id`` and/or by ``reviewer``; None when there is none."""
        clauses = ["action != 'skip'"] + [clause for clause, value in (("turn_id = ?", turn_id),
                                                                       ("reviewer = ?", reviewer)) if value is not None]
        params = [value for value in (turn_id, reviewer) if value is not None]
        rows = list(self.db.query(f"SELECT * FROM effective_reviews WHERE {' AND '.join(clauses)} "
                                  "ORDER BY id DESC LIMIT 1", params))
        return rows[0] if rows else None

    def current_rating(self, turn_id: int) -> int:
        """The turn's current rating: the latest feedback's (+1 or -1), 0 when none or withdrawn.

        Raises:
            SupportbotError: unknown turn id.
        """
        self._row(self.db, "turns", turn_id, "turn")
        row = self.db.execute("SELECT rating FROM current_feedback WHERE turn_id = ?", [turn_id]).fetchone()
        return row[0] if row else 0


    # -- approved answers (bot.answers) ------------------------------------------------------

    def add_answers(self, rows: list[dict[str, Any]], actor: str, origin: str) -> list[int]:
        """Store team-written answers in one transaction; returns their ids.

        Args:
            rows: dicts with ``intent``, ``reply`` and optionally ``request`` (checked by the caller).
            actor: who added them (a reviewer's name, ``"cli"``).
            origin: where they came from, e.g. the imported file's name or ``"added by hand"``.
        """
        now = utc_now()
        with self.writing() as db:
            return [db["answers"].insert({"action": "add", "intent": row["intent"], "request": row.get("request"),
                                          "reply": row["reply"], "origin": origin, "actor": actor,
                                          "created_at": now}).last_pk for row in rows]

    def remove_answer(self, answer_id: int, actor: str, note: str | None = None) -> int:
        """Withdraw team answer ``answer_id`` (a ``remove`` row names it; nothing is deleted);
        returns the ``remove`` row's id.

        Raises:
            SupportbotError: no such answer, or it is already withdrawn.
        """
        with self.writing() as db:
            row = next(db.query("SELECT * FROM answers WHERE id = ? AND action = 'add'", [answer_id]), None)
            if row is None:
                raise SupportbotError(f"no team answer a{answer_id}")
            if next(db.query("SELECT 1 FROM answers WHERE removes = ?", [answer_id]), None):
                raise SupportbotError(f"team answer a{answer_id} is already withdrawn")
            return db["answers"].insert({"action": "remove", "removes": answer_id, "actor": actor, "note": note,
                                         "created_at": utc_now()}).last_pk

    def team_answers(self) -> list[dict[str, Any]]:
        """The team answers in effect (added, not withdrawn), oldest first: ``id``, ``intent``,
        ``request``, ``reply``, ``origin``, ``actor``, ``created_at``."""
        return list(self.db.query(
            "SELECT id, intent, request, reply, origin, actor, created_at FROM answers a WHERE action = 'add' "
            "AND NOT EXISTS (SELECT 1 FROM answers r WHERE r.removes = a.id) ORDER BY id"))

    def answers_version(self) -> str:
        """A string that changes whenever an approved answer is added or withdrawn (a review, an
        undo, a team answer or its removal): ``r<last review id>.a<last answers row id>``."""
        reviews, answers = self.db.execute(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM reviews), (SELECT COALESCE(MAX(id), 0) FROM answers)").fetchone()
        return f"r{reviews}.a{answers}"

    def live_answer_rows(self) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        """What the answer store loads in one call: ``(answers_version(), settled_reviews(),
        team_answers())``, the version read first (so a later change is never missed)."""
        return self.answers_version(), self.settled_reviews(), self.team_answers()

    # -- reviews -----------------------------------------------------------------------------

    def review_queue(self, filters: ReviewFilter, low_confidence: float,
                     limit: int | None = None) -> list[tuple[Turn, int, int]]:
        """The turns not settled by a review (none in effect but ``skip``s) under ``filters``,
        as ``(turn, bucket, current rating)``; ``bucket`` as in :mod:`bot.reviews` (0 thumbs-down,
        1 interrupted, 2 not answered, 3 confidence below ``low_confidence``, 4 the rest). Order:
        fewest skips, bucket, rising confidence in bucket 3, then a fixed pseudo-random order."""
        where, params = _review_where(filters)
        rows = self.db.query(f"""SELECT t.*, {_bucket(low_confidence)} AS bucket,
              (SELECT COALESCE(MAX(rating), 0) FROM current_feedback f WHERE f.turn_id = t.id) AS rating,
              (SELECT COUNT(*) FROM effective_reviews r WHERE r.turn_id = t.id AND r.action = 'skip') AS skips
            FROM turns t WHERE {where}
            ORDER BY skips, bucket, CASE WHEN bucket = 3 THEN t.confidence END, (t.id * 2654435761) % 4294967296
            LIMIT ?""", params + [-1 if limit is None else limit])
        return [(turn_from_row(row), row["bucket"], row["rating"]) for row in rows]

    def review_counts(self, filters: ReviewFilter, low_confidence: float) -> dict[int, int]:
        """Bucket -> how many turns of :meth:`review_queue` are in it (buckets without turns left out)."""
        where, params = _review_where(filters)
        rows = self.db.query(f"SELECT {_bucket(low_confidence)} AS bucket, COUNT(*) AS n FROM turns t "
                             f"WHERE {where} GROUP BY bucket", params)
        return {row["bucket"]: row["n"] for row in rows}

    def add_review(self, turn_id: int, reviewer: str, action: str, intent: str | None = None,
                   reply: str | None = None, note: str | None = None, supersedes: int | None = None) -> int:
        """Store one review row (checked by :mod:`bot.reviews`); returns its id.

        Raises:
            SupportbotError: unknown turn id.
        """
        with self.writing() as db:
            self._row(db, "turns", turn_id, "turn")
            return db["reviews"].insert({"turn_id": turn_id, "reviewer": reviewer, "action": action,
                                         "intent": intent, "reply": reply, "note": note,
                                         "created_at": utc_now(), "supersedes": supersedes}).last_pk

    def reviews_of(self, turn_id: int) -> list[dict[str, Any]]:
        """The review rows of a turn (undos included), oldest first."""
        return list(self.db["reviews"].rows_where("turn_id = ?", [turn_id], order_by="id"))

    def settled_reviews(self) -> list[dict[str, Any]]:
        """For each turn with a customer text and a settling review in effect (not ``skip``),
        its latest one, oldest first: ``review_id``, ``action``, ``fixed_intent``,
        ``fixed_reply``, the turn's ``turn_id``, ``user_text``, ``intent``, ``decision_intent``,
        ``reply``, ``route`` and ``disliked`` (its current rating is a thumbs-down)."""
        return list(self.db.query("""SELECT r.id AS review_id, r.action, r.intent AS fixed_intent,
              r.reply AS fixed_reply, t.id AS turn_id, t.user_text, t.intent, t.decision_intent, t.reply, t.route,
              EXISTS (SELECT 1 FROM current_feedback f WHERE f.turn_id = t.id AND f.rating < 0) AS disliked
            FROM effective_reviews r JOIN turns t ON t.id = r.turn_id
            WHERE r.id = (SELECT MAX(id) FROM effective_reviews r2 WHERE r2.turn_id = r.turn_id AND r2.action != 'skip')
              AND t.user_text != ''
            ORDER BY r.id"""))

    # -- reports -----------------------------------------------------------------------------

    def turn_figures(self, by_day: bool = False) -> list[dict[str, Any]]:
        """Over the completed customer turns (no :data:`~bot.records.STAFF_ROUTES`): ``turns``,
        ``conversations``, ``fallback_rate`` (:data:`~bot.records.FALLBACK_ROUTES`) and
        ``handoff_rate`` (shares 0-1, None without turns); one row for the whole log, or with
        ``by_day`` one per UTC day with its ``day`` (YYYY-MM-DD), oldest first."""
        day = "substr(started_at, 1, 10) AS day, " if by_day else ""
        return list(self.db.query(f"""
            SELECT {day}COUNT(*) AS turns, COUNT(DISTINCT conversation_id) AS conversations,
                   AVG(route IN {sql_routes(FALLBACK_ROUTES)}) AS fallback_rate,
                   AVG(route = '{Route.HANDOFF}') AS handoff_rate
            FROM turns WHERE status = 'complete' AND route NOT IN {sql_routes(STAFF_ROUTES)}
            {"GROUP BY day ORDER BY day" if by_day else ""}"""))

    def rating_figures(self) -> dict[str, Any]:
        """``ratings`` (turns with a current rating) and ``up`` (the share of them that is +1, None without)."""
        return next(self.db.query("SELECT COUNT(*) AS ratings, AVG(rating > 0) AS up FROM current_feedback"))

    def intent_counts(self, limit: int, corrected: bool = False) -> list[tuple[str | None, int]]:
        """The most frequent predicted intents of completed turns, with their counts, most first;
        with ``corrected``, of the turns a review gave another intent (counted once per turn)."""
        if corrected:
            sql = """SELECT t.intent AS intent, COUNT(DISTINCT t.id) AS n FROM reviews r JOIN turns t ON t.id = r.turn_id
                     WHERE r.intent IS NOT NULL AND r.intent != COALESCE(t.intent, '')"""
        else:
            sql = "SELECT intent, COUNT(*) AS n FROM turns t WHERE status = 'complete' AND intent IS NOT NULL"
        rows = self.db.query(f"{sql} GROUP BY t.intent ORDER BY n DESC, t.intent LIMIT ?", [limit])
        return [(row["intent"], row["n"]) for row in rows]

    def handoff_figures(self) -> dict[str, Any]:
        """``waiting`` and ``held`` handoffs now, ``reply_seconds`` (per handoff with an agent's
        reply, seconds from the request to the first one) and ``closed_by_agents`` (conversations)."""
        figures = next(self.db.query("""
            SELECT COALESCE(SUM(agent IS NULL AND ended_at IS NULL), 0) AS waiting,
                   COALESCE(SUM(agent IS NOT NULL AND ended_at IS NULL), 0) AS held,
                   COUNT(DISTINCT CASE WHEN outcome = 'closed' THEN conversation_id END) AS closed_by_agents
            FROM handoffs"""))
        figures["reply_seconds"] = [row[0] for row in self.db.execute(
            "SELECT (julianday(first_reply_at) - julianday(requested_at)) * 86400.0 FROM handoffs "
            "WHERE first_reply_at IS NOT NULL")]
        return figures

    def export_rows(self) -> list[dict[str, Any]]:
        """Every turn, oldest first, as stored, with ``feedback``: its current rating (+1, -1, 0)."""
        return list(self.db.query("""
            SELECT t.conversation_id, t.idx, t.started_at, t.finished_at, t.user_text, t.intent, t.confidence,
                   t.oos_score, t.route, t.reason, t.reply, t.classifier_version, t.generator_version,
                   t.latency_ms, t.status, t.agent,
                   (SELECT COALESCE(MAX(rating), 0) FROM current_feedback f WHERE f.turn_id = t.id) AS feedback
            FROM turns t ORDER BY t.started_at, t.id"""))


def _bucket(low_confidence: float) -> str:
    """SQL over ``turns t``: the turn's review bucket (see :meth:`ConversationStore.review_queue`)."""
    return f"""CASE
      WHEN EXISTS (SELECT 1 FROM current_feedback f WHERE f.turn_id = t.id AND f.rating < 0) THEN 0
      WHEN t.status != 'complete' THEN 1
      WHEN t.route IN {sql_routes(NOT_ANSWERED_ROUTES)} THEN 2
      WHEN t.confidence < {float(low_confidence)!r} THEN 3
      ELSE 4 END"""


def _review_where(filters: ReviewFilter) -> tuple[str, list[Any]]:
    """``WHERE`` clauses over ``turns t`` and their parameters: the turns left to review under
    ``filters`` (:class:`bot.reviews.ReviewFilter`)."""
    clauses = ["(t.status = 'complete' OR t.interrupted_at IS NOT NULL)",  # interrupted turns are reviewed too
               f"(t.route IS NULL OR t.route NOT IN {sql_routes(STAFF_ROUTES)})",
               "NOT EXISTS (SELECT 1 FROM effective_reviews r WHERE r.turn_id = t.id AND r.action != 'skip')"]
    params: list[Any] = []
    for clause, value in (("t.started_at >= ?", filters.since), ("t.started_at < date(?, '+1 day')", filters.until),
                          ("t.intent = ?", filters.intent), ("t.route = ?", filters.route)):
        if value:
            clauses.append(clause)
            params.append(value)
    rated = {"down": "EXISTS (SELECT 1 FROM current_feedback f WHERE f.turn_id = t.id AND f.rating < 0)",
             "up": "EXISTS (SELECT 1 FROM current_feedback f WHERE f.turn_id = t.id AND f.rating > 0)",
             "none": "NOT EXISTS (SELECT 1 FROM current_feedback f WHERE f.turn_id = t.id)"}
    if filters.feedback in rated:
        clauses.append(rated[filters.feedback])
    return " AND ".join(clauses), params


def _cutoff(older_than_days: float, now: datetime | None) -> str:
    """The UTC ISO 8601 time ``older_than_days`` days before ``now`` (see :meth:`ConversationStore.prune`).

    Raises:
        SupportbotError: ``older_than_days`` is not a finite number > 0.
    """
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, (int, float)) \
            or not math.isfinite(older_than_days) or older_than_days <= 0:
        raise SupportbotError(f"the retention period must be a positive number of days, not {older_than_days!r}")
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    try:
        cutoff = now - timedelta(days=older_than_days)
    except OverflowError:  # further back than year 1: nothing is that old
        cutoff = datetime.min.replace(tzinfo=timezone.utc)
    return cutoff.isoformat(timespec="microseconds")
