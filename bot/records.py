"""Records passed between modules; names are kept the same everywhere (see docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prediction:
    """The classifier's answer for one utterance.

    Attributes:
        intent: the most probable intent label.
        confidence: its softmax probability, in [0, 1].
        top_k: the ``k`` most probable ``(intent, probability)`` pairs, best first.
        oos_score: out-of-scope score; higher means more likely out of scope. Its scale depends
            on the method named in the model's manifest; compare it with that manifest's
            threshold only.
    """

    intent: str
    confidence: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    oos_score: float = 0.0
