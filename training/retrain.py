"""Retrain from reviewers' corrections, compare with production, promote only without regression.

Steps (``supportbot retrain`` or the Retrain page):

1. the **frozen test split**: the test part of the original data set (same file, same seed as
   always, :func:`training.data.split`); no example whose text is in it may be trained on;
2. the **corrections** (:meth:`bot.reviews.ReviewLog.corrections`), redacted again, split
   deterministically into a training part and a held-out slice (:data:`SLICE_SHARE`);
3. a **training set**: the original training and validation rows plus the corrections' training
   part, duplicates removed (a correction overrides the original label of the same text),
   written as CSV (``text,intent,reply``) under ``<home>/retrain/<job>/``;
4. a **new version** trained on it (``train intents`` / ``train replies``);
5. old and new scored on the frozen test split and on the corrections slice; the new version is
   **promoted** only if macro-F1 (intents) or ROUGE-L (replies) on the frozen split drops by at
   most the tolerance and the slice score does not drop; otherwise it stays a **candidate** with
   the comparison report (``<version>/eval/retrain.json``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bot.errors import SettingError, SupportbotError
from bot.manifest import Manifest, read
from bot.placeholders import load_profile
from bot.redaction import redact
from bot.registry import Registry
from bot.reviews import OUT_OF_SCOPE, Correction, ReviewLog
from bot.settings import RetrainConfig, Settings
from bot.store import ConversationStore
from training.data import Example, LoadedData, load, split
from training.datasets import sha256_of
from training.metrics import intent_scores, rouge_l

log = logging.getLogger(__name__)

SLICE_SHARE = 0.25
"""Share of the corrections held out to check that the new version learned them."""


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _in_slice(text: str) -> bool:
    return int(hashlib.sha256(_key(text).encode()).hexdigest(), 16) % 1000 < SLICE_SHARE * 1000


@dataclass
class TrainingSet:
    """The material of one retraining (see the module docstring)."""

    train: list[Example]
    test: list[Example]
    slice: list[Example]
    counts: dict[str, int]


def unfill(reply: str, profile: dict[str, str]) -> str:
    """Put the company profile's values in a reviewed reply back as ``{{Slot Name}}``
    placeholders (``customer_support_phone_number`` -> ``{{Customer Support Phone Number}}``), so
    corrections teach the same slots as the original data. Longest values first."""
    for key, value in sorted(profile.items(), key=lambda item: -len(item[1])):
        if len(value) >= 4:
            reply = reply.replace(value, "{{" + key.replace("_", " ").title() + "}}")
    return reply


def build_training_set(original, corrections: list[Correction], seed: int, kind: str,
                       profile: dict[str, str] | None = None) -> TrainingSet:
    """Merge original rows and corrections for ``kind`` (``intents`` or ``replies``); in reviewed
    replies ``profile`` values become placeholders again (:func:`unfill`), then the rest is
    redacted.

    Returns:
        :class:`TrainingSet`; ``counts`` has ``corrections``, ``refused_in_test`` (corrections
        whose text is in the frozen test split), ``out_of_scope`` (not trained as an intent),
        ``held_out`` (the slice), ``duplicates_removed`` and ``train``.
    """
    parts = split(original, seed=seed)
    frozen = {_key(e.text) for e in parts.test}
    usable = [c for c in corrections if (c.intent if kind == "intents" else c.reply)]
    fresh = [c for c in usable if _key(c.text) not in frozen]
    examples = [Example(redact(c.text).text, c.intent or "",
                        redact(unfill(c.reply, profile or {})).text if c.reply else None,
                        f"review:{c.review_id}") for c in fresh]
    trainable = [e for e in examples if kind == "replies" or e.intent != OUT_OF_SCOPE]
    held = [e for e in trainable if _in_slice(e.text)]
    learned = [e for e in trainable if not _in_slice(e.text)]
    base = [e for e in parts.train + parts.validation if kind == "intents" or e.reply]
    merged: dict[str, Example] = {}
    for example in base + learned:
        merged[_key(example.text)] = example
    held_keys = {_key(e.text) for e in held}
    train = [e for k, e in merged.items() if k not in held_keys]
    counts = {"corrections": len(usable), "refused_in_test": len(usable) - len(fresh),
              "out_of_scope": len(examples) - len(trainable), "held_out": len(held),
              "duplicates_removed": len(base) + len(learned) - len(merged), "train": len(train)}
    return TrainingSet(train, [e for e in parts.test if kind == "intents" or e.reply], held, counts)


def learnable(counts: dict[str, int]) -> int:
    """Corrections of a :class:`TrainingSet` that can teach the model something (not refused as
    test rows, not out of scope); a retraining without any would only add noise."""
    return counts["corrections"] - counts["refused_in_test"] - counts["out_of_scope"]


def write_csv(examples: list[Example], path: Path) -> Path:
    """Write ``text,intent,reply`` rows (the generic format the training commands read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "intent", "reply"])
        writer.writerows([e.text, e.intent, e.reply or ""] for e in examples)
    return path


def retrain(settings: Settings, config: RetrainConfig, job_dir: Path,
            progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Run one retraining; returns ``{kind: report}`` (also in ``job_dir/report.json``).

    Raises:
        SupportbotError: unknown ``what``, no production model to compare with, bad data.
        A kind without learnable corrections (:func:`learnable`) is skipped: its report has
        ``promoted`` False, ``counts`` and a ``decision`` saying so, and no ``scores``.
    """
    kinds = {"intents": ["intents"], "replies": ["replies"], "both": ["intents", "replies"]}.get(config.what)
    if kinds is None:
        raise SettingError("what", f"must be intents, replies or both, not '{config.what}'")
    registry = Registry(settings.home)
    with ConversationStore(settings.home / "conversations.db") as store:
        corrections = ReviewLog(store).corrections()
    original = load(config.data, settings.data_dir, settings.home)
    progress(f"{len(corrections)} reviewed corrections found")
    profile = load_profile(settings.profile)
    reports = {}
    for kind in kinds:
        material = build_training_set(original, corrections, settings.seed, kind, profile)
        progress(f"{kind}: training set {material.counts}")
        if not learnable(material.counts):
            reports[kind] = {"promoted": False, "counts": material.counts,
                             "decision": f"skipped: no reviewed {kind} corrections to learn from"}
            progress(f"{kind}: {reports[kind]['decision']}")
            continue
        data_file = write_csv(material.train, job_dir / f"{kind}.csv")
        data = LoadedData(str(data_file), sha256_of(data_file), material.train, material.test)
        old = registry.production_folder(kind)
        new = _train(kind, data, read(old, kind), settings, config)
        progress(f"{kind}: trained {new.name}; comparing with {old.name}")
        reports[kind] = _compare_and_gate(kind, old, new, material, settings, config, registry)
        progress(f"{kind}: {reports[kind]['decision']}")
    (job_dir / "report.json").write_text(json.dumps(reports, indent=2))
    return reports


def _train(kind: str, data: LoadedData, recipe: Manifest, settings: Settings, config: RetrainConfig) -> Path:
    """Train ``kind`` on ``data`` (its test rows: the frozen split) with the production version's
    recipe (its manifest's base model and hyper-parameters), so only the data changes."""
    options = dict(recipe.hyperparameters)
    same_base = settings.model_copy(update={{"intents": "intent_base", "replies": "reply_base"}[kind]: recipe.base_model})
    if kind == "intents":
        from dataclasses import fields

        from training.intents import IntentTrainConfig, train_intents

        known = {f.name for f in fields(IntentTrainConfig)}  # a recipe from an older version may name more
        options = {k: v for k, v in options.items() if k in known}
        return train_intents(data, same_base, IntentTrainConfig(**{**options, "holdout": 0}))
    from training.replies import ReplyTrainConfig, train_replies

    options["target_modules"] = tuple(options["target_modules"])
    if config.reply_max_steps is not None:
        options["max_steps"] = config.reply_max_steps
    return train_replies(data, same_base, ReplyTrainConfig(**options))


def _compare_and_gate(kind, old: Path, new: Path, material: TrainingSet, settings: Settings,
                      config: RetrainConfig, registry: Registry) -> dict[str, Any]:
    score = _intent_scores if kind == "intents" else _reply_scores
    scores = {name: score(folder, material, settings, config) for name, folder in (("old", old), ("new", new))}
    tolerance = config.macro_f1_tolerance if kind == "intents" else config.rouge_tolerance
    metric = "macro_f1" if kind == "intents" else "rouge_l"
    slice_metric = "slice_accuracy" if kind == "intents" else "slice_rouge_l"
    frozen_ok = scores["new"][metric] >= scores["old"][metric] - tolerance
    slice_ok = material.slice == [] or scores["new"][slice_metric] >= scores["old"][slice_metric]
    promoted = frozen_ok and slice_ok
    report = {"old": old.name, "new": new.name, "scores": scores, "counts": material.counts,
              "rule": f"{metric} on the frozen test split may drop at most {tolerance}; "
                      f"{slice_metric} on the corrections slice must not drop",
              "config": asdict(config), "promoted": promoted,
              "decision": f"promoted {new.name}" if promoted else f"kept {new.name} as a candidate "
                          f"({'frozen split regressed' if not frozen_ok else 'corrections slice regressed'})"}
    (new / "eval").mkdir(exist_ok=True)
    (new / "eval" / "retrain.json").write_text(json.dumps(report, indent=2))
    if promoted:
        registry.promote(kind, new.name, f"retrain: {metric} {scores['old'][metric]:.4f} -> "
                         f"{scores['new'][metric]:.4f}", by="retrain")
    else:
        registry.add_candidate(kind, new.name, report)
    return report


def _intent_scores(folder: Path, material: TrainingSet, settings, config) -> dict[str, float]:
    from bot.classifier import IntentClassifier

    classifier = IntentClassifier.load(folder)

    def scores(rows: list[Example]) -> dict[str, float]:
        return intent_scores([e.intent for e in rows], [p.intent for p in classifier.predict([e.text for e in rows])])

    result = scores(material.test)
    if material.slice:
        result["slice_accuracy"] = scores(material.slice)["accuracy"]
    return result


def _reply_scores(folder: Path, material: TrainingSet, settings, config) -> dict[str, float]:
    """ROUGE-L of a replies version on the frozen test rows (and the corrections slice), its
    replies generated as served (:func:`training.reply_eval.version_replies`: with the answers
    retrieved from its own store when it has one)."""
    from training.reply_eval import EvalOptions, version_replies

    def rouge(rows: list[Example]) -> float:
        replies, _, _ = version_replies(folder, rows, settings, EvalOptions(progress=False))
        return rouge_l(replies, [e.reply or "" for e in rows])

    scores = {"rouge_l": rouge(material.test[:config.reply_eval_rows])}
    if material.slice:
        scores["slice_rouge_l"] = rouge(material.slice)
    return scores
