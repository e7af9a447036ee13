"""Fine-tune the reply generator: a LoRA adapter on a causal instruct LM, with the HF Trainer.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
https://arxiv.org/abs/2106.09685) freezes the base weights W and learns a low-rank update
``W + (alpha / r) * B A`` on the chosen projections, via ``peft``
(https://huggingface.co/docs/peft). The loss covers the reply tokens only
(:mod:`training.reply_data`). The artifact is a folder with the adapter (``save_pretrained``,
loadable with plain peft), the tokenizer, ``manifest.json`` and, with ``merge``, ``merged/``:
the base model with the adapter folded in, for serving without the base model.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bot.answers import AnswerIndex, base_answers, embed, load_encoder, write_base
from bot.backends import backend_of
from bot.base_models import resolve
from bot.device import Device, pick_device
from bot.errors import SettingError, SupportbotError
from bot.generation import MERGED, ReplyGenerator, ServingOptions
from bot.generation.speculative import write_drafts
from bot.manifest import ReplyManifest, save as save_manifest
from bot.ort_backend import onnx_folder
from bot.placeholders import slot_names
from bot.prompting import SYSTEM_PROMPT, build_messages
from bot.settings import ReplyTrainConfig, Settings
from training.artifacts import atomic_dir, new_version_dir
from training.data import LoadedData, load, split
from training.reply_data import clean_reply, encode, with_replies

log = logging.getLogger(__name__)

def _check(config: ReplyTrainConfig) -> None:
    """Raises SupportbotError for a hyper-parameter outside its range."""
    problems = [name for name, ok in [
        ("lora_r", config.lora_r > 0), ("lora_alpha", config.lora_alpha > 0),
        ("epochs", config.epochs > 0), ("max_length", config.max_length >= 16),
        ("lr", config.lr > 0), ("target_modules", bool(config.target_modules)),
        ("max_train_examples", config.max_train_examples is None or config.max_train_examples > 0),
        ("batch_size", config.batch_size is None or config.batch_size > 0),
        ("draft_replies", config.draft_replies is None or config.draft_replies >= 0),
        ("references", config.references >= 0), ("answers_per_intent", config.answers_per_intent > 0),
    ] if not ok]
    if problems:
        raise SupportbotError(f"invalid reply training option(s): {', '.join(problems)} "
                              "(must be positive / non-empty; max_length >= 16; draft_replies, references >= 0)")


def _load_lm(base_dir: Path, device: Device):
    """Tokenizer and causal LM of ``base_dir`` (float32 on CPU, bf16 on a bf16 GPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.chat_template is None:
        raise SupportbotError(f"{base_dir}: the tokenizer has no chat template; use an instruct model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=device.dtype)
    return tokenizer, model


def _with_lora(model, config: ReplyTrainConfig):
    """``model`` wrapped by a peft LoRA adapter on ``config.target_modules``.

    Raises:
        SupportbotError: none of the target modules exists in the model.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=list(config.target_modules))
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise SupportbotError(f"LoRA target modules {list(config.target_modules)}: {exc}") from None


def _time_budget(minutes: float | None):
    """A ``TrainerCallback`` that ends training once ``minutes`` of wall time have passed."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.deadline = time.monotonic() + 60 * minutes if minutes else None

        def on_step_end(self, args, state, control, **kwargs):
            if self.deadline is not None and time.monotonic() > self.deadline:
                log.info("time budget of %.1f min reached after %d steps", minutes, state.global_step)
                control.should_training_stop = True

    return TimeBudget()


def _training_args(config: ReplyTrainConfig, device: Device, scratch: str, steps: int):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=scratch, per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, learning_rate=config.lr,
        num_train_epochs=config.epochs, max_steps=config.max_steps,
        lr_scheduler_type="cosine", warmup_steps=max(1, math.ceil(0.05 * steps)),
        logging_steps=max(1, steps // 20), logging_first_step=True, save_strategy="no",
        report_to="none", seed=config.seed, bf16=device.dtype_name == "bfloat16",
        use_cpu=not device.is_gpu, train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
    )


def _planned_steps(config: ReplyTrainConfig, examples: int) -> int:
    per_epoch = math.ceil(examples / config.batch_size)
    full = math.ceil(per_epoch * config.epochs)
    return min(full, config.max_steps) if config.max_steps > 0 else full


def _sample(examples: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(examples):
        return examples
    return random.Random(seed).sample(examples, limit)


def _fit(model, tokenizer, train, validation, config: ReplyTrainConfig, device: Device, beside: Path) -> dict:
    """Run the Trainer; returns train loss, validation loss and perplexity, steps.

    The Trainer's output folder is a hidden scratch folder in ``beside`` (the versions' folder)
    named ``.trainer-*.tmp-<pid>``, so that :func:`training.jobs.recover` removes it when this
    process is killed."""
    from transformers import DataCollatorForSeq2Seq, Trainer

    steps = _planned_steps(config, len(train))
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    beside.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".trainer-", suffix=f".tmp-{os.getpid()}", dir=beside) as scratch:
        trainer = Trainer(model=model, args=_training_args(config, device, scratch, steps),
                          data_collator=collator, train_dataset=train, eval_dataset=validation or None,
                          processing_class=tokenizer, callbacks=[_time_budget(config.max_minutes)])
        result = trainer.train()
        metrics = {"train_loss": round(result.training_loss, 4), "steps": result.global_step,
                   "examples_seen": result.global_step * config.batch_size}
        if validation:
            loss = trainer.evaluate()["eval_loss"]
            metrics.update(validation_loss=round(loss, 4), validation_perplexity=round(math.exp(loss), 2))
    return metrics


def _save(folder: Path, model, tokenizer, merge: bool, base_ref: str) -> None:
    """Adapter + tokenizer in ``folder``; with ``merge`` also the merged model in ``folder/merged``.
    ``adapter_config.json`` names ``base_ref`` (the hub id or path training was given, never the
    local folder it resolved to), so the version is portable: the product resolves it again at
    load time (:func:`bot.base_models.resolve`) and plain
    ``peft.AutoPeftModelForCausalLM.from_pretrained(folder)`` works wherever the hub is reachable."""
    model.peft_config["default"].base_model_name_or_path = base_ref
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(folder / MERGED)
        tokenizer.save_pretrained(folder / MERGED)


def train_replies(data: str | LoadedData, settings: Settings, config: ReplyTrainConfig | None = None,
                  output: Path | None = None, device: Device | None = None) -> Path:
    """Fine-tune ``settings.reply_base`` on the replies of ``data``; returns the version folder.

    Args:
        data: a built-in data set name, a file path, or already loaded data.
        settings: ``reply_base``, ``cache``, ``home``, ``seed`` and ``data_dir`` are used.
        config: hyper-parameters; defaults of :class:`ReplyTrainConfig` when None.
        output: target folder (must not exist); default ``new_version_dir(home, "replies")``.
        device: default :func:`bot.device.pick_device`.

    Returns:
        The folder written atomically: ``adapter_config.json``, ``adapter_model.safetensors``,
        tokenizer files, ``manifest.json`` and ``README.md`` (:mod:`bot.manifest`), with
        ``config.references`` the answer store ``answers.jsonl`` and ``answers.npy``
        (:mod:`bot.answers`; each prompt held that many answers retrieved from it), ``drafts.json``
        (per intent, the model's own replies to ``draft_replies`` training requests, then training
        replies: the seed of speculative decoding, :mod:`bot.generation.speculative`) and, with
        ``merge``, ``merged/``.

    Raises:
        SupportbotError: bad data or option, unknown base model, or ``output`` exists.
    """
    import torch

    device = device or pick_device()
    config = config or ReplyTrainConfig(seed=settings.seed)
    _check(config)
    config = config.for_device(device)
    loaded = data if isinstance(data, LoadedData) else load(data, settings.data_dir, settings.home)
    parts = split(loaded, seed=settings.seed)
    all_train = with_replies(parts.train, loaded.name)
    train_rows = _sample(all_train, config.max_train_examples, config.seed)
    val_rows = _sample([e for e in parts.validation if e.reply], config.validation_examples, config.seed)
    target = Path(output) if output else new_version_dir(settings.home, "replies")
    if target.exists():
        raise SettingError("output", f"{target} already exists; choose another")
    base_dir = resolve(settings.reply_base, settings.cache)
    torch.manual_seed(config.seed)
    tokenizer, model = _load_lm(base_dir, device)
    model = _with_lora(model, config)
    index, references = None, {}
    if config.references:
        encoder = load_encoder(settings.answers.encoder, settings.cache)
        index = answer_index(all_train, config.answers_per_intent, encoder)
        drafted = first_per_intent(all_train, config.draft_replies)  # what own_replies answers
        for rows in (train_rows, val_rows, drafted):
            fresh = [e for e in rows if id(e) not in references]
            references.update(zip(map(id, fresh), retrieved_references(index, encoder, fresh, config.references)))
    train = [encode(tokenizer, e, config.max_length, references.get(id(e), ())) for e in train_rows]
    validation = [encode(tokenizer, e, config.max_length, references.get(id(e), ())) for e in val_rows]
    log.info("training replies on %d examples (%s), %s", len(train), device.name, config)
    started = time.perf_counter()
    metrics = _fit(model, tokenizer, train, validation, config, device, beside=target.parent)
    wall = round(time.perf_counter() - started, 1)
    with atomic_dir(target) as scratch:
        _save(scratch, model, tokenizer, config.merge, settings.reply_base)
        save_manifest(scratch, ReplyManifest(
            base_model=settings.reply_base, base_model_path=str(base_dir),
            data={"name": loaded.name, "sha256": loaded.sha256, "split_seed": settings.seed,
                  "split_sizes": parts.sizes()}, train_examples=len(train),
            hyperparameters=asdict(config), device=asdict(device), metrics=metrics,
            train_wall_seconds=wall, prompt={"system": SYSTEM_PROMPT}, merged=config.merge,
            slots=sorted(slot_names(clean_reply(e.reply or "") for e in all_train)),
            retrieval={"k": config.references, "encoder": settings.answers.encoder, "per_intent": config.answers_per_intent,
                       "answers": len(index.answers)} if index else None,
        ))
        if index:
            write_base(scratch, index.answers, index.embeddings)
        own = own_replies(scratch, settings, all_train, config.draft_replies, references)
        write_drafts(scratch, [*own, *((e.intent, clean_reply(e.reply)) for e in all_train)])
    if backend_of(settings.serving) == "ort":  # converted now, so serving starts at once
        try:
            onnx_folder(target, settings.serving.ort_precision, settings.cache)
        except SupportbotError as exc:  # the version is complete; serving converts it on first load
            log.warning("%s", exc)
    return target


def answer_index(examples: list, per_intent: int, encoder) -> AnswerIndex:
    """The training answers of a version (:func:`bot.answers.base_answers` of ``examples``),
    their requests embedded by ``encoder``."""
    answers = base_answers(((e.text, e.intent, clean_reply(e.reply or "")) for e in examples), per_intent)
    return AnswerIndex(answers, embed(encoder, [a.key for a in answers]))


def retrieved_references(index: AnswerIndex, encoder, rows: list, k: int) -> list[list[str]]:
    """For each example, the replies of the ``k`` training answers of its intent nearest to its
    request, leaving out answers with the example's own request or reply (leave-one-out: the
    model must learn to adapt an approved answer, not to copy its target)."""
    if k <= 0:
        return [[] for _ in rows]
    queries = embed(encoder, [e.text for e in rows])
    found = []
    for example, query in zip(rows, queries):
        own = (example.text.strip(), clean_reply(example.reply or ""))
        hits = index.search(query, example.intent, k, exclude=lambda a: (a.request or "").strip() == own[0]
                            or a.reply == own[1])
        found.append([hit.answer.reply for hit in hits])
    return found


def first_per_intent(examples: list, per_intent: int) -> list:
    """The first ``per_intent`` examples of each intent, in order."""
    picked, counts = [], {}
    for example in examples:
        if counts.get(example.intent, 0) < per_intent:
            counts[example.intent] = counts.get(example.intent, 0) + 1
            picked.append(example)
    return picked


def own_replies(folder: Path, settings: Settings, examples: list, per_intent: int,
                references: dict[int, list[str]] | None = None) -> list[tuple[str, str]]:
    """``(intent, reply)`` pairs: the replies version in ``folder`` answering the first
    ``per_intent`` of ``examples`` of each intent (with ``references[id(example)]`` in the
    prompt when given), as served (greedy, slot names constrained,
    :meth:`bot.generation.ReplyGenerator.generate_batch`, with a progress bar). [] when
    ``per_intent`` is 0."""
    picked = first_per_intent(examples, per_intent)
    if not picked:
        return []
    generator = ReplyGenerator.load(folder, cache_dir=settings.cache, options=ServingOptions(draft_tokens=0))
    refs = references or {}
    replies = generator.generate_batch([build_messages([], e.text, e.intent, refs.get(id(e), ())) for e in picked],
                                       progress=True)
    return [(e.intent, reply) for e, reply in zip(picked, replies) if reply]
