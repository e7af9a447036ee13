"""The reply generator: :class:`ReplyGenerator` (prompts, streaming, batches) in
:mod:`bot.generation.generator`; loading and :class:`ServingOptions` in :mod:`bot.generation.loading`;
the thread that turns a prompt into text chunks in :mod:`bot.generation.streaming`; the speed-ups in
:mod:`bot.generation.speculative` (drafts) and :mod:`bot.generation.packing` (oneDNN weights)."""

from bot.generation.generator import ReplyGenerator
from bot.generation.loading import MERGED, ServingOptions

__all__ = ["MERGED", "ReplyGenerator", "ServingOptions"]
