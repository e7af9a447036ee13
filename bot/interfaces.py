"""What the router needs of its models, as ``typing.Protocol``s: any object with these members
serves (:class:`bot.classifier.IntentClassifier`, :class:`bot.generation.ReplyGenerator`, the
stand-ins of tests). Checked by type checkers, and at run time with ``isinstance``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from bot.prompting import Turn
from bot.records import Prediction


@runtime_checkable
class Classifier(Protocol):
    """An intent classifier with an out-of-scope threshold."""

    version: str
    """The version folder's name, recorded on each turn."""
    threshold: float
    """Out-of-scope threshold on the scale of :attr:`bot.records.Prediction.oos_score`."""

    def predict(self, texts: list[str]) -> list[Prediction]:
        """One prediction per text, in order."""
        ...


@runtime_checkable
class Generator(Protocol):
    """A reply generator that streams."""

    version: str
    """What served the reply, recorded on each answered turn: the replies version folder's name,
    with the engine when it is not transformers (``v3+onnx-int8``, ``openai:<model>``)."""
    replies_version: str | None
    """The replies version (registry folder name) whose answer store and prompt it uses; None
    when it serves no registry version."""

    def stream(self, *, history: Sequence[Turn] | None = None, user_text: str | None = None,
               intent: str | None = None, max_new_tokens: int | None = None,
               references: Sequence[str] = ()) -> Iterator[str]:
        """The reply as text chunks; closing the iterator stops generation. ``references``:
        approved answers for the prompt (:func:`bot.prompting.build_messages`), passed only to a
        version trained with them.

        The generator's return value (``StopIteration.value``) is the finish reason, as in the
        OpenAI API's ``finish_reason``: ``"length"`` when ``max_new_tokens`` cut the reply,
        ``"stop"`` (or None) when the model ended it; the router drops a cut reply's unfinished
        last sentence."""
        ...


class Models(Protocol):
    """Which classifier and generator answer a turn (:mod:`bot.models`)."""

    def current(self) -> tuple[Classifier, Generator]:
        """``(classifier, generator)``, asked once at the start of each turn."""
        ...
