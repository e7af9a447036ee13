"""Retrieval-based speculative decoding: draft the next reply tokens from known replies of the
same intent and let the model check the whole draft in one forward pass.

REST (He et al. 2024, "REST: Retrieval-Based Speculative Decoding",
https://arxiv.org/abs/2311.08252): the last tokens of the reply so far are looked up in a
datastore of earlier replies; the continuation most of them share becomes the draft. The model
verifies it with transformers' assisted generation
(https://huggingface.co/docs/transformers/generation_strategies#speculative-decoding); with greedy
decoding only the tokens the model would have chosen anyway are kept, so in float32 the reply is
the one plain ``generate`` writes: in float32 exactly in every measurement (a several-token pass
rounds like a one-token pass up to the last bits); in bfloat16 a word may change now and then,
with the same ROUGE-L (see :class:`bot.generation.ServingOptions`). A good draft turns several
forward passes into one.

The datastore of one :class:`ReplyGenerator` holds, per intent, the replies stored with the
version (``drafts.json``: the model's own replies to a few training requests, then training
replies) and, in float32, the complete replies it has generated since it was loaded. In float32
drafts change speed, not replies; in bf16 they can tip a word, so there the store stays as loaded:
a request gets the same reply every time and no customer's reply shapes another's.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from transformers.generation.candidate_generator import CandidateGenerator

DRAFTS_FILE = "drafts.json"
"""Replies version file: ``{intent: [training reply, ...]}``, the seed of the datastore."""

_ACTIVE = threading.local()


class DraftStore:
    """Known replies per intent, as token ids, for drafting.

    Args:
        separator: a token id that never occurs inside a reply (the end-of-turn token); it marks
            where each stored reply starts and ends.
        max_ngram: longest suffix of the reply so far that is matched, in tokens.
        draft_tokens: longest draft, in tokens (each costs part of a forward pass when wrong).
        capacity: replies kept per intent; the oldest go first (64 training replies per intent
            indexed for 27 Bitext intents took ~26 MiB).

    Raises:
        ValueError: ``max_ngram``, ``draft_tokens`` or ``capacity`` below 1.
    """

    def __init__(self, separator: int, max_ngram: int = 3, draft_tokens: int = 4, capacity: int = 128):
        if min(max_ngram, draft_tokens, capacity) < 1:
            raise ValueError("max_ngram, draft_tokens and capacity must be >= 1")
        self.separator, self.max_ngram, self.draft_tokens = separator, max_ngram, draft_tokens
        self._replies: dict[str | None, deque] = defaultdict(lambda: deque(maxlen=capacity))
        self._index: dict[str | None, tuple[np.ndarray, dict]] = {}
        self._lock = threading.Lock()

    def add(self, intent: str | None, token_ids: Sequence[int]) -> None:
        """Store one reply (its token ids, without the end-of-turn token) under ``intent``."""
        ids = [int(t) for t in token_ids if int(t) != self.separator]
        if ids:
            with self._lock:
                self._replies[intent].append(ids)
                self._index.pop(intent, None)

    def add_texts(self, tokenizer, replies: dict[str, list[str]]) -> None:
        """Store ``{intent: [reply text, ...]}`` tokenised with ``tokenizer``."""
        for intent, texts in replies.items():
            for text in texts:
                self.add(intent, tokenizer(text, add_special_tokens=False)["input_ids"])

    def size(self, intent: str | None) -> int:
        """Replies stored under ``intent``."""
        return len(self._replies.get(intent, ()))

    def draft(self, intent: str | None, reply_ids: Sequence[int]) -> list[int]:
        """The likely next tokens after ``reply_ids`` (the reply so far), at most ``draft_tokens``.

        The longest suffix (up to ``max_ngram`` tokens, the reply's start counting as one) found
        in the stored replies picks the matching positions; the draft then follows, token by
        token, the continuation most of them share. Empty when nothing matches.
        """
        tokens, index = self._indexed(intent)
        context = [self.separator, *map(int, reply_ids[-self.max_ngram:])]
        for n in range(min(self.max_ngram, len(context)), 0, -1):
            positions = index.get(tuple(context[-n:]))
            if positions is not None:
                return self._follow(tokens, positions)
        return []

    def _follow(self, tokens: np.ndarray, positions: np.ndarray) -> list[int]:
        draft: list[int] = []
        while len(draft) < self.draft_tokens and len(positions):
            following = tokens[positions]
            values, counts = np.unique(following, return_counts=True)
            best = values[counts.argmax()]
            if best == self.separator:
                break
            draft.append(int(best))
            positions = positions[following == best] + 1
        return draft

    def _indexed(self, intent: str | None) -> tuple[np.ndarray, dict]:
        """(all replies of ``intent`` joined by the separator, n-gram -> positions after it)."""
        with self._lock:
            if intent not in self._index:
                self._index[intent] = self._build(list(self._replies.get(intent, ())))
            return self._index[intent]

    def _build(self, replies: list[list[int]]) -> tuple[np.ndarray, dict]:
        flat = [self.separator]
        for reply in replies:
            flat += reply + [self.separator]
        positions: dict[tuple, list[int]] = defaultdict(list)
        for end in range(1, len(flat)):
            for n in range(1, min(self.max_ngram, end) + 1):
                positions[tuple(flat[end - n:end])].append(end)
        return np.array(flat), {gram: np.array(p) for gram, p in positions.items()}


def read_drafts(folder: Path) -> dict[str, list[str]]:
    """``{intent: [reply, ...]}`` of a replies version's ``drafts.json``; {} when it has none.

    Raises:
        ValueError: the file is not a JSON object of string lists (names the file).
    """
    path = Path(folder) / DRAFTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # bad JSON or not UTF-8
        raise ValueError(f"{path}: not a UTF-8 JSON file ({exc})") from None
    if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(t, str) for t in v) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object mapping each intent to a list of reply texts")
    return data


def write_drafts(folder: Path, replies: Iterable[tuple[str, str]], per_intent: int = 64) -> None:
    """Write ``drafts.json``: at most ``per_intent`` of the ``(intent, reply)`` pairs per intent."""
    kept: dict[str, list[str]] = defaultdict(list)
    for intent, reply in replies:
        if len(kept[intent]) < per_intent:
            kept[intent].append(reply)
    (Path(folder) / DRAFTS_FILE).write_text(json.dumps(kept, ensure_ascii=False, indent=1), encoding="utf-8")


class DraftCandidates(CandidateGenerator):
    """A transformers ``CandidateGenerator`` drafting from a :class:`DraftStore`.

    Args:
        store: the datastore.
        intent: the intent whose replies are searched.
        prompt_length: prompt tokens; what follows in ``input_ids`` is the reply so far.
        max_length: prompt + reply cap in tokens (``generate``'s ``max_length``).
        first: a store searched before ``store`` (its ``None`` entry; e.g. the prompt's tokens,
            which hold the retrieved approved answers).
    """

    requires_model_outputs = False

    def __init__(self, store: DraftStore, intent: str | None, prompt_length: int, max_length: int,
                 first: DraftStore | None = None):
        self.store, self.intent, self.first = store, intent, first
        self.prompt_length, self.max_length = prompt_length, max_length

    def get_candidates(self, input_ids, **kwargs):
        """``(input_ids [1, seq] + draft [1, seq + k], None)``.

        ``k`` is 0 (plain decoding) when nothing matches, else at most ``store.draft_tokens``
        and ``max_length`` allows.
        """
        import torch

        room = max(self.max_length - input_ids.shape[1] - 1, 0)
        reply = input_ids[0, self.prompt_length:].tolist()
        draft = (self.first.draft(None, reply) if self.first and reply else []) or self.store.draft(self.intent, reply)
        if not draft or not room:
            return input_ids, None
        draft = draft[:room]
        extra = torch.tensor([draft], dtype=input_ids.dtype, device=input_ids.device)
        return torch.cat([input_ids, extra], dim=1), None

    def update_candidate_strategy(self, input_ids, scores, num_matches: int) -> None:
        """Nothing to adapt: the draft length is the store's."""


def enable_drafting(model) -> None:
    """Make ``model``'s assisted generation use the calling thread's :class:`DraftCandidates`
    (set with :func:`drafting`) instead of its own candidate generator.

    transformers picks the candidate generator in ``model._get_candidate_generator``; this wraps
    that method on this model object only. Threads without drafts keep the original behaviour.
    It is private, but transformers 5.x has no public way in: ``generate`` takes an
    ``assistant_model`` (a model that drafts by generating, a fixed number of tokens each time) or
    prompt lookup (drafts from the prompt only), and a ``custom_generate`` callable would have to
    re-implement assisted decoding. ``tests/test_speculative.py`` fails loudly when the hook changes.
    """
    original = model._get_candidate_generator

    def candidate_generator(*args, **kwargs):
        candidates = getattr(_ACTIVE, "candidates", None)
        return candidates if candidates is not None else original(*args, **kwargs)

    model._get_candidate_generator = candidate_generator


@contextmanager
def drafting(candidates: DraftCandidates):
    """Within the block, this thread's assisted ``generate`` calls draft with ``candidates``."""
    _ACTIVE.candidates = candidates
    try:
        yield
    finally:
        _ACTIVE.candidates = None
