"""Speed of the retrieval-augmented serving path against today's, on the same requests in one run.

Run::

    python bench/rag_speed.py --rag RAG_VERSION --plain PLAIN_VERSION [--prompts 8] [--new-tokens 160]

Both versions are served as the bot serves them (:meth:`bot.generation.ReplyGenerator.stream`,
default :class:`bot.generation.ServingOptions`: retrieval-based speculative decoding from the
version's ``drafts.json``); the retrieval-augmented one gets the approved answers its store
retrieves for each request (:func:`training.reply_eval.retrieved_answers`) in the prompt, and its
drafts come from that prompt first (prompt lookup). The paths take turns on each held-out Bitext
test request, so a busy machine slows them alike. Printed per path: new tokens, model forward
passes (each one decoding step or one check of a draft), tokens per forward pass, tokens/s over
all replies (prefill included), median time to first text, and the ratios to ``plain``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.generation import ReplyGenerator, ServingOptions  # noqa: E402
from bot.settings import load_settings  # noqa: E402


def run_one(generator: ReplyGenerator, example, references, new_tokens: int, calls: list[int]) -> dict:
    """One streamed reply: new tokens (end-of-turn included), forward passes, seconds, first-text seconds."""
    before = calls[0]
    started, first, chunks = time.perf_counter(), None, []
    for chunk in generator.stream(user_text=example.text, intent=example.intent, max_new_tokens=new_tokens,
                                  references=references or ()):
        first = first or time.perf_counter() - started
        chunks.append(chunk)
    seconds = time.perf_counter() - started
    tokens = min(len(generator.tokenizer("".join(chunks), add_special_tokens=False)["input_ids"]) + 1, new_tokens)
    return {"tokens": tokens, "forwards": calls[0] - before - 1, "seconds": seconds, "first": first or seconds}


def main() -> None:
    from bench.generation import test_examples
    from training.reply_eval import retrieved_answers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rag", type=Path, required=True, help="replies version trained with retrieval")
    parser.add_argument("--plain", type=Path, required=True, help="replies version trained without (today's)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=160)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    settings = load_settings()
    examples = test_examples(settings)[: args.prompts + 1]
    references = retrieved_answers(args.rag, examples, settings)
    paths, counters = {}, {}
    for name, folder, refs in (("plain", args.plain, None), ("rag", args.rag, references),
                               ("rag, drafts off", args.rag, references)):
        options = ServingOptions(draft_tokens=0) if "off" in name else ServingOptions()
        generator = ReplyGenerator.load(folder, cache_dir=settings.cache, device="cpu", options=options)
        calls = [0]
        generator.model.register_forward_pre_hook(lambda *_, calls=calls: calls.__setitem__(0, calls[0] + 1))
        paths[name], counters[name] = (generator, refs), calls
    for name, (generator, refs) in paths.items():  # warm-up on the extra request
        run_one(generator, examples[-1], refs[-1] if refs else None, 4, counters[name])
    runs = {name: [] for name in paths}
    for i, example in enumerate(examples[:-1]):
        for name, (generator, refs) in paths.items():
            runs[name].append(run_one(generator, example, refs[i] if refs else None, args.new_tokens, counters[name]))
    result = {"prompts": len(examples) - 1, "new_tokens": args.new_tokens, "dtype": paths["plain"][0].options.dtype_name,
              "paths": {}}
    for name, rs in runs.items():
        tokens, forwards, seconds = (sum(r[k] for r in rs) for k in ("tokens", "forwards", "seconds"))
        result["paths"][name] = {"tokens": tokens, "forwards": forwards, "tokens_per_forward": round(tokens / forwards, 2),
                                 "tok_s": round(tokens / seconds, 1),
                                 "first_text_s_median": round(statistics.median(r["first"] for r in rs), 3)}
    plain = result["paths"]["plain"]
    print(f"{'path':<18}{'tokens':>8}{'forwards':>10}{'tok/fwd':>9}{'tok/s':>8}{'first text s':>14}{'x plain tok/s':>15}")
    for name, m in result["paths"].items():
        print(f"{name:<18}{m['tokens']:>8}{m['forwards']:>10}{m['tokens_per_forward']:>9}{m['tok_s']:>8}"
              f"{m['first_text_s_median']:>14}{m['tok_s'] / plain['tok_s']:>15.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
