"""BANKING77 in one run: the frozen-encoder shortcut against our fine-tuned classifier.

* shortcut: sentence-transformers embeddings of the base encoder (mean pooling, normalised,
  frozen) + scikit-learn ``LogisticRegression``, ``C`` picked on our validation split, then
  refitted on all of ``train.csv``;
* ours: ``training.intents.train_intents`` (options below), scored by
  ``training.intent_eval.evaluate_intents``.

Both train on ``train.csv`` only (ours keeps 10% of it for validation / early stopping) and are
scored on the untouched ``test.csv``. Prints a table and writes JSON (``--out``).

Usage::

    SUPPORTBOT_DATA_DIR=... python bench/intent_banking77.py --epochs 6 --out /tmp/banking77.json
    python bench/intent_banking77.py --model <existing model folder>   # skip our training
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.base_models import resolve  # noqa: E402
from bot.manifest import read  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from training.data import load, split  # noqa: E402
from training.intent_eval import evaluate_intents  # noqa: E402
from training.intents import IntentTrainConfig, train_intents  # noqa: E402
from training.metrics import intent_scores  # noqa: E402


def shortcut(base: str, seed: int) -> dict:
    """Test accuracy of frozen sentence embeddings + logistic regression (C chosen on validation)."""
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    settings = load_settings()
    parts = split(load("banking77", settings.data_dir, settings.home), seed=seed)
    encoder = SentenceTransformer(str(resolve(base, settings.cache)), device="cpu")
    embed = {name: encoder.encode([e.text for e in rows], batch_size=64, normalize_embeddings=True)
             for name, rows in (("train", parts.train), ("validation", parts.validation), ("test", parts.test))}
    labels = {name: [e.intent for e in rows] for name, rows in
              (("train", parts.train), ("validation", parts.validation), ("test", parts.test))}
    scores = {c: LogisticRegression(C=c, max_iter=3000).fit(embed["train"], labels["train"])
              .score(embed["validation"], labels["validation"]) for c in (1.0, 10.0, 100.0)}
    best = max(scores, key=scores.get)
    import numpy as np

    model = LogisticRegression(C=best, max_iter=3000).fit(
        np.vstack([embed["train"], embed["validation"]]), labels["train"] + labels["validation"])
    predicted = model.predict(embed["test"])
    return {**intent_scores(labels["test"], list(predicted)), "C": best, "validation_accuracy_by_C": scores,
            "wall_time_s": round(time.perf_counter() - started, 1)}


def ours(args: argparse.Namespace) -> dict:
    """Train (unless ``--model``) and evaluate our classifier on test.csv."""
    folder = args.model
    settings = load_settings(seed=args.seed)
    if folder is None:
        folder = train_intents("banking77", settings, IntentTrainConfig(
            method=args.method, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
            max_length=args.max_length, label_smoothing=args.label_smoothing, layer_decay=args.layer_decay,
            head_c=args.head_c, patience=args.patience))
    report = evaluate_intents(folder, "banking77", settings)
    manifest = read(Path(folder), "intents")
    return {"model": str(folder), "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "hyperparameters": manifest.hyperparameters, "training": {
                k: v for k, v in manifest.training.items() if k != "log"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="evaluate this model folder instead of training one")
    parser.add_argument("--method", default="finetune")
    parser.add_argument("--epochs", type=float, default=6.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--layer-decay", type=float, default=1.0)
    parser.add_argument("--head-c", type=float, default=0.1)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-shortcut", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/intent_banking77.json"))
    args = parser.parse_args()
    base = load_settings().intent_base
    result: dict = {"base": base}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    parts = ([] if args.skip_shortcut else [("shortcut", lambda: shortcut(base, args.seed))]) + [("ours", lambda: ours(args))]
    for name, run in parts:  # the JSON is rewritten after each part, so a cut-off run keeps what it has
        result[name] = run()
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    for name in ("shortcut", "ours"):
        if name in result:
            print(f"{name:9s} test accuracy {result[name]['accuracy']:.4f}  macro-F1 {result[name]['macro_f1']:.4f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
