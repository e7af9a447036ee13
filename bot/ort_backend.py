"""Replies generated with ONNX Runtime GenAI (``[serving] backend = "ort"``).

A replies version is converted once, on first load, to an ONNX model beside it
(``<version>/onnx-<precision>/``): its LoRA adapter merged into the base weights (``peft``'s
``merge_and_unload``, as :meth:`bot.generation.ReplyGenerator.load` does), then exported by
``onnxruntime-genai``'s model builder (``python -m onnxruntime_genai.models.builder -p int8 -e
cpu``; https://onnxruntime.ai/docs/genai/howto/build-model.html), in a scratch folder renamed when
complete, under a file lock. ``int8`` stores the linear weights in 8 bits (``MatMulNBits``) and
computes in float32; measured by ``bench/engines.py`` against plain float32 ``generate``.

:class:`OrtGenerator` is a :class:`bot.generation.ReplyGenerator` (same prompt, prompt cap, stop
tokens, slot names, ``stream``/``generate``/``generate_batch`` calls) whose tokens come from a
:class:`ContinuousBatcher`: every stream of the version joins one running batch at a token
boundary and leaves it when done, each with its own stream of tokens; the router's queue
(:mod:`bot.queue`) holds the rest, with their place shown, while all ``slots`` rows are taken.
The batcher runs the builder's ``model.onnx`` on plain ``onnxruntime`` with I/O binding:
onnxruntime-genai's own ``og.Engine`` batches only requests that start together on CPU (joining
a running batch needs its paged attention, CUDA-only in 0.18), and ``og.Generator`` decodes one
stream at a time. The slot constraint is the same code as in-process (:mod:`bot.slot_decoding`),
applied to each row's logits before its greedy choice.
Transformers stays the reference path: evaluation and the retraining gate use it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from bot.device import pick_device
from bot.errors import GenerationFailed, SupportbotError
from bot.generation import MERGED, ReplyGenerator, ServingOptions
from bot.generation.loading import model_folder
from bot.manifest import MANIFEST, ReplyManifest
from bot.prompting import Turn

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "int4", "fp32")
INSTALL = "pip install onnxruntime onnxruntime-genai onnx onnx-ir  (dependencies of supportbot: reinstall it with 'pip install -e .')"


def onnx_folder(folder: Path, precision: str, cache_dir: Path | None = None) -> Path:
    """The ONNX Runtime GenAI model of the replies version ``folder``, converted once.

    Args:
        folder: a replies version folder (adapter + manifest.json) or a plain model folder.
        precision: one of :data:`PRECISIONS`.
        cache_dir: the settings' cache folder (where the adapter's base model is found).

    Returns:
        ``folder/onnx-<precision>`` holding ``genai_config.json``, ``model.onnx`` and the tokenizer.

    Raises:
        SupportbotError: an unknown precision, the packages are missing, or the builder failed
            (the message holds the end of its output).
    """
    if precision not in PRECISIONS:
        raise SupportbotError(f"ort precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    target = folder / f"onnx-{precision}"
    if (target / "genai_config.json").is_file():
        return target
    missing = [m for m in ("onnxruntime_genai", "onnx", "onnx_ir") if importlib.util.find_spec(m) is None]
    if missing:
        raise SupportbotError(f"the ort serving backend needs {', '.join(missing)}; run: {INSTALL}")
    from filelock import FileLock

    with FileLock(str(target) + ".lock"):
        if (target / "genai_config.json").is_file():
            return target
        scratch = folder / f".onnx-{precision}.tmp-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            log.info("converting %s to ONNX (%s), once", folder, precision)
            _build(_merged_weights(folder, cache_dir, scratch / "merged"), precision, scratch / "model")
            os.replace(scratch / "model", target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _merged_weights(folder: Path, cache_dir: Path | None, scratch: Path) -> Path:
    """A transformers folder with the adapter merged: the version's ``merged/`` when present, the
    folder itself for a plain model, else the merge saved to ``scratch``."""
    if (folder / MERGED / "config.json").is_file() or not (folder / "adapter_config.json").is_file():
        return model_folder(folder)[0]
    plain = ServingOptions(dtype_name="float32", int8=False, draft_tokens=0, pack_weights=False)
    generator = ReplyGenerator.load(folder, cache_dir=cache_dir, device="cpu", options=plain)
    generator.model.save_pretrained(scratch)
    generator.tokenizer.save_pretrained(scratch)
    return scratch


def _build(source: Path, precision: str, output: Path) -> None:
    """Run onnxruntime-genai's model builder (CPU) on the transformers folder ``source``."""
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(output),
               "-p", precision, "-e", "cpu", "-c", str(output.parent / "builder-cache")]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0 or not (output / "genai_config.json").is_file():
        raise SupportbotError(f"{source}: ONNX conversion failed: {(run.stderr or run.stdout)[-600:]}")
    last_position_logits(output / "model.onnx")


def last_position_logits(model_file: Path) -> None:
    """Let the graph compute logits for the last position only (``[batch, 1, vocab]``): a
    ``Slice`` before the LM head, so a prefill chunk of n tokens skips n - 1 products with the
    49,152 x 576 head (about a fifth of SmolLM2-135M's prefill) and a [n, vocab] output.

    The builder's graph is edited in place; its weights (``model.onnx.data``) are untouched.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_file), load_external_data=False)
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    head = producers["logits"]
    while head.op_type == "Cast":
        head = producers[head.input[0]]
    sliced = head.input[0] + "/last_position"
    bounds = {"starts": -1, "ends": np.iinfo(np.int64).max, "axes": 1}
    for key, value in bounds.items():
        graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), f"{sliced}/{key}"))
    graph.node.insert(list(graph.node).index(head), helper.make_node(
        "Slice", [head.input[0], *(f"{sliced}/{key}" for key in bounds)], [sliced], name=sliced))
    head.input[0] = sliced
    length = next(o for o in graph.output if o.name == "logits").type.tensor_type.shape.dim[1]
    length.ClearField("dim_param")
    length.dim_value = 1
    onnx.save(model, str(model_file))


class _Request:
    """One reply in a :class:`ContinuousBatcher`: its prompt, what it produced, where it sits."""

    def __init__(self, ids: list[int], new_tokens: int, processor):
        self.ids, self.new_tokens, self.processor = list(ids), new_tokens, processor
        self.tokens: list[int] = []      # generated so far (stop token excluded)
        self.cached = 0                  # positions of its row in the key/value cache
        self.out: queue.SimpleQueue = queue.SimpleQueue()  # token ids, then None or an exception
        self.cancelled = False

    @property
    def decoding(self) -> bool:
        return self.cached >= len(self.ids)


class ContinuousBatcher:
    """Continuous batching over an ONNX model built by onnxruntime-genai's model builder.

    One scheduler thread owns an ``onnxruntime.InferenceSession`` and a key/value cache of
    ``slots`` rows (``[slots, kv heads, max_length, head size]`` per layer and kind). A reply
    joins at a token boundary: its prompt is prefilled into the first free row in chunks of at
    most ``prefill_chunk`` tokens, one chunk between two decode steps, so a newcomer stalls the
    others for one chunk at a time; then it decodes with every other decoding row in one forward
    pass (``input_ids [rows, 1]``), and leaves when it stops (stop token, ``new_tokens``, full
    row, or its consumer left); the rows after it then move down one. Rows ``0..decoding-1``
    always decode; the one prefilling sits right after them.

    The cache is one buffer that the graph reads and writes in place (past and present bound to
    the same memory, onnxruntime-genai's ``past_present_share_buffer``); the builder's
    ``GroupQueryAttention`` takes each row's length from its ``attention_mask`` row (right
    padding) and rotates positions itself, so rows of different lengths decode together.
    Decoding is greedy, the slot constraint applied per row (:mod:`bot.slot_decoding`); a reply's
    tokens are those it gets alone, whoever shares its steps (``tests/test_ort_backend.py``
    compares them with transformers float32, one reply at a time).

    Sources: Orca (Yu et al., OSDI 2022) for iteration-level scheduling; Sarathi (Agrawal et al.,
    2023) for chunked prefill; https://onnxruntime.ai/docs/api/python/api_summary.html#iobinding.

    Raises:
        SupportbotError: the ONNX model has inputs this scheduler does not feed.
    """

    def __init__(self, onnx_dir: Path, stops: Sequence[int], slots: int, max_length: int, prefill_chunk: int = 128):
        import onnxruntime as ort

        config = json.loads((onnx_dir / "genai_config.json").read_text())["model"]
        decoder = config["decoder"]
        self.vocab, self.layers = config["vocab_size"], decoder["num_hidden_layers"]
        self.stops, self.slots, self.max_length, self.prefill_chunk = set(stops), slots, max_length, prefill_chunk
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # other threads need the cores
        self.session = ort.InferenceSession(str(onnx_dir / decoder["filename"]), options,
                                            providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        names = decoder["inputs"], decoder["outputs"]
        self.cache_names = [(names[0][f"past_{kind}_names"] % layer, names[1][f"present_{kind}_names"] % layer)
                            for layer in range(self.layers) for kind in ("key", "value")]
        fed = {names[0]["input_ids"], names[0]["attention_mask"], *(past for past, _ in self.cache_names)}
        if set(inputs) - fed:
            raise SupportbotError(f"{onnx_dir}: ONNX inputs {sorted(set(inputs) - fed)} are not supported "
                                  "(rebuild the version's onnx folder with this onnxruntime-genai)")
        self.ids_name, self.mask_name, self.logits_name = names[0]["input_ids"], names[0]["attention_mask"], names[1]["logits"]
        logits = next(o for o in self.session.get_outputs() if o.name == self.logits_name)
        self.last_only = logits.shape[1] == 1  # last_position_logits applied (older conversions: every position)
        self.dtype = np.float16 if "float16" in inputs[self.cache_names[0][0]].type else np.float32
        shape = (slots, decoder["num_key_value_heads"], max_length, decoder["head_size"])
        self.cache = [np.zeros(shape, self.dtype) for _ in self.cache_names]
        self.rows: list[_Request] = []
        self.waiting: deque[_Request] = deque()
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=_schedule, args=(weakref.ref(self),), name="ort-batcher", daemon=True)
        self.thread.start()

    def tokens(self, ids: list[int], new_tokens: int, processor=None) -> Iterator[int]:
        """Greedy token ids after the prompt ``ids``, the stop token left out.

        Args:
            ids: prompt token ids (at most ``max_length - 1``).
            new_tokens: the most tokens to generate.
            processor: a :class:`bot.slot_decoding.SlotLogitsProcessor` or None.

        Yields:
            Token ids as the batch produces them; closing the iterator frees the row at the
            next step.

        Raises:
            SupportbotError: the prompt does not fit a row.
            GenerationFailed: the forward pass failed (the router gives its no-answer reply and
                logs why); the scheduler goes on with the next replies.
        """
        if len(ids) >= self.max_length:
            raise SupportbotError(f"the prompt has {len(ids)} tokens; the ort cache holds {self.max_length}")
        if new_tokens <= 0:
            return
        request = _Request(ids, min(new_tokens, self.max_length - len(ids)), processor)
        with self.changed:
            self.waiting.append(request)
            self.changed.notify()
        try:
            while (item := request.out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancelled = True

    # ---- the scheduler thread --------------------------------------------------------------

    def _next(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` seconds for work; then drop finished rows, admit a newcomer when
        no row is prefilling, and run one step."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.rows or self.waiting, wait_s):
                return
            self._drop_finished()
            while self.waiting and self.waiting[0].cancelled:
                self.waiting.popleft()
            if len(self.rows) < self.slots and self.waiting and all(r.decoding for r in self.rows):
                self.rows.append(self.waiting.popleft())
        try:
            self._step()
        except Exception as exc:  # every reply in the batch fails; the scheduler goes on
            log.exception("ort batch step failed")
            with self.changed:
                for request in self.rows:
                    request.out.put(GenerationFailed(f"onnxruntime batch step failed: {exc}"))
                self.rows.clear()

    def _step(self) -> None:
        """One prefill chunk of the newcomer (if any), then one decode step of the others."""
        decoding = [r for r in self.rows if r.decoding]
        if len(decoding) < len(self.rows):
            row, request = len(decoding), self.rows[len(decoding)]
            chunk = request.ids[request.cached:request.cached + self.prefill_chunk]
            end = request.cached + len(chunk)
            logits = self._forward(row, row + 1, np.array([chunk], np.int64), np.ones((1, end), np.int64))
            request.cached = end
            if request.decoding:
                self._emit(request, logits[0, -1])
        if decoding:
            width = max(r.cached for r in decoding) + 1
            mask = (np.arange(width)[None, :] <= np.array([r.cached for r in decoding])[:, None]).astype(np.int64)
            last = np.array([[r.tokens[-1]] for r in decoding], np.int64)
            logits = self._forward(0, len(decoding), last, mask)
            for i, request in enumerate(decoding):
                request.cached += 1
                self._emit(request, logits[i, -1])

    def _forward(self, first: int, end: int, input_ids, attention_mask):
        """Logits ``[end - first, seq or 1, vocab]`` of rows ``first..end-1``, their cache updated in place."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.ids_name, input_ids)
        binding.bind_cpu_input(self.mask_name, attention_mask)
        for buffer, (past, present) in zip(self.cache, self.cache_names):
            rows = buffer[first:end]  # contiguous: the rows are the first axis
            for name, bind in ((past, binding.bind_input), (present, binding.bind_output)):
                bind(name, "cpu", 0, self.dtype, list(rows.shape), rows.ctypes.data)
        logits = np.empty((end - first, 1 if self.last_only else input_ids.shape[1], self.vocab), np.float32)
        binding.bind_output(self.logits_name, "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self.session.run_with_iobinding(binding)
        return logits

    def _emit(self, request: _Request, scores) -> None:
        """Choose the request's next token from its ``scores [vocab]`` and hand it over."""
        if request.processor is not None:
            import torch

            row = torch.from_numpy(scores.reshape(1, -1))
            request.processor(torch.tensor([request.ids + request.tokens]), row)  # masks in place
        token = int(scores.argmax())
        if token in self.stops or request.cancelled:
            request.new_tokens = 0
            return
        request.tokens.append(token)
        request.out.put(token)
        if len(request.tokens) >= request.new_tokens:
            request.new_tokens = 0

    def _drop_finished(self) -> None:
        """Remove finished rows, the others keeping their order (caller holds the lock): each row
        moves down into the lowest free one (its key/value copied, up to its length), so the
        decoding rows stay first and the prefilling one right after them."""
        alive = []
        for request in self.rows:
            if request.new_tokens > 0 and not request.cancelled and request.cached < self.max_length - 1:
                alive.append(request)
            else:
                request.out.put(None)
        for target, request in enumerate(alive):
            source = self.rows.index(request)
            if source != target:  # target < source, and no later row's source is below it
                for buffer in self.cache:
                    buffer[target, :, :request.cached] = buffer[source, :, :request.cached]
        self.rows = alive


def _schedule(batcher: "weakref.ref[ContinuousBatcher]") -> None:
    """The scheduler thread: steps the batcher while it exists. It holds the batcher only for one
    wait or step at a time, so a version that is switched out (and its session and cache) is
    freed once its last reply ends."""
    while (strong := batcher()) is not None:
        strong._next(wait_s=1.0)
        del strong


class OrtGenerator(ReplyGenerator):
    """A reply generator on ONNX Runtime (see the module docstring).

    Attributes:
        batcher: the :class:`ContinuousBatcher` every stream of this version joins.
        folder: its ONNX folder.
    """

    def __init__(self, onnx_dir: Path, tokenizer, version: str, manifest: ReplyManifest, options: ServingOptions,
                 slots: int = 8, prefill_chunk: int = 128):
        super().__init__(None, tokenizer, version, pick_device("cpu"), options, manifest)
        self.folder = onnx_dir
        self.version = f"{version}+{onnx_dir.name}"  # the turn log says which engine served: v3+onnx-int8
        self.batcher = ContinuousBatcher(onnx_dir, self.stop_token_ids, slots,
                                         options.max_prompt_tokens + options.max_new_tokens, prefill_chunk)

    @classmethod
    def load(cls, folder: str | Path, cache_dir: str | Path | None = None, precision: str = "int8",
             options: ServingOptions | None = None, slots: int = 8, prefill_chunk: int = 128) -> "OrtGenerator":
        """Load a replies version, converting it first when ``onnx-<precision>/`` is missing.

        Args:
            slots: replies decoded together (the batch's rows; the router's
                ``max_concurrent_generations``).
            prefill_chunk: prompt tokens prefilled between two decode steps.

        Raises:
            SupportbotError: see :func:`onnx_folder`; no such folder or manifest.
        """
        from transformers import AutoTokenizer

        folder = Path(folder).expanduser()
        _, manifest, version = model_folder(folder)
        onnx_dir = onnx_folder(folder, precision, cache_dir and Path(cache_dir))
        options = ServingOptions(max_prompt_tokens=(options or ServingOptions()).max_prompt_tokens,
                                 max_new_tokens=(options or ServingOptions()).max_new_tokens,
                                 draft_tokens=0, pack_weights=False, dtype_name="float32", int8=False)
        return cls(onnx_dir, AutoTokenizer.from_pretrained(onnx_dir), version, manifest, options, slots, prefill_chunk)

    def stream(self, messages=None, *, history: Sequence[Turn] | None = None, user_text: str | None = None,
               intent: str | None = None, max_new_tokens: int | None = None,
               references: Sequence[str] = ()) -> Iterator[str]:
        """Stream the reply as text chunks, greedy; same contract as
        :meth:`bot.generation.ReplyGenerator.stream` (stops at ``<|im_end|>`` or after
        ``max_new_tokens``; closing the iterator stops generation; returns the finish reason)."""
        ids = self.prompt_ids(self.messages_for(messages, history, user_text, intent, references))
        tokens: list[int] = []
        shown, cap = "", max_new_tokens or self.options.max_new_tokens
        for token in self.tokens(ids, cap):
            tokens.append(token)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half a multi-byte character: wait for the rest
                continue
            if len(text) > len(shown):
                yield text[len(shown):]
                shown = text
        return "length" if len(tokens) >= cap else "stop"

    def tokens(self, ids: list[int], new_tokens: int) -> Iterator[int]:
        """Greedy token ids after ``ids`` from the batch, without the stop token; the slot
        constraint applied."""
        processor = self.known_slots.processor(len(ids)) if self.known_slots else None
        return self.batcher.tokens(ids, new_tokens, processor)

    def generate_batch(self, conversations, max_new_tokens: int | None = None, progress: bool = False) -> list[str]:
        """One greedy reply per conversation, in order, all decoded in the batch together."""
        results: list = [None] * len(conversations)

        def one(i: int) -> None:
            results[i] = self.generate(list(conversations[i]), max_new_tokens=max_new_tokens)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(conversations))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results
