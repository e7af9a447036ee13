"""Evaluate the reply generator on the held-out test split (or the user's test file), side by side.

Systems: ``base`` (the base model zero-shot, same prompt), ``retrieval`` (the training reply whose
request is nearest by sentence embedding, any intent), ``top_answer`` (for a version with an
answer store, :mod:`bot.answers`: the approved answer of the intent nearest to the request, the
reply of the safety net), ``adapter`` (the fine-tuned version, its prompt holding the retrieved
answers when it was trained so) and ``adapter:<version>`` for each version given to compare with.
Metrics against the reference reply:

* ROUGE-L F1, mean over examples (:func:`training.metrics.rouge_l`);
* chrF (Popović 2015, https://aclanthology.org/W15-3049/; ``sacrebleu``), corpus level, 0-100;
* embedding cosine similarity (MiniLM, ``sentence-transformers``), mean over examples;
* invented slot rate: share of replies holding a ``{{Slot}}`` placeholder that appears in no
  training reply; mean reply length in words;
* new-fact rate: share of replies with a number, URL or e-mail address found neither in the
  request nor in the answers retrieved for it (:func:`bot.answers.new_facts`; the same sources
  for every system).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from bot.answers import embed, load_encoder, new_facts, read_base
from bot.base_models import resolve
from bot.device import pick_device
from bot.generation import ReplyGenerator, ServingOptions
from bot.manifest import read
from bot.placeholders import find_slots, slot_names
from bot.prompting import SYSTEM_PROMPT, build_messages
from bot.settings import Settings
from training.data import Example, load, split
from training.metrics import rouge_l
from training.reply_data import clean_reply, with_replies

log = logging.getLogger(__name__)

from bot.settings import AnswersConfig

EMBEDDER = AnswersConfig().encoder
"""Sentence encoder of the retrieval baseline and the cosine metric."""

METRICS = ("rouge_l", "chrf", "cosine", "invented_slot_rate", "new_fact_rate", "mean_words")


FULL_PRECISION = ServingOptions(dtype_name="float32", batch_size=16, draft_tokens=0, pack_weights=False)
"""Generator options of every evaluation (this command and the retraining gate): float32, plain
weights, 16 prompts per batch, so scores of versions stay comparable on any machine."""


@dataclass
class EvalOptions:
    """Options of :func:`evaluate_replies`.

    Attributes:
        limit: score the first ``limit`` test examples (None: all).
        max_new_tokens: reply cap of the generated systems.
        embedder: encoder reference (hub id or folder) for retrieval and cosine.
        serving: options of both generated systems (default: float32, 16 prompts per batch: the
            model's quality in full precision; the bf16 a CPU may serve in is compared with it by
            ``bench/generation.py --quality``).
        samples: examples copied into the report, with every system's reply.
        progress: show progress bars.
        compare: other replies versions scored on the same rows (``adapter:<version>``).
        test: a file (``text,intent,reply``) whose every row is scored instead of the test split
            (e.g. ``data/reworded_replies.csv``).
    """

    limit: int | None = None
    max_new_tokens: int = 128
    embedder: str = EMBEDDER
    serving: ServingOptions = field(default_factory=lambda: FULL_PRECISION)
    samples: int = 5
    progress: bool = True
    compare: tuple[Path, ...] = ()
    test: str | None = None


def invented_slots(reply: str, known: set[str]) -> list[str]:
    """Placeholder names in ``reply`` that are not in ``known``."""
    return [name for name in find_slots(reply) if name not in known]


def retrieve(encoder, train: list[Example], queries: list[str]) -> list[str]:
    """For each query, the reply of the training example whose text is nearest (cosine)."""
    nearest = (embed(encoder, queries) @ embed(encoder, [e.text for e in train]).T).argmax(axis=1)
    return [clean_reply(train[int(i)].reply or "") for i in nearest]


def score(replies: list[str], references: list[str], encoder, known_slots: set[str],
          sources: list[list[str]] | None = None, answers: list[list[str]] | None = None) -> dict[str, float]:
    """The metrics of :data:`METRICS` for one system (``replies[i]`` answers ``references[i]``;
    ``sources[i]``: the texts a fact of ``replies[i]`` may come from, none by default). With
    ``answers`` (the approved answers retrieved for each row) also ``safety_net_rate``: the share
    of replies the router's safety net would replace (a new fact, or a cosine similarity below
    ``[answers] min_source_similarity`` to every answer of the row)."""
    from sacrebleu.metrics import CHRF

    reply_vectors = embed(encoder, replies)
    cosine = (reply_vectors * embed(encoder, references)).sum(axis=1)
    invented = [bool(invented_slots(r, known_slots)) for r in replies]
    strays = [bool(new_facts(r, given)) for r, given in zip(replies, sources or [[] for _ in replies])]
    extra = {}
    if answers is not None:
        floor = AnswersConfig().min_source_similarity
        far = [not found or float((embed(encoder, found) @ reply_vectors[i]).max()) < floor
               for i, found in enumerate(answers)]
        extra["safety_net_rate"] = round(sum(a or b for a, b in zip(strays, far)) / len(replies), 4)
    return {
        "rouge_l": round(rouge_l(replies, references), 2),
        "chrf": round(CHRF().corpus_score(replies, [references]).score, 2),
        "cosine": round(float(cosine.mean()), 4),
        "invented_slot_rate": round(sum(invented) / len(invented), 4),
        "new_fact_rate": round(sum(strays) / len(strays), 4),
        "mean_words": round(sum(len(r.split()) for r in replies) / len(replies), 1),
        **extra,
    }


def retrieved_answers(folder: Path, rows: list[Example], settings: Settings) -> list[list[str]] | None:
    """For each row, the replies of the ``k`` answers of its intent nearest to its request in the
    answer store of replies version ``folder`` (as serving retrieves them, without live answers);
    None for a version trained without retrieval."""
    base = read_base(folder)
    if base is None:
        return None
    retrieval = read(folder, "replies").retrieval or {}
    encoder = load_encoder(retrieval.get("encoder", settings.answers.encoder), settings.cache)
    queries = embed(encoder, [e.text for e in rows])
    k = int(retrieval.get("k", 2))
    return [[hit.answer.reply for hit in base.search(q, e.intent, k)] for e, q in zip(rows, queries)]


def version_replies(folder: Path, rows: list[Example], settings: Settings, options: EvalOptions,
                    known_slots: set[str] | None = None) -> tuple[list[str], float, list[list[str]] | None]:
    """A replies version's replies to ``rows`` as served (retrieved answers in the prompt when it
    was trained with them), the wall seconds they took, and the retrieved answers (None without).

    Raises:
        SupportbotError: no manifest, base model not found, malformed answer store.
    """
    references = retrieved_answers(folder, rows, settings)
    generator = ReplyGenerator.load(folder, cache_dir=settings.cache, options=options.serving)
    if generator.known_slots is None and known_slots:  # versions trained before manifests listed their slots
        generator.constrain_slots(known_slots)
    replies, seconds = _generated(generator, rows, options, references)
    return replies, seconds, references


def _generated(generator: ReplyGenerator, rows: list[Example], options: EvalOptions,
               references: list[list[str]] | None = None) -> tuple[list[str], float]:
    """Replies of ``generator`` to ``rows`` (with ``references[i]`` in row ``i``'s prompt) and
    the wall seconds it took."""
    started = time.perf_counter()
    conversations = [build_messages([], e.text, e.intent, references[i] if references else ())
                     for i, e in enumerate(rows)]
    replies = generator.generate_batch(conversations, options.max_new_tokens, progress=options.progress)
    return replies, round(time.perf_counter() - started, 1)


def base_replies(base_dir: Path, rows: list[Example], options: EvalOptions, settings: Settings) -> tuple[list[str], float]:
    """Zero-shot replies of the base model in ``base_dir`` to ``rows``, and the seconds they took.

    They depend only on the base model, the rows, the prompt and the options, so they are kept in
    ``<settings.cache>/reply-eval/<sha256 of those>.json`` and reused by later evaluations.
    """
    serving = options.serving.resolved(pick_device())
    key = json.dumps({"base": str(base_dir), "rows": [[e.text, e.intent] for e in rows],
                      "system": SYSTEM_PROMPT, "max_new_tokens": options.max_new_tokens,
                      "serving": repr(serving)}, sort_keys=True)
    path = settings.cache / "reply-eval" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        return cached["replies"], cached["seconds"]
    generator = ReplyGenerator.from_pretrained(base_dir, "base", options=serving)
    replies, seconds = _generated(generator, rows, options)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"replies": replies, "seconds": seconds}))
    return replies, seconds


def _test_rows(adapter: Path, data: str | None, settings: Settings, limit: int | None, test_file: str | None = None):
    """(manifest, name of the rows scored, training rows with replies, test rows with replies):
    the test split of the adapter's data, or every row of ``test_file``."""
    manifest = read(adapter, "replies")
    name = data or manifest.data.name
    loaded = load(name, settings.data_dir, settings.home)
    if manifest.data.sha256 not in (None, loaded.sha256):
        log.warning("%s differs from the data the adapter was trained on: test rows may overlap", name)
    parts = split(loaded, seed=settings.seed if manifest.data.split_seed is None else manifest.data.split_seed)
    if test_file:
        given = load(test_file, settings.data_dir, settings.home)
        test, name = with_replies(given.examples, given.name, "test file"), given.name
    else:
        test, name = with_replies(parts.test, loaded.name, "test"), loaded.name
    return manifest, name, with_replies(parts.train, loaded.name), test[:limit] if limit else test


def evaluate_replies(adapter: str | Path, settings: Settings, data: str | None = None,
                     options: EvalOptions | None = None) -> dict:
    """Score base / retrieval / adapter on the test split; writes ``<adapter>/eval/``.

    Args:
        adapter: a replies version folder (adapter + manifest.json).
        settings: ``cache``, ``home``, ``data_dir`` are used.
        data: data set name or file; default the one in the manifest.
        options: see :class:`EvalOptions`.

    Returns:
        ``{"systems": {name: {metric: value, "seconds": s}}, "examples": n, "samples": [...], ...}``,
        also written to ``<adapter>/eval/replies.json`` and ``<adapter>/eval/replies.md``.

    Raises:
        SupportbotError: no manifest, data without replies, base model not found.
    """
    options = options or EvalOptions()
    adapter = Path(adapter).expanduser()
    manifest, name, train, test = _test_rows(adapter, data, settings, options.limit, options.test)
    references = [clean_reply(e.reply or "") for e in test]
    known = slot_names(clean_reply(e.reply or "") for e in train)
    encoder = load_encoder(options.embedder, settings.cache)
    replies, seconds = {}, {}
    started = time.perf_counter()
    replies["retrieval"] = retrieve(encoder, train, [e.text for e in test])
    seconds["retrieval"] = round(time.perf_counter() - started, 1)
    base_dir = resolve(manifest.base_model, settings.cache)
    replies["base"], seconds["base"] = base_replies(base_dir, test, options, settings)
    replies["adapter"], seconds["adapter"], retrieved = version_replies(adapter, test, settings, options, known)
    if retrieved is not None:
        replies["top_answer"], seconds["top_answer"] = [found[0] if found else "" for found in retrieved], 0.0
    for other in options.compare:
        other = Path(other).expanduser()
        key = f"adapter:{other.name}"
        replies[key], seconds[key], _ = version_replies(other, test, settings, options, known)
    sources = [[e.text, *(retrieved[i] if retrieved else ())] for i, e in enumerate(test)]
    systems = {system: {**score(replies[system], references, encoder, known, sources, retrieved),
                        "seconds": seconds[system]} for system in replies}
    systems["reference"] = {"mean_words": round(sum(len(r.split()) for r in references) / len(references), 1)}
    result = {
        "adapter": str(adapter), "version": adapter.name, "data": name, "test_file": options.test,
        "retrieval": manifest.retrieval, "compare": [str(p) for p in options.compare],
        "examples": len(test), "max_new_tokens": options.max_new_tokens, "embedder": options.embedder,
        "serving": vars(options.serving), "systems": systems,
        "samples": [{"request": e.text, "intent": e.intent, "reference": ref,
                     **{system: replies[system][i] for system in replies}}
                    for i, (e, ref) in enumerate(zip(test[:options.samples], references))],
        "rows": [{"request": e.text, "intent": e.intent, "reference": ref, "retrieved": retrieved[i] if retrieved else [],
                  **{system: replies[system][i] for system in replies}} for i, (e, ref) in enumerate(zip(test, references))],
    }
    write_report(adapter / "eval", result, "replies" if not options.test else f"replies-{Path(options.test).stem}")
    return result


def report_table(result: dict) -> str:
    """Markdown table: one row per system, one column per metric."""
    net = any("safety_net_rate" in m for m in result["systems"].values())
    head = ("| system | ROUGE-L | chrF | cosine | invented slots | new facts | mean words | seconds |"
            + (" safety net would replace |" if net else "") + "\n|---|---|---|---|---|---|---|---|"
            + ("---|" if net else "") + "\n")
    rows = []
    for name, m in result["systems"].items():
        if name == "reference":
            continue
        rows.append(f"| {name} | {m['rouge_l']:.2f} | {m['chrf']:.2f} | {m['cosine']:.4f} | "
                    f"{100 * m['invented_slot_rate']:.1f} % | {100 * m.get('new_fact_rate', 0):.1f} % | "
                    f"{m['mean_words']:.1f} | {m['seconds']:.0f} |"
                    + (f" {100 * m['safety_net_rate']:.1f} % |" if "safety_net_rate" in m else ""))
    rows.append(f"| reference | | | | | | {result['systems']['reference']['mean_words']:.1f} | |")
    return head + "\n".join(rows) + "\n"


def write_report(folder: Path, result: dict, stem: str = "replies") -> Path:
    """Write ``<stem>.json`` and ``<stem>.md`` (table + samples) into ``folder``; returns the .md."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    where = f"test file {result['test_file']}" if result.get("test_file") else "test split"
    lines = [f"# Reply generator {result['version']} on {result['data']} ({where}, "
             f"{result['examples']} examples, max {result['max_new_tokens']} new tokens)", "",
             report_table(result), "## Samples", ""]
    for sample in result["samples"]:
        lines += [f"### {sample['request']} ({sample['intent']})", ""]
        lines += [f"**{key}**: {value}\n" for key, value in sample.items() if key not in ("request", "intent")]
    path = folder / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path
