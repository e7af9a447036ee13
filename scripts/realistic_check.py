"""How intent classifier versions route realistic requests: top-1 intent and whether the OOS
threshold lets each one through, at the version's own threshold and at other coverages.

    python scripts/realistic_check.py MODEL_DIR [MODEL_DIR ...] [--requests data/realistic_requests.csv]
                                      [--coverage 0.95 0.99] [--rows]

``--requests`` is a CSV with ``text`` and ``intent`` (default ``data/realistic_requests.csv``: 46
requests written for the Bitext intents, not taken from Bitext). Thresholds for ``--coverage`` are
recomputed on the Bitext validation split (:func:`training.intents.choose_threshold`). A few
off-topic messages are routed as well: they should be rejected.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.classifier import IntentClassifier  # noqa: E402
from bot.errors import SupportbotError  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from training.data import load, split  # noqa: E402
from training.intents import choose_threshold  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OFF_TOPIC = ["tell me a joke about cats", "what is the capital of France?", "can you write me a poem about spring",
             "what's the weather like tomorrow in Berlin?", "who won the football match last night?",
             "how do I bake sourdough bread", "recommend me a good movie", "what is 17 times 23"]


def report(model: Path, rows: list[dict], validation: list[str], coverages: list[float], show_rows: bool) -> None:
    """Print, for one version, the counts at its own threshold and at each coverage."""
    classifier = IntentClassifier.load(model)
    predictions = classifier.predict([r["text"] for r in rows])
    off_topic = classifier.predict(OFF_TOPIC)
    scores = [p.oos_score for p in classifier.predict(validation)]
    top1 = sum(p.intent == r["intent"] for p, r in zip(predictions, rows))
    print(f"{model.name}: top-1 intent right {top1}/{len(rows)}")
    thresholds = {"own": classifier.threshold} | {f"{c:g}": choose_threshold(scores, c) for c in coverages}
    for name, threshold in thresholds.items():
        right = sum(p.intent == r["intent"] and p.oos_score <= threshold for p, r in zip(predictions, rows))
        rejected = sum(p.oos_score > threshold for p in off_topic)
        print(f"  threshold {name:>5} {threshold:.3f}: answered with the right intent {right}/{len(rows)}, "
              f"off-topic rejected {rejected}/{len(OFF_TOPIC)}")
    if show_rows:
        for p, r in zip(predictions, rows):
            ok = p.intent == r["intent"] and p.oos_score <= classifier.threshold
            print(f"  {'OK ' if ok else 'BAD'} {p.intent:26s} {p.confidence:.2f} want {r['intent']:26s} {r['text']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--requests", type=Path, default=REPO / "data" / "realistic_requests.csv")
    parser.add_argument("--coverage", type=float, nargs="*", default=[0.95, 0.99])
    parser.add_argument("--rows", action="store_true", help="print every request's prediction")
    args = parser.parse_args()
    with args.requests.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    settings = load_settings()
    validation = [e.text for e in split(load("bitext", settings.data_dir, settings.home), seed=settings.seed).validation]
    for model in args.models:
        try:
            report(model, rows, validation, args.coverage, args.rows)
        except SupportbotError as exc:
            sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
