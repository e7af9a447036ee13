"""Fill the ``{{Slot}}`` placeholders of a reply from the company profile and the customer's message.

Replies learnt from Bitext hold slots such as ``{{Customer Support Phone Number}}`` or
``{{Order History}}``. A slot never reaches the customer; each one is resolved in this order:

1. **profile**: the company profile (default ``bot/defaults/company_profile.toml``, setting ``profile``) has the slot's key: the name
   in snake case, a trailing "Anonymized" dropped (``{{Customer Support Phone Number}}`` ->
   ``customer_support_phone_number``), or an alias of it from the profile's ``[aliases]`` table;
2. **entity**: the slot names a number the customer gave (:data:`ENTITY_SLOTS`, e.g.
   ``{{Order Number Anonymized}}``, or a bare identifier like ``{{113542617735902}}``) and
   :func:`extract_entities` found one in the message;
3. **business fact** (phone numbers, e-mail addresses, hours, websites, chat, durations,
   percentages, numbered or long descriptive placeholders; see :func:`is_fact_slot`): only the
   company can state these, so the *sentence* holding the slot is dropped;
4. **personal value** (``... Anonymized``, an identifier, or an entity slot of kind 2: a name, a
   date, a number the customer did not give): the slot is removed with its lead-in ("with the
   number", "#"; "cancel order number {{Order Number}}" -> "cancel your order");
5. **UI label** (anything else, e.g. ``{{Order History}}``, ``{{Account Settings}}``: Bitext's
   slots are mostly button and page names): shown as its own words, "Order History".

Slots of kinds 3 and 4 are reported as missing. Stray ``{{``, ``}}`` and empty ``{{ }}`` are
removed, so the output never holds a double brace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from bot.errors import SupportbotError

OPEN, CLOSE = "{{", "}}"
"""The braces around a slot name."""

SLOT = re.compile(r"\{\{([^{}\n]{0,120})\}\}")
"""A well-formed slot; group 1 is its name (untrimmed, may be empty). The one slot pattern of the
project: :mod:`bot.slot_decoding`, :mod:`training.reply_data` and the evaluation use it through
:func:`find_slots` / :func:`slot_names`."""

ENTITY_SLOTS = {
    "order_number": "order_number", "order_id": "order_number", "purchase_id": "order_number",
    "purchase_number": "order_number", "invoice_number": "invoice_number",
    "invoice_id": "invoice_number", "bill_number": "invoice_number",
    "tracking_number": "tracking_number",
}
"""Slot key -> the :func:`extract_entities` key that fills it."""

FACT_WORDS = frozenset({
    "phone", "email", "availability", "hours", "time", "timeframe", "period", "days", "percentage",
    "eta", "url", "website", "app", "chat", "channel", "company",
})
"""A slot whose key has one of these words is a business fact (only the profile may fill it)."""

FACT_PHRASES = ("contact_information",)
"""Key fragments that also make a slot a business fact."""

MAX_LABEL_WORDS = 4
"""Longer slot names are descriptions of content to supply ("list of eligible situations"), facts."""

MIN_USEFUL_WORDS = 6
"""After a sentence was dropped, fewer words than this left means the reply is not worth sending."""

_NUMBER_VALUE = r"(?P<value>[A-Za-z]{0,5}[-#]?\d[\w-]{2,})"
_ENTITY_WORDS = (("order_number", "order|purchase"), ("invoice_number", "invoice|bill"), ("tracking_number", "tracking"))
ENTITY_PATTERNS = {
    key: re.compile(rf"\b(?:{words})(?:\s+(?:number|no\.?|id|#))?\s*(?:is\s+|:\s*|#\s*)?{_NUMBER_VALUE}",
                    re.IGNORECASE)
    for key, words in _ENTITY_WORDS
}
"""Entity key -> pattern finding it in a customer message (the value must hold a digit)."""
_ASKED_FOR = {key: re.compile(rf"\b(?:{words})\s+(?:number|no\.?|id|#)", re.IGNORECASE) for key, words in _ENTITY_WORDS}
"""Entity key -> how a bot reply asks for it ("may I have the order number?")."""
_BARE_VALUE = re.compile(r"(?<![\w-])#?(?P<value>[A-Za-z]{0,5}-?\d[\w-]*\d[\w-]*)(?![\w-])")

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_NOT_SENTENCE_ENDS = frozenset({"e.g.", "i.e.", "mr.", "mrs.", "ms.", "dr.", "no.", "vs.", "approx."})
_LEAD_IN = re.compile(
    r"(?:(?:\s+associated)?\s+(?:with|bearing|labell?ed|identified\s+as)(?:\s+(?:the|your))?"
    r"(?:\s+(?:order|purchase|reference|invoice|bill|tracking))?(?:\s+(?:number|id|no\.?))?"
    r"|(?P<space>^|\s+)(?:(?P<det>the|your|this|that|specific)\s+)?(?P<what>order|purchase|invoice|bill)"
    r"\s*(?:number|id|no\.?|#)"
    r"|\s*#|\s+no\.)?\s*$", re.IGNORECASE)
"""What leads into a personal value that is removed: dropped with it ("with the number",
"associated with", "identified as", "#"), or, for "the order number", left as the order ("cancel order number {{Order Number}}"
-> "cancel your order", "Your order #{{Order Number}}" -> "Your order"): :func:`_lead_in`."""
_LIST_ITEM = re.compile(r"(\s*)(\d{1,3})(?=\.\s)")
_ANONYMIZED = re.compile(r"\banonymized$", re.IGNORECASE)
_BARE_ANONYMIZED = re.compile(r"\{\{[^{}\n]{0,120}\}\}|(?P<bare>\b(?:[A-Z][A-Za-z]*[ \t]+){1,2}Anonymized\b)")
"""A slot that lost its braces (a generated ``Purchase Number Anonymized``, group ``bare``; a
slot with braces matches too, to be left alone): resolved as the slot it stands for."""
_WORD = re.compile(r"[^\W\d_]{2,}")
_TIDY = (
    (re.compile(r"(?<=\S)[ \t]{2,}"), " "),
    (re.compile(r"[ \t]+([,.;:!?)])"), r"\1"),
    (re.compile(r"\(\s*\)"), ""),
    (re.compile(r"[,;:]+(?=\s*(?:[,.;:!?]|$))"), ""),
    (re.compile(r"^(\s*(?:[-*]|\d+\.)?\s*)[,;:]\s*"), r"\1"),
)


@dataclass(frozen=True)
class Filled:
    """A reply with its placeholders resolved.

    Attributes:
        text: what the customer may see; never holds ``{{`` or ``}}``.
        missing_slots: names of the slots the profile and message could not fill (their sentence
            was dropped or their value removed), in order of first appearance.
        needs_fallback: nothing useful is left (empty, or under :data:`MIN_USEFUL_WORDS` words
            after a sentence was dropped): the caller should send a fallback reply instead.
    """

    text: str
    missing_slots: list[str] = field(default_factory=list)
    needs_fallback: bool = False


def find_slots(text: str) -> list[str]:
    """The slot names in ``text``, trimmed, in order (``"see {{ Order Number }}"`` -> ``["Order Number"]``)."""
    return [name for name in (raw.strip() for raw in SLOT.findall(text)) if name]


def slot_names(texts: Iterable[str]) -> set[str]:
    """Every slot name found in ``texts`` (e.g. ``{"Order Number"}``)."""
    return {name for text in texts for name in find_slots(text)}


def slot_key(name: str) -> str:
    """The profile key of a slot name: snake case, a trailing "anonymized" dropped.

    ``"Customer Support Phone Number"`` -> ``"customer_support_phone_number"``.
    """
    key = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    return re.sub(r"(?:^|_)anonymized$", "", key)


def is_identifier(name: str) -> bool:
    """A slot that is a bare value (``113542617735902``, a hex hash), not a name."""
    name = name.strip()
    return len(name) >= 4 and " " not in name and any(ch.isdigit() for ch in name)


def is_fact_slot(name: str) -> bool:
    """Whether a slot is a business fact only the company profile may fill (see module doc)."""
    key = slot_key(name)
    words = key.split("_")
    return (bool(FACT_WORDS.intersection(words)) or any(p in key for p in FACT_PHRASES)
            or len(words) > MAX_LABEL_WORDS or (len(words) > 1 and words[-1].isdigit()))


def load_profile(path: str | Path) -> dict[str, str]:
    """Read the company profile: a TOML file of ``key = "text"`` lines and an optional
    ``[aliases]`` table (``other_slot_key = "profile_key"``). Its ``[working_hours]`` table is
    read by :func:`bot.handoff.load_working_hours`, not here.

    Returns:
        Slot key -> text, aliases included; empty values are left out (the slot counts as missing).

    Raises:
        SupportbotError: the file is missing or not valid TOML, a value is not a string, or an
            alias names a key the profile lacks; the message names the file and the key.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SupportbotError(f"company profile {path} not found (set SUPPORTBOT_PROFILE)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SupportbotError(f"company profile {path} cannot be read: {exc}") from None
    data.pop("working_hours", None)
    aliases = data.pop("aliases", {})
    if not isinstance(aliases, dict):
        raise SupportbotError(f"company profile {path}: 'aliases' must be a table")
    _check_strings(path, data, "")
    _check_strings(path, aliases, "aliases.")
    profile = {slot_key(key): value.strip() for key, value in data.items() if value.strip()}
    for alias, target in aliases.items():
        if slot_key(target) not in profile:
            raise SupportbotError(
                f"company profile {path}: alias 'aliases.{alias}' names '{target}', which has no value"
            )
        profile.setdefault(slot_key(alias), profile[slot_key(target)])
    return profile


def _check_strings(path: Path, table: dict, prefix: str) -> None:
    for key, value in table.items():
        if not isinstance(value, str):
            raise SupportbotError(
                f"company profile {path}: key '{prefix}{key}' must be a string, not {type(value).__name__}"
            )


def extract_entities(user_text: str, asked: Sequence[str] = ()) -> dict[str, str]:
    """Numbers the customer gave: ``order_number``, ``invoice_number``, ``tracking_number``.

    ``"where is order 113542617735902?"`` -> ``{"order_number": "113542617735902"}``;
    ``"invoice #INV-2231"`` -> ``{"invoice_number": "INV-2231"}``. The first of each kind
    counts; a value must contain a digit.

    Args:
        user_text: the customer's message.
        asked: the bot's latest replies, oldest first. When the newest that ends with a
            question asks there for one kind of number ("may I have the order number?"), a bare
            value with two or more digits in a message that names none is that number:
            ``"88213"``, ``"it's #88213"``.
    """
    found = {}
    for key, pattern in ENTITY_PATTERNS.items():
        match = pattern.search(user_text or "")
        if match:
            found[key] = match.group("value").rstrip("-")
    question = next((reply.rstrip() for reply in reversed(asked) if reply.rstrip().endswith("?")), "")
    if not found and question:
        last = _SENTENCE_BREAK.split(question.splitlines()[-1])[-1]
        kinds = [key for key, pattern in _ASKED_FOR.items() if pattern.search(last)]
        bare = _BARE_VALUE.search(user_text or "")
        if len(kinds) == 1 and bare:
            found[kinds[0]] = bare.group("value")
    return found


_FILLER = re.compile(r"\b(?:it'?s|it|is|my|the|this|that|here|ok(?:ay)?|yes|yeah|sure|and|please|pls|thanks?|"
                     r"thank you|number|no|nr|id|ref(?:erence)?|order|invoice|tracking)\b|[#:.,;!?()-]", re.IGNORECASE)
"""Words a message that only gives a number is made of besides the number ("it's order #4471")."""


def only_entities(user_text: str, entities: Mapping[str, str]) -> bool:
    """True when ``user_text`` gives ``entities`` (from :func:`extract_entities`) and nothing
    else but filler words (:data:`_FILLER`): ``"order 3310"``, ``"it's #A-2231"``; False for
    ``"cancel order 3310"`` or when ``entities`` is empty."""
    rest = user_text or ""
    for value in entities.values():
        rest = rest.replace(value, " ")
    return bool(entities) and not _FILLER.sub(" ", rest).strip()


def fill(reply: str, profile: Mapping[str, str], entities: Mapping[str, str] | None = None) -> Filled:
    """Resolve every ``{{Slot}}`` in ``reply`` (rules in the module doc).

    Args:
        reply: generated or template text.
        profile: slot key -> text, e.g. from :func:`load_profile` (keys are normalised with
            :func:`slot_key`, so ``"Customer Support Phone Number"`` works too).
        entities: from :func:`extract_entities`; None for none.

    Returns:
        :class:`Filled`; its text never holds ``{{`` or ``}}``.
    """
    resolver = _Resolver(profile, entities or {})
    reply = _BARE_ANONYMIZED.sub(lambda m: f"{{{{{m['bare']}}}}}" if m["bare"] else m[0], reply)
    lines = [resolver.line(line) for line in reply.split("\n")]
    kept = [line for line in lines if line is not None]
    if len(kept) < len(lines):
        kept = _renumber(kept)
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    text = _strip_braces(text)
    words = len(_WORD.findall(text))
    needs_fallback = words == 0 or (resolver.dropped > 0 and words < MIN_USEFUL_WORDS)
    return Filled(text, resolver.missing, needs_fallback)


def _strip_braces(text: str) -> str:
    """``text`` without any ``{{`` or ``}}`` (stray ones, or ones a value brought in)."""
    if "{{" not in text and "}}" not in text:
        return text
    while "{{" in text or "}}" in text:
        text = text.replace("{{", "").replace("}}", "")
    return "\n".join(re.sub(r"(?<=\S)[ \t]{2,}", " ", line).rstrip() for line in text.split("\n")).strip()


def _renumber(lines: list[str]) -> list[str]:
    """Number each run of ``1.``-style list lines consecutively again (after lines were dropped)."""
    out, expected = [], None
    for line in lines:
        match = _LIST_ITEM.match(line)
        if match is None:
            expected = None if line.strip() else expected
            out.append(line)
            continue
        expected = int(match.group(2)) if expected is None else expected
        out.append(f"{match.group(1)}{expected}{line[match.end(2):]}")
        expected += 1
    return out


def _sentences(line: str) -> list[str]:
    """``line`` cut after each sentence end (never inside a slot); the pieces join back to it."""
    inside = [match.span() for match in SLOT.finditer(line)]
    pieces, start = [], 0
    for gap in _SENTENCE_BREAK.finditer(line):
        before = line[start:gap.start()].split()
        last = before[-1].lower() if before else ""
        list_marker = len(before) == 1 and last[:-1].isdigit()
        if last in _NOT_SENTENCE_ENDS or list_marker or any(a < gap.start() < b for a, b in inside):
            continue
        pieces.append(line[start:gap.end()])
        start = gap.end()
    pieces.append(line[start:])
    return pieces


class _Resolver:
    """Resolves the slots of one reply, counting dropped sentences and missing slots."""

    def __init__(self, profile: Mapping[str, str], entities: Mapping[str, str]):
        self.profile = {slot_key(key): value for key, value in profile.items() if value and value.strip()}
        self.entities = {key: value for key, value in entities.items() if value}
        self.missing: list[str] = []
        self.dropped = 0

    def line(self, line: str) -> str | None:
        """The line with its slots resolved; None when every sentence of it was dropped."""
        if not line.strip():
            return line
        kept = [piece for piece in map(self.sentence, _sentences(line)) if piece is not None]
        return "".join(kept).rstrip() if kept else None

    def sentence(self, piece: str) -> str | None:
        """One sentence (with its trailing space) resolved, or None to drop it."""
        out, start, removed = "", 0, False
        for match in SLOT.finditer(piece):
            name = match.group(1).strip()
            value = self.value(name)
            if value is _DROP:
                self.dropped += 1
                return None
            out += piece[start:match.start()]
            if value is None:
                out, removed = _LEAD_IN.sub(_lead_in, out), True
            else:
                out += value
            start = match.end()
        out += piece[start:]
        return _tidy(out) if removed else out

    def value(self, name: str) -> str | object | None:
        """Text for the slot, None to remove it, or ``_DROP`` to drop its sentence."""
        key = slot_key(name)
        if not key:
            return None
        if key in self.profile:
            return self.profile[key]
        entity = "order_number" if is_identifier(name) else ENTITY_SLOTS.get(key)
        if entity in self.entities:
            return self.entities[entity]
        if entity or is_fact_slot(name) or _ANONYMIZED.search(name):
            self._missing(name)
            return _DROP if is_fact_slot(name) else None
        return name

    def _missing(self, name: str) -> None:
        if name not in self.missing:
            self.missing.append(name)


def _lead_in(match: re.Match) -> str:
    """What is left of a lead-in (:data:`_LEAD_IN`) whose slot is removed."""
    if not match["what"]:
        return ""
    det, what = match["det"], match["what"]
    if not det:  # "Order number {{Order Number}} was shipped." -> "Your order was shipped."
        det, what = ("Your", what.lower()) if what[0].isupper() else ("your", what)
    return f"{match['space'] and ' '}{det} {what}"


_DROP = object()
"""Marker: the slot's sentence must be dropped."""


def _tidy(sentence: str) -> str:
    """Clean the spaces and punctuation left where a slot was removed; keeps trailing space."""
    body = sentence.rstrip()
    for pattern, replacement in _TIDY:
        body = pattern.sub(replacement, body)
    return body + sentence[len(sentence.rstrip()):]
