"""Generation speed: plain ``model.generate`` in float32 (baseline) vs the serving path.

Run::

    python bench/generation.py [--model VERSION_OR_MODEL_DIR] [--new-tokens 120] [--repeats 2]
                               [--quality 16]

``--model`` is a replies version folder (its ``merged/`` or adapter is used) or a plain model
folder; default the base model ``settings.reply_base``. For each path it prints tokens/s of the
whole reply (prefill included) and time to first token (TTFT), then the ratio to the baseline.
"baseline, worker thread" is the same plain call run off the main thread, as the serving path
runs: on a busy CPU that alone changes the speed a lot (torch's OpenMP pool in the main thread).
Serving variants: float32, bfloat16 and int8 dynamic quantisation (``ServingOptions``), each
through :meth:`bot.generator.ReplyGenerator.stream`. ``--quality N`` also reports ROUGE-L of the
float32 and the int8 (fast) path on the first N test examples of the Bitext test split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.generator import ReplyGenerator, ServingOptions, run_in_worker  # noqa: E402
from bot.prompting import build_messages  # noqa: E402
from bot.settings import load_settings  # noqa: E402

PROMPT = build_messages([], "I ordered a jacket last week and I want to cancel the order, how do I do it?",
                        "cancel_order")
VARIANTS = {
    "serve fp32 (default CPU)": ServingOptions(dtype_name="float32", int8=False),
    "serve bf16": ServingOptions(dtype_name="bfloat16", int8=False),
    "serve int8 (opt-in)": ServingOptions(dtype_name="float32", int8=True),
}


def _load(model: Path | None, settings, options: ServingOptions) -> ReplyGenerator:
    from training.base_models import resolve

    if model is not None and ((model / "manifest.json").is_file() or model.name == "merged"):
        return ReplyGenerator.load(model, cache_dir=settings.cache, device="cpu", options=options)
    folder = model or resolve(settings.reply_base, settings.cache)
    return ReplyGenerator.from_pretrained(folder, "base", device="cpu", options=options)


def baseline(generator: ReplyGenerator, new_tokens: int) -> tuple[float, float]:
    """(tokens/s, TTFT s) of plain float32 ``model.generate`` (no streamer, no quantisation)."""
    import torch

    ids = torch.tensor([generator.prompt_ids(PROMPT)])
    kwargs = dict(do_sample=False, pad_token_id=generator.tokenizer.pad_token_id)
    with torch.inference_mode():
        started = time.perf_counter()
        generator.model.generate(ids, max_new_tokens=1, **kwargs)
        ttft = time.perf_counter() - started
        started = time.perf_counter()
        out = generator.model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
        seconds = time.perf_counter() - started
    return (out.shape[1] - ids.shape[1]) / seconds, ttft


def baseline_in_thread(generator: ReplyGenerator, new_tokens: int) -> tuple[float, float]:
    """:func:`baseline` run in a worker thread, as the serving path runs (isolates the thread effect)."""
    return run_in_worker(lambda: baseline(generator, new_tokens))


def serving(generator: ReplyGenerator, new_tokens: int) -> tuple[float, float]:
    """(tokens/s, TTFT s) of :meth:`ReplyGenerator.stream` (stops early at ``<|im_end|>``)."""
    started, first, chunks = time.perf_counter(), None, []
    for chunk in generator.stream(PROMPT, max_new_tokens=new_tokens):
        first = first or time.perf_counter() - started
        chunks.append(chunk)
    seconds = time.perf_counter() - started
    produced = len(generator.tokenizer("".join(chunks), add_special_tokens=False)["input_ids"]) + 1
    return min(produced, new_tokens) / seconds, first or seconds


def _best(paths: dict, new_tokens: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Best tokens/s and median TTFT of each ``name -> (measure, generator)``, after one warm-up
    run each; the paths take turns in every repeat so a busy machine hurts them alike."""
    for measure, generator in paths.values():
        measure(generator, 8)
    runs: dict[str, list] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, (measure, generator) in paths.items():
            runs[name].append(measure(generator, new_tokens))
    return {name: (max(r[0] for r in rs), statistics.median(r[1] for r in rs)) for name, rs in runs.items()}


def quality(model: Path | None, settings, limit: int, new_tokens: int) -> dict[str, float]:
    """ROUGE-L F1 (x100) of the float32 and the int8 serving path on ``limit`` test examples."""
    from rouge_score import rouge_scorer

    from training.data import load, split
    from training.reply_data import clean_reply, with_replies

    data = load("bitext", settings.data_dir, settings.home)
    rows = with_replies(split(data, seed=settings.seed).test, data.name)[:limit]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = {}
    for name, options in {"fp32": ServingOptions(int8=False), "int8": VARIANTS["serve int8 (opt-in)"]}.items():
        generator = _load(model, settings, options)
        replies = generator.generate_batch([build_messages([], e.text, e.intent) for e in rows], new_tokens)
        rouge = [scorer.score(clean_reply(e.reply), r)["rougeL"].fmeasure for e, r in zip(rows, replies)]
        scores[name] = round(100 * sum(rouge) / len(rouge), 2)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--new-tokens", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quality", type=int, default=0, help="ROUGE-L sample size (0: skip)")
    args = parser.parse_args()
    settings = load_settings()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.new_tokens} new tokens")
    plain = _load(args.model, settings, VARIANTS["serve fp32 (default CPU)"])
    paths = {"baseline generate fp32": (baseline, plain), "baseline, worker thread": (baseline_in_thread, plain)}
    paths.update({name: (serving, _load(args.model, settings, options)) for name, options in VARIANTS.items()})
    results = _best(paths, args.new_tokens, args.repeats)
    tps0, ttft0 = results["baseline generate fp32"]
    for name, (tps, ttft) in results.items():
        print(f"{name:26s} {tps:6.1f} tok/s  TTFT {1000 * ttft:6.0f} ms  ({tps / tps0:.2f}x tok/s, "
              f"{ttft0 / ttft:.2f}x TTFT)")
    if args.quality:
        print(f"ROUGE-L on {args.quality} test examples:", quality(args.model, settings, args.quality, 128))


if __name__ == "__main__":
    main()
