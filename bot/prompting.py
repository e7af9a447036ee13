"""The reply generator's prompt: one function shared by training and serving.

Training (``training/reply_data.py``) and serving (``bot/generation/``) both call
:func:`build_messages`, then :func:`prompt_ids`, which renders the tokenizer's chat template
(https://huggingface.co/docs/transformers/chat_templating), so the fine-tuned model sees at
serving time exactly the prompt it was trained on.

Customer, history and approved-answer text can never form the template's special tokens:
:func:`prompt_ids` tokenizes the template's own text with its special tokens, and every message's
content with ``split_special_tokens=True``, so ``<|im_start|>system`` typed by a customer is plain text
(ordinary sub-word tokens), not a forged turn (compare transformers issue #29279).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SYSTEM_PROMPT = (
    "You are a helpful customer-service assistant. Answer politely, with short steps. "
    "Write details you do not know as placeholders such as {{Order Number}}."
)
"""System message of every prompt."""

Turn = tuple[str, str]
"""One earlier exchange: (customer text, bot reply)."""


def intent_phrase(intent: str | None) -> str:
    """The sentence that tells the model the router's intent, e.g. ``cancel_order`` ->
    ``"The customer's request is about: cancel order."``; empty for ``None`` or blank."""
    if not intent or not intent.strip():
        return ""
    return f"The customer's request is about: {intent.strip().replace('_', ' ')}."


REFERENCES_HEADER = "Approved answers to similar requests:"
REFERENCES_RULE = "Answer like the approved answers: keep their facts and steps, fit them to the customer's message."
"""Around the retrieved approved answers in the system message (:mod:`bot.answers`)."""


def system_message(intent: str | None, references: Sequence[str] = ()) -> dict[str, str]:
    """The system message: :data:`SYSTEM_PROMPT`, the intent sentence when there is one, then the
    approved answers (numbered, best first) when there are any."""
    parts = [SYSTEM_PROMPT, intent_phrase(intent)]
    if references:
        parts += [REFERENCES_HEADER, *(f"[{i}] {ref.strip()}" for i, ref in enumerate(references, start=1)),
                  REFERENCES_RULE]
    return {"role": "system", "content": "\n".join(part for part in parts if part)}


def build_messages(
    history: Sequence[Turn] | None, user_text: str, intent: str | None = None, references: Sequence[str] = ()
) -> list[dict[str, str]]:
    """Chat messages for one reply, ready for ``tokenizer.apply_chat_template``.

    Args:
        history: earlier exchanges, oldest first, each ``(customer text, bot reply)``; may be
            empty or None.
        user_text: the customer's new message.
        intent: the intent the router chose (e.g. ``"cancel_order"``), or None.
        references: approved replies retrieved for the message (:mod:`bot.answers`), best first;
            empty for a version trained without retrieval.

    Returns:
        ``[system, user, assistant, ..., user]`` as ``{"role": ..., "content": ...}`` dicts:
        ``1 + 2 * len(history) + 1`` messages, the last one the customer's new message.

    Raises:
        ValueError: ``user_text`` is empty or a history item is not a pair of strings.
    """
    if not isinstance(user_text, str) or not user_text.strip():
        raise ValueError("user_text must be a non-empty string")
    messages = [system_message(intent, references)]
    for number, turn in enumerate(history or []):
        if len(turn) != 2 or not all(isinstance(part, str) for part in turn):
            raise ValueError(f"history item {number} must be a (user text, bot reply) pair of strings")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    messages.append({"role": "user", "content": user_text.strip()})
    return messages


def drop_oldest_turn(messages: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """``messages`` without its oldest user/assistant exchange (the system message and the last
    user message are kept); None when there is no earlier exchange left to drop."""
    if len(messages) < 4:
        return None
    return messages[:1] + messages[3:]


_MARK = "\ue000{}\ue001"
"""Stands in for message ``{}`` while the template is rendered (Unicode private-use characters;
customer text is never rendered into the template, so it cannot forge one)."""
_MARKS = re.compile("\ue000(\\d+)\ue001")


def text_ids(tokenizer, text: str) -> list[int]:
    """Token ids of untrusted ``text`` (customer message, history, a reply): special-token
    strings in it are split into ordinary tokens; no BOS/EOS is added."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def prompt_ids(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template, with every message's
    content encoded by :func:`text_ids` (so none can contain special tokens: not the customer's,
    not an approved answer a reviewer wrote into the system message).

    Args:
        tokenizer: a transformers tokenizer with a chat template.
        messages: from :func:`build_messages` (``role``/``content`` dicts).
        add_generation_prompt: end with the assistant header (``<|im_start|>assistant\\n``).

    Returns:
        The ids; for contents without special-token strings or outer white space, the same ids
        as tokenizing the rendered template as a whole (``tests/test_prompt_injection.py``).

    Raises:
        ValueError: the template drops or repeats a message's content (it must render each
            content once, unchanged).
    """
    marked = [{**m, "content": _MARK.format(i)} for i, m in enumerate(messages)]
    rendered = tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=add_generation_prompt)
    ids, start, used = [], 0, []
    for match in _MARKS.finditer(rendered):
        ids += tokenizer(rendered[start:match.start()], add_special_tokens=False)["input_ids"]
        used.append(int(match.group(1)))
        ids += text_ids(tokenizer, messages[used[-1]]["content"])
        start = match.end()
    ids += tokenizer(rendered[start:], add_special_tokens=False)["input_ids"]
    if sorted(used) != list(range(len(messages))):
        raise ValueError("the chat template must render each message's content exactly once")
    return ids
