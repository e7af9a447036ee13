"""Evaluate a trained intent model on held-out data: in-scope accuracy, and out-of-scope detection.

``evaluate_intents`` writes ``<model>/eval/intents.json``, ``intents_report.md`` and
``confusion.png``; ``evaluate_oos`` writes ``<model>/eval/oos.json``. Metrics come from
scikit-learn (``classification_report``, ``confusion_matrix``, ``roc_auc_score``), the plot from
matplotlib via ``sklearn.metrics.ConfusionMatrixDisplay``.

The test rows are those of the split the model was trained with (same data file, same seed, from
the manifest), so they were never seen in training or threshold calibration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.classifier import IntentClassifier, oos_scores
from bot.records import OUT_OF_SCOPE, is_small_talk
from bot.errors import SupportbotError
from bot.settings import Settings
from training.data import Example, load, split
from training.metrics import intent_scores

MISCLASSIFIED_SHOWN = 50
CONFUSED_PAIRS_SHOWN = 10


def test_rows(model: IntentClassifier, data_name: str, settings: Settings) -> list[Example]:
    """The test part of ``data_name`` split with the seed in the model's manifest (the data
    set's official test file when it has one).

    Raises:
        SupportbotError: the data has no test rows, or holds intents that the model neither
            knows nor held out on purpose (wrong data set for this model).
    """
    seed = model.manifest.data.split_seed
    seed = settings.seed if seed is None else seed
    rows = split(load(data_name, data_dir=settings.data_dir, home=settings.home), seed=seed).test
    if not rows:
        raise SupportbotError(f"{data_name}: no test rows (too few examples per intent)")
    foreign = sorted({e.intent for e in rows} - set(model.labels) - set(held_out(model)))
    if foreign:
        raise SupportbotError(f"{data_name}: test intents unknown to model {model.version}: "
                              f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}")
    return rows


def held_out(model: IntentClassifier) -> list[str]:
    """Intents left out of the model's training on purpose (manifest ``data.held_out_intents``)."""
    return list(model.manifest.data.held_out_intents)


def evaluate_intents(folder: Path, data_name: str, settings: Settings, test_file: str | None = None,
                     **load_options) -> dict[str, Any]:
    """Accuracy, macro-F1, per-intent report, confusion matrix, most confused pairs and
    misclassified examples of the model in ``folder`` on its test rows; with out-of-scope rows
    in them, also the open-set figures of :func:`open_set_report`.

    Args:
        folder: the model folder.
        data_name: the data set the model was trained on (its test split is used).
        settings: ``data_dir``, ``home`` and ``seed`` are used.
        test_file: a test file of the user's instead (may hold out-of-scope rows).
        load_options: ``text_column``, ``intent_column``, ``oos_labels`` for ``test_file``
            (:func:`training.data.load`).

    Returns:
        The dict written to ``folder/eval/intents.json``.

    Raises:
        SupportbotError: see :meth:`IntentClassifier.load` and :func:`test_rows`; a test file
            with intents the model does not know.
    """
    model = IntentClassifier.load(folder)
    if test_file:
        every = load(test_file, data_dir=settings.data_dir, home=settings.home, **load_options).examples
        foreign = sorted({e.intent for e in every} - set(model.labels) - {OUT_OF_SCOPE})
        if foreign:
            raise SupportbotError(f"{test_file}, field 'intent': intents unknown to model {model.version}: "
                                  f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}")
    else:
        every = [e for e in test_rows(model, data_name, settings) if e.intent in model.labels]
    predictions = model.predict([e.text for e in every], top_k=1)
    in_scope = [(e, p) for e, p in zip(every, predictions) if e.intent != OUT_OF_SCOPE]
    report = intent_report(model.labels, [e for e, _ in in_scope], [p for _, p in in_scope], model.threshold)
    report.update(model=str(folder), version=model.version, data=test_file or data_name,
                  open_set=open_set_report(every, predictions, model))
    out = Path(folder) / "eval"
    out.mkdir(exist_ok=True)
    plot_confusion(report["confusion_matrix"], model.labels, out / "confusion.png")
    (out / "intents.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "intents_report.md").write_text(markdown_report(report))
    return report


def open_set_report(rows: list[Example], predictions, model: IntentClassifier) -> dict[str, Any]:
    """How the bot treats in-scope and out-of-scope rows at the model's threshold.

    A row is *answered* with its top in-scope intent when its OOS score is at most the
    threshold, else *rejected*; a small-talk answer to an out-of-scope row counts as rejected
    (the bot does not act on it as a request).

    Returns:
        ``rows``, ``oos_rows``, ``accuracy`` (in-scope rows answered with the right intent and
        out-of-scope rows rejected, over all rows), ``in_scope_accuracy``, ``oos_recall`` and
        ``in_scope_rejected`` (shares in [0, 1]; None where there are no such rows).
    """
    def share(hits: list[bool]) -> float | None:
        return sum(hits) / len(hits) if hits else None

    answered = [None if model.is_out_of_scope(p) else p.intent for p in predictions]
    rejected = [a is None or (is_small_talk(a) and not is_small_talk(e.intent)) for a, e in zip(answered, rows)]
    oos = [e.intent == OUT_OF_SCOPE for e in rows]
    right = [a == e.intent for a, e in zip(answered, rows)]
    return {
        "rows": len(rows), "oos_rows": sum(oos), "threshold": model.threshold,
        "accuracy": share([(r if o else w) for r, o, w in zip(rejected, oos, right)]),
        "in_scope_accuracy": share([w for w, o in zip(right, oos) if not o]),
        "oos_recall": share([r for r, o in zip(rejected, oos) if o]),
        "in_scope_rejected": share([a is None for a, o in zip(answered, oos) if not o]),
    }


def intent_report(labels: list[str], rows: list[Example], predictions, threshold: float) -> dict[str, Any]:
    """The metrics of ``predictions`` (one per row of ``rows``) as a JSON-ready dict."""
    from sklearn.metrics import classification_report, confusion_matrix

    gold = [e.intent for e in rows]
    guessed = [p.intent for p in predictions]
    matrix = confusion_matrix(gold, guessed, labels=labels)
    return {
        "rows": len(rows),
        **intent_scores(gold, guessed, labels),
        "rejected_as_oos": float(sum(p.oos_score > threshold for p in predictions) / max(len(rows), 1)),
        "per_intent": classification_report(gold, guessed, labels=labels, output_dict=True, zero_division=0),
        "report_text": classification_report(gold, guessed, labels=labels, digits=3, zero_division=0),
        "confusion_matrix": matrix.tolist(),
        "most_confused": confused_pairs(matrix, labels),
        "misclassified": [
            {"text": e.text, "gold": e.intent, "predicted": p.intent, "confidence": round(p.confidence, 4),
             "source": e.source}
            for e, p in zip(rows, predictions) if p.intent != e.intent
        ][:MISCLASSIFIED_SHOWN],
    }


def confused_pairs(matrix, labels: list[str], top: int = CONFUSED_PAIRS_SHOWN) -> list[dict[str, Any]]:
    """The ``top`` largest off-diagonal cells of a confusion ``matrix`` ``[n, n]`` (rows = gold)."""
    import numpy as np

    off = np.array(matrix, copy=True)
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:top]
    cells = [np.unravel_index(i, off.shape) for i in order]
    return [{"gold": labels[g], "predicted": labels[p], "count": int(off[g, p])} for g, p in cells if off[g, p] > 0]


def plot_confusion(matrix, labels: list[str], path: Path) -> None:
    """Save the confusion ``matrix`` as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(6.0, 0.22 * len(labels))
    figure, axes = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.array(matrix), display_labels=labels).plot(
        ax=axes, include_values=len(labels) <= 30, xticks_rotation="vertical", colorbar=False)
    axes.set_title("intent confusion matrix (rows: gold)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def markdown_report(report: dict[str, Any]) -> str:
    """A readable Markdown page of :func:`intent_report`'s dict."""
    lines = [f"# Intent evaluation: {report.get('version', '')} on {report.get('data', '')}", "",
             f"- test rows: {report['rows']}", f"- accuracy: {report['accuracy']:.4f}",
             f"- macro-F1: {report['macro_f1']:.4f}",
             f"- in-scope rows rejected as out of scope: {report['rejected_as_oos']:.2%}", "",
             "## Per intent", "", "```", report["report_text"], "```", "", "## Most confused pairs", ""]
    lines += [f"- {p['gold']} -> {p['predicted']}: {p['count']}" for p in report["most_confused"]] or ["- none"]
    lines += ["", "## Misclassified examples", ""]
    lines += [f"- `{m['source']}` {m['text']!r}: {m['gold']} -> {m['predicted']} ({m['confidence']:.2f})"
              for m in report["misclassified"]] or ["- none"]
    return "\n".join(lines) + "\n"


def evaluate_oos(folder: Path, data_name: str, settings: Settings) -> dict[str, Any]:
    """Out-of-scope detection on intents the model never saw.

    Positives are the test utterances of the manifest's ``held_out_intents``, negatives the
    in-scope test utterances. Reports ``roc_auc_score`` of every score in
    :data:`bot.classifier.OOS_METHODS` the model can compute (``msp`` and ``energy`` always,
    ``msp+knn`` when it is the model's), and for the manifest's method and threshold: OOS recall
    (held-out utterances rejected) and the in-scope rejection rate, and the OOS recall at the
    threshold that answers 95 % of the in-scope rows. Scores are the product's: over the in-scope
    columns of the model's labels (:meth:`bot.classifier.IntentClassifier.oos_score`). Writes
    ``folder/eval/oos.json``.

    Raises:
        SupportbotError: the model was trained on every intent (nothing held out).
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    model = IntentClassifier.load(folder)
    unseen = set(held_out(model))
    if not unseen:
        raise SupportbotError(f"{folder}: trained on every intent; train with holdout K for an OOS evaluation")
    rows = test_rows(model, data_name, settings)
    outputs = model.outputs([e.text for e in rows])
    is_oos = np.array([e.intent in unseen for e in rows])
    scores = {m: oos_scores(outputs.logits, m, model.labels).numpy() for m in ("msp", "energy")}
    scores[model.oos_method] = model.oos_score(outputs)
    auroc = {m: float(roc_auc_score(is_oos, s)) for m, s in scores.items()}
    score = scores[model.oos_method]
    rejected = score > model.threshold
    at_95 = score > np.quantile(score[~is_oos], 0.95)  # the threshold that answers 95 % of in-scope rows
    result = {
        "model": str(folder), "data": data_name, "held_out_intents": sorted(unseen),
        "oos_rows": int(is_oos.sum()), "in_scope_rows": int((~is_oos).sum()), "auroc": auroc,
        "method": model.oos_method, "threshold": model.threshold,
        "oos_recall": float(rejected[is_oos].mean()), "in_scope_rejected": float(rejected[~is_oos].mean()),
        "oos_recall_at_95_in_scope": float(at_95[is_oos].mean()),
    }
    out = Path(folder) / "eval"
    out.mkdir(exist_ok=True)
    (out / "oos.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
