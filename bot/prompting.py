"""The reply generator's prompt: one function shared by training and serving.

Training (``training/replies.py``) and serving (``bot/generator.py``) both call
:func:`build_messages`, then the tokenizer's chat template
(https://huggingface.co/docs/transformers/chat_templating), so the fine-tuned model sees at
serving time exactly the prompt it was trained on.
"""

from __future__ import annotations

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


def system_message(intent: str | None) -> dict[str, str]:
    """The system message: :data:`SYSTEM_PROMPT` plus the intent sentence when there is one."""
    phrase = intent_phrase(intent)
    return {"role": "system", "content": f"{SYSTEM_PROMPT}\n{phrase}" if phrase else SYSTEM_PROMPT}


def build_messages(
    history: Sequence[Turn] | None, user_text: str, intent: str | None = None
) -> list[dict[str, str]]:
    """Chat messages for one reply, ready for ``tokenizer.apply_chat_template``.

    Args:
        history: earlier exchanges, oldest first, each ``(customer text, bot reply)``; may be
            empty or None.
        user_text: the customer's new message.
        intent: the intent the router chose (e.g. ``"cancel_order"``), or None.

    Returns:
        ``[system, user, assistant, ..., user]`` as ``{"role": ..., "content": ...}`` dicts:
        ``1 + 2 * len(history) + 1`` messages, the last one the customer's new message.

    Raises:
        ValueError: ``user_text`` is empty or a history item is not a pair of strings.
    """
    if not isinstance(user_text, str) or not user_text.strip():
        raise ValueError("user_text must be a non-empty string")
    messages = [system_message(intent)]
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
