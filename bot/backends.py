"""Which generator answers for a replies version: the ``[serving] backend`` switch.

* ``local`` (default): :class:`bot.generation.ReplyGenerator` in this process (transformers; the
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


def generator_loader(serving, cache_dir: Path, slots: int) -> Callable[[Path], Any]:
    """``folder -> generator`` for :class:`bot.models.LiveModels`, per ``serving.backend``.

    Args:
        serving: :class:`bot.settings.ServingConfig`.
        cache_dir: the settings' cache folder (converted base models).
        slots: replies generated at once (``router.max_concurrent_generations``): the rows of
            the ``ort`` backend's continuous batch.
    """
    if serving.backend == "openai":
        from bot.openai_backend import OpenAIGenerator

        return lambda folder: OpenAIGenerator.for_version(serving.openai, folder)
    if serving.backend == "ort":
        from bot.ort_backend import OrtGenerator

        return lambda folder: OrtGenerator.load(folder, cache_dir=cache_dir, precision=serving.ort_precision,
                                                options=serving.options(), slots=slots,
                                                prefill_chunk=serving.prefill_chunk)
    from bot.generation import ReplyGenerator

    options = serving.options()
    return lambda folder: ReplyGenerator.load(folder, cache_dir=cache_dir, options=options)
