"""Intent classifier inference: a fine-tuned sequence-classification model plus its OOS threshold.

A model folder is a ``save_pretrained`` directory (plain transformers loads it; ``id2label`` is
set) with a ``manifest.json`` written by ``training.intents``. The manifest's ``oos`` entry names
the out-of-scope score and its threshold:

* ``msp``: ``1 - max softmax probability`` (Hendrycks & Gimpel, "A Baseline for Detecting
  Misclassified and Out-of-Distribution Examples in Neural Networks", ICLR 2017).
* ``energy``: the free energy ``-logsumexp(logits)`` (Liu et al., "Energy-based
  Out-of-distribution Detection", NeurIPS 2020), temperature 1.

Both are "higher = more out of scope"; an utterance whose score is above the threshold is out of
scope. A model whose labels include :data:`bot.records.OUT_OF_SCOPE` (trained on out-of-scope
examples) computes both over the in-scope classes only, after the softmax over all classes, so
the out-of-scope class's probability counts against every in-scope intent; its predictions name
the best in-scope intent (reviewers see what it would have answered).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from bot.device import pick_device
from bot.errors import SupportbotError
from bot.manifest import IntentManifest, read
from bot.records import OUT_OF_SCOPE, Prediction
from bot.text import MAX_CHARS  # characters kept before tokenising (bounds tokenizer time)

OosMethod = Literal["msp", "energy"]
"""The out-of-scope scores (:func:`oos_scores`)."""
OOS_METHODS: tuple[str, ...] = get_args(OosMethod)


def _in_scope_columns(labels: list[str] | None, width: int) -> list[int]:
    return [i for i in range(width) if labels is None or labels[i] != OUT_OF_SCOPE]


def oos_scores(logits, method: str, labels: list[str] | None = None):
    """Out-of-scope score of each row of ``logits``; higher = more likely out of scope.

    Args:
        logits: float tensor ``[n, num_labels]``.
        method: ``"msp"`` (1 - max softmax probability, Hendrycks & Gimpel 2017) or ``"energy"``
            (``-logsumexp(logits)``, Liu et al. 2020).
        labels: the class labels; when they include :data:`OUT_OF_SCOPE`, the score is taken
            over the other classes (msp: 1 - the largest in-scope probability of the softmax
            over all classes; energy: ``-logsumexp`` of the in-scope logits).

    Returns:
        Float tensor ``[n]``.

    Raises:
        SupportbotError: unknown ``method``.
    """
    import torch

    logits = logits.float()
    keep = _in_scope_columns(labels, logits.shape[-1])
    if method == "msp":
        return 1.0 - torch.softmax(logits, dim=-1)[:, keep].max(dim=-1).values
    if method == "energy":
        return -torch.logsumexp(logits[:, keep], dim=-1)
    raise SupportbotError(f"unknown OOS method '{method}'; expected one of {', '.join(OOS_METHODS)}")


def in_scope_argmax(logits, labels: list[str] | None = None):
    """Class id of the best in-scope label of each row of ``logits`` ``[n, num_labels]``
    (the :data:`OUT_OF_SCOPE` class never wins): long tensor ``[n]``."""
    import torch

    keep = torch.tensor(_in_scope_columns(labels, logits.shape[-1]))
    return keep[logits[:, keep].argmax(dim=-1)]


def batched_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 32,
                   device: str = "cpu"):
    """Logits of a sequence-classification ``model`` for ``texts``, in batches, without gradients.

    Each text is cut to :data:`MAX_CHARS` characters, then truncated to ``max_length`` tokens;
    batches are padded to their longest text only.

    Returns:
        Float32 tensor ``[len(texts), num_labels]`` on the CPU.
    """
    import torch

    model.eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = [text[:MAX_CHARS] for text in texts[start:start + batch_size]]
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)
        with torch.inference_mode():
            chunks.append(model(**encoded).logits.float().cpu())
    if not chunks:
        return torch.zeros((0, model.config.num_labels))
    return torch.cat(chunks)


class IntentClassifier:
    """A trained intent model, ready to predict.

    Attributes:
        folder: the model folder.
        version: the folder's name (e.g. ``20261130-010203``).
        labels: intent labels, index = class id.
        threshold: OOS threshold from the manifest (scale of ``oos_method``).
        oos_method: ``"msp"`` or ``"energy"``.
        max_length: token limit per utterance (from the manifest).
        manifest: the version's :class:`bot.manifest.IntentManifest`.
    """

    def __init__(self, model, tokenizer, manifest: IntentManifest, folder: Path, device: str):
        self.model, self.tokenizer, self.manifest = model, tokenizer, manifest
        self.folder, self.device = Path(folder), device
        self.version = self.folder.name
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.oos_method, self.threshold = _oos_settings(manifest, self.folder)
        self.max_length = int(manifest.hyperparameters.get("max_length", 128))

    @classmethod
    def load(cls, folder: Path | str, device: str | None = None) -> IntentClassifier:
        """Load a model folder written by ``supportbot train intents``.

        Args:
            folder: the version folder (``save_pretrained`` files + ``manifest.json``).
            device: ``"cpu"`` or ``"cuda"``; default: :func:`bot.device.pick_device`.

        Raises:
            SupportbotError: no manifest, a manifest without ``oos`` fields, model files
                transformers cannot load, or ``device="cuda"`` without a GPU.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(folder)
        manifest = read(folder, "intents")
        _oos_settings(manifest, folder)  # a broken manifest fails before the slow model load
        try:
            chosen = pick_device(device)
        except ValueError as exc:
            raise SupportbotError(str(exc)) from None
        try:
            model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=chosen.dtype)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise SupportbotError(f"{folder}: model files cannot be loaded ({exc})") from None
        return cls(model.to(chosen.name).eval(), tokenizer, manifest, folder, chosen.name)

    def logits(self, texts: list[str], batch_size: int = 32):
        """Float32 logits ``[len(texts), len(labels)]`` (see :func:`batched_logits`)."""
        return batched_logits(self.model, self.tokenizer, list(texts), self.max_length,
                              batch_size, self.device)

    def predict(self, texts: list[str], top_k: int = 3, batch_size: int = 32) -> list[Prediction]:
        """One :class:`~bot.records.Prediction` per text, in order.

        Args:
            texts: utterances; each is cut to :data:`MAX_CHARS` characters and ``max_length``
                tokens.
            top_k: how many ``(intent, probability)`` pairs to keep (at most the label count).
            batch_size: texts per forward pass.
        """
        return self.predictions_from_logits(self.logits(texts, batch_size), top_k)

    def predictions_from_logits(self, logits, top_k: int = 3) -> list[Prediction]:
        """Predictions for precomputed ``logits`` ``[n, len(labels)]``: the best in-scope
        intents (the out-of-scope class is never one of them) and the OOS score."""
        import torch

        probs = torch.softmax(logits.float(), dim=-1)
        scores = oos_scores(logits, self.oos_method, self.labels).tolist()
        plainly_out = [False] * len(probs)
        if OUT_OF_SCOPE in self.labels:
            column = self.labels.index(OUT_OF_SCOPE)
            plainly_out = (probs.argmax(dim=-1) == column).tolist()
            probs[:, column] = -1.0
        k = min(max(top_k, 1), len(self.labels) - (OUT_OF_SCOPE in self.labels))
        best_p, best_i = probs.topk(k, dim=-1)
        return [
            Prediction(
                intent=self.labels[ids[0]],
                confidence=ps[0],
                top_k=[(self.labels[i], p) for i, p in zip(ids, ps)],
                oos_score=score,
                oos_class=out,
            )
            for ps, ids, score, out in zip(best_p.tolist(), best_i.tolist(), scores, plainly_out)
        ]

    def is_out_of_scope(self, prediction: Prediction) -> bool:
        """True when ``prediction.oos_score`` is above this model's :attr:`threshold`."""
        return prediction.oos_score > self.threshold


def _oos_settings(manifest: IntentManifest, folder: Path) -> tuple[str, float]:
    """``(oos.method, oos.threshold)`` of a manifest.

    Raises:
        SupportbotError: the method is unknown (names the file and field).
    """
    oos = manifest.oos
    if oos.method not in OOS_METHODS:
        raise SupportbotError(f"{folder / 'manifest.json'}: field 'oos.method' is '{oos.method}', "
                              f"expected one of {', '.join(OOS_METHODS)}")
    return oos.method, oos.threshold
