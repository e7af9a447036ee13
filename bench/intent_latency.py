"""Intent classifier latency and throughput: ``bot.classifier.IntentClassifier`` against a plain
transformers ``pipeline("text-classification")`` on the same model folder, in one run.

Measures single-utterance latency (p50 / p95 over ``--repeats`` calls, one utterance each) and
batch throughput (utterances per second over ``--batch-texts`` utterances, batches of
``--batch-size``). Utterances are the test rows of ``--data`` (split with the model's seed).

Usage::

    python bench/intent_latency.py MODEL --data bitext --threads 1 --out /tmp/latency.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.classifier import IntentClassifier  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from training.intent_eval import test_rows  # noqa: E402


def timed(call, items) -> list[float]:
    """Milliseconds of ``call(item)`` for each item."""
    spent = []
    for item in items:
        started = time.perf_counter()
        call(item)
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def measure(name: str, single, batched, texts: list[str], repeats: int, batch_texts: int) -> dict:
    """p50/p95 ms of ``single([text])`` and texts/s of ``batched(texts)``."""
    import numpy as np

    single([texts[0]])  # warm-up
    latency = timed(single, [[texts[i % len(texts)]] for i in range(repeats)])
    pool = (texts * (batch_texts // len(texts) + 1))[:batch_texts]
    started = time.perf_counter()
    batched(pool)
    seconds = time.perf_counter() - started
    return {"name": name, "p50_ms": float(np.percentile(latency, 50)), "p95_ms": float(np.percentile(latency, 95)),
            "throughput_per_s": batch_texts / seconds}


def main() -> None:
    import torch
    from transformers import pipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", default="bitext")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--batch-texts", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/intent_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours = IntentClassifier.load(args.model, device="cpu")
    texts = [e.text for e in test_rows(ours, args.data, load_settings())]
    baseline = pipeline("text-classification", model=str(args.model), device="cpu")
    results = [
        measure("IntentClassifier.predict", ours.predict,
                lambda t: ours.predict(t, batch_size=args.batch_size), texts, args.repeats, args.batch_texts),
        measure("transformers pipeline", baseline,
                lambda t: baseline(t, batch_size=args.batch_size, truncation=True), texts, args.repeats,
                args.batch_texts),
    ]
    report = {"model": str(args.model), "threads": args.threads, "batch_size": args.batch_size, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in results:
        print(f"{row['name']:26s} p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
              f"{row['throughput_per_s']:7.1f} utterances/s")


if __name__ == "__main__":
    main()
