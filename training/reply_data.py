"""Reply examples -> token ids for supervised fine-tuning, with the loss on the reply only.

The prompt is :func:`bot.prompting.build_messages` encoded by :func:`bot.prompting.prompt_ids`
(the chat template with the generation prompt, ``<|im_start|>assistant\\n`` for SmolLM2; customer
text cannot form special tokens, exactly as when serving); the target is the reference
reply followed by the end-of-turn token, so the model learns to stop. Prompt positions get label
``-100`` (ignored by ``torch.nn.CrossEntropyLoss``), the usual completion-only loss
(https://huggingface.co/docs/trl/sft_trainer#train-on-completions-only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bot.errors import SupportbotError
from bot.prompting import build_messages, prompt_ids, text_ids
from training.data import Example

IGNORE_INDEX = -100
"""Label of positions that do not count in the loss."""


def clean_reply(reply: str) -> str:
    """Reference reply with Windows line ends made ``\\n`` and outer spaces removed."""
    return reply.replace("\r\n", "\n").replace("\r", "\n").strip()


def with_replies(examples: Iterable[Example], data_name: str, part: str = "train") -> list[Example]:
    """The examples that have a reply.

    Raises:
        SupportbotError: none has a reply (the data set, e.g. BANKING77, has no ``reply`` column).
    """
    kept = [e for e in examples if e.reply]
    if not kept:
        raise SupportbotError(
            f"{data_name}: the {part} split has no example with a reply; the reply generator needs "
            "a 'reply' column/field (e.g. the built-in 'bitext' data set)"
        )
    return kept


def encode(tokenizer, example: Example, max_length: int, references: Sequence[str] = ()) -> dict[str, list[int]]:
    """Token ids, attention mask and labels of one training example, its prompt holding
    ``references`` (approved answers retrieved for it, :mod:`bot.answers`; none by default).

    The reply (plus ``tokenizer.eos_token``) is cut at the end when prompt + reply exceed
    ``max_length`` tokens; the prompt is never cut.

    Returns:
        ``{"input_ids", "attention_mask", "labels"}``, three lists of equal length
        ``<= max(max_length, prompt length + 1)``; labels are ``-100`` on the prompt.
    """
    prompt = prompt_ids(tokenizer, build_messages([], example.text, example.intent, references))
    target = text_ids(tokenizer, clean_reply(example.reply or "")) + [tokenizer.eos_token_id]
    target = target[: max(1, max_length - len(prompt))]
    ids = prompt + target
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": [IGNORE_INDEX] * len(prompt) + target}
