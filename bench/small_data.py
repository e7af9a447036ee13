"""A team's own small data through the CLI, as a user would bring it: today's recipe vs the old one.

    python bench/small_data.py [--intents 25] [--per-intent 20] [--old-src DIR] [--out DIR]

Builds, from BANKING77 (``SUPPORTBOT_DATA_DIR``), a file in a team's own layout:

* ``train.csv`` with columns ``sentence,label``: ``--intents`` banking intents x ``--per-intent``
  rows, plus 60 rows labelled ``none`` (out of scope: 3 from each of 20 other banking intents);
  at most 600 rows;
* ``test.csv``, same layout: 8 rows of each in-scope intent, and as many out-of-scope rows,
  half from banking intents used nowhere else (near the domain, the hard case) and half from
  HWU64's *test* split (personal-assistant requests; the background set is HWU64's *train*
  split, so these rows were never trained on).

Then it runs ``supportbot train intents --data train.csv --oos-label none --test test.csv`` (this
checkout), and, with ``--old-src`` (a checkout of an earlier version, e.g. made with ``git worktree
add /tmp/old <commit>``), the old ``train intents`` on the same rows renamed to ``text,intent``
(the old code needed that) with the ``none`` rows as an ``out_of_scope`` intent. Both models are
scored by the same code (:func:`training.intent_eval.open_set_report`): overall accuracy (right
intent answered or out of scope rejected), in-scope accuracy, out-of-scope recall, in-scope rows
wrongly rejected, and training time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.classifier import IntentClassifier  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from training.data import load  # noqa: E402
from training.intent_eval import open_set_report  # noqa: E402


def build(out: Path, n_intents: int, per_intent: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.csv`` and ``test.csv`` (``sentence,label``) into ``out``."""
    rng = random.Random(seed)
    settings = load_settings()
    banking = load("banking77", settings.data_dir, settings.home)
    by_intent: dict[str, list[str]] = {}
    for e in banking.examples:
        by_intent.setdefault(e.intent, []).append(e.text)
    test_by: dict[str, list[str]] = {}
    for e in banking.test or []:
        test_by.setdefault(e.intent, []).append(e.text)
    intents = sorted(by_intent)
    rng.shuffle(intents)
    chosen, oos_train_intents, oos_test_intents = intents[:n_intents], intents[n_intents:n_intents + 20], intents[n_intents + 20:]
    train = [(t, i) for i in chosen for t in rng.sample(by_intent[i], per_intent)]
    train += [(t, "none") for i in oos_train_intents for t in rng.sample(by_intent[i], 3)]
    test = [(t, i) for i in chosen for t in rng.sample(test_by[i], 8)]
    n_oos = len(test)
    near = [t for i in oos_test_intents for t in test_by[i]]
    far = [e.text for e in load("hwu64", settings.data_dir, settings.home).test or []]
    test += [(t, "none") for t in rng.sample(near, n_oos // 2) + rng.sample(far, n_oos - n_oos // 2)]
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with (out / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sentence", "label"])
            writer.writerows(rows)
    return out / "train.csv", out / "test.csv"


def renamed(path: Path, target: Path) -> Path:
    """``path`` as ``text,intent`` with ``none`` as ``out_of_scope`` (what the old code needed)."""
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "intent"])
        writer.writerows((r["sentence"], "out_of_scope" if r["label"] == "none" else r["label"]) for r in rows)
    return target


def train(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> float:
    """Run one training command in ``cwd`` (``python -m`` puts it first on the path, so the
    checkout there is the code that runs); returns its wall time in seconds."""
    started = time.perf_counter()
    with log.open("w") as handle:
        subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT, check=True, cwd=cwd)
    return time.perf_counter() - started


def score(folder: Path, test: Path) -> dict[str, float]:
    rows = load(str(test), oos_labels=("none",)).examples
    classifier = IntentClassifier.load(folder)
    return open_set_report(rows, classifier.predict([e.text for e in rows]), classifier)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, default=25)
    parser.add_argument("--per-intent", type=int, default=20)
    parser.add_argument("--old-src", type=Path, help="checkout of the earlier version to compare with")
    parser.add_argument("--out", type=Path, default=Path("/tmp/supportbot-small-data"))
    parser.add_argument("--reuse", action="store_true",
                        help="keep models already in --out (and their training time from results.json)")
    args = parser.parse_args()
    train_csv, test_csv = build(args.out, args.intents, args.per_intent)
    print(f"train {train_csv} ({sum(1 for _ in train_csv.open()) - 1} rows), test {test_csv}")
    env = {**os.environ, "SUPPORTBOT_HOME": str(args.out / "home")}
    before = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else {}
    runs = {"this version (CLI defaults)": ("new-model", ROOT, ["--data", str(train_csv), "--oos-label", "none"])}
    if args.old_src:
        runs["earlier version (its defaults)"] = (
            "old-model", args.old_src.resolve(), ["--data", str(renamed(train_csv, args.out / "train_text_intent.csv"))])
    results = {}
    for name, (folder, src, options) in runs.items():
        model = args.out / folder
        if args.reuse and model.exists() and name in before:
            seconds = before[name]["train_s"]
        else:
            shutil.rmtree(model, ignore_errors=True)
            seconds = train([sys.executable, "-m", "ui.cli", "train", "intents", *options, "--output", str(model)],
                            {**env, "PYTHONPATH": str(src)}, args.out / f"{folder}.log", cwd=src)
        results[name] = {**score(model, test_csv), "train_s": seconds}
    print("| recipe | overall accuracy | in-scope accuracy | OOS recall | in-scope rejected | training s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['accuracy']:.1%} | {r['in_scope_accuracy']:.1%} | {r['oos_recall']:.1%} | "
              f"{r['in_scope_rejected']:.1%} | {r['train_s']:.0f} |")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
