"""Replies streamed from an OpenAI-compatible server (vLLM, TGI, ...) instead of generated in-process.

``[serving] backend = "openai"`` makes the router's generator an :class:`OpenAIGenerator`: the
same ``stream(history=, user_text=, intent=, max_new_tokens=)`` call as
:class:`bot.generation.ReplyGenerator`, the same prompt (:func:`bot.prompting.build_messages`), sent
as ``POST <base_url>/chat/completions`` with ``"stream": true``; the reply arrives as Server-Sent
Events (``data: {json chunk}`` lines, ``data: [DONE]`` at the end), the format of the OpenAI
chat completions API (https://platform.openai.com/docs/api-reference/chat-streaming), which vLLM
(https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html) and TGI serve. Greedy
decoding (``temperature`` 0); the server stops at the chat template's end-of-turn token.

Anything that is not a well-formed reply in time raises :class:`bot.errors.GenerationFailed`
with the reason (the router then gives the customer its no-answer reply and logs the reason on the
turn): a refused connection, a connect/read/total timeout (``[serving.openai]`` ``*_timeout_s``),
an HTTP error status, a body that is not the SSE stream of chat chunks, a stream that ends
without ``[DONE]`` or a finish reason, or (slot constraint, :mod:`bot.slot_decoding`) a
``{{Slot}}`` name that is not in the version's manifest ``slots``: a remote server has no
logits hook here, so the reply is checked as it streams and refused at the first unknown name.

Customer and history text cannot form the template's special tokens in-process
(:func:`bot.prompting.prompt_ids`); a remote server tokenizes the message text itself, so
special-token look-alikes (``<|im_start|>``) are broken up with a zero-width space before sending.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

from bot.errors import GenerationFailed
from bot.prompting import Turn, build_messages
from bot.slot_decoding import SlotGrammar

_SPECIAL = re.compile(r"<\|([^|<>]{0,40})\|>")


def _defused(text: str) -> str:
    """``text`` with every ``<|name|>`` written ``<\u200b|name|>``, so no tokenizer reads a special token."""
    return _SPECIAL.sub(lambda m: f"<\u200b|{m.group(1)}|>", text)


class OpenAIGenerator:
    """The router's generator, answered by an OpenAI-compatible chat completions server.

    Args:
        config: :class:`bot.settings.OpenAIBackendConfig` (base URL, model name, API key variable,
            timeouts).
        slots: the ``{{Slot}}`` names replies may use (the version's manifest ``slots``); empty:
            no check.
        version: what the turn log records as the generator version (default ``openai:<model>``).
        replies_version: the local replies version the server's model was trained as (its
            answer store retrieves the approved answers for the prompt); None: no retrieval.

    Attributes:
        version, replies_version: see above.
    """

    def __init__(self, config, slots: Sequence[str] = (), version: str | None = None,
                 replies_version: str | None = None):
        import httpx

        self.config = config
        self.version = version or f"openai:{config.model}"
        self.replies_version = replies_version
        self.grammar = SlotGrammar(slots) if slots else None
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(connect=config.connect_timeout_s, read=config.read_timeout_s,
                                write=config.connect_timeout_s, pool=config.connect_timeout_s)
        self._client = httpx.Client(base_url=config.base_url.rstrip("/"), headers=headers, timeout=timeout)

    @classmethod
    def for_version(cls, config, folder: Path | None) -> "OpenAIGenerator":
        """A generator for the replies version ``folder``: its slot check uses the manifest's
        ``slots``, its answer store gives the prompt's approved answers (none of either when
        ``folder`` is None or has no manifest)."""
        from bot.manifest import MANIFEST, read

        known = bool(folder and (folder / MANIFEST).is_file())
        return cls(config, (read(folder, "replies").slots or []) if known else [],
                   replies_version=folder.name if known else None)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def stream(self, messages: list[dict[str, str]] | None = None, *, history: Sequence[Turn] | None = None,
               user_text: str | None = None, intent: str | None = None,
               max_new_tokens: int | None = None, references: Sequence[str] = ()) -> Iterator[str]:
        """Stream the reply as text pieces (same arguments as :meth:`bot.generation.ReplyGenerator.stream`).

        Raises:
            GenerationFailed: the server could not be reached, was too slow, answered with an
                error or with something that is not a chat completion stream, or wrote an
                unknown ``{{Slot}}``; the message says which.
        """
        import httpx

        if messages is None:
            messages = build_messages(history, user_text or "", intent, references)
        body = {"model": self.config.model, "stream": True, "temperature": 0,
                "max_tokens": max_new_tokens or self.config.max_new_tokens,
                "messages": [m if m["role"] == "system" else {**m, "content": _defused(m["content"])}
                             for m in messages]}
        deadline = time.monotonic() + self.config.total_timeout_s
        try:
            with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise GenerationFailed(f"backend answered HTTP {response.status_code}: "
                                           f"{response.text[:200]!r}")
                return (yield from self._pieces(response.iter_lines(), deadline))
        except httpx.TimeoutException as exc:
            raise GenerationFailed(f"backend timed out ({type(exc).__name__}) at {self.config.base_url}") from None
        except httpx.HTTPError as exc:
            raise GenerationFailed(f"backend unreachable ({type(exc).__name__}: {exc}) at "
                                   f"{self.config.base_url}") from None

    def _pieces(self, lines: Iterator[str], deadline: float) -> Generator[str, None, str | None]:
        """The text pieces of an SSE stream of chat completion chunks, checked as they come;
        returns the server's ``finish_reason`` (``"stop"``, ``"length"``; None if it sent none)."""
        text, finished, reason = "", False, None
        for line in lines:
            if time.monotonic() > deadline:
                raise GenerationFailed(f"backend reply took longer than {self.config.total_timeout_s} s")
            if not line.strip() or line.startswith(":"):
                continue  # keep-alive or comment
            if not line.startswith("data:"):
                raise GenerationFailed(f"backend sent a line that is not an SSE data line: {line[:80]!r}")
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                finished = True
                break
            piece, said = self._chunk(data)
            reason = reason or said
            finished = finished or said is not None
            if piece:
                text += piece
                if self.grammar and not self.grammar.allows_text(text):
                    raise GenerationFailed(f"backend wrote an unknown placeholder: {text[text.rfind('{{'):][:60]!r}")
                yield piece
        if not finished:
            raise GenerationFailed("backend stream ended before the reply was complete")
        return reason

    @staticmethod
    def _chunk(data: str) -> tuple[str, str | None]:
        """(text piece, finish reason or None) of one ``chat.completion.chunk`` JSON object.

        Raises:
            GenerationFailed: not JSON, or not shaped like a chat completion chunk.
        """
        try:
            chunk = json.loads(data)
            if "error" in chunk:
                raise GenerationFailed(f"backend reported an error: {str(chunk['error'])[:200]}")
            choice = chunk["choices"][0]
            piece = choice.get("delta", {}).get("content") or ""
            if not isinstance(piece, str):
                raise TypeError("content is not a string")
            return piece, choice.get("finish_reason")
        except GenerationFailed:
            raise
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise GenerationFailed(f"backend sent something that is not a chat completion chunk "
                                   f"({type(exc).__name__}): {data[:80]!r}") from None

