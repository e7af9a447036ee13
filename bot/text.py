"""Customer text at the boundary: one normalisation, applied once, before anything else sees it.

Every channel (chat page, its API, feedback comments) passes text through :func:`normalise`
when it enters the router, so the classifier, the generator, the store and the pages all get text
that SQLite can store whole and a browser shows as typed:

* lone UTF-16 surrogates (half an emoji, as some clients send) become U+FFFD; a valid pair is
  joined into its character (Python's ``surrogatepass`` round trip through UTF-16);
* ``\\r\\n`` and ``\\r`` become ``\\n``; NUL and the other control characters (Unicode category
  ``Cc``) are dropped, except newline and tab;
* bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069, Unicode
  Standard Annex #9, https://www.unicode.org/reports/tr9/) are dropped, so no text shows reversed
  (the trick of CVE-2021-42574, "Trojan Source");
* the text is cut to :data:`MAX_CHARS` characters.

The original is not kept: what was removed cannot be stored safely. What was changed is recorded
on the turn (column ``text_changes``, :mod:`bot.store`).

Two readings of the normalised text serve the router's decision and never change what is stored:

* :func:`for_classifier`: emoji named in words (the ``emoji`` package's CLDR names, "👍" ->
  "thumbs up"), because the classifier's tokenizer reads an emoji as ``[UNK]``;
* :func:`has_words`: whether the text holds anything to classify at all (a word or a number).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import emoji

MAX_CHARS = 2000
"""Longer customer texts are cut to this many characters before any model or the store sees them."""

CHANGES = ("surrogate", "control", "bidi", "cut")
"""What :func:`normalise` may report, in this order: lone surrogates replaced, control characters
dropped, bidi controls dropped, text cut to :data:`MAX_CHARS`."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_LETTERS = re.compile(r"[^\W\d_]+")  # a run of letters, any script


@dataclass(frozen=True)
class Normalised:
    """Result of :func:`normalise`: the text and which of :data:`CHANGES` were applied."""

    text: str
    changes: tuple[str, ...] = ()


def _drop_controls(text: str) -> str:
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


def normalise(text: str | None, max_chars: int = MAX_CHARS) -> Normalised:
    """``text`` made safe to classify, store and show (see the module docstring).

    Args:
        text: what the customer sent; None counts as empty.
        max_chars: length cap in characters (code points), after the other steps.

    Returns:
        :class:`Normalised`; ``changes`` is empty when the text came through as it was (a
        ``\\r\\n`` line end made ``\\n`` does not count as a change).
    """
    text = text or ""
    changes = []
    if _SURROGATE.search(text):
        replaced = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        if replaced.count("\ufffd") > text.count("\ufffd"):  # not only pairs joined
            changes.append("surrogate")
        text = replaced
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = _drop_controls(text)
    if kept != text:
        changes.append("control")
    text = _BIDI.sub("", kept)
    if len(text) != len(kept):
        changes.append("bidi")
    if len(text) > max_chars:
        text = text[:max_chars]
        changes.append("cut")
    return Normalised(text, tuple(changes))


def for_classifier(text: str) -> str:
    """``text`` as the intent classifier reads it: each emoji replaced by its name in words,
    from the ``emoji`` package (Unicode CLDR short names: "👍" -> "thumbs up", "😡" -> "enraged
    face", "🙏" -> "folded hands"); runs of spaces made one. Text without emoji is returned as it is.

    The classifier's tokenizer maps an emoji to ``[UNK]``, so "😡😡😡" and "👍" looked alike to it
    (issue 13); named, they carry what the customer meant.
    """
    if not emoji.emoji_count(text):
        return text
    named = emoji.replace_emoji(text, replace=lambda _, data: f" {data['en'].strip(':').replace('_', ' ')} ")
    return re.sub(r"[ \t]{2,}", " ", named).strip()


def has_words(text: str) -> bool:
    """Whether ``text`` holds something to classify: a number or a word, i.e. a run of letters
    (any script) other than one letter three or more times; emoji count by their names
    (:func:`for_classifier`).

    False for punctuation or symbols alone ("???", "...", ":-)") and for a letter repeated
    ("x" * 2500, "aaaa"); "k", "y" and "n" stay words (the built-in small talk has them). The
    classifier's guess for such a message is noise (a word longer than its tokenizer reads is
    one ``[UNK]``, as an emoji was), so the router asks to rephrase (:func:`bot.router.decide`).
    """
    named = for_classifier(text)
    return any(ch.isdigit() for ch in named) or any(
        len(run) < 3 or len(set(run.casefold())) > 1 for run in _LETTERS.findall(named))
