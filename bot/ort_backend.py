"""Replies generated with ONNX Runtime GenAI (``[serving] backend = "ort"``).

A replies version is converted once, on first load, to an ONNX model beside it
(``<version>/onnx-<precision>/``): its LoRA adapter merged into the base weights (``peft``'s
``merge_and_unload``, as :meth:`bot.generation.ReplyGenerator.load` does), then exported by
``onnxruntime-genai``'s model builder (``python -m onnxruntime_genai.models.builder -p int8 -e
cpu``; https://onnxruntime.ai/docs/genai/howto/build-model.html), in a scratch folder renamed when
complete, under a file lock. ``int8`` stores the linear weights in 8 bits (``MatMulNBits``) and
computes in float32; measured by ``bench/engines.py`` against plain float32 ``generate``.

:class:`OrtGenerator` is a :class:`bot.generation.ReplyGenerator` (same prompt, prompt cap, stop
tokens, slot names, ``stream``/``generate``/``generate_batch`` calls) whose tokens come from an
``og.Generator``, one per stream, greedy. The slot constraint is the same code as in-process
(:mod:`bot.slot_decoding`): each step's logits are read (``get_logits``), masked by
:class:`bot.slot_decoding.SlotLogitsProcessor` and written back (``set_logits``) before the next
token is chosen. Streams run concurrently, each on its own ``og.Generator`` (the router's queue
bounds how many); ``og.Engine``'s scheduler is not used: on CPU it batches only requests that
start together (a static batch; joining a running batch needs its paged attention, CUDA-only
in onnxruntime-genai 0.18) and it has no per-token logits hook for the slot constraint.
Transformers stays the reference path: evaluation and the retraining gate use it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from bot.device import pick_device
from bot.errors import SupportbotError
from bot.generation import MERGED, ReplyGenerator, ServingOptions
from bot.generation.loading import model_folder
from bot.manifest import MANIFEST, ReplyManifest
from bot.prompting import Turn

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "int4", "fp32")
INSTALL = "pip install 'supportbot[ort]'  (onnxruntime-genai, onnx, onnx-ir)"


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


class OrtGenerator(ReplyGenerator):
    """A reply generator on ONNX Runtime GenAI (see the module docstring).

    Attributes:
        onnx: the ``og.Model``.
        folder: its ONNX folder.
    """

    def __init__(self, onnx_dir: Path, tokenizer, version: str, manifest: ReplyManifest, options: ServingOptions):
        import onnxruntime_genai as og

        self.og, self.folder = og, onnx_dir
        self.onnx = og.Model(str(onnx_dir))
        device = pick_device("cpu")
        super().__init__(None, tokenizer, version, device, options, manifest)

    @classmethod
    def load(cls, folder: str | Path, cache_dir: str | Path | None = None, precision: str = "int8",
             options: ServingOptions | None = None) -> "OrtGenerator":
        """Load a replies version, converting it first when ``onnx-<precision>/`` is missing.

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
        return cls(onnx_dir, AutoTokenizer.from_pretrained(onnx_dir), version, manifest, options)

    def stream(self, messages=None, *, history: Sequence[Turn] | None = None, user_text: str | None = None,
               intent: str | None = None, max_new_tokens: int | None = None,
               references: Sequence[str] = ()) -> Iterator[str]:
        """Stream the reply as text chunks, greedy; same contract as
        :meth:`bot.generation.ReplyGenerator.stream` (stops at ``<|im_end|>`` or after
        ``max_new_tokens``; closing the iterator stops generation)."""
        ids = self.prompt_ids(self.messages_for(messages, history, user_text, intent, references))
        tokens: list[int] = []
        shown = ""
        for token in self._tokens(ids, max_new_tokens or self.options.max_new_tokens):
            tokens.append(token)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half a multi-byte character: wait for the rest
                continue
            if len(text) > len(shown):
                yield text[len(shown):]
                shown = text

    def _tokens(self, ids: list[int], new_tokens: int) -> Iterator[int]:
        """Greedy token ids after ``ids``, without the stop token; the slot constraint applied."""
        import numpy as np
        import torch

        og, stops = self.og, set(self.stop_token_ids)
        params = og.GeneratorParams(self.onnx)
        params.set_search_options(max_length=len(ids) + new_tokens, do_sample=False)
        generator = og.Generator(self.onnx, params)
        processor = self.known_slots.processor(len(ids)) if self.known_slots else None
        sequence = list(ids)
        generator.append_tokens(np.array(ids, dtype=np.int32))  # prefill
        for _ in range(new_tokens):
            if generator.is_done():
                return
            if processor is not None:
                logits = generator.get_logits()
                scores = torch.from_numpy(logits.reshape(1, -1).copy())
                processor(torch.tensor([sequence]), scores)
                generator.set_logits(scores.numpy().reshape(logits.shape))
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if token in stops:
                return
            sequence.append(token)
            yield token

    def generate_batch(self, conversations, max_new_tokens: int | None = None, progress: bool = False) -> list[str]:
        """One greedy reply per conversation, in order (one stream after the other)."""
        return [self.generate(list(m), max_new_tokens=max_new_tokens) for m in conversations]

