"""The scores that decide between versions, one definition each (library code, no hand-written metric).

* :func:`intent_scores`: accuracy and macro-F1 (scikit-learn ``accuracy_score`` and
  ``f1_score(average="macro")``), used by :mod:`training.intents` (validation),
  :mod:`training.intent_eval` and :mod:`training.retrain`;
* :func:`rouge_l`: mean ROUGE-L F1 (Lin 2004, https://aclanthology.org/W04-1013/; ``rouge-score``
  with stemming), used by :mod:`training.reply_eval` and :mod:`training.retrain`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def intent_scores(gold: Sequence[Hashable], guessed: Sequence[Hashable],
                  labels: Sequence[Hashable] | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 of ``guessed`` intents against ``gold`` (same length, non-empty;
    intent names or class ids).

    Args:
        labels: the intents averaged over for macro-F1 (default: those in ``gold``); an intent
            never predicted nor present scores 0.

    Returns:
        ``{"accuracy", "macro_f1"}``, each in [0, 1].
    """
    from sklearn.metrics import accuracy_score, f1_score

    labels = sorted(set(gold)) if labels is None else list(labels)
    return {"accuracy": float(accuracy_score(gold, guessed)),
            "macro_f1": float(f1_score(gold, guessed, labels=labels, average="macro", zero_division=0))}


def rouge_l(replies: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 of ``replies[i]`` against ``references[i]`` on a 0-100 scale (non-empty lists)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(replies, references)]
    return 100 * sum(scores) / len(scores)
