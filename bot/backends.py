"""Which generator answers for a replies version: the ``[serving] backend`` switch.

* ``auto`` (default): ``ort`` on a CPU, ``local`` on a GPU (:func:`backend_of`);
* ``local``: :class:`bot.generation.ReplyGenerator` in this process (transformers; the
  reference path, which evaluation uses too);
* ``ort``: :class:`bot.ort_backend.OrtGenerator`, ONNX Runtime in this process, one continuous
  batch of every reply;
* ``openai``: :class:`bot.openai_backend.OpenAIGenerator`, replies streamed from an
  OpenAI-compatible server (vLLM, TGI).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def backend_of(serving) -> str:
    """The backend ``serving.backend`` names, ``auto`` resolved: ``local`` when a GPU is there
    (transformers on CUDA), else ``ort`` (measured by ``bench/engines.py``)."""
    if serving.backend != "auto":
        return serving.backend
    from bot.device import pick_device

    return "local" if pick_device().name == "cuda" else "ort"


def generator_loader(serving, cache_dir: Path, slots: int) -> Callable[[Path], Any]:
    """``folder -> generator`` for :class:`bot.models.LiveModels`, per ``serving.backend``.

    Args:
        serving: :class:`bot.settings.ServingConfig`.
        cache_dir: the settings' cache folder (converted base models).
        slots: replies generated at once (``router.max_concurrent_generations``): the rows of
            the ``ort`` backend's continuous batch.
    """
    backend = backend_of(serving)
    if backend == "openai":
        from bot.openai_backend import OpenAIGenerator

        return lambda folder: OpenAIGenerator.for_version(serving.openai, folder)
    if backend == "ort":
        from bot.ort_backend import OrtGenerator

        return lambda folder: OrtGenerator.load(folder, cache_dir=cache_dir, precision=serving.ort_precision,
                                                options=serving.options(), slots=slots,
                                                prefill_chunk=serving.prefill_chunk)
    from bot.generation import ReplyGenerator

    options = serving.options()
    return lambda folder: ReplyGenerator.load(folder, cache_dir=cache_dir, options=options)
