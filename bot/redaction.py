"""Redact personal data from text before it is stored, exported or trained on.

Replaced with a tag in angle brackets:

* e-mail addresses ``<EMAIL>``;
* payment card numbers ``<CARD>``: 13-19 digits, with or without single spaces or dashes between
  them, passing the Luhn check (ISO/IEC 7812, ``stdnum.luhn``);
* IBANs ``<IBAN>``, with or without spaces, any case (ISO 13616 check digits, ``stdnum.iban``);
* phone numbers ``<PHONE>``, national and international, found by ``phonenumbers`` (the Python port
  of Google's libphonenumber, https://github.com/daviddrysdale/python-phonenumbers): a number
  valid in one of :data:`PHONE_REGIONS` (or in its own ``+`` country), or, after words such as
  "call" or "phone", a number of a possible length.

Checks come from python-stdnum (https://arthurdejong.org/python-stdnum/). What the text calls an
order, invoice, tracking, reference... number is kept: support needs it, and many such numbers
pass the Luhn check or look like a phone number. The nearest such word before a number decides
(``refund order 123 to card 4111...`` keeps the order and removes the card). Measured on the
corpus ``tests/data/redaction_corpus.jsonl`` by ``bench/redaction_corpus.py``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn

PHONE_REGIONS = ("US", "GB", "DE", "FR")
"""Regions whose national phone formats are recognised (ISO 3166 codes); numbers written with
``+`` and a country code are recognised for every country. The ``redact_regions`` setting."""

TAGS = ("EMAIL", "IBAN", "CARD", "PHONE")
"""Tags :func:`redact` may put in, in the order the kinds are searched."""

_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{1,4}){3,9}\b", re.IGNORECASE)
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_CONTEXT_WORDS = {
    "keep": r"order|invoice|purchase|tracking|track|reference|ref|ticket|case|shipment|parcel|package|"
            r"waybill|confirmation|code|customer id|account id|transaction|booking|reservation|serial|sn|"
            r"gtin|ean|isbn|sku|model|lot|rma|receipt|item|product|batch",
    "card": r"card|visa|mastercard|amex|discover|diners|jcb|maestro|cc|credit|debit",
    "phone": r"phone|call|tel|mobile|cell|whatsapp|sms|text|reach|ring|contact|number is|fax",
}
_KEEP_TAIL = r"(?:\s+(?:number|no\.?|id|#))?(?:\s+is)?"
"""A keep word's own "number is" ("my order number is 5521") is part of it, not a phone word."""
_CONTEXT = re.compile("|".join(rf"(?P<{kind}>\b(?:{words})\b{_KEEP_TAIL if kind == 'keep' else ''})"
                               for kind, words in _CONTEXT_WORDS.items()), re.IGNORECASE)
_LOOK_BACK = 40
"""Characters before a number searched for a context word."""


@dataclass(frozen=True)
class Redacted:
    """Result of :func:`redact`: the text and how many items of each kind were replaced."""

    text: str
    counts: dict[str, int]


def _context(text: str, start: int) -> str | None:
    """``"keep"``, ``"card"`` or ``"phone"``: the kind of the nearest context word in the
    :data:`_LOOK_BACK` characters before ``start``, None when there is none."""
    found = list(_CONTEXT.finditer(text[max(0, start - _LOOK_BACK):start]))
    return found[-1].lastgroup if found else None


def _iban_spans(text: str) -> list[tuple[int, int]]:
    """Spans of valid IBANs; a candidate that runs into the following words is shortened group by
    group until it validates (``ES91 2100 ... 1332 is my`` -> ``ES91 2100 ... 1332``)."""
    spans = []
    for match in _IBAN.finditer(text):
        candidate = match.group()
        while candidate:
            if iban.is_valid(candidate):
                spans.append((match.start(), match.start() + len(candidate)))
                break
            cut = candidate.rfind(" ")
            candidate = candidate[:cut] if cut > 0 else ""
    return spans


def _card_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in _CARD.finditer(text):
        context = _context(text, match.start())
        digits = re.sub(r"\D", "", match.group())
        if context == "keep" or not luhn.is_valid(digits):
            continue
        if context == "card" or digits[0] in "23456":  # no context: a card network's first digit
            spans.append(match.span())
    return spans


def _phone_spans(text: str, regions: Sequence[str]) -> list[tuple[int, int]]:
    """Phone numbers: after a phone word, any number of a possible length; elsewhere, a valid
    number whose digit groups follow its country's format (libphonenumber's ``STRICT_GROUPING``
    leniency, which turns down dates such as ``2024-05-01``); never after a keep or card word,
    never inside a word (``AB123456789GB``)."""
    spans = set()
    for region in regions:
        for leniency in (phonenumbers.Leniency.POSSIBLE, phonenumbers.Leniency.STRICT_GROUPING):
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency):
                context = _context(text, match.start)
                inside_word = text[max(0, match.start - 1):match.start].isalnum() or text[match.end:match.end + 1].isalnum()
                if inside_word or context in ("keep", "card"):
                    continue
                if context == "phone" or leniency == phonenumbers.Leniency.STRICT_GROUPING:
                    spans.add((match.start, match.end))
    return sorted(spans)


def redact(text: str, regions: Sequence[str] = PHONE_REGIONS, allowed: Collection[str] = ()) -> Redacted:
    """Replace e-mails, IBANs, card numbers and phone numbers in ``text`` by tags.

    Args:
        text: any text (a customer's message, a bot reply, a comment).
        regions: ISO 3166 region codes whose national phone formats count (see
            :data:`PHONE_REGIONS`).
        allowed: values that stay wherever they occur (the company's own phone number and
            e-mail address in a bot reply).

    Returns:
        :class:`Redacted` with the new text and ``counts`` per tag (of :data:`TAGS`), only for
        tags that occurred. Where two findings overlap, the one found first in :data:`TAGS`
        order is kept.
    """
    kept = [(m.start(), m.end()) for value in allowed if value for m in re.finditer(re.escape(value), text)]
    found: list[tuple[int, int, str]] = [(start, end, "") for start, end in kept]
    finders = (("EMAIL", lambda t: [m.span() for m in _EMAIL.finditer(t)]), ("IBAN", _iban_spans),
               ("CARD", _card_spans), ("PHONE", lambda t: _phone_spans(t, regions)))
    for tag, finder in finders:
        for start, end in finder(text):
            if all(end <= s or start >= e for s, e, _ in found):
                found.append((start, end, tag))
    counts: dict[str, int] = {}
    for start, end, tag in sorted(found, reverse=True):
        if not tag:  # an allowed value
            continue
        text = f"{text[:start]}<{tag}>{text[end:]}"
        counts[tag] = counts.get(tag, 0) + 1
    return Redacted(text, {tag: counts[tag] for tag in TAGS if tag in counts})
