"""How intent models treat real customers: one table, several model versions, the same rows.

    python bench/intent_realistic.py MODEL [MODEL ...] [--data bitext] [--json out.json]

For each model folder (``models/intents/<version>``) it prints, at the model's own threshold and
with the router's policy (:func:`bot.router.decide`, default settings, first message of a
conversation: a message is rejected when it would be asked to rephrase or get the out-of-scope
fallback):

* realistic in-scope requests (``data/realistic_requests.csv`` = the development set, and
  ``data/realistic_requests_holdout.csv``, written separately and not tuned on): share answered
  with the right intent;
* their off-topic rows (``out_of_scope``): share rejected, i.e. not answered as a shop intent
  (rejected as out of scope, or taken as small talk);
* their small-talk rows (``smalltalk_*``): share given the right small-talk intent, so the
  right templated reply;
* HWU64's test split (personal-assistant requests, out of scope for a shop): share rejected;
* the data set's own test split (Bitext): share answered with the right intent.

Only ratios within one run mean anything on a shared machine; this script times nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.classifier import IntentClassifier  # noqa: E402
from bot.records import FALLBACK_ROUTES, OUT_OF_SCOPE, is_small_talk  # noqa: E402
from bot.router import decide  # noqa: E402
from bot.settings import RouterConfig  # noqa: E402
from bot.text import for_classifier, normalise  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from training.data import load  # noqa: E402
from training.intent_eval import test_rows  # noqa: E402

SETS = {"dev": ROOT / "data" / "realistic_requests.csv", "holdout": ROOT / "data" / "realistic_requests_holdout.csv"}


def outcomes(classifier: IntentClassifier, texts: list[str]) -> list[str]:
    """The intent each text is answered with, or ``out_of_scope`` when the router would reject it."""
    config, texts = RouterConfig(), [normalise(t).text for t in texts]  # what the router decides on
    predictions = classifier.predict([for_classifier(t) for t in texts])
    routes = [decide(t, p, classifier.threshold, 0, config).route for t, p in zip(texts, predictions)]
    return [OUT_OF_SCOPE if r in FALLBACK_ROUTES else p.intent for r, p in zip(routes, predictions)]


def share(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else float("nan")


def evaluate(folder: Path, data: str) -> dict[str, float]:
    """The table's row for one model folder (shares in [0, 1])."""
    classifier = IntentClassifier.load(folder)
    shop = {label for label in classifier.labels if label != OUT_OF_SCOPE and not is_small_talk(label)}
    row: dict[str, float] = {}
    for name, path in SETS.items():
        rows = load(str(path)).examples
        got = outcomes(classifier, [e.text for e in rows])
        row[f"{name} in-scope right"] = share([g == e.intent for g, e in zip(got, rows) if e.intent in shop])
        row[f"{name} off-topic rejected"] = share([g not in shop for g, e in zip(got, rows) if e.intent == OUT_OF_SCOPE])
        row[f"{name} small talk right"] = share([g == e.intent for g, e in zip(got, rows) if is_small_talk(e.intent)])
    settings = load_settings()
    hwu = load("hwu64", settings.data_dir, settings.home).test or []
    row["HWU64 test rejected"] = share([g not in shop for g in outcomes(classifier, [e.text for e in hwu])])
    own = test_rows(classifier, data, settings)
    row[f"{data} test right"] = share([g == e.intent for g, e in zip(outcomes(classifier, [e.text for e in own]), own)])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", default="bitext", help="the data set the models were trained on")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    table = {str(m): evaluate(m, args.data) for m in args.models}
    columns = list(next(iter(table.values())))
    print("| model | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for model, row in table.items():
        print(f"| {Path(model).name} | " + " | ".join(f"{row[c]:.1%}" for c in columns) + " |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
