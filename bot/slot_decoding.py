"""Constrained decoding of ``{{Slot}}`` placeholders: the generator may only write slot names it
saw in its training replies, so it never invents one (``{{Order Name}}``, ``{{Refund Portal}}``).

A transformers ``LogitsProcessor`` (https://huggingface.co/docs/transformers/internal/generation_utils#logitsprocessor)
in the spirit of grammar-constrained decoding (Geng et al. 2023, https://arxiv.org/abs/2305.13971):

* outside a placeholder, tokens that would open one (``{{``) with a tail that starts no known
  slot name are masked;
* inside an open placeholder (``{{`` written, ``}}`` not yet), only tokens that keep the text
  after ``{{`` a prefix of ``<known name>}}`` (or complete it) are allowed.

Everything else is untouched, so a reply without placeholders decodes exactly as without the
processor. Cost: one decode of the reply so far per step, plus a scan of the tokens that can
follow the open prefix while inside a placeholder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from transformers import LogitsProcessor

from bot.placeholders import CLOSE, OPEN


class SlotGrammar:
    """Which texts may follow ``{{`` given the known slot names.

    Args:
        slots: known slot names, e.g. ``{"Order Number", "Customer Support Phone Number"}``.

    Raises:
        ValueError: no slots, or a name containing a brace.
    """

    def __init__(self, slots: Iterable[str]):
        names = sorted(set(slots))
        if not names or any("{" in n or "}" in n for n in names):
            raise ValueError(f"slot names must be non-empty and brace-free, got {names!r}")
        self.targets = [name + CLOSE for name in names]
        self.prefixes = {t[:i] for t in self.targets for i in range(len(t) + 1)}

    def allows(self, tail: str) -> bool:
        """True when ``tail`` (the text after an opening ``{{``) can still become, or already
        is, a known placeholder (followed by any text without a bad new opening)."""
        if tail in self.prefixes:
            return True
        for target in self.targets:
            if tail.startswith(target):
                return self.allows_text(tail[len(target):])
        return False

    def allows_text(self, text: str) -> bool:
        """True when every placeholder opened in ``text`` (plain text, not inside a slot) is
        allowed so far."""
        at = text.find(OPEN)
        return at < 0 or self.allows(text[at + len(OPEN):])

    def open_tail(self, text: str) -> str | None:
        """The text after the last unclosed ``{{`` of ``text``, None when no placeholder is open."""
        at = text.rfind(OPEN)
        if at < 0 or CLOSE in text[at + len(OPEN):]:
            return None
        return text[at + len(OPEN):]


class KnownSlots:
    """The known slots of one generator, with its vocabulary indexed for :class:`SlotLogitsProcessor`.

    Args:
        tokenizer: the generator's tokenizer; every token is decoded once here (~1 s for 49k).
        slots: known slot names (see :class:`SlotGrammar`).

    Raises:
        ValueError: see :class:`SlotGrammar`.
    """

    def __init__(self, tokenizer, slots: Iterable[str]):
        self.tokenizer, self.grammar = tokenizer, SlotGrammar(slots)
        special = set(tokenizer.all_special_ids)
        self.pieces = ["" if i in special else tokenizer.decode([i], clean_up_tokenization_spaces=False)
                       for i in range(len(tokenizer))]
        self.by_first: dict[str, list[int]] = defaultdict(list)
        for token_id, piece in enumerate(self.pieces):
            if piece:
                self.by_first[piece[0]].append(token_id)
        self.opening = [i for i, p in enumerate(self.pieces) if OPEN in p and not self.grammar.allows_text(p)]

    def processor(self, prompt_length: int) -> "SlotLogitsProcessor":
        """A logits processor for one ``generate`` call whose prompt is ``prompt_length`` tokens."""
        return SlotLogitsProcessor(self, prompt_length)


class SlotLogitsProcessor(LogitsProcessor):
    """Masks the logits of tokens that would write an unknown ``{{Slot}}`` name.

    Call: ``(input_ids [batch, seq] int64, scores [batch, vocab] float) -> scores`` with masked
    entries set to ``-inf``; tokens after ``prompt_length`` are the reply so far.
    """

    def __init__(self, known: KnownSlots, prompt_length: int):
        self.known, self.prompt_length = known, prompt_length

    def __call__(self, input_ids, scores):
        for row in range(input_ids.shape[0]):
            text = self.known.tokenizer.decode(input_ids[row, self.prompt_length:], skip_special_tokens=True)
            tail = self.known.grammar.open_tail(text)
            if tail is None:
                self._mask_bad_openings(scores, row, text)
            else:
                self._keep_only(scores, row, self._continuations(tail))
        return scores

    def _mask_bad_openings(self, scores, row: int, text: str) -> None:
        known = self.known
        scores[row, known.opening] = float("-inf")
        if text.endswith("{"):
            bad = [i for i in known.by_first["{"] if not known.grammar.allows_text("{" + known.pieces[i])]
            scores[row, bad] = float("-inf")

    def _continuations(self, tail: str) -> list[int]:
        known = self.known
        firsts = {t[len(tail)] for t in known.grammar.targets if t.startswith(tail) and len(t) > len(tail)}
        return [i for c in firsts for i in known.by_first.get(c, []) if known.grammar.allows(tail + known.pieces[i])]

    @staticmethod
    def _keep_only(scores, row: int, allowed: list[int]) -> None:
        if not allowed:
            return
        kept = scores[row, allowed].clone()
        scores[row] = float("-inf")
        scores[row, allowed] = kept
