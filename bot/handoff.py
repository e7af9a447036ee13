"""Human handoff: working hours, the notices the customer sees, and the agents' actions.

A conversation handed off by the router (:func:`bot.router.decide`) gets a waiting
:class:`bot.store.Handoff` and appears in the agents' inbox (``ui/inbox.py``). From then on the
router never answers in it: customer messages are logged as ``human`` turns for the agent; while
no agent has taken it, a customer message is acknowledged (the message was passed on, the place in
line; at most once every ``[handoff] acknowledge_every_minutes``), the acknowledgement stored as the
turn's reply, and once an agent holds it the bot is silent. An agent *takes* it (the customer is told the agent's name), *replies* (``agent`` turns, redacted
like every turn, no model versions), and *hands it back* to the bot or *closes* it. A customer
who asks for a person outside working hours, or whose request no agent takes within
``[handoff] wait_minutes``, is told so with the company's contact details; the conversation stays
in the inbox. Every text the customer sees is a :class:`bot.settings.HandoffConfig` setting.

Working hours come from the company profile's ``[working_hours]`` table::

    [working_hours]
    timezone = "America/New_York"      # an IANA time zone
    monday = "08:00-20:00"             # one or more "HH:MM-HH:MM" ranges, comma-separated
    friday = "08:00-12:00, 13:00-20:00"
    # a day not listed is closed

A profile without the table means always open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.errors import SupportbotError
from bot.placeholders import fill
from bot.records import Turn
from bot.redaction import redact as redact_text
from bot.settings import HandoffConfig
from bot.text import normalise
from bot.store import ConversationStore, Handoff

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

MAX_AGENT_CHARS = 4000
"""Longer agent replies are refused."""


@dataclass(frozen=True)
class WorkingHours:
    """When agents work: per weekday (0 = Monday) a list of ``(start, end)`` local times, in
    ``zone``. A day with no ranges is closed."""

    zone: ZoneInfo
    ranges: dict[int, list[tuple[time, time]]] = field(default_factory=dict)

    def is_open(self, when: datetime | None = None) -> bool:
        """Whether ``when`` (timezone-aware; default now) falls in a working range."""
        local = (when or datetime.now(timezone.utc)).astimezone(self.zone)
        return any(start <= local.time() < end for start, end in self.ranges.get(local.weekday(), []))


def load_working_hours(path: str | Path) -> WorkingHours | None:
    """The ``[working_hours]`` table of the company profile at ``path``; None when it has none
    (always open).

    Raises:
        SupportbotError: the file cannot be read, the time zone is unknown, a key is not a
            weekday, or a range is not ``HH:MM-HH:MM`` with start before end; the message names
            the file and key.
    """
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("working_hours")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SupportbotError(f"company profile {path} cannot be read: {exc}") from None
    if table is None:
        return None
    where = f"company profile {path}: working_hours"
    if not isinstance(table, dict):
        raise SupportbotError(f"{where} must be a table")
    try:
        zone = ZoneInfo(str(table.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        raise SupportbotError(f"{where}.timezone: unknown time zone {table.get('timezone')!r}") from None
    ranges: dict[int, list[tuple[time, time]]] = {}
    for key, value in table.items():
        if key == "timezone":
            continue
        if key not in DAYS:
            raise SupportbotError(f"{where}.{key}: not a weekday (expected one of {', '.join(DAYS)} or timezone)")
        try:
            for part in str(value).split(","):
                start, end = (time.fromisoformat(bound.strip()) for bound in part.split("-"))
                if not start < end:
                    raise ValueError
                ranges.setdefault(DAYS.index(key), []).append((start, end))
        except ValueError:
            raise SupportbotError(f"{where}.{key}: {value!r} is not like \"08:00-20:00\" (start before end)") from None
    return WorkingHours(zone, ranges)


class Inbox:
    """The agents' side of handoffs, on one store; shared by the inbox page and the router.

    Args:
        store: the conversation store.
        profile: company profile (fills the notices' contact details).
        config: waiting times and the texts the customer sees (default :class:`bot.settings.HandoffConfig`).
        hours: working hours, None for always open.
        redact: redact personal data from agents' replies before they are stored.
    """

    def __init__(self, store: ConversationStore, profile: dict[str, str], config: HandoffConfig | None = None,
                 hours: WorkingHours | None = None, redact: bool = True):
        self.store = store
        self.profile = profile
        self.config = config or HandoffConfig()
        self.hours = hours
        self.redact = redact

    def notice(self, template: str, **names: str) -> str:
        """A notice with ``{name}`` fields and ``{{Slot}}`` placeholders filled (a sentence whose
        contact detail the profile lacks is dropped, :func:`bot.placeholders.fill`)."""
        for name, value in names.items():  # not str.format: "{{Slot}}" must keep its braces
            template = template.replace("{" + name + "}", value)
        return fill(template, self.profile, {}).text

    def open_now(self, when: datetime | None = None) -> bool:
        """Whether agents work at ``when`` (default now)."""
        return self.hours is None or self.hours.is_open(when)

    def handoff_reply(self) -> tuple[str, bool]:
        """The reply to a handoff turn and whether it already told the customer no one is there
        (outside working hours)."""
        if self.open_now():
            return self.notice(self.config.handoff_reply), False
        return self.notice(self.config.off_hours_reply), True

    def acknowledgement(self, handoff: Handoff, position: int, now: datetime | None = None
                        ) -> tuple[str, str] | None:
        """The reply to a customer message while ``handoff`` is open, with the words for the
        turn's reason, or None for no reply: an agent holds the conversation (the agent
        answers), or the customer was acknowledged less than ``acknowledge_every_minutes`` ago
        (:attr:`bot.store.Handoff.acknowledged_at`).

        The text is ``waiting_reply`` (``off_hours_waiting_reply`` outside working hours) with the
        conversation's place among the waiting ones.

        Args:
            handoff: the conversation's open handoff (as the turn read it).
            position: its place in line (:attr:`bot.store.TurnContext.waiting_position`, read
                with the turn's context).
            now: timezone-aware; default now.
        """
        now = now or datetime.now(timezone.utc)
        if handoff.agent is not None:
            return None
        recently = (now - timedelta(minutes=self.config.acknowledge_every_minutes)).isoformat(timespec="microseconds")
        if handoff.acknowledged_at is not None and handoff.acknowledged_at > recently:
            return None
        template = self.config.waiting_reply if self.open_now(now) else self.config.off_hours_waiting_reply
        return (self.notice(template, position=str(position)),
                f"acknowledged: passed on, number {position} in line")

    def notify_overdue(self, conversation_id: str | None = None) -> list[Turn]:
        """Tell each customer whose handoff waits longer than ``wait_minutes`` untaken that no
        agent is free (a ``notice`` turn, once per handoff); only ``conversation_id``'s when given.

        Returns:
            The notice turns logged now.
        """
        cutoff = (datetime.now(timezone.utc) - timedelta(minutes=self.config.wait_minutes)).isoformat(timespec="microseconds")
        if conversation_id is not None:
            handoff = self.store.open_handoff(conversation_id)
            waiting = [handoff] if handoff is not None else []
        else:
            waiting = self.store.handoffs()
        notices = []
        for handoff in waiting:
            if handoff.agent is None and handoff.notified_at is None and handoff.requested_at < cutoff:
                turn = self.store.notify_waiting(handoff.id, self.notice(self.config.no_agent_reply), cutoff)
                if turn is not None:
                    notices.append(turn)
        return notices

    def waiting(self) -> list[tuple[Handoff, float]]:
        """Open handoffs (waiting first, then held), each oldest request first, with the seconds
        since the request; overdue customers are notified first."""
        self.notify_overdue()
        now = datetime.now(timezone.utc)
        handoffs = sorted(self.store.handoffs(), key=lambda h: (h.agent is not None, h.requested_at, h.id))
        return [(h, (now - datetime.fromisoformat(h.requested_at)).total_seconds()) for h in handoffs]

    def take(self, conversation_id: str, agent: str) -> Handoff:
        """``agent`` takes the conversation; the customer sees the ``joined`` notice with the name.

        Raises:
            SupportbotError: unknown conversation, not waiting for a person, or held by another agent.
        """
        return self.store.take_handoff(conversation_id, agent, self.notice(self.config.joined, agent=agent))

    def reply(self, conversation_id: str, agent: str, text: str, admin: bool = False) -> Turn:
        """Store the agent's reply (redacted like every turn); the customer's chat shows it.

        Raises:
            SupportbotError: empty or too long (over :data:`MAX_AGENT_CHARS`), or the agent does
                not hold the conversation (see :meth:`bot.store.ConversationStore.agent_reply`).
        """
        text = normalise(text or "", max_chars=MAX_AGENT_CHARS + 1).text.strip()  # the boundary step of customers' text
        if not text:
            raise SupportbotError("the reply is empty")
        if len(text) > MAX_AGENT_CHARS:
            raise SupportbotError(f"the reply has {len(text)} characters; at most {MAX_AGENT_CHARS}")
        stored = redact_text(text).text if self.redact else text
        return self.store.agent_reply(conversation_id, agent, stored, admin=admin)

    def hand_back(self, conversation_id: str, agent: str, admin: bool = False) -> Handoff:
        """The bot answers the customer again.

        Raises:
            SupportbotError: the agent does not hold the conversation.
        """
        return self.store.end_handoff(conversation_id, agent, "handed back", self.notice(self.config.handed_back, agent=agent), admin)

    def close(self, conversation_id: str, agent: str, admin: bool = False) -> Handoff:
        """The agent is done; the conversation leaves the inbox (a later message goes to the bot).

        Raises:
            SupportbotError: the agent does not hold the conversation.
        """
        return self.store.end_handoff(conversation_id, agent, "closed", self.notice(self.config.closed, agent=agent), admin)
