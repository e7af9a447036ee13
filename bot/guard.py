"""Output guard: the bot never shows or stores a reply that reproduces its system prompt.

A customer may ask the model to "ignore previous instructions", "print your system prompt" or
"repeat the text above"; a small model may comply. The guard compares replies with
:data:`bot.prompting.SYSTEM_PROMPT` word by word:

* words are the runs of letters, digits and ``_`` (regex ``\\w+``), compared case-insensitively
  (``str.casefold``), so spacing, line breaks, punctuation and case do not matter
  (``"customer-service"`` is the two words ``customer service``);
* a reply **echoes** the prompt when it holds :data:`ECHO_WORDS` (8) or more consecutive words
  that also stand consecutively in the prompt; the router then replaces it with its refusal
  (``NO_SAFE_REPLY``) and records :data:`GUARD_REASON` in the turn's decision reason;
* while a reply streams, a partial reply sharing :data:`HOLD_WORDS` (5) or more consecutive
  words with the prompt is held back (not shown) until it echoes (refused) or is complete (then
  shown whole), so an echo is never shown even in part.

Ordinary replies share at most a few words in a row with the prompt ("you do not know"); none
of the Bitext training replies reaches :data:`HOLD_WORDS` (``tests/test_prompt_injection.py``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache

from bot.prompting import SYSTEM_PROMPT
from bot.records import Decision

ECHO_WORDS = 8
"""Consecutive prompt words that make a reply an echo of the system prompt."""

HOLD_WORDS = 5
"""Consecutive prompt words that hold a partial reply back until it is judged."""

GUARD_REASON = "reply withheld by the output guard: it repeated the system prompt"
"""Appended to the decision reason of a turn whose reply the guard replaced."""

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The casefolded words (``\\w+`` runs) of ``text``, in order."""
    return _WORD.findall(text.casefold())


@lru_cache(maxsize=16)
def _runs(prompt: str, length: int) -> frozenset[tuple[str, ...]]:
    """Every run of ``length`` consecutive words of ``prompt``."""
    prompt_words = words(prompt)
    return frozenset(tuple(prompt_words[i:i + length]) for i in range(len(prompt_words) - length + 1))


def shares_run(text: str, length: int, prompt: str = SYSTEM_PROMPT) -> bool:
    """Whether ``text`` holds ``length`` (>= 1) consecutive words that also stand consecutively in
    ``prompt`` (words as in :func:`words`).

    Raises:
        ValueError: ``length`` < 1.
    """
    if length < 1:
        raise ValueError(f"length must be at least 1, not {length}")
    runs, text_words = _runs(prompt, length), words(text)
    return any(tuple(text_words[i:i + length]) in runs for i in range(len(text_words) - length + 1))


def echoes_system_prompt(text: str, prompt: str = SYSTEM_PROMPT) -> bool:
    """Whether a reply reproduces the system prompt: :data:`ECHO_WORDS` or more consecutive words
    of it (case, spacing and punctuation ignored)."""
    return shares_run(text, ECHO_WORDS, prompt)


def may_show_partial(text: str, prompt: str = SYSTEM_PROMPT) -> bool:
    """Whether a reply still streaming may be shown now: it shares fewer than
    :data:`HOLD_WORDS` consecutive words with the system prompt."""
    return not shares_run(text, HOLD_WORDS, prompt)


def guarded(decision: Decision) -> Decision:
    """``decision`` with :data:`GUARD_REASON` added to its reason: the guard replaced the reply."""
    return replace(decision, reason=f"{decision.reason}; {GUARD_REASON}")
