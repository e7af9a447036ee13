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
    """The version folder's name, recorded on each answered turn."""

    def stream(self, *, history: Sequence[Turn] | None = None, user_text: str | None = None,
               intent: str | None = None, max_new_tokens: int | None = None,
               references: Sequence[str] = ()) -> Iterator[str]:
        """The reply as text chunks; closing the iterator stops generation. ``references``:
        approved answers for the prompt (:func:`bot.prompting.build_messages`), passed only to a
        version trained with them."""
        ...


class Models(Protocol):
    """Which classifier and generator answer a turn (:mod:`bot.models`)."""

    def current(self) -> tuple[Classifier, Generator]:
        """``(classifier, generator)``, asked once at the start of each turn."""
        ...
