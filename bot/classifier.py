"""Intent classifier inference: a fine-tuned sequence-classification model plus its OOS threshold.

A model folder is a ``save_pretrained`` directory (plain transformers loads it; ``id2label`` is
set) with a ``manifest.json`` written by ``training.intents``. The manifest's ``oos`` entry names
the out-of-scope score and its threshold:

* ``msp``: ``1 - max softmax probability`` (Hendrycks & Gimpel, "A Baseline for Detecting
  Misclassified and Out-of-Distribution Examples in Neural Networks", ICLR 2017).
* ``energy``: the free energy ``-logsumexp(logits)`` (Liu et al., "Energy-based
  Out-of-distribution Detection", NeurIPS 2020), temperature 1.
* ``msp+knn`` (default): ``msp`` and the encoder's nearest-neighbour distance ``1 -`` the
  largest cosine similarity between the message's mean-pooled last hidden state and the in-scope
  training rows' (k = 1; Sun et al., "Out-of-Distribution Detection with Deep Nearest
  Neighbors", ICML 2022). A message is out of scope when ``msp`` is above its own threshold
  (``oos.msp_threshold``, chosen alone, as for ``msp``) or the distance is above the level the
  calibration chose for it; the distance is read as its empirical CDF over the calibration rows
  (in-scope validation rows and held-out negatives; quantile knots ``oos.knots["knn"]`` in the
  manifest). So the neighbours only add rejections: the head's rule, which knows the
  out-of-scope class, is never relaxed. The training rows' features (and a noisy copy's of each,
  as training draws them) are ``oos_neighbours.safetensors`` in the version folder. One score
  carries both rules (:func:`combined_score`).

All are "higher = more out of scope"; an utterance whose score is above the threshold is out of
scope. A model whose labels include :data:`bot.records.OUT_OF_SCOPE` (trained on out-of-scope
examples) computes both over the in-scope classes only, after the softmax over all classes, so
the out-of-scope class's probability counts against every in-scope intent; its predictions name
the best in-scope intent (reviewers see what it would have answered).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

from bot.device import pick_device
from bot.errors import SupportbotError
from bot.manifest import IntentManifest, read
from bot.records import OUT_OF_SCOPE, Prediction
from bot.text import MAX_CHARS  # characters kept before tokenising (bounds tokenizer time)

OosMethod = Literal["msp+knn", "msp", "energy"]
"""The out-of-scope scores (:meth:`IntentClassifier.oos_score`)."""
OOS_METHODS: tuple[str, ...] = get_args(OosMethod)
NEIGHBOURS_FILE = "oos_neighbours.safetensors"
"""In a version folder: the unit-length features ``[rows, hidden]`` (float16, key ``features``) of
the in-scope training rows, for the ``msp+knn`` score."""
KNOTS = 1001
"""Quantile knots stored for the distance view of ``msp+knn`` (a CDF resolution of 0.1 %)."""


def _in_scope_columns(labels: list[str] | None, width: int) -> list[int]:
    return [i for i in range(width) if labels is None or labels[i] != OUT_OF_SCOPE]


def oos_scores(logits, method: str, labels: list[str] | None = None):
    """Out-of-scope score of each row of ``logits`` from the head alone; higher = more likely
    out of scope (``msp+knn`` needs the features too: :meth:`IntentClassifier.oos_score`).

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
    raise SupportbotError(f"unknown OOS method '{method}'; expected msp or energy")


def knn_distance(features, reference):
    """``1 -`` the largest cosine similarity of each row of ``features`` to a row of
    ``reference`` (both unit length): the k = 1 nearest-neighbour score of Sun et al. (2022).

    Args:
        features: float tensor ``[n, hidden]``.
        reference: float tensor ``[m, hidden]``, m >= 1.

    Returns:
        Float tensor ``[n]`` in [0, 2].
    """
    return 1.0 - (features.float() @ reference.float().T).max(dim=-1).values


def quantile_knots(values) -> list[float]:
    """:data:`KNOTS` quantiles (0 to 1) of ``values`` (a non-empty float array ``[n]``), rounded
    to 7 significant digits: the stored form of an empirical CDF (see :func:`cdf`)."""
    import numpy as np

    return [float(f"{q:.7g}") for q in np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, KNOTS))]


def cdf(values, knots: list[float]):
    """The empirical CDF given by quantile ``knots`` at ``values`` (float array ``[n]``): the
    mid-rank share of knots below each value (ties count half, as ``scipy.stats.rankdata``'s
    average ranks), float array ``[n]`` in [0, 1]."""
    import numpy as np

    knots_array = np.asarray(knots, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    return (np.searchsorted(knots_array, values, "left") + np.searchsorted(knots_array, values, "right")) / (
        2 * len(knots_array))


def combined_score(msp, knn, knn_knots: list[float], msp_threshold: float, threshold: float):
    """The ``msp+knn`` score, float array ``[n]`` in [0, 1]: the larger of ``cdf(knn, knn_knots)``
    (:func:`cdf`) and ``msp`` mapped piecewise-linearly so that ``msp_threshold`` lands on
    ``threshold`` (0 -> 0, ``msp_threshold`` -> ``threshold``, 1 -> 1). So ``score > threshold``
    exactly when ``msp > msp_threshold`` or the distance's CDF is above ``threshold``.

    Args:
        msp, knn: float arrays ``[n]`` of the two views.
        knn_knots: quantiles of the distance over the calibration rows (:func:`quantile_knots`).
        msp_threshold: the head's own threshold, in (0, 1).
        threshold: the score's threshold, in (0, 1).
    """
    import numpy as np

    msp = np.asarray(msp, dtype=np.float64)
    low, high = max(msp_threshold, 1e-9), max(1 - msp_threshold, 1e-9)
    head = np.where(msp <= msp_threshold, threshold * msp / low,
                    threshold + (1 - threshold) * (msp - msp_threshold) / high)
    head = np.where(msp > msp_threshold, np.maximum(head, np.nextafter(threshold, 2)), head)
    return np.maximum(head, cdf(knn, knn_knots))


def in_scope_argmax(logits, labels: list[str] | None = None):
    """Class id of the best in-scope label of each row of ``logits`` ``[n, num_labels]``
    (the :data:`OUT_OF_SCOPE` class never wins): long tensor ``[n]``."""
    import torch

    keep = torch.tensor(_in_scope_columns(labels, logits.shape[-1]))
    return keep[logits[:, keep].argmax(dim=-1)]


class Outputs(NamedTuple):
    """What one pass of the classifier gives for ``n`` texts (CPU float32 tensors)."""

    logits: Any
    """``[n, num_labels]``."""
    features: Any
    """``[n, hidden]``: the mean-pooled last hidden state over the attention mask, unit length
    (how sentence-transformers embeds with all-MiniLM-L6-v2)."""


def batched_outputs(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 32,
                    device: str = "cpu") -> Outputs:
    """Logits and features of a sequence-classification ``model`` for ``texts``, in batches,
    without gradients.

    Each text is cut to :data:`MAX_CHARS` characters, then truncated to ``max_length`` tokens;
    batches are padded to their longest text only.
    """
    import torch

    model.eval()
    logits, features = [], []
    for start in range(0, len(texts), batch_size):
        batch = [text[:MAX_CHARS] for text in texts[start:start + batch_size]]
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model(**encoded, output_hidden_states=True)
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (out.hidden_states[-1].float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        logits.append(out.logits.float().cpu())
        features.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
    if not logits:
        return Outputs(torch.zeros((0, model.config.num_labels)), torch.zeros((0, model.config.hidden_size)))
    return Outputs(torch.cat(logits), torch.cat(features))


class IntentClassifier:
    """A trained intent model, ready to predict.

    Attributes:
        folder: the model folder.
        version: the folder's name (e.g. ``20261130-010203``).
        labels: intent labels, index = class id.
        threshold: OOS threshold from the manifest (scale of ``oos_method``).
        oos_method: one of :data:`OOS_METHODS`.
        max_length: token limit per utterance (from the manifest).
        manifest: the version's :class:`bot.manifest.IntentManifest`.
        neighbours: float32 tensor ``[rows, hidden]`` of the in-scope training rows' features
            (``msp+knn`` only, else None).
    """

    def __init__(self, model, tokenizer, manifest: IntentManifest, folder: Path, device: str, neighbours=None):
        self.model, self.tokenizer, self.manifest = model, tokenizer, manifest
        self.folder, self.device, self.neighbours = Path(folder), device, neighbours
        self.version = self.folder.name
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.oos_method, self.threshold = _oos_settings(manifest, self.folder)
        self.max_length = int(manifest.hyperparameters.get("max_length", 128))

    @classmethod
    def load(cls, folder: Path | str, device: str | None = None) -> IntentClassifier:
        """Load a model folder written by ``supportbot train intents``.

        Args:
            folder: the version folder (``save_pretrained`` files + ``manifest.json``, and
                :data:`NEIGHBOURS_FILE` for ``msp+knn``).
            device: ``"cpu"`` or ``"cuda"``; default: :func:`bot.device.pick_device`.

        Raises:
            SupportbotError: no manifest, a manifest without ``oos`` fields, model files
                transformers cannot load, a missing or unreadable neighbours file, or
                ``device="cuda"`` without a GPU.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(folder)
        manifest = read(folder, "intents")
        method, _ = _oos_settings(manifest, folder)  # a broken manifest fails before the slow model load
        try:
            chosen = pick_device(device)
        except ValueError as exc:
            raise SupportbotError(str(exc)) from None
        try:
            model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=chosen.dtype)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise SupportbotError(f"{folder}: model files cannot be loaded ({exc})") from None
        neighbours = read_neighbours(folder) if method == "msp+knn" else None
        return cls(model.to(chosen.name).eval(), tokenizer, manifest, folder, chosen.name, neighbours)

    def outputs(self, texts: list[str], batch_size: int = 32) -> Outputs:
        """Logits ``[len(texts), len(labels)]`` and features (see :func:`batched_outputs`)."""
        return batched_outputs(self.model, self.tokenizer, list(texts), self.max_length, batch_size, self.device)

    def oos_score(self, outputs: Outputs):
        """This model's out-of-scope score of each row of ``outputs`` (:attr:`oos_method`):
        float array ``[n]``, higher = more likely out of scope."""
        msp = oos_scores(outputs.logits, "msp" if self.oos_method == "msp+knn" else self.oos_method,
                         self.labels).numpy()
        if self.oos_method != "msp+knn":
            return msp
        knn = knn_distance(outputs.features, self.neighbours).numpy()
        oos = self.manifest.oos
        return combined_score(msp, knn, oos.knots["knn"], oos.msp_threshold, oos.threshold)

    def predict(self, texts: list[str], top_k: int = 3, batch_size: int = 32) -> list[Prediction]:
        """One :class:`~bot.records.Prediction` per text, in order.

        Args:
            texts: utterances; each is cut to :data:`MAX_CHARS` characters and ``max_length``
                tokens.
            top_k: how many ``(intent, probability)`` pairs to keep (at most the label count).
            batch_size: texts per forward pass.
        """
        return self.predictions_from_outputs(self.outputs(texts, batch_size), top_k)

    def predictions_from_outputs(self, outputs: Outputs, top_k: int = 3) -> list[Prediction]:
        """Predictions for precomputed ``outputs``: the best in-scope intents (the out-of-scope
        class is never one of them) and the OOS score."""
        import torch

        probs = torch.softmax(outputs.logits.float(), dim=-1)
        scores = self.oos_score(outputs).tolist()
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


def save_neighbours(folder: Path, features) -> None:
    """Write ``features`` (float tensor ``[rows, hidden]``, unit length) as
    :data:`NEIGHBOURS_FILE` in ``folder`` (float16, safetensors)."""
    from safetensors.torch import save_file

    save_file({"features": features.half().contiguous()}, str(Path(folder) / NEIGHBOURS_FILE))


def read_neighbours(folder: Path):
    """The features :func:`save_neighbours` wrote, as float32 ``[rows, hidden]``.

    Raises:
        SupportbotError: the file is missing, unreadable or holds no rows (names the file).
    """
    from safetensors.torch import load_file

    path = Path(folder) / NEIGHBOURS_FILE
    try:
        features = load_file(str(path))["features"].float()
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise SupportbotError(f"{path}: the in-scope neighbours of the msp+knn score cannot be read "
                              f"({exc.__class__.__name__}: {exc})") from None
    if features.ndim != 2 or not len(features):
        raise SupportbotError(f"{path}: field 'features' must be a [rows, hidden] matrix with rows, "
                              f"found shape {tuple(features.shape)}")
    return features


def _oos_settings(manifest: IntentManifest, folder: Path) -> tuple[str, float]:
    """``(oos.method, oos.threshold)`` of a manifest.

    Raises:
        SupportbotError: the method is unknown, or ``msp+knn`` without the distance's quantile
            knots ``oos.knots["knn"]`` or ``oos.msp_threshold`` (names the file and field).
    """
    oos = manifest.oos
    if oos.method not in OOS_METHODS:
        raise SupportbotError(f"{folder / 'manifest.json'}: field 'oos.method' is '{oos.method}', "
                              f"expected one of {', '.join(OOS_METHODS)}")
    if oos.method == "msp+knn" and (len(oos.knots.get("knn") or []) < 2 or oos.msp_threshold is None):
        raise SupportbotError(f"{folder / 'manifest.json'}: method msp+knn needs fields 'oos.knots.knn' (a list "
                              "of quantiles) and 'oos.msp_threshold'")
    return oos.method, oos.threshold
