"""Train the intent classifier: a sentence encoder with a sequence-classification head.

Two methods, one artifact format (a ``save_pretrained`` folder plain transformers loads, plus
``manifest.json``):

* ``head``: the encoder stays frozen; a scikit-learn ``LogisticRegression`` is fitted on the
  features the classification layer sees and copied into it. Minutes on a CPU.
* ``finetune`` (default): the same LR head as a starting point (a warm start; "LP-FT", Kumar et
  al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution",
  ICLR 2022), then full fine-tuning with the Hugging Face ``Trainer`` (AdamW, warm-up + linear
  decay, label smoothing, optional layer-wise learning-rate decay as in ULMFiT / ELECTRA),
  evaluated each epoch, early stopping on validation macro-F1.

For BERT-style models the pooler's dense layer is set to the identity, so the head reads
``tanh(h_[CLS])`` and the saved standard ``BertForSequenceClassification`` computes exactly what
was trained (sentence-transformers' mean pooling has no place in that architecture).

Out of scope is learned, not only thresholded. The label set is the data's intents, the
built-in small-talk intents (``smalltalk_*``, :mod:`training.builtin`) and an explicit
``out_of_scope`` class trained on negatives: the data's own out-of-scope rows plus a background
set (default: HWU64's personal-assistant requests, ``--background``), minus background rows that
lie close to an in-scope utterance. Training rows get noisy copies on the fly
(:mod:`training.augment`). The out-of-scope score is ``1 -`` the largest in-scope probability
(the ``out_of_scope`` class's mass counts against it), by default combined with the distance to
the nearest in-scope training row (``msp+knn``, :mod:`bot.classifier`), and its threshold is chosen to maximise
cost-weighted accuracy (``--oos-weight``) between in-scope validation rows answered with the
right intent (clean and noisy copies) and held-out negatives (background intents never trained on, and a share of the
data's own out-of-scope rows); see :func:`choose_threshold`. Small data (fewer than
``cv_below`` in-scope rows) is cross-validated to choose the epochs and the threshold, then
trained on everything.

Runs unchanged under ``torchrun`` / ``accelerate launch`` (DDP; gloo on CPU): every rank trains,
only rank 0 writes the version folder; the manifest records a hash of each rank's final weights.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from bot.base_models import resolve
from bot.classifier import (OOS_METHODS, OosMethod, batched_outputs, combined_score, knn_distance, oos_scores,
                            quantile_knots, save_neighbours)
from bot.device import pick_device
from bot.errors import SettingError, SupportbotError
from bot.manifest import IntentManifest, save as save_manifest
from bot.records import OUT_OF_SCOPE, is_small_talk
from bot.settings import Settings, option
from training.artifacts import atomic_dir, new_version_dir
from training.augment import noisy, with_details
from training.data import Example, LoadedData, load, split
from training.metrics import intent_scores

log = logging.getLogger(__name__)
Method = Literal["finetune", "head"]
METHODS: tuple[str, ...] = get_args(Method)
BUILTIN_DIR = Path(__file__).parent / "builtin"
"""Training rows written for the project (package data)."""
SMALL_TALK_FILE = BUILTIN_DIR / "small_talk.csv"
"""Built-in small-talk examples (greeting, thanks, goodbye, bot, affirm, negate), written for the
project; ``--no-small-talk`` leaves them out."""
NEAR_IN_SCOPE = 0.8
"""Background rows whose cosine similarity (mean-pooled base encoder, as sentence-transformers
embeds) to some in-scope training utterance reaches this are dropped: a team whose intents
overlap the background set keeps them in scope."""
CALIBRATION_SHARE = 0.2
"""Share of background intents (whole intents) and of the data's own out-of-scope rows held out
of training to choose the threshold."""
CUSTOMER_WORDS_VALIDATION = 0.25
"""Share of each intent's rows in customers' words (:attr:`BuiltinDataset.customer_words`) that
goes to validation, so that the threshold is also chosen on messages as customers write them."""
CUSTOMER_WORDS_REPEAT = 3
"""Each training row in customers' words is trained on this many times per epoch: a few hundred
of them against thousands of templated rows (measured on the realistic request sets, README)."""
MOVES_PER_INTENT = 40
"""Rows of each conversation move of the background set (:attr:`BuiltinDataset.conversational`,
e.g. HWU64's ``general_praise``) added to the small-talk intent it maps to: as many as the
built-in file has per small-talk intent, so the moves widen its phrasing without outweighing it."""


@dataclass
class IntentTrainConfig:
    """Options of ``supportbot train intents`` (a field's help text is its ``metadata["help"]``,
    :func:`bot.settings.option`); the data, base encoder (``settings.intent_base``), seed, home and
    output are arguments of :func:`train_intents`, as of :func:`training.replies.train_replies`.

    Fields without a command-line option:
        warmup: fraction of steps with linear warm-up.
        weight_decay: AdamW weight decay (not on biases and LayerNorm weights).
        cv_folds: folds of the cross-validation of ``cv_below``.
        text_column, intent_column, oos_labels: how to read a user file (see
            :func:`training.data.load`; on the command line ``--text-column``,
            ``--intent-column`` and ``--oos-label``, shared with ``data show`` and ``eval intents``).
    """

    method: Method = option("finetune", "finetune (LR-initialised head, then full fine-tune) or head "
                                        "(frozen encoder + LR head)")
    epochs: float = option(4.0, "maximum epochs (finetune); early stopping may end sooner")
    lr: float = option(5e-5, "peak learning rate (AdamW, warm-up then linear decay)")
    batch_size: int = option(32, "examples per step per process")
    max_length: int = option(64, "tokens per utterance, training and inference (longer ones are truncated)")
    # Default 0: smoothing compresses confidences, and the out-of-scope class does the rejecting.
    label_smoothing: float = option(0.0, "label smoothing of the loss")
    warmup: float = 0.1
    weight_decay: float = 0.01
    layer_decay: float = option(1.0, "layer-wise LR decay (1 = off; 0.8: each layer gets 0.8x the LR of "
                                     "the one above)")
    head_c: float = option(0.1, "inverse L2 strength of the logistic-regression head (on standardised features)")
    patience: int = option(2, "early stopping: epochs without better validation macro-F1")
    oos_weight: float = option(2.0, "threshold objective: a wrongly answered out-of-scope message counts this "
                                    "many times a wrongly rejected in-scope one (1 = balanced accuracy)")
    oos_method: OosMethod = option("msp+knn", "out-of-scope score: msp+knn (msp and the distance to the nearest "
                                   "in-scope training row, calibrated), msp (1 - largest in-scope probability) "
                                   "or energy (-logsumexp of the in-scope logits)")
    holdout: int = option(0, "leave this many intents out of training (for eval oos)")
    background: str = option("hwu64", "out-of-scope examples besides the data's own: built-in data set, file, "
                                      "or none")
    background_rows: int = option(1500, "at most this many background rows are trained on")
    small_talk: bool = option(True, "add the built-in small-talk intents (greeting, thanks, goodbye, bot, "
                                    "affirm, negate)")
    customer_words: bool = option(True, "add the built-in data set's rows written in customers' own words "
                                        "(bitext has them) to training and validation")
    augment: float = option(0.4, "probability that a training row is drawn as a noisy copy (typos, casing, "
                                 "...); 0 = off")
    details: float = option(0.3, "probability that an in-scope row is drawn with concrete details added "
                                 "(order numbers, goods, dates)")
    cv_below: int = option(1000, "with fewer in-scope rows, cross-validate to choose epochs and threshold, "
                                 "then train on all")
    cv_folds: int = 3
    text_column: str | None = None
    intent_column: str | None = None
    oos_labels: list[str] = field(default_factory=list)
    test: str | None = option(None, "your own test file (may hold out-of-scope rows): evaluated after training")

    def check(self) -> None:
        """Raises SettingError naming the first option out of range."""
        rules = [
            (self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}"),
            (self.oos_method in OOS_METHODS, "oos_method", f"must be one of {', '.join(OOS_METHODS)}"),
            (self.epochs > 0, "epochs", "must be > 0"),
            (self.lr > 0, "lr", "must be > 0"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (8 <= self.max_length <= 512, "max_length", "must be in [8, 512]"),
            (0 < self.layer_decay <= 1, "layer_decay", "must be in (0, 1]"),
            (self.holdout >= 0, "holdout", "must be >= 0"),
            (self.head_c > 0, "head_c", "must be > 0"),
            (self.patience >= 1, "patience", "must be >= 1"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)"),
            (self.background_rows >= 0, "background_rows", "must be >= 0"),
            (0 <= self.augment <= 1, "augment", "must be in [0, 1]"),
            (0 <= self.details <= 1, "details", "must be in [0, 1]"),
            (self.cv_folds >= 2, "cv_folds", "must be >= 2"),
            (self.oos_weight > 0, "oos_weight", "must be > 0"),
        ]
        for ok, name, problem in rules:
            if not ok:
                raise SettingError(name, problem)

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`training.data.load` for the user's files."""
        return {"text_column": self.text_column, "intent_column": self.intent_column,
                "oos_labels": tuple(self.oos_labels)}


@dataclass
class Prepared:
    """Data ready for training.

    Attributes:
        train: in-scope, small-talk and out-of-scope training rows.
        train: the data's own training rows (in-scope and out-of-scope).
        validation: in-scope and small-talk validation rows (empty when cross-validating).
        extra: small-talk and background training rows (never in a cross-validation fold).
        negatives: held-out out-of-scope rows for choosing the threshold.
        test: test rows (may hold out-of-scope rows).
        labels: class labels, ``out_of_scope`` last when there are negatives.
        held_out: intents left out on purpose (``--holdout``).
        background: what the negatives are made of (recorded in the manifest).
    """

    name: str
    sha256: str
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    labels: list[str]
    held_out: list[str]
    extra: list[Example] = field(default_factory=list)
    negatives: list[Example] = field(default_factory=list)
    background: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Row count of each part (the test part still holds the held-out intents)."""
        return {"train": len(self.train), "small_talk_and_background": len(self.extra),
                "validation": len(self.validation), "test": len(self.test), "negatives": len(self.negatives)}

    @property
    def training_rows(self) -> list[Example]:
        """The data's own training rows, then small talk and background rows."""
        return self.train + self.extra

    @property
    def cross_validated(self) -> bool:
        """True when there is no validation split (small data: see :func:`cross_validate`)."""
        return not self.validation


def holdout_intents(intents: list[str], k: int, seed: int) -> list[str]:
    """``k`` intents drawn from sorted ``intents`` with ``random.Random(seed)``, sorted.

    Raises:
        SupportbotError: fewer than ``k + 2`` intents (training needs two left).
    """
    if k > len(intents) - 2:
        raise SettingError("holdout", f"{k}: the data has {len(intents)} intents; at least 2 must stay")
    return sorted(random.Random(seed).sample(sorted(intents), k))


def prepare(data: str | LoadedData, config: IntentTrainConfig, settings: Settings, encoder=None) -> Prepared:
    """Load and split the data, add small talk and out-of-scope negatives.

    In-scope rows are split train/validation/test (:func:`training.data.split`), or, below
    ``config.cv_below`` rows, kept whole for cross-validation. The data's own out-of-scope rows
    and the background set are split into training rows and held-out negatives
    (:data:`CALIBRATION_SHARE`; background by whole intents).

    Args:
        data: built-in data set name, a CSV/JSONL/nlu.yml path, or loaded data (its own
            ``test`` rows, when set, are the test split).
        encoder: ``(model, tokenizer)`` of the base encoder, used to drop background rows near
            an in-scope utterance (:data:`NEAR_IN_SCOPE`); None skips that filter.

    Raises:
        SupportbotError / DataError: unreadable data, fewer than two intents (out-of-scope
            rows do not count), an empty background set, or an intent without training rows.
    """
    data = data if isinstance(data, LoadedData) else load(
        data, data_dir=settings.data_dir, home=settings.home, **config.load_options())
    if len(data.intents) < 2:
        only = " (every other row is out of scope)" if data.out_of_scope else ""
        raise SupportbotError(f"{data.name}, field 'intent': a classifier needs at least 2 in-scope intents, "
                              f"found {len(data.intents)}{only}")
    rng = random.Random(settings.seed)
    in_scope = LoadedData(data.name, data.sha256, [e for e in data.examples if e.intent != OUT_OF_SCOPE], data.test)
    held = holdout_intents(data.intents, config.holdout, settings.seed) if config.holdout else []
    small = len(in_scope.examples) < config.cv_below and not held
    if small:
        train, validation, test = list(in_scope.examples), [], list(data.test or [])
    else:
        parts = split(in_scope, seed=settings.seed)
        train, validation, test = parts.train, parts.validation, parts.test
    train = [e for e in train if e.intent not in held]
    validation = [e for e in validation if e.intent not in held]
    if config.test:
        test = load(config.test, data_dir=settings.data_dir, home=settings.home, **config.load_options()).examples
    words_train, words_validation = customer_word_rows(
        data.name, [i for i in data.intents if i not in held], 0.0 if small else CUSTOMER_WORDS_VALIDATION,
        rng) if config.customer_words else ([], [])
    train, validation = train + words_train * CUSTOMER_WORDS_REPEAT, validation + words_validation
    extra: list[Example] = []
    background = background_set(config, settings)
    if config.small_talk:
        own = {e.intent for e in data.examples}
        talk = load(str(SMALL_TALK_FILE)).examples + conversation_moves(config, background, rng)
        talk = [e for e in talk if e.intent not in own]
        rng.shuffle(talk)
        cut = 0 if small else len(talk) // 7
        validation, extra = validation + talk[:cut], talk[cut:]
    own_oos = list(data.out_of_scope)
    rng.shuffle(own_oos)
    cut = round(len(own_oos) * CALIBRATION_SHARE) if len(own_oos) > 1 and not small else 0
    negatives, oos_train = own_oos[:cut], own_oos[cut:]
    bg_train, bg_negatives, info = background_rows(config, background, train + extra, encoder, rng)
    negatives = negatives + bg_negatives  # small data: the data's own rows are held out fold by fold
    train = train + oos_train
    extra = extra + [Example(e.text, OUT_OF_SCOPE, None, f"background:{e.source}") for e in bg_train]
    negatives = [Example(e.text, OUT_OF_SCOPE, None, e.source) for e in negatives]
    labels = sorted({e.intent for e in train + extra} - {OUT_OF_SCOPE})
    if any(e.intent == OUT_OF_SCOPE for e in train + extra):
        labels.append(OUT_OF_SCOPE)
    if not small and not validation:
        raise SupportbotError(f"{data.name}: too few rows for a validation split")
    info.update(own_rows_train=len(oos_train), own_rows_held_out=cut,
                customer_words_train=len(words_train), customer_words_validation=len(words_validation),
                customer_words_repeat=CUSTOMER_WORDS_REPEAT)
    return Prepared(data.name, data.sha256, train, validation, test, labels, held, extra, negatives, info)


def customer_word_rows(name: str, intents: list[str], share: float,
                       rng: random.Random) -> tuple[list[Example], list[Example]]:
    """The built-in data set's rows in customers' own words
    (:attr:`training.datasets.BuiltinDataset.customer_words`), for ``intents`` only, as
    ``(training rows, validation rows)``: ``share`` of each intent's rows, drawn with ``rng``,
    go to validation. Both are empty for a user file or a data set without such rows.
    """
    from training.datasets import BUILTIN

    dataset = BUILTIN.get(name)
    if dataset is None or dataset.customer_words is None:
        return [], []
    rows = load(str(BUILTIN_DIR / dataset.customer_words)).examples
    train: list[Example] = []
    validation: list[Example] = []
    for intent in sorted(set(intents)):
        mine = [e for e in rows if e.intent == intent]
        rng.shuffle(mine)
        cut = round(len(mine) * share)
        validation += mine[:cut]
        train += mine[cut:]
    return train, validation


def background_set(config: IntentTrainConfig, settings: Settings) -> LoadedData | None:
    """The background set of out-of-scope examples (``config.background``: a built-in data set
    or a file), loaded once for :func:`conversation_moves` and :func:`background_rows`; None for
    ``none`` or ``background_rows = 0``."""
    name = (config.background or "none").strip()
    if name.lower() == "none" or config.background_rows == 0:
        return None
    return load(name, data_dir=settings.data_dir, home=settings.home)


def conversation_moves(config: IntentTrainConfig, background: LoadedData | None,
                       rng: random.Random) -> list[Example]:
    """Small-talk rows from the background set's conversation moves (:func:`background_set`): up to
    :data:`MOVES_PER_INTENT` rows, drawn with ``rng``, of each move that
    :attr:`training.datasets.BuiltinDataset.conversational` maps to a small-talk intent, relabelled
    to it (HWU64: affirm, negate, praise -> ``smalltalk_affirm``, ``smalltalk_negate``,
    ``smalltalk_thanks``). Empty for a background set that is not built in, or none.
    """
    from training.datasets import BUILTIN

    name = (config.background or "none").strip()
    moves = BUILTIN[name].conversational if background is not None and name in BUILTIN else {}
    if not any(moves.values()):
        return []
    rows = background.examples
    picked: list[Example] = []
    for move, intent in sorted(moves.items()):
        if intent:
            mine = [e for e in rows if e.intent == move]
            picked += [Example(e.text, intent, None, e.source)
                       for e in rng.sample(mine, min(MOVES_PER_INTENT, len(mine)))]
    return picked


def background_rows(config: IntentTrainConfig, background: LoadedData | None, train: list[Example], encoder,
                    rng: random.Random) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Training rows and held-out negatives from the background set (:func:`background_set`).

    Conversation moves of a built-in set (``BuiltinDataset.conversational``) are left out. Whole
    background intents (:data:`CALIBRATION_SHARE` of them) are held out, so the threshold is
    chosen on kinds of out-of-scope request the model never saw; at most
    ``config.background_rows`` rows are trained on and a quarter of that is held out.

    Raises:
        SupportbotError: the background set is empty (after those steps).
    """
    from training.datasets import BUILTIN

    if background is None:
        return [], [], {"background": None}
    name = (config.background or "none").strip()
    skip = set(BUILTIN[name].conversational) if name in BUILTIN else set()
    in_scope = {e.intent for e in train}
    rows = [e for e in background.examples if e.intent not in skip]
    if not rows:
        raise SupportbotError(f"{name}: the background set of out-of-scope examples is empty")
    groups = sorted({e.intent for e in rows} - in_scope)
    rng.shuffle(groups)
    held_groups = set(groups[:max(1, round(len(groups) * CALIBRATION_SHARE))]) if len(groups) > 2 else set()
    trainable = [e for e in rows if e.intent not in held_groups and e.intent not in in_scope]
    held = [e for e in rows if e.intent in held_groups]
    if not held_groups:  # one label (a file of sentences): hold out random rows instead
        rng.shuffle(trainable)
        cut = max(1, round(len(trainable) * CALIBRATION_SHARE))
        held, trainable = trainable[:cut], trainable[cut:]
    rng.shuffle(trainable)
    rng.shuffle(held)
    trainable, held = trainable[:config.background_rows], held[:max(1, config.background_rows // 4)]
    dropped = 0
    if encoder is not None and train:
        keep = _far_from(encoder, [e.text for e in train], [e.text for e in trainable + held], config.max_length, rng)
        dropped, n = len(keep) - sum(keep), len(trainable)
        trainable, held = [e for e, k in zip(trainable, keep[:n]) if k], [e for e, k in zip(held, keep[n:]) if k]
    if not trainable and not held:
        log.warning("%s: every background row lies near an in-scope utterance; training without a background set", name)
    return trainable, held, {"background": name, "background_rows_train": len(trainable),
                             "background_rows_held_out": len(held), "held_out_background_intents": sorted(held_groups),
                             "dropped_near_in_scope": dropped}


def mean_pooled(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64):
    """Unit-length mean-pooled token embeddings of ``model``'s encoder (how
    sentence-transformers embeds with all-MiniLM-L6-v2): float32 array ``[n, hidden]``."""
    return batched_outputs(model, tokenizer, texts, max_length, batch_size).features.numpy()


def _far_from(encoder, in_scope: list[str], candidates: list[str], max_length: int, rng: random.Random) -> list[bool]:
    """For each candidate: True when no in-scope utterance (at most 40 per intent would do, but
    all are compared when there are fewer than 4,000) is at cosine similarity
    :data:`NEAR_IN_SCOPE` or more."""
    model, tokenizer = encoder
    if len(in_scope) > 4000:
        in_scope = rng.sample(in_scope, 4000)
    reference = mean_pooled(model, tokenizer, in_scope, max_length)
    found = mean_pooled(model, tokenizer, candidates, max_length)
    return [bool(x) for x in (found @ reference.T).max(axis=1) < NEAR_IN_SCOPE] if len(found) else []


def build_model(base_dir: Path, labels: list[str], seed: int):
    """Tokenizer and ``AutoModelForSequenceClassification`` for ``labels`` (float32, CPU), with
    the pooler dense layer set to the identity when the model has one (BERT family).

    Raises:
        SupportbotError: ``base_dir`` holds no model transformers can load.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = AutoModelForSequenceClassification.from_pretrained(
            base_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, dtype=torch.float32,
        )
    except (OSError, ValueError) as exc:
        raise SupportbotError(f"{base_dir}: not a model transformers can load ({exc})") from None
    pooler = getattr(model.base_model, "pooler", None)
    dense = getattr(pooler, "dense", None)
    if isinstance(dense, torch.nn.Linear) and dense.in_features == dense.out_features:
        with torch.no_grad():
            dense.weight.copy_(torch.eye(dense.in_features))
            dense.bias.zero_()
    return tokenizer, model


def head_features(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64):
    """The inputs of ``model.classifier`` for ``texts``, in eval mode: float32 array ``[n, hidden]``.

    Raises:
        SupportbotError: the model's ``classifier`` is not a single linear layer.
    """
    import numpy as np
    import torch

    if not isinstance(getattr(model, "classifier", None), torch.nn.Linear):
        raise SupportbotError("the LR head needs a model whose 'classifier' is one linear layer "
                              "(BERT family); this base model's is not")
    from tqdm.auto import tqdm

    seen: list[np.ndarray] = []
    hook = model.classifier.register_forward_pre_hook(lambda _m, args: seen.append(args[0].float().cpu().numpy()))
    try:
        for start in tqdm(range(0, len(texts), batch_size * 8), desc="head features", unit="chunk"):
            batched_outputs(model, tokenizer, texts[start:start + batch_size * 8], max_length, batch_size)
    finally:
        hook.remove()
    return np.concatenate(seen)


def fit_head(model, tokenizer, examples: list[Example], max_length: int, c: float, seed: int) -> None:
    """Fit ``LogisticRegression(C=c)`` (scikit-learn) on standardised :func:`head_features` and
    copy it, with the standardisation folded in, into ``model.classifier`` (class order =
    ``model.config.label2id``): ``W' = W / s``, ``b' = b - W' mu``.

    The scale ``s`` of each feature is its standard deviation, floored at a tenth of the median
    one: a near-constant feature (a saturated ``tanh`` unit) would otherwise get a weight so
    large that dropout or any change of that unit during fine-tuning blows up the logits.
    """
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    features = head_features(model, tokenizer, [e.text for e in examples], max_length)
    ids = np.array([model.config.label2id[e.intent] for e in examples])
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.maximum(scale, 0.1 * np.median(scale))
    lr = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit((features - mean) / scale, ids)
    if len(lr.classes_) == 2 and lr.coef_.shape[0] == 1:  # binary LR: one row -> two symmetric rows
        coef, intercept = np.vstack([-lr.coef_ / 2, lr.coef_ / 2]), np.array([-lr.intercept_[0] / 2, lr.intercept_[0] / 2])
    else:
        coef, intercept = lr.coef_, lr.intercept_
    coef = coef / scale
    weight, bias = np.zeros((model.config.num_labels, features.shape[1])), np.zeros(model.config.num_labels)
    weight[lr.classes_], bias[lr.classes_] = coef, intercept - coef @ mean
    with torch.no_grad():
        model.classifier.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        model.classifier.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def choose_threshold(in_scope_scores, in_scope_right, negative_scores,
                     oos_weight: float = 1.0) -> tuple[float, dict[str, float]]:
    """The out-of-scope threshold that maximises cost-weighted accuracy on held-out rows.

    An utterance is out of scope when its score is ``> threshold``. The objective is
    ``(a + w * b) / (1 + w)`` of (a) the share of in-scope rows answered with the right intent
    (right intent and score ``<= threshold``) and (b) the share of out-of-scope rows rejected
    (score ``> threshold``), ``w`` = ``oos_weight`` (:attr:`IntentTrainConfig.oos_weight`): the
    Bayes decision rule with unequal misclassification costs (Elkan 2001, "The Foundations of
    Cost-Sensitive Learning"); with ``w = 1`` it is balanced accuracy, i.e. Youden's J statistic
    plus one, halved (Youden 1950). The
    classifier's own mistakes count against (a). Among equally good thresholds the middle of
    the widest best interval is taken, so that neither side sits on its edge. Without negatives
    the largest in-scope score is taken (nothing in scope rejected).

    Args:
        in_scope_scores: float array ``[n]`` of in-scope rows' out-of-scope scores.
        in_scope_right: bool array ``[n]``: the row's top in-scope intent is its gold intent.
        negative_scores: float array ``[m]`` of out-of-scope rows' scores (may be empty).

    Returns:
        ``(threshold, rates)``; ``rates`` holds ``in_scope_answered`` (a), ``oos_rejected`` (b),
        ``balanced_accuracy`` and ``weighted_accuracy`` (the objective).
    """
    import numpy as np

    ins = np.asarray(in_scope_scores, dtype=np.float64)
    right = np.asarray(in_scope_right, dtype=bool)
    neg = np.asarray(negative_scores, dtype=np.float64)
    if len(neg) == 0:
        threshold = float(ins.max()) if len(ins) else 0.5
    else:
        candidates = np.unique(np.concatenate([ins, neg, [-np.inf]]))
        answered = ((ins[None, :] <= candidates[:, None]) & right[None, :]).mean(axis=1) if len(ins) else 0.0
        rejected = (neg[None, :] > candidates[:, None]).mean(axis=1)
        objective = np.round((answered + oos_weight * rejected) / (1 + oos_weight), 9)
        best = np.flatnonzero(objective == objective.max())
        runs = np.split(best, np.flatnonzero(np.diff(best) != 1) + 1)
        widths = [candidates[min(r[-1] + 1, len(candidates) - 1)] - candidates[r[0]] for r in runs]
        run = runs[int(np.argmax(widths))]
        low = candidates[run[0]]
        high = candidates[run[-1] + 1] if run[-1] + 1 < len(candidates) else candidates[run[-1]]
        threshold = float(low if not np.isfinite(low) else (low + high) / 2)
        if not np.isfinite(threshold):
            threshold = float(np.min(neg)) - 1e-6
    return threshold, threshold_rates(ins, right, neg, threshold, oos_weight)


def threshold_rates(in_scope_scores, in_scope_right, negative_scores, threshold: float,
                    oos_weight: float = 1.0) -> dict[str, float]:
    """The rates of :func:`choose_threshold` (same arguments) at ``threshold``: shares in [0, 1]."""
    import numpy as np

    ins, neg = np.asarray(in_scope_scores), np.asarray(negative_scores)
    rates = {
        "in_scope_answered": float(np.mean((ins <= threshold) & np.asarray(in_scope_right, dtype=bool)))
        if len(ins) else 0.0,
        "oos_rejected": float(np.mean(neg > threshold)) if len(neg) else 0.0,
    }
    rates["balanced_accuracy"] = (rates["in_scope_answered"] + rates["oos_rejected"]) / 2
    rates["weighted_accuracy"] = (rates["in_scope_answered"] + oos_weight * rates["oos_rejected"]) / (1 + oos_weight)
    return rates


def weights_sha256(model) -> str:
    """sha256 over the model's ``state_dict`` (sorted names, float32 bytes): equal hashes mean
    equal weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_intents(data: str | LoadedData, settings: Settings, config: IntentTrainConfig | None = None,
                  output: Path | None = None) -> Path:
    """Train, calibrate the OOS threshold and write a new version folder; returns its path (on
    every rank under DDP).

    Args:
        data: a built-in data set name, a file path, or already loaded data (see :func:`prepare`).
        settings: ``intent_base``, ``cache``, ``home``, ``seed`` and ``data_dir`` are used.
        config: options; defaults of :class:`IntentTrainConfig` when None.
        output: target folder (must not exist); default ``<home>/models/intents/<UTC time>``.

    Raises:
        SupportbotError: bad options (:class:`bot.errors.SettingError`), unusable data or base
            model, or ``output`` exists.
    """
    config = config or IntentTrainConfig()
    config.check()
    started = time.perf_counter()
    base_dir = resolve(settings.intent_base, settings.cache)
    probe = build_model(base_dir, ["a", "b"], settings.seed)
    prepared = prepare(data, config, settings, encoder=(probe[1], probe[0]))
    del probe
    args = training_args(config, settings)
    target = _shared_target(output, settings, args)
    history: dict[str, Any] = {}
    calibration = None
    if prepared.cross_validated:
        calibration, epochs = cross_validate(config, prepared, settings, base_dir, args)
        history["cross_validation"] = calibration["folds"]
        prepared = Prepared(prepared.name, prepared.sha256, prepared.train, [], prepared.test, prepared.labels,
                            prepared.held_out, prepared.extra + prepared.negatives, [], prepared.background)
        config = IntentTrainConfig(**{**{f.name: getattr(config, f.name) for f in fields(config)}, "epochs": epochs})
    tokenizer, model = build_model(base_dir, prepared.labels, settings.seed)
    fit_head(model, tokenizer, prepared.training_rows, config.max_length, config.head_c, settings.seed)
    if config.method == "finetune":
        args.output_dir = str(target.with_name(f".{target.name}.checkpoints"))
        history.update(finetune(model, tokenizer, prepared, config, args))
    hashes = _gather(weights_sha256(model))
    if args.process_index == 0:
        _write_version(target, model, tokenizer, prepared, config, settings, {
            **history, "wall_time_s": round(time.perf_counter() - started, 1),
            "world_size": args.world_size, "rank_weight_sha256": hashes,
            "device": pick_device().name,
        }, calibration)
    _barrier()
    return target


def cross_validate(config: IntentTrainConfig, prepared: Prepared, settings: Settings, base_dir: Path,
                   args) -> tuple[dict[str, Any], float]:
    """Small data: ``config.cv_folds``-fold cross-validation of the data's own rows (stratified
    by intent, out-of-scope rows included; small talk and background rows are in every
    training fold) to choose the epochs and the threshold.

    Each fold trains up to ``config.epochs`` epochs and scores its held-out rows and the
    held-out background negatives after every epoch (nearest neighbours: the fold's own in-scope
    training rows). The epoch count whose pooled out-of-fold scores give the best weighted
    accuracy (:func:`choose_threshold`) wins; its threshold (and ``msp+knn`` knots) are the
    version's.

    Returns:
        ``(calibration, epochs)``: ``calibration`` holds ``threshold``, ``rates``, ``folds``,
        ``objective`` and ``extra`` (see :func:`_calibrate`).
    """
    from collections import Counter

    import numpy as np
    import torch
    from sklearn.model_selection import StratifiedKFold

    counts = Counter(e.intent for e in prepared.train)
    rare = [e for e in prepared.train if counts[e.intent] < config.cv_folds]
    pool = [e for e in prepared.train if counts[e.intent] >= config.cv_folds]
    folds = StratifiedKFold(config.cv_folds, shuffle=True, random_state=settings.seed)
    per_epoch: dict[int, list] = {}
    fold_log = []
    for number, (fit, held) in enumerate(folds.split(pool, [e.intent for e in pool]), start=1):
        train = [pool[i] for i in fit] + rare
        held_rows = [pool[i] for i in held] + prepared.negatives
        fold = Prepared(prepared.name, prepared.sha256, train, held_rows, [], prepared.labels, [],
                        prepared.extra, [], prepared.background)
        tokenizer, model = build_model(base_dir, prepared.labels, settings.seed + number)
        fit_head(model, tokenizer, fold.training_rows, config.max_length, config.head_c, settings.seed)
        snapshots = [(0, *_snapshot(model, tokenizer, held_rows, _neighbours(model, tokenizer, fold.training_rows,
                                                                              config), config))]
        if config.method == "finetune":
            args.output_dir = str(settings.cache / f"intent-cv-{number}")
            snapshots += finetune(model, tokenizer, fold, config, args, keep_outputs=True)["epoch_outputs"]
        for epoch, logits, knn in snapshots:
            per_epoch.setdefault(epoch, []).append((held_rows, logits, knn))
        fold_log.append({"fold": number, "train_rows": len(train), "held_out_rows": len(held_rows)})
        log.info("cross-validation fold %d/%d done", number, config.cv_folds)
    best = None
    for epoch, parts in sorted(per_epoch.items()):
        rows = [e for held_rows, _, _ in parts for e in held_rows]
        logits = torch.cat([fold_logits for _, fold_logits, _ in parts])
        knn = np.concatenate([fold_knn for _, _, fold_knn in parts])
        found = _calibrate(logits, knn, rows, prepared.labels, config)
        fold_log.append({"epochs": epoch, **found.rates})
        if best is None or found.rates["weighted_accuracy"] > best[1].rates["weighted_accuracy"] + 1e-9:
            best = (epoch, found)
    epoch, found = best
    return {"threshold": found.threshold, "rates": found.rates, "extra": found.extra, "folds": fold_log,
            "objective": f"weighted accuracy (out of scope x{config.oos_weight:g}) of out-of-fold rows"}, float(max(epoch, 1) if config.method == "finetune" else config.epochs)


def _neighbour_texts(rows: list[Example], config: IntentTrainConfig) -> list[str]:
    """The nearest neighbours of the ``msp+knn`` score: the distinct texts of the in-scope and
    small-talk rows among ``rows``, and, when training draws noisy copies (``config.augment``),
    one noisy copy of each (:func:`training.augment.noisy`, details as in training, fixed seed):
    "wher is my ordr" then has a neighbour as misspelt as itself."""
    rows = list({e.text: e for e in rows if e.intent != OUT_OF_SCOPE}.values())
    rng = random.Random(1)
    copies = [noisy(_with_details(e, config.details, rng), rng) for e in rows] if config.augment else []
    return list(dict.fromkeys([e.text for e in rows] + copies))


def _neighbours(model, tokenizer, training_rows: list[Example], config: IntentTrainConfig):
    """The features ``[rows, hidden]`` of :func:`_neighbour_texts` under ``model`` now, or None
    for another ``config.oos_method`` than ``msp+knn``."""
    if config.oos_method != "msp+knn":
        return None
    return batched_outputs(model, tokenizer, _neighbour_texts(training_rows, config), config.max_length, 64).features


def _snapshot(model, tokenizer, rows: list[Example], neighbours, config: IntentTrainConfig):
    """``(logits [n, labels], knn [n])`` of ``rows`` under ``model`` now: ``knn`` is the distance to
    the nearest row of ``neighbours`` (:func:`_neighbours`; :func:`bot.classifier.knn_distance`),
    zeros when that is None."""
    import numpy as np

    held = batched_outputs(model, tokenizer, [e.text for e in rows], config.max_length, 64)
    if neighbours is None:
        return held.logits, np.zeros(len(rows))
    return held.logits, knn_distance(held.features, neighbours).numpy()


@dataclass
class Calibration:
    """What :func:`_calibrate` chose.

    Attributes:
        threshold: on the scale of ``config.oos_method``.
        rates: :func:`choose_threshold`'s rates at ``threshold``.
        scores: float array ``[n]``, every calibration row's out-of-scope score.
        extra: for ``msp+knn``, ``msp_threshold`` (the head's own rule, which a plain pipeline
            applies too) and ``knots["knn"]`` (:func:`bot.classifier.quantile_knots` of the distance
            over the calibration rows); else empty.
    """

    threshold: float
    rates: dict[str, float]
    scores: Any
    extra: dict[str, Any]


def _calibrate(logits, knn, rows: list[Example], labels: list[str], config: IntentTrainConfig) -> Calibration:
    """:func:`choose_threshold` for ``logits`` ``[n, len(labels)]`` and nearest-neighbour
    distances ``knn`` ``[n]`` of ``rows`` (in-scope and small-talk rows against out-of-scope
    rows). For ``msp+knn``, in two steps: the head's own ``msp`` threshold first, exactly as for
    ``msp``; then, with the rows it rejects kept rejected, the level of the distance's CDF over
    these rows that maximises the same objective (1 - 1e-3 at most, when the distance adds
    nothing): the neighbours only add rejections (:func:`bot.classifier.combined_score`)."""
    import numpy as np

    from bot.classifier import cdf, in_scope_argmax

    combined = config.oos_method == "msp+knn"
    scores = oos_scores(logits, "msp" if combined else config.oos_method, labels).numpy()
    best = in_scope_argmax(logits, labels).numpy()
    gold = np.array([labels.index(e.intent) if e.intent in labels else -1 for e in rows])
    negative = np.array([e.intent == OUT_OF_SCOPE for e in rows])
    right = best[~negative] == gold[~negative]
    threshold, rates = choose_threshold(scores[~negative], right, scores[negative], config.oos_weight)
    if not combined:
        return Calibration(threshold, rates, scores, {})
    knots = quantile_knots(knn)
    staged = np.where(scores > threshold, 2.0, cdf(knn, knots))  # the head's rejections stay rejected
    level = min(choose_threshold(staged[~negative], right, staged[negative], config.oos_weight)[0], 1 - 1e-3)
    combined_scores = combined_score(scores, knn, knots, threshold, level)
    rates = threshold_rates(combined_scores[~negative], right, combined_scores[negative], level, config.oos_weight)
    return Calibration(level, rates, combined_scores, {"msp_threshold": threshold, "knots": {"knn": knots}})


def training_args(config: IntentTrainConfig, settings: Settings):
    """``transformers.TrainingArguments`` for ``config``: bf16 on a GPU that has it, else CPU
    float32 (gloo for DDP); evaluation and saving each epoch; best model by validation
    macro-F1."""
    from transformers import TrainingArguments

    device = pick_device()
    return TrainingArguments(
        output_dir=str(settings.cache / "intent-checkpoints"),
        num_train_epochs=config.epochs, learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=64,
        warmup_steps=config.warmup, lr_scheduler_type="linear", weight_decay=config.weight_decay,
        label_smoothing_factor=config.label_smoothing, seed=settings.seed, data_seed=settings.seed,
        eval_strategy="epoch", save_strategy="epoch", save_only_model=True, save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model="macro_f1", greater_is_better=True,
        logging_strategy="epoch", report_to="none", use_cpu=not device.is_gpu,
        bf16=device.dtype_name == "bfloat16",
        train_sampling_strategy="group_by_length", dataloader_num_workers=0,
    )


def finetune(model, tokenizer, prepared: Prepared, config: IntentTrainConfig, args,
             keep_outputs: bool = False) -> dict[str, Any]:
    """Fine-tune ``model`` in place with ``transformers.Trainer``; returns epochs run, best
    validation macro-F1 and the per-epoch log. Checkpoints go to ``args.output_dir`` and are
    removed at the end.

    Without validation rows (the final fit after cross-validation) it trains ``config.epochs``
    epochs and keeps the last weights. With ``keep_outputs`` it does not evaluate; instead every
    epoch's :func:`_snapshot` of the validation rows is returned as ``epoch_outputs``
    (``[(epoch, logits [n, labels], knn [n])]``) and the last weights kept.
    """
    import shutil

    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainerCallback

    seen: list = []

    class Snapshots(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            neighbours = _neighbours(model, tokenizer, prepared.training_rows, config)
            seen.append((len(seen) + 1, *_snapshot(model, tokenizer, prepared.validation, neighbours, config)))
            model.train()

    evaluate = bool(prepared.validation) and not keep_outputs
    if not evaluate:
        args.eval_strategy = "no"
        args.save_strategy = "no"
        args.load_best_model_at_end = False
    trainer = Trainer(
        model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=Utterances(prepared.training_rows, tokenizer, model.config.label2id, config.max_length,
                                 config.augment, args.seed, config.details),
        eval_dataset=Utterances(prepared.validation, tokenizer, model.config.label2id, config.max_length) if evaluate else None,
        processing_class=tokenizer, compute_metrics=_metrics if evaluate else None,
        callbacks=([EarlyStoppingCallback(early_stopping_patience=config.patience)] if args.load_best_model_at_end
                   else []) + ([Snapshots()] if keep_outputs else []),
        optimizers=(_optimizer(model, config), None),
    )
    try:
        trainer.train()
        _barrier()
    finally:
        if args.process_index == 0:
            shutil.rmtree(args.output_dir, ignore_errors=True)
    result = {"epochs_run": round(trainer.state.epoch or 0, 2),
              "best_validation_macro_f1": trainer.state.best_metric,
              "log": [row for row in trainer.state.log_history if "eval_macro_f1" in row or "loss" in row]}
    if keep_outputs:
        result["epoch_outputs"] = seen
    return result


def _optimizer(model, config: IntentTrainConfig):
    """AdamW with layer-wise LR decay: the head gets ``lr``, encoder layer ``i`` (of ``L``) gets
    ``lr * layer_decay ** (L - i)``, embeddings ``lr * layer_decay ** (L + 1)``; no weight decay
    on biases and LayerNorm weights."""
    import torch

    layers = getattr(model.config, "num_hidden_layers", 0)
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = _depth(name, layers)
        decay = 0.0 if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else config.weight_decay
        key = (config.lr * config.layer_decay ** (layers + 1 - depth), decay)
        groups.setdefault(key, []).append(param)
    return torch.optim.AdamW([{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()],
                             lr=config.lr)


def _depth(name: str, layers: int) -> int:
    """0 for embeddings, ``i + 1`` for encoder layer ``i``, ``layers + 1`` for pooler and head."""
    if "embeddings" in name:
        return 0
    marker = ".layer."
    if marker in name:
        return int(name.split(marker, 1)[1].split(".", 1)[0]) + 1
    return layers + 1


class Utterances:
    """A torch map-style dataset of tokenised rows for ``Trainer``; with ``augment`` > 0 each
    draw of a row is replaced, with that probability, by a noisy copy
    (:func:`training.augment.noisy`), so every epoch sees other noise.

    Args:
        examples: rows; ``intent`` must be in ``label2id``.
        label2id: label -> class id.
        max_length: token limit.
        augment: probability of a noisy copy per draw.
        seed: seed of the noise.
        details: probability per draw of an in-scope row (not out of scope, not small talk)
            that concrete details are added first (:func:`training.augment.with_details`).
    """

    def __init__(self, examples: list[Example], tokenizer, label2id: dict[str, int], max_length: int,
                 augment: float = 0.0, seed: int = 0, details: float = 0.0):
        self.examples, self.tokenizer, self.label2id = examples, tokenizer, label2id
        self.max_length, self.augment, self.rng = max_length, augment, random.Random(seed)
        self.details = details

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        text = _with_details(example, self.details, self.rng)
        if self.augment and self.rng.random() < self.augment:
            text = noisy(text, self.rng)
        encoded = self.tokenizer(text, truncation=True, max_length=self.max_length)
        return {**encoded, "labels": self.label2id[example.intent]}


def _with_details(example: Example, rate: float, rng: random.Random) -> str:
    """``example.text``, with concrete details added at ``rate`` when the row is in scope."""
    if rate and example.intent != OUT_OF_SCOPE and not is_small_talk(example.intent) and rng.random() < rate:
        return with_details(example.text, rng)
    return example.text


def _metrics(prediction) -> dict[str, float]:
    """Accuracy and macro-F1 (:func:`_scores`) of a ``transformers.EvalPrediction``."""
    return _scores(prediction.label_ids.tolist(), prediction.predictions.argmax(-1).tolist())


def _scores(gold: list[int], predicted: list[int]) -> dict[str, float]:
    """:func:`training.metrics.intent_scores` of class ids, macro-F1 averaged over every class
    in ``gold`` or ``predicted`` (scikit-learn's default labels)."""
    return intent_scores(gold, predicted, labels=sorted(set(gold) | set(predicted)))


def validation_summary(model, tokenizer, prepared: Prepared, config: IntentTrainConfig,
                       calibration: dict[str, Any] | None = None, neighbours=None) -> dict[str, Any]:
    """Validation accuracy and macro-F1, and the OOS threshold with the rates it gives.

    The threshold comes from ``calibration`` (cross-validation) when given, else from
    :func:`choose_threshold` on the validation rows, a noisy copy of each
    (:func:`training.augment.noisy`, fixed seed; in-scope copies get details as in training)
    and the held-out negatives (:func:`_calibrate`; ``neighbours``: the in-scope training rows'
    features, :func:`_neighbours`).
    """
    import numpy as np

    from bot.classifier import in_scope_argmax

    labels = prepared.labels
    metrics: dict[str, Any] = {}
    if calibration is None:
        rng = random.Random(0)
        noisy_rows = [Example(noisy(_with_details(e, config.details, rng), rng), e.intent, None, e.source)
                      for e in prepared.validation]
        rows = prepared.validation + noisy_rows + prepared.negatives
        logits, knn = _snapshot(model, tokenizer, rows, neighbours, config)
        n = len(prepared.validation)
        gold = [labels.index(e.intent) for e in prepared.validation]
        predicted = in_scope_argmax(logits[:n], labels).numpy()
        scores = _scores(gold, predicted.tolist())
        metrics = {"validation_accuracy": scores["accuracy"], "validation_macro_f1": scores["macro_f1"]}
        found = _calibrate(logits, knn, rows, labels, config)
        threshold, rates, extra = found.threshold, found.rates, found.extra
        rates["in_scope_answered_clean_validation"] = float(np.mean(
            (found.scores[:n] <= threshold) & (predicted == np.array(gold))))
        objective = (f"weighted accuracy (out of scope x{config.oos_weight:g}): in-scope validation rows (clean + one "
                     f"noisy copy each, with details at rate {config.details}) answered with the right intent, "
                     "and held-out out-of-scope rows rejected")
        counts = {"in_scope_rows": 2 * n, "negative_rows": len(prepared.negatives)}
    else:
        threshold, rates, objective = calibration["threshold"], calibration["rates"], calibration["objective"]
        extra, counts = calibration["extra"], {}
    return {
        "metrics": metrics,
        "oos": {"method": config.oos_method, "threshold": threshold, "objective": objective,
                "label": OUT_OF_SCOPE if OUT_OF_SCOPE in labels else None, **rates, **counts,
                "negatives": prepared.background, **extra},
    }


def _write_version(target: Path, model, tokenizer, prepared: Prepared, config: IntentTrainConfig,
                   settings: Settings, training: dict[str, Any], calibration: dict[str, Any] | None = None) -> None:
    neighbours = _neighbours(model, tokenizer, prepared.training_rows, config)
    summary = validation_summary(model, tokenizer, prepared, config, calibration, neighbours)
    hyper = {f.name: getattr(config, f.name) for f in fields(config)}
    oos = summary["oos"]
    # The threshold travels in config.json too, so a plain transformers pipeline can reject: the
    # head-only (msp) rule, which needs no neighbours, when the product's is msp+knn.
    plain = ("msp", oos["msp_threshold"]) if config.oos_method == "msp+knn" else (config.oos_method, oos["threshold"])
    model.config.update({"oos_method": plain[0], "oos_threshold": plain[1]})
    with atomic_dir(target) as scratch:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        if neighbours is not None:
            save_neighbours(scratch, neighbours)
        save_manifest(scratch, IntentManifest(
            method=config.method, base_model=settings.intent_base,
            data={"name": prepared.name, "sha256": prepared.sha256, "split_seed": settings.seed,
                  "split_sizes": prepared.sizes(), "held_out_intents": prepared.held_out,
                  "test": config.test},
            labels=prepared.labels, hyperparameters={**hyper, "seed": settings.seed},
            metrics=summary["metrics"], oos=summary["oos"], training=training,
        ))
    log.info("intent model written to %s (OOS threshold %.4f: %s)", target, summary["oos"]["threshold"],
             {k: round(v, 4) for k, v in summary["oos"].items() if isinstance(v, float)})


def _shared_target(output: Path | None, settings: Settings, args) -> Path:
    """The version folder: ``output`` or a new one, decided on rank 0 and broadcast so
    every rank agrees (two ranks may start in different seconds)."""
    target = Path(output) if output else new_version_dir(settings.home, "intents")
    if args.world_size > 1:
        import torch.distributed as dist

        box = [str(target)]
        dist.broadcast_object_list(box, src=0)
        target = Path(box[0])
    if output is not None and target.exists():
        raise SettingError("output", f"{target} already exists; versions are never overwritten")
    return target


def _gather(value: str) -> list[str]:
    """``value`` of every rank, in rank order (``[value]`` without DDP)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
