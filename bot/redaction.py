"""Redact personal data from text before it is stored, exported or trained on.

Replaced with a tag in angle brackets: e-mail addresses ``<EMAIL>``, payment card numbers
``<CARD>`` (13-19 digits passing the Luhn check, ISO/IEC 7812), IBANs ``<IBAN>`` (ISO 13616
check digits) and phone numbers ``<PHONE>``. Checks come from python-stdnum
(https://arthurdejong.org/python-stdnum/). Numbers that the text calls an order, invoice,
purchase, tracking or reference number are kept: support needs them, and many order numbers
pass the Luhn check by chance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stdnum import iban, luhn

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b", re.IGNORECASE)
_DIGIT_RUN = re.compile(r"(?<![\w-])\+?\(?\d[\d ().-]{5,23}\d(?![\w-])")
_KEEP_CONTEXT = re.compile(
    r"(order|invoice|purchase|tracking|reference|ref|ticket|case|account id|id|no|number|#)\W{0,4}$",
    re.IGNORECASE,
)
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}")
_PHONE_CONTEXT = re.compile(r"(phone|call|tel|mobile|cell|whatsapp|sms|text me|reach me)\D{0,20}$", re.IGNORECASE)


@dataclass(frozen=True)
class Redacted:
    """Result of :func:`redact`: the text and how many items of each kind were replaced."""

    text: str
    counts: dict[str, int]


def redact(text: str) -> Redacted:
    """Replace e-mails, card numbers, IBANs and phone numbers in ``text``.

    Returns:
        :class:`Redacted` with the new text and ``counts`` per tag (``EMAIL``, ``CARD``,
        ``IBAN``, ``PHONE``), only for tags that occurred.
    """
    counts: dict[str, int] = {}

    def tag(name: str) -> str:
        counts[name] = counts.get(name, 0) + 1
        return f"<{name}>"

    text = _EMAIL.sub(lambda m: tag("EMAIL"), text)
    text = _IBAN.sub(lambda m: tag("IBAN") if iban.is_valid(m.group()) else m.group(), text)
    text = _DIGIT_RUN.sub(lambda m: _number(m, text, tag), text)
    return Redacted(text, counts)


def _number(match: re.Match, text: str, tag) -> str:
    raw = match.group()
    digits = re.sub(r"\D", "", raw)
    before = text[max(0, match.start() - 30): match.start()]
    if _DATE.fullmatch(raw) or (_KEEP_CONTEXT.search(before) and not _PHONE_CONTEXT.search(before)):
        return raw
    if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
        return tag("CARD")
    if 7 <= len(digits) <= 15 and (_PHONE_CONTEXT.search(before) or _looks_like_phone(raw)):
        return tag("PHONE")
    return raw


def _looks_like_phone(raw: str) -> bool:
    """An international ``+`` prefix, or digits in at least three groups (``555 010 4477``)."""
    return raw.startswith("+") or len(re.findall(r"\d+", raw)) >= 3
