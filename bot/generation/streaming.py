"""Streaming: a prompt becomes a stream of text chunks, ``generate`` running in a worker thread.

transformers' ``TextIteratorStreamer``
(https://huggingface.co/docs/transformers/internal/generation_utils#transformers.TextIteratorStreamer)
hands the decoded text to the consuming thread; closing the stream early stops generation. This is
the one seam between the generator and the engine that runs the model: :func:`stream_text`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, nullcontext


def run_in_worker(fn):
    """``fn()`` run in a worker thread, its result returned and its exception re-raised.

    Generation runs off the main thread both when streaming and in batches: on a busy CPU,
    torch's OpenMP pool in the main thread was measured up to 18x slower than in a worker thread
    (SmolLM2-135M, 2 shared cores, ``bench/generation.py``).
    """
    result: list = []

    def body():
        try:
            result.append((True, fn()))
        except BaseException as exc:  # handed to the calling thread
            result.append((False, exc))

    worker = threading.Thread(target=body, daemon=True)
    worker.start()
    worker.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


class _Cancel:
    """A ``StoppingCriteria`` that stops generation once :meth:`set` is called (consumer left)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def set(self) -> None:
        self.event.set()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                          device=input_ids.device)


def stream_text(model, tokenizer, generate_kwargs: dict, context: AbstractContextManager | None = None,
                on_complete: Callable[[list[int]], None] | None = None) -> Generator[str, None, str]:
    """Greedy ``model.generate(**generate_kwargs)`` for one prompt, yielded as text chunks.

    Args:
        generate_kwargs: ``input_ids`` (``[1, prompt length]``) and the other ``generate``
            arguments; a streamer and a stopping criterion are added here.
        context: entered around ``generate`` in the worker thread (e.g. speculative decoding,
            :func:`bot.generation.speculative.drafting`).
        on_complete: called in the worker with the reply's token ids when generation finished
            without the consumer leaving.

    Yields:
        Non-empty text chunks without special tokens; closing the iterator stops generation.

    Returns:
        The finish reason (the generator's return value, ``StopIteration.value``): ``"length"``
        when ``max_new_tokens`` stopped it, else ``"stop"`` (an end-of-turn token).

    Raises:
        Any error of ``generate``, re-raised in the consuming thread. Streams run concurrently
        (greedy decoding on a shared model is thread-safe); how many at once is bounded by the
        router's queue (:mod:`bot.queue`).
    """
    import torch
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    cancel, failure, last = _Cancel(), [], []
    prompt = generate_kwargs["input_ids"]
    kwargs = dict(generate_kwargs, streamer=streamer, stopping_criteria=StoppingCriteriaList([cancel]))

    def run() -> None:
        try:
            with torch.inference_mode(), context or nullcontext():
                out = model.generate(attention_mask=torch.ones_like(prompt), **kwargs)
        except Exception as exc:  # handed to the consuming thread
            failure.append(exc)
            streamer.end()
            return
        last.append(int(out[0, -1]))
        if on_complete and not cancel.event.is_set():
            on_complete(out[0, prompt.shape[1]:].tolist())

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    finished = False
    try:
        for chunk in streamer:
            if chunk:
                yield chunk
        finished = True
    finally:
        if not finished:
            cancel.set()
        worker.join()
    if failure:
        raise failure[0]
    stops = generate_kwargs.get("eos_token_id")
    return "stop" if last and last[0] in (stops if isinstance(stops, list) else [stops]) else "length"
