"""Precision and recall of personal-data redaction on the corpus ``tests/data/redaction_corpus.jsonl``.

Each corpus line is ``{"text", "pii": [[kind, value], ...], "keep": [value, ...]}``: ``pii`` are
the items that must be removed (``CARD``, ``PHONE``, ``EMAIL``, ``IBAN``), ``keep`` the numbers that
must survive (order, invoice and tracking numbers, dates, amounts...). The redactor is judged by
its output text only, so any version can be measured:

* an item is **caught** when its value no longer occurs in the output;
* a **false alarm** is a ``keep`` value that no longer occurs, or a tag beyond the caught items;
* precision = caught / (caught + false alarms); recall = caught / items.

Rows marked ``"held_out": true`` were written after the redactor had been tuned on the others and
never tuned on; they are also scored on their own.

Usage::

    python bench/redaction_corpus.py                 # the working tree's bot/redaction.py
    python bench/redaction_corpus.py --rev main      # bot/redaction.py as committed in a git revision
    python bench/redaction_corpus.py --rev main --rev HEAD --json bench/results/redaction_corpus.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "redaction_corpus.jsonl"
KINDS = ("CARD", "PHONE", "EMAIL", "IBAN")
_TAG = re.compile(r"<(CARD|PHONE|EMAIL|IBAN)>")


def load_corpus(path: Path = CORPUS) -> list[dict]:
    """The corpus rows (see the module docstring)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score(redact, corpus: list[dict]) -> dict:
    """Precision, recall and the misses of ``redact`` (text -> object with ``.text``) on ``corpus``.

    Returns:
        ``{"examples", "items", "caught", "false_alarms", "precision", "recall", "missed": {kind:
        n}, "missed_items": [...], "false_alarm_items": [...]}``.
    """
    caught, false_alarms, items = 0, 0, 0
    missed, missed_items, alarms = Counter(), [], []
    for row in corpus:
        out = redact(row["text"]).text
        hits = [value for _, value in row["pii"] if value not in out]
        items += len(row["pii"])
        caught += len(hits)
        for kind, value in row["pii"]:
            if value in out:
                missed[kind] += 1
                missed_items.append(f"{kind} {value!r} in {row['text']!r}")
        lost = [value for value in row["keep"] if value not in out]
        extra = max(0, len(_TAG.findall(out)) - len(_TAG.findall(row["text"])) - len(hits))
        false_alarms += len(lost) + (extra if not lost else 0)
        alarms += [f"{value!r} removed from {row['text']!r} -> {out!r}" for value in lost]
        if extra and not lost:
            alarms.append(f"{extra} extra tag(s): {row['text']!r} -> {out!r}")
    return {"examples": len(corpus), "items": items, "caught": caught, "false_alarms": false_alarms,
            "precision": round(caught / (caught + false_alarms), 3) if caught + false_alarms else None,
            "recall": round(caught / items, 3) if items else None,
            "missed": {kind: missed.get(kind, 0) for kind in KINDS},
            "missed_items": missed_items, "false_alarm_items": alarms}


def redactor_at(rev: str | None):
    """``redact`` of ``bot/redaction.py`` in git revision ``rev`` (None: the working tree)."""
    if rev is None:
        sys.path.insert(0, str(REPO))
        from bot.redaction import redact

        return redact
    source = subprocess.run(["git", "show", f"{rev}:bot/redaction.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"redaction_{re.sub(r'[^A-Za-z0-9]', '_', rev)}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = sys.modules[path.stem] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module.redact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rev", action="append", help="git revision of bot/redaction.py (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--verbose", action="store_true", help="list missed items and false alarms")
    args = parser.parse_args()
    corpus = load_corpus()
    held_out = [row for row in corpus if row.get("held_out")]
    results = {}
    for rev in args.rev or [None]:
        redact = redactor_at(rev)
        results[rev or "working tree"] = score(redact, corpus)
        results[f"{rev or 'working tree'}, held-out rows only"] = score(redact, held_out)
    print(f"corpus: {CORPUS.relative_to(REPO)}, {len(corpus)} examples, "
          f"{sum(len(r['pii']) for r in corpus)} items to remove, {sum(len(r['keep']) for r in corpus)} to keep")
    print(f"| version | precision | recall | caught/items | false alarms | missed {'/'.join(KINDS)} |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        missed = "/".join(str(r["missed"][k]) for k in KINDS)
        print(f"| {name} | {r['precision']} | {r['recall']} | {r['caught']}/{r['items']} | {r['false_alarms']} | {missed} |")
    if args.verbose:
        for name, r in results.items():
            print(f"\n{name}:")
            print("\n".join(f"  missed: {m}" for m in r["missed_items"]))
            print("\n".join(f"  false alarm: {m}" for m in r["false_alarm_items"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
