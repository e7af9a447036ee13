"""Generation speed: plain ``model.generate`` in float32 (baseline) vs the serving path.

Run::

    python bench/generation.py [--model VERSION_OR_MODEL_DIR] [--new-tokens 120] [--prompts 6]
                               [--warm 6] [--quality 16]

``--model`` is a replies version folder or a plain model folder; default the base model
``settings.reply_base``. Every path writes a reply of up to ``--new-tokens`` tokens (stopping at
``<|im_end|>``) to each of ``--prompts`` held-out Bitext test requests; the paths take turns on
each request, so a busy or noisy machine slows them alike. Printed per path: tokens/s over all
replies (prefill included), median time to first token (TTFT), and the ratios to the baseline.

Paths:

* ``baseline``: plain ``model.generate`` in float32 of the model as trained: base model plus
  LoRA adapter, unmerged, as ``peft`` loads it (for a plain model folder: that model).
* ``merged``: the same call on the merged model.
* ``serve (default)``: :meth:`bot.generation.ReplyGenerator.stream`, the bot's path with default
  settings: merged; bf16 when the CPU computes it natively, else float32
  (:func:`bot.device.cpu_serving_dtype_name`; printed) with, in bf16, linear weights packed once
  by oneDNN (:mod:`bot.generation.packing`); retrieval-based speculative decoding (:mod:`bot.generation.speculative`)
  from the version's ``drafts.json``. In float32 the datastore also holds the path's replies to
  ``--warm`` other test requests answered first (never the measured requests themselves).
* ``serve float32``: the same in float32 (``[serving] dtype = "float32"``: the exact replies of
  plain float32 greedy decoding).
* ``serve int8 (opt-in)``: dynamic int8 quantisation, no drafts (see ``ServingOptions``).

``--quality N`` writes N other test replies with the merged model's plain greedy stream and with
each serving path, and prints ROUGE-L against the reference replies and how many serving replies
are identical to the plain ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.generation import ReplyGenerator, ServingOptions  # noqa: E402
from bot.generation.streaming import run_in_worker  # noqa: E402
from bot.prompting import build_messages  # noqa: E402
from bot.settings import load_settings  # noqa: E402

PLAIN = ServingOptions(dtype_name="float32", int8=False, draft_tokens=0, pack_weights=False)
SERVING = {
    "serve (default)": ServingOptions(),
    "serve float32": ServingOptions(dtype_name="float32"),
    "serve int8 (opt-in)": ServingOptions(dtype_name="float32", int8=True),
}


def _load(model: Path | None, settings, options: ServingOptions, merge: bool = True) -> ReplyGenerator:
    from bot.base_models import resolve

    if model is not None and ((model / "manifest.json").is_file() or model.name == "merged"):
        return ReplyGenerator.load(model, cache_dir=settings.cache, device="cpu", options=options, merge=merge)
    folder = model or resolve(settings.reply_base, settings.cache)
    return ReplyGenerator.from_pretrained(folder, "base", device="cpu", options=options)


def plain_generate(generator: ReplyGenerator, example, new_tokens: int) -> tuple[int, float, float]:
    """(new tokens, seconds, TTFT s) of plain float32 ``model.generate`` in a worker thread
    (as the serving path runs); TTFT is a separate one-token call."""
    import torch

    ids = torch.tensor([generator.prompt_ids(build_messages([], example.text, example.intent))])
    kwargs = dict(do_sample=False, pad_token_id=generator.tokenizer.pad_token_id,
                  eos_token_id=generator.stop_token_ids, attention_mask=torch.ones_like(ids))

    def run():
        with torch.inference_mode():
            started = time.perf_counter()
            generator.model.generate(ids, max_new_tokens=1, **kwargs)
            ttft = time.perf_counter() - started
            started = time.perf_counter()
            out = generator.model.generate(ids, max_new_tokens=new_tokens, **kwargs)
            return out.shape[1] - ids.shape[1], time.perf_counter() - started, ttft

    return run_in_worker(run)


def stream(generator: ReplyGenerator, example, new_tokens: int) -> tuple[int, float, float]:
    """(new tokens, seconds, TTFT s) of :meth:`ReplyGenerator.stream` (the end-of-turn token counts)."""
    started, first, chunks = time.perf_counter(), None, []
    for chunk in generator.stream(user_text=example.text, intent=example.intent, max_new_tokens=new_tokens):
        first = first or time.perf_counter() - started
        chunks.append(chunk)
    seconds = time.perf_counter() - started
    tokens = len(generator.tokenizer("".join(chunks), add_special_tokens=False)["input_ids"]) + 1
    return min(tokens, new_tokens), seconds, first or seconds


def measure(paths: dict, examples: list, new_tokens: int) -> dict[str, tuple[float, float]]:
    """(tokens/s over all replies, median TTFT s) per ``name -> (measure, generator)``; every
    path answers each example in turn, after one short warm-up call each."""
    for run, generator in paths.values():
        run(generator, examples[0], 4)
    runs: dict[str, list] = {name: [] for name in paths}
    for example in examples:
        for name, (run, generator) in paths.items():
            runs[name].append(run(generator, example, new_tokens))
    return {name: (sum(r[0] for r in rs) / sum(r[1] for r in rs), statistics.median(r[2] for r in rs))
            for name, rs in runs.items()}


def test_examples(settings) -> list:
    """The Bitext test split's examples with a reply (the split training held out)."""
    from training.data import load, split
    from training.reply_data import with_replies

    data = load("bitext", settings.data_dir, settings.home)
    return with_replies(split(data, seed=settings.seed).test, data.name)


def quality(paths: dict[str, ReplyGenerator], plain: ReplyGenerator, examples: list,
            new_tokens: int) -> dict[str, str]:
    """ROUGE-L F1 (x100) of each generator's streamed replies, and for the serving paths how many
    replies equal the plain stream's, on ``examples``."""
    from training.metrics import rouge_l
    from training.reply_data import clean_reply

    replies = {name: [g.generate(user_text=e.text, intent=e.intent, max_new_tokens=new_tokens) for e in examples]
               for name, g in {"merged (plain stream)": plain, **paths}.items()}
    reference = replies["merged (plain stream)"]
    out = {}
    for name, texts in replies.items():
        rouge = rouge_l(texts, [clean_reply(e.reply) for e in examples])
        same = sum(a == b for a, b in zip(texts, reference))
        out[name] = f"ROUGE-L {rouge:.2f}, identical to plain {same}/{len(examples)}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--new-tokens", type=int, default=120)
    parser.add_argument("--prompts", type=int, default=6, help="test requests timed per path")
    parser.add_argument("--warm", type=int, default=6, help="other test requests answered first (drafts)")
    parser.add_argument("--quality", type=int, default=0, help="ROUGE-L sample size (0: skip)")
    args = parser.parse_args()
    settings = load_settings()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.new_tokens} new tokens, "
          f"{args.prompts} prompts")
    examples = test_examples(settings)
    timed, warm, rest = (examples[:args.prompts], examples[args.prompts:args.prompts + args.warm],
                         examples[args.prompts + args.warm:])
    merged = _load(args.model, settings, PLAIN)
    serving = {name: _load(args.model, settings, options) for name, options in SERVING.items()}
    print(f"serve (default) runs in {serving['serve (default)'].options.dtype_name} on this CPU")
    for example in warm:
        for generator in serving.values():
            if generator.learns_drafts:
                generator.generate(user_text=example.text, intent=example.intent, max_new_tokens=args.new_tokens)
    paths = {"baseline generate fp32": (plain_generate, _load(args.model, settings, PLAIN, merge=False)),
             "merged generate fp32": (plain_generate, merged)}
    paths.update({name: (stream, generator) for name, generator in serving.items()})
    results = measure(paths, timed, args.new_tokens)
    tps0, ttft0 = results["baseline generate fp32"]
    tps1 = results["merged generate fp32"][0]
    for name, (tps, ttft) in results.items():
        print(f"{name:30s} {tps:6.1f} tok/s  TTFT {1000 * ttft:6.0f} ms  ({tps / tps0:.2f}x baseline, "
              f"{tps / tps1:.2f}x merged; {ttft0 / ttft:.2f}x TTFT)")
    if args.quality:
        for name, line in quality(serving, merged, rest[:args.quality], args.new_tokens).items():
            print(f"{name:30s} {line}")


if __name__ == "__main__":
    main()
