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

The out-of-scope threshold is chosen on in-scope validation utterances so that at most
``1 - coverage`` of them are rejected (see :func:`choose_threshold`).

Runs unchanged under ``torchrun`` / ``accelerate launch`` (DDP; gloo on CPU): every rank trains,
only rank 0 writes the version folder; the manifest records a hash of each rank's final weights.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bot.classifier import OOS_METHODS, batched_logits, oos_scores
from bot.device import pick_device
from bot.errors import SupportbotError
from bot.settings import Settings, load_settings
from training.artifacts import atomic_dir, new_version_dir, write_manifest
from training.base_models import resolve
from training.data import Example, LoadedData, load, split

log = logging.getLogger(__name__)
METHODS = ("finetune", "head")


@dataclass
class IntentTrainConfig:
    """Options of ``supportbot train intents`` (``None`` = take it from the settings).

    Attributes:
        data: built-in data set name, a CSV/JSONL/nlu.yml path, or loaded data (its own
            ``test`` rows, when set, are the test split).
        base: base encoder (hub id or folder); default ``settings.intent_base``.
        method: ``finetune`` or ``head`` (frozen encoder + logistic regression).
        epochs: maximum training epochs (``finetune``); early stopping may end sooner.
        lr: peak learning rate of AdamW.
        batch_size: examples per device per step.
        max_length: token limit per utterance (training and inference).
        seed: split and training seed; default ``settings.seed``.
        output: version folder to create; default ``<home>/models/intents/<UTC time>``.
        label_smoothing: label smoothing factor of the cross-entropy loss.
        warmup: fraction of steps with linear warm-up.
        weight_decay: AdamW weight decay (not on biases and LayerNorm weights).
        layer_decay: layer-wise LR decay factor (1.0 = off; 0.8 = each layer below the top
            gets 0.8x the LR of the one above).
        head_c: inverse L2 strength ``C`` of the logistic-regression head.
        patience: epochs without a better validation macro-F1 before stopping.
        oos_method: ``msp`` or ``energy`` (see :mod:`bot.classifier`).
        coverage: share of in-scope validation utterances the threshold must accept. Default
            0.99: validation rows are phrased like the training data and real customers are
            not; on Bitext, 14 of 46 realistic in-scope requests got through with the right intent
            at 0.95 and 24 at 0.99, while 7 of 8 off-topic messages stayed rejected
            (``scripts/realistic_check.py``, notes of issue #5).
        holdout: number of intents left out of training (for the OOS evaluation).
        data_dir, home: overrides of the settings of that name.
    """

    data: str | LoadedData
    base: str | None = None
    method: str = "finetune"
    epochs: float = 4.0
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 64
    seed: int | None = None
    output: Path | None = None
    label_smoothing: float = 0.1
    warmup: float = 0.1
    weight_decay: float = 0.01
    layer_decay: float = 1.0
    head_c: float = 0.1
    patience: int = 2
    oos_method: str = "msp"
    coverage: float = 0.99
    holdout: int = 0
    data_dir: Path | None = None
    home: Path | None = None

    def check(self) -> None:
        """Raises SupportbotError naming the first option out of range."""
        rules = [
            (self.method in METHODS, f"--method must be one of {', '.join(METHODS)}"),
            (self.oos_method in OOS_METHODS, f"--oos-method must be one of {', '.join(OOS_METHODS)}"),
            (self.epochs > 0, "--epochs must be > 0"),
            (self.lr > 0, "--lr must be > 0"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (8 <= self.max_length <= 512, "--max-length must be in [8, 512]"),
            (0 < self.coverage < 1, "--coverage must be in (0, 1)"),
            (0 < self.layer_decay <= 1, "--layer-decay must be in (0, 1]"),
            (self.holdout >= 0, "--holdout must be >= 0"),
            (self.head_c > 0, "--head-c must be > 0"),
            (self.patience >= 1, "--patience must be >= 1"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        ]
        for ok, message in rules:
            if not ok:
                raise SupportbotError(message)


@dataclass
class Prepared:
    """Data ready for training: splits without the held-out intents, and the label list."""

    name: str
    sha256: str
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    labels: list[str]
    held_out: list[str]

    def sizes(self) -> dict[str, int]:
        """Row count of each part (the test part still holds the held-out intents)."""
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def holdout_intents(intents: list[str], k: int, seed: int) -> list[str]:
    """``k`` intents drawn from sorted ``intents`` with ``random.Random(seed)``, sorted.

    Raises:
        SupportbotError: fewer than ``k + 2`` intents (training needs two left).
    """
    if k > len(intents) - 2:
        raise SupportbotError(f"--holdout {k}: the data has {len(intents)} intents; at least 2 must stay")
    return sorted(random.Random(seed).sample(sorted(intents), k))


def prepare(config: IntentTrainConfig, settings: Settings) -> Prepared:
    """Load, split (``settings.seed``) and drop the held-out intents from train and validation.

    Raises:
        SupportbotError / DataError: unreadable data, fewer than two intents, or an intent
            without any training example.
    """
    data = config.data if isinstance(config.data, LoadedData) else load(
        config.data, data_dir=settings.data_dir, home=settings.home)
    if len(data.intents) < 2:
        raise SupportbotError(f"{data.name}: a classifier needs at least 2 intents, found {len(data.intents)}")
    parts = split(data, seed=settings.seed)
    held = holdout_intents(data.intents, config.holdout, settings.seed) if config.holdout else []
    train = [e for e in parts.train if e.intent not in held]
    validation = [e for e in parts.validation if e.intent not in held]
    if not validation:
        raise SupportbotError(f"{data.name}: too few rows for a validation split")
    labels = sorted({e.intent for e in train})
    return Prepared(data.name, data.sha256, train, validation, parts.test, labels, held)


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
            batched_logits(model, tokenizer, texts[start:start + batch_size * 8], max_length, batch_size)
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


def choose_threshold(scores, coverage: float) -> float:
    """Smallest threshold that accepts at least ``coverage`` of in-scope ``scores``.

    An utterance is out of scope when its score is ``> threshold``. With ``n`` scores at most
    ``k = floor((1 - coverage) * n)`` may lie above the threshold, so it is the
    ``(n - k)``-th smallest score (an empirical quantile; ties can only lower the rejected share).
    """
    import math

    import numpy as np

    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    allowed = math.floor((1 - coverage) * len(ordered) + 1e-9)
    return float(ordered[len(ordered) - allowed - 1])


def weights_sha256(model) -> str:
    """sha256 over the model's ``state_dict`` (sorted names, float32 bytes): equal hashes mean
    equal weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_intents(config: IntentTrainConfig) -> Path:
    """Train, calibrate the OOS threshold and write a new version folder; returns its path (on
    every rank under DDP).

    Raises:
        SupportbotError: bad options, unusable data or base model, or ``output`` exists.
    """
    config.check()
    started = time.perf_counter()
    settings = load_settings(home=config.home, data_dir=config.data_dir, seed=config.seed,
                             intent_base=config.base)
    prepared = prepare(config, settings)
    base_dir = resolve(settings.intent_base, settings.cache)
    tokenizer, model = build_model(base_dir, prepared.labels, settings.seed)
    args = training_args(config, settings)
    target = _shared_target(config, settings, args)
    fit_head(model, tokenizer, prepared.train, config.max_length, config.head_c, settings.seed)
    history: dict[str, Any] = {}
    if config.method == "finetune":
        args.output_dir = str(target.with_name(f".{target.name}.checkpoints"))
        history = finetune(model, tokenizer, prepared, config, args)
    hashes = _gather(weights_sha256(model))
    if args.process_index == 0:
        _write_version(target, model, tokenizer, prepared, config, settings, {
            **history, "wall_time_s": round(time.perf_counter() - started, 1),
            "world_size": args.world_size, "rank_weight_sha256": hashes,
            "device": pick_device().name,
        })
    _barrier()
    return target


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


def finetune(model, tokenizer, prepared: Prepared, config: IntentTrainConfig, args) -> dict[str, Any]:
    """Fine-tune ``model`` in place with ``transformers.Trainer``; returns epochs run, best
    validation macro-F1 and the per-epoch log. Checkpoints go to ``args.output_dir`` and are
    removed at the end."""
    import shutil

    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

    trainer = Trainer(
        model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=_dataset(prepared.train, tokenizer, model, config.max_length),
        eval_dataset=_dataset(prepared.validation, tokenizer, model, config.max_length),
        processing_class=tokenizer, compute_metrics=_metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=config.patience)],
        optimizers=(_optimizer(model, config), None),
    )
    try:
        trainer.train()
        _barrier()
    finally:
        if args.process_index == 0:
            shutil.rmtree(args.output_dir, ignore_errors=True)
    return {"epochs_run": round(trainer.state.epoch or 0, 2),
            "best_validation_macro_f1": trainer.state.best_metric,
            "log": [row for row in trainer.state.log_history if "eval_macro_f1" in row or "loss" in row]}


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


def _dataset(examples: list[Example], tokenizer, model, max_length: int):
    from datasets import Dataset

    encoded = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
    return Dataset.from_dict({**encoded, "labels": [model.config.label2id[e.intent] for e in examples]})


def _metrics(prediction) -> dict[str, float]:
    """Accuracy and macro-F1 (scikit-learn) of a ``transformers.EvalPrediction``."""
    from sklearn.metrics import accuracy_score, f1_score

    predicted = prediction.predictions.argmax(-1)
    return {"accuracy": accuracy_score(prediction.label_ids, predicted),
            "macro_f1": f1_score(prediction.label_ids, predicted, average="macro")}


def validation_summary(model, tokenizer, prepared: Prepared, config: IntentTrainConfig) -> dict[str, Any]:
    """Validation accuracy, macro-F1 and the OOS threshold (and its rejection rate) of the
    trained ``model``."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    logits = batched_logits(model, tokenizer, [e.text for e in prepared.validation], config.max_length, 64)
    gold = [model.config.label2id[e.intent] for e in prepared.validation]
    predicted = logits.argmax(-1).numpy()
    scores = oos_scores(logits, config.oos_method).numpy()
    threshold = choose_threshold(scores, config.coverage)
    return {
        "metrics": {"validation_accuracy": float(accuracy_score(gold, predicted)),
                    "validation_macro_f1": float(f1_score(gold, predicted, average="macro"))},
        "oos": {"method": config.oos_method, "threshold": threshold, "coverage_target": config.coverage,
                "validation_rejected": float(np.mean(scores > threshold))},
    }


def _write_version(target: Path, model, tokenizer, prepared: Prepared, config: IntentTrainConfig,
                   settings: Settings, training: dict[str, Any]) -> None:
    summary = validation_summary(model, tokenizer, prepared, config)
    hyper = {f.name: getattr(config, f.name) for f in fields(config)
             if f.name not in ("data", "base", "output", "data_dir", "home")}
    with atomic_dir(target) as scratch:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        write_manifest(
            scratch, kind="intents", method=config.method, base_model=settings.intent_base,
            data={"name": prepared.name, "sha256": prepared.sha256, "split_seed": settings.seed,
                  "split_sizes": prepared.sizes(), "held_out_intents": prepared.held_out},
            labels=prepared.labels, hyperparameters={**hyper, "seed": settings.seed},
            metrics=summary["metrics"], oos=summary["oos"], training=training,
        )
    log.info("intent model written to %s (validation accuracy %.4f)", target,
             summary["metrics"]["validation_accuracy"])


def _shared_target(config: IntentTrainConfig, settings: Settings, args) -> Path:
    """The version folder: ``config.output`` or a new one, decided on rank 0 and broadcast so
    every rank agrees (two ranks may start in different seconds)."""
    target = Path(config.output) if config.output else new_version_dir(settings.home, "intents")
    if args.world_size > 1:
        import torch.distributed as dist

        box = [str(target)]
        dist.broadcast_object_list(box, src=0)
        target = Path(box[0])
    if config.output is not None and target.exists():
        raise SupportbotError(f"--output {target} already exists; versions are never overwritten")
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
