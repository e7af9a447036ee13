"""Approved answers: the replies a support team stands behind, retrieved for each answered turn.

The answer store of a replies version holds, per intent:

* ``t<n>``: training replies, written with the version (``answers.jsonl`` and their request
  embeddings ``answers.npy``, :func:`write_base`), at most ``per_intent`` per intent;
* ``r<n>``: replies that reviewers approved or rewrote (review ``n``, :meth:`bot.reviews.ReviewLog.corrections`),
  live: they count from the turn after the review is saved, and stop counting when it is undone;
* ``a<n>``: team-written answers added by hand or imported from a file (:mod:`bot.answer_files`,
  ``supportbot answers``), live too, withdrawn with ``supportbot answers remove``.

Retrieval (:meth:`AnswerStore.search`) embeds the customer's message with the MiniLM sentence
encoder (all-MiniLM-L6-v2, Reimers & Gurevych 2019, https://arxiv.org/abs/1908.10084) and ranks
the answers of the routed intent by cosine similarity to the request each answers (to the reply
itself for a team answer without one). The retrieved replies go into the generator's prompt
(:func:`bot.prompting.build_messages`, retrieval-augmented generation: Lewis et al. 2020,
https://arxiv.org/abs/2005.11401), in training as in serving.

The store's version (:attr:`AnswerStore.version`) is the generator version plus
:meth:`bot.store.ConversationStore.answers_version`; each turn records it with the ids and scores
of what was retrieved (:class:`bot.records.AnswerRef`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bot.errors import SupportbotError
from bot.placeholders import SLOT
from bot.records import OUT_OF_SCOPE, AnswerRef
from bot.settings import AnswersConfig

log = logging.getLogger(__name__)

ANSWERS_FILE = "answers.jsonl"
"""Replies version file: one training answer per line (``id``, ``intent``, ``request``, ``reply``)."""
EMBEDDINGS_FILE = "answers.npy"
"""Replies version file: ``(len(answers), dim)`` float32 unit embeddings of their requests."""
SOURCES = {"t": "training", "r": "review", "a": "team"}
"""Answer id prefix -> source."""


@dataclass(frozen=True)
class Answer:
    """One approved reply.

    Attributes:
        id: ``t<n>``, ``r<review id>`` or ``a<team answer id>`` (see the module docstring).
        intent: the intent it answers.
        reply: the reply, with ``{{Slot}}`` placeholders.
        request: the customer request it answers, None for a team answer given without one.
    """

    id: str
    intent: str
    reply: str
    request: str | None = None

    @property
    def source(self) -> str:
        """``"training"``, ``"review"`` or ``"team"``."""
        return SOURCES[self.id[0]]

    @property
    def review_id(self) -> int | None:
        """The review it comes from, for source ``review``."""
        return int(self.id[1:]) if self.id.startswith("r") else None

    @property
    def key(self) -> str:
        """The text a message is compared with: the request, else the reply."""
        return self.request or self.reply


@dataclass(frozen=True)
class Retrieved:
    """An answer and its cosine similarity to the message, in [-1, 1]."""

    answer: Answer
    score: float

    def ref(self) -> AnswerRef:
        """What the turn record keeps of it."""
        return AnswerRef(self.answer.id, round(self.score, 4), self.answer.source, self.answer.review_id,
                         self.answer.reply[:200])


def load_encoder(ref: str, cache_dir: Path):
    """The ``sentence_transformers.SentenceTransformer`` for ``ref`` (hub id, folder or the
    packaged default, :func:`bot.base_models.resolve`), on the CPU.

    Raises:
        SupportbotError: the model cannot be found.
    """
    from sentence_transformers import SentenceTransformer

    from bot.base_models import resolve

    return SentenceTransformer(str(resolve(ref, cache_dir)), device="cpu")


def embed(encoder, texts: Sequence[str]) -> np.ndarray:
    """``(len(texts), dim)`` float32 unit-length embeddings (``(0, dim)`` for no text)."""
    if not texts:
        dimension = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
        return np.zeros((0, dimension()), dtype=np.float32)
    return np.asarray(encoder.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                     show_progress_bar=False), dtype=np.float32)


class AnswerIndex:
    """Answers with the embeddings of their keys, searched per intent.

    Args:
        answers: the answers.
        embeddings: ``(len(answers), dim)`` unit vectors of :attr:`Answer.key`, row ``i`` for ``answers[i]``.

    Raises:
        ValueError: the shapes disagree.
    """

    def __init__(self, answers: Sequence[Answer], embeddings: np.ndarray):
        if len(answers) != len(embeddings):
            raise ValueError(f"{len(answers)} answers but {len(embeddings)} embeddings")
        self.answers, self.embeddings = list(answers), np.asarray(embeddings, dtype=np.float32)
        self._rows: dict[str, list[int]] = defaultdict(list)
        for row, answer in enumerate(self.answers):
            self._rows[answer.intent].append(row)

    def intents(self) -> set[str]:
        """Intents with at least one answer."""
        return set(self._rows)

    def search(self, query: np.ndarray, intent: str, k: int, exclude: Callable[[Answer], bool] | None = None
               ) -> list[Retrieved]:
        """The ``k`` answers of ``intent`` nearest to ``query`` (a ``(dim,)`` unit vector), best
        first, leaving out those ``exclude`` returns True for; [] when the intent has none."""
        rows = [r for r in self._rows.get(intent, ()) if exclude is None or not exclude(self.answers[r])]
        if not rows or k <= 0:
            return []
        scores = self.embeddings[rows] @ query
        best = np.argsort(-scores, kind="stable")[:k]
        return [Retrieved(self.answers[rows[i]], float(scores[i])) for i in best]


def base_answers(pairs: Iterable[tuple[str, str, str]], per_intent: int) -> list[Answer]:
    """Training answers ``t0, t1, ...`` from ``(request, intent, reply)`` triples: the first
    ``per_intent`` of each intent, skipping repeated replies, replies with
    :func:`specific_facts` (a training reply's order number or price belongs to its own
    request, or was invented by the data set's authors: shown to another customer it is wrong)
    and replies that repeat a name from their request (:func:`echoed_names`). Reviewers' and
    team answers are kept as written."""
    kept: list[Answer] = []
    counts: dict[str, int] = defaultdict(int)
    seen: set[tuple[str, str]] = set()
    for request, intent, reply in pairs:
        reply = reply.strip()
        if (not reply or counts[intent] >= per_intent or (intent, reply) in seen or specific_facts(reply)
                or echoed_names(request, reply)):
            continue
        seen.add((intent, reply))
        counts[intent] += 1
        kept.append(Answer(f"t{len(kept)}", intent, reply, request))
    return kept


def write_base(folder: Path, answers: Sequence[Answer], embeddings: np.ndarray) -> None:
    """Write ``answers.jsonl`` and ``answers.npy`` (see :func:`read_base`) into a version folder."""
    folder = Path(folder)
    with (folder / ANSWERS_FILE).open("w", encoding="utf-8") as out:
        for answer in answers:
            out.write(json.dumps(asdict(answer), ensure_ascii=False) + "\n")
    np.save(folder / EMBEDDINGS_FILE, np.asarray(embeddings, dtype=np.float32))


def read_base(folder: Path) -> AnswerIndex | None:
    """The training answers of a replies version; None when it was trained without them. Answers
    that :func:`base_answers` would leave out now (:func:`echoed_names`) are left out here too.

    Raises:
        SupportbotError: a file is malformed (names the file and line).
    """
    path = Path(folder) / ANSWERS_FILE
    if not path.is_file():
        return None
    answers = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            answers.append(Answer(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise SupportbotError(f"{path}, line {number}: not an answer ({exc})") from None
    try:
        index = AnswerIndex(answers, np.load(Path(folder) / EMBEDDINGS_FILE))
    except (OSError, ValueError) as exc:
        raise SupportbotError(f"{Path(folder) / EMBEDDINGS_FILE}: {exc}") from None
    general = [i for i, answer in enumerate(answers) if not echoed_names(answer.request or "", answer.reply)]
    if len(general) == len(answers):
        return index
    return AnswerIndex([answers[i] for i in general], index.embeddings[general])  # a version built before the rule


def live_answers(store) -> list[Answer]:
    """Reviewed replies in effect (``r<review id>``; intent not out of scope) and team answers
    (``a<id>``) of a :class:`bot.store.ConversationStore`."""
    return _live(*store.live_answer_rows()[1:])


def _live(settled: Iterable[dict], team: Iterable[dict]) -> list[Answer]:
    """:func:`live_answers` from the store's settled reviews and team answer rows."""
    from bot.reviews import correction

    reviewed = [Answer(f"r{c.review_id}", c.reply_intent, c.reply, c.text) for c in map(correction, settled)
                if c.reply and c.reply_intent and c.reply_intent != OUT_OF_SCOPE]
    return reviewed + [Answer(f"a{row['id']}", row["intent"], row["reply"], row["request"]) for row in team]


class AnswerStore:
    """The answers of one replies version: its training answers plus the live ones.

    Args:
        version: the replies version's name.
        base: its training answers (:func:`read_base`).
        encoder: the sentence encoder the base was embedded with.
        store: the conversation store holding reviews and team answers; None: training answers only.
        k: answers per prompt, as the version was trained (manifest ``retrieval.k``).
    """

    def __init__(self, version: str, base: AnswerIndex, encoder, store=None, k: int = 2):
        self.name, self.base, self.encoder, self.store, self.k = version, base, encoder, store, k
        self._lock = threading.Lock()
        self._live_version: str | None = None
        self._live = AnswerIndex([], np.zeros((0, base.embeddings.shape[1]), dtype=np.float32))
        self._cache: dict[str, np.ndarray] = {}

    @property
    def version(self) -> str:
        """``<replies version>+<live version>`` (see :meth:`bot.store.ConversationStore.answers_version`)."""
        return f"{self.name}+{self._live_version}" if self._live_version else self.name

    def refresh(self, live_version: str | None = None) -> None:
        """Reload the live answers (one store call, :meth:`bot.store.ConversationStore.live_answer_rows`)
        when the conversation store's answers version changed; new texts are embedded, known ones
        come from a cache.

        Args:
            live_version: the store's :meth:`~bot.store.ConversationStore.answers_version` as the
                caller read it (the router: :attr:`bot.store.TurnContext.answers_version`); None:
                read it here (one small query).
        """
        if self.store is None:
            return
        if (live_version or self.store.answers_version()) == self._live_version:
            return
        with self._lock:
            version, settled, team = self.store.live_answer_rows()
            answers = _live(settled, team)
            new = [a.key for a in answers if a.key not in self._cache]
            for text, vector in zip(new, embed(self.encoder, new)):
                self._cache[text] = vector
            vectors = np.stack([self._cache[a.key] for a in answers]) if answers else self._live.embeddings[:0]
            self._live, self._live_version = AnswerIndex(answers, vectors), version

    def answers(self) -> list[Answer]:
        """Every answer in effect: training, then live."""
        self.refresh()
        return self.base.answers + self._live.answers

    def search(self, intent: str, text: str, k: int | None = None, live_version: str | None = None
               ) -> list[Retrieved]:
        """The ``k`` (default :attr:`k`) answers of ``intent`` most similar to ``text``, best first
        (live and training answers together; a live answer wins a tie); ``live_version`` as in
        :meth:`refresh`."""
        self.refresh(live_version)
        query = embed(self.encoder, [text])[0]
        k = self.k if k is None else k
        found = self._live.search(query, intent, k) + self.base.search(query, intent, k)
        return sorted(found, key=lambda r: -r.score)[:k]


_FACT = re.compile(r"https?://\S+|www\.\S+|[\w.+-]+@[\w-]+\.[\w.-]+|\d[\d,.:/-]*\d|\d")


def facts(text: str) -> set[str]:
    """Checkable facts of a text: URLs, e-mail addresses and numbers (trailing punctuation
    dropped), e.g. ``"call 555-0100 or see https://x.io."`` -> ``{"555-0100", "https://x.io"}``."""
    return {match.rstrip(".,;:!?)") for match in _FACT.findall(text)}


def specific_facts(reply: str) -> set[str]:
    """Facts of ``reply`` (:func:`facts`, ``{{Slot}}`` placeholders left out) that name one
    case: URLs, e-mail addresses and numbers with a run of three or more digits (``"order
    00004587345"``, ``"$1,499"``); step numbers, small counts and spans ("2", "14", "24/7") are not."""
    return {fact for fact in facts(SLOT.sub(" ", reply))
            if not fact[0].isdigit() or max(len(run) for run in re.findall(r"\d+", fact)) >= 3}


_NAME = re.compile(r"\b(?:(?:Mr|Ms|Mrs|Dr)\.? [A-Z][a-z]+|[A-Z][a-z]+ [A-Z][a-z]+)\b"
                   r"|(?<![.!?:]\s)(?<![.!?:])(?<!^)(?<!\n)\b[A-Z][a-z]{2,}\b")


def echoed_names(request: str, reply: str) -> set[str]:
    """Names of ``request`` that ``reply`` repeats, so the reply is about that one case: a person
    (an honorific and a name, or two capitalised words: ``"Mr. Smith"``, ``"Anna Freeman"``), or
    one capitalised word that does not start a sentence (a place or a plan: ``"Seattle"``,
    ``"Platinum"``). Bitext has 157 pairs with a person's name (check_invoice, get_invoice: "the
    bill from Anna Freeman") and 414 with any such name (cities for delivery_options, plans for
    switch_account); shown to another customer, their reply is wrong ("delivered to Seattle")."""
    return {name for name in _NAME.findall(request) if re.search(rf"\b{re.escape(name)}\b", reply)}


LOOP_TIMES = 4
"""A 4-word phrase written this often, and more often than in any source, is a decoding loop."""


def looping(reply: str, sources: Iterable[str], times: int = LOOP_TIMES) -> str | None:
    """The 4-word phrase ``reply`` repeats at least ``times`` times and more often than any of
    ``sources`` does, or None: greedy decoding caught in a loop ("... or PayMe.com or PayMe.com
    or ...", a list line again and again until the token cap; issue 14). 32 of Bitext's 4,514
    replies repeat a phrase 4 times ("the early exit charge"), which their own source then does too."""
    def counts(text: str) -> Counter:
        words = re.findall(r"\w+", SLOT.sub(" ", text).casefold())
        return Counter(zip(words, words[1:], words[2:], words[3:]))

    mine = counts(reply)
    if not mine or max(mine.values()) < times:
        return None
    phrase, count = mine.most_common(1)[0]
    if any(counts(source)[phrase] >= count for source in sources):
        return None
    return f"'{' '.join(phrase)}' {count} times"


_QUOTED = re.compile(r"\"([^\"\n]{2,60})\"|\u201c([^\u201d\n]{2,60})\u201d|(?<!\w)'([^'\n]{2,60})'(?!\w)")


def quoted(text: str) -> set[str]:
    """Phrases ``text`` puts in quotes (a button, a menu, a status: ``'Track Order'``,
    ``"Processing"``), without the quotes; ``{{Slot}}`` placeholders left out."""
    return {next(group for group in match if group).strip() for match in _QUOTED.findall(SLOT.sub(" ", text))}


def new_facts(reply: str, sources: Iterable[str]) -> set[str]:
    """Facts of ``reply`` (:func:`facts`) found in none of ``sources`` (the retrieved answers,
    the customer's message, the history); ``{{Slot}}`` placeholders are not facts. A number with
    a run of three or more digits counts as found only whole: ``"010-447"``, a reply cut short
    inside ``"+1 (555) 010-4477"``, is new.

    A phrase the reply quotes (:func:`quoted`) that no source holds (in any case) is new too,
    returned in double quotes: the adapter invents labels and states this way ("Look for the
    'Fully Affidable' option", "your order 4471 is currently \"Processing.\"", issue 14)."""
    known = " ".join(sources)
    lowered = known.casefold()
    return {fact for fact in facts(SLOT.sub(" ", reply))
            if fact not in known or (re.search(r"\d{3}", fact) and not re.search(
                rf"(?<!\d){re.escape(fact)}(?!\d)", known))} | {
        f'"{phrase}"' for phrase in (q.rstrip(".,;:!?") for q in quoted(reply)) if phrase.casefold() not in lowered}


class AnswerLibrary:
    """The answer store of each replies version a router serves, loaded on first use.

    Args:
        folder_of: replies version name -> its folder.
        encoder: encoder reference (the version manifest's ``retrieval.encoder``) ->
            ``SentenceTransformer``; each is loaded once, on first need.
        store: the conversation store (reviews, team answers).
    """

    def __init__(self, folder_of: Callable[[str], Path], encoder: Callable[[str], object], store=None):
        self.folder_of, self._load_encoder, self.store = folder_of, encoder, store
        self._encoders: dict[str, object] = {}
        self._stores: dict[str, AnswerStore | None] = {}
        self._lock = threading.Lock()

    def encoder(self, ref: str):
        """The sentence encoder ``ref`` (loaded on first use)."""
        if ref not in self._encoders:
            self._encoders[ref] = self._load_encoder(ref)
        return self._encoders[ref]

    def for_version(self, version: str) -> AnswerStore | None:
        """The answer store of replies version ``version``; None when that version was trained
        without retrieval (no ``answers.jsonl``).

        Raises:
            SupportbotError: its answer files are malformed.
        """
        with self._lock:
            if version not in self._stores:
                from bot.manifest import read

                try:
                    folder = self.folder_of(version)
                except SupportbotError as exc:  # e.g. a generator not from the registry
                    log.warning("no answer store for replies version %s: %s", version, exc)
                    self._stores[version] = None
                    return None
                base = read_base(folder)
                if base is None:
                    self._stores[version] = None
                else:
                    retrieval = read(folder, "replies").retrieval or {}
                    encoder = self.encoder(retrieval.get("encoder") or AnswersConfig().encoder)
                    self._stores[version] = AnswerStore(version, base, encoder, self.store, int(retrieval.get("k", 2)))
            return self._stores[version]
