"""Serve the reply generator: load a trained version, stream a reply token by token.

Usage (the router's call)::

    generator = ReplyGenerator.load("~/.supportbot/models/replies/20261130-000550")
    for chunk in generator.stream(history=[("Where is my order?", "It ships today.")],
                                  user_text="Can I cancel it?", intent="cancel_order"):
        print(chunk, end="")

The prompt is :func:`bot.prompting.build_messages`, the same function training used. A LoRA
adapter (Hu et al. 2021, https://arxiv.org/abs/2106.09685) is folded into the base weights at
load time (``peft``'s ``merge_and_unload``), so serving costs the same as the base model.
Streaming uses transformers' ``TextIteratorStreamer`` with ``generate`` running in a thread
(https://huggingface.co/docs/transformers/internal/generation_utils#transformers.TextIteratorStreamer).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from bot.base_models import resolve
from bot.device import Device, cpu_serving_dtype_name, pick_device
from bot.errors import SupportbotError
from bot.manifest import MANIFEST, read_manifest
from bot.packing import pack_linears
from bot.prompting import Turn, build_messages, drop_oldest_turn, prompt_ids, text_ids
from bot.settings import Settings
from bot.slot_decoding import KnownSlots
from bot.speculative import DraftCandidates, DraftStore, drafting, enable_drafting, read_drafts

MERGED = "merged"
"""Sub-folder of a replies version with the merged model (``supportbot train replies --merge``)."""

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class ServingOptions:
    """How the model runs; ``None`` fields are chosen from the device.

    Attributes:
        dtype_name: ``"float32"`` or ``"bfloat16"``; default: the device's dtype on GPU; on CPU
            bfloat16 when the CPU computes it natively (:func:`bot.device.cpu_serving_dtype_name`),
            else float32. Measured on 12 held-out requests (``bench/generation.py --quality``), bf16
            replies scored the same ROUGE-L as float32 ones (29.6-29.9 vs 29.2) but are worded
            differently.
            Choose float32 to get exactly the replies of plain float32 greedy decoding.
        int8: dynamic int8 quantisation of the linear layers
            (``torch.ao.quantization.quantize_dynamic``, CPU only; Jacob et al. 2018,
            https://arxiv.org/abs/1712.05877). Off by default: it cost 4-9 ROUGE-L points on
            6-12 test replies (``bench/generation.py --quality``). Runs in float32 and turns drafts
            off (its activation scale is shared by all tokens of a pass, so a draft would change
            the reply).
        batch_size: prompts per forward pass in :meth:`ReplyGenerator.generate_batch`;
            default 32 on GPU, 8 on CPU.
        max_prompt_tokens: prompt cap in tokens; the oldest history goes first, then the end of
            the customer's message.
        max_new_tokens: default cap on reply length, in tokens.
        draft_tokens: longest draft of retrieval-based speculative decoding
            (:mod:`bot.speculative`) when streaming, 0 to 16; 0 turns it off. A draft check
            computes what one-token steps would, up to rounding: in float32 replies were the
            same token for token in every measurement; in bfloat16 a several-token pass rounds
            differently, so a reply depends on the drafts (ROUGE-L measured the same). So that in
            bf16 the same request still gets the same reply, and no reply depends on earlier
            customers, the store grows with served replies only in float32
            (:meth:`ReplyGenerator.learns_drafts`).
        pack_weights: on CPU in bfloat16, replace the linear weights by oneDNN-packed ones
            (:mod:`bot.packing`): a 5-token draft check then costs about one float32 token. Not
            done in float32, where it gained 0-7 % with drafts, cost 2x without them and kept
            more memory (fresh-user test); nor where this CPU's oneDNN cannot pack bf16.
    """

    dtype_name: str | None = None
    int8: bool | None = None
    batch_size: int | None = None
    max_prompt_tokens: int = 768
    max_new_tokens: int = 160
    draft_tokens: int = 4
    pack_weights: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.draft_tokens <= 16:
            raise ValueError(f"draft_tokens must be between 0 and 16, got {self.draft_tokens}")
        if self.dtype_name not in (None, "float32", "bfloat16"):
            raise ValueError(f"dtype_name must be float32 or bfloat16, got {self.dtype_name!r}")

    def resolved(self, device: Device) -> "ServingOptions":
        """A copy with every ``None`` filled in for ``device``; int8 (CPU only) runs on float32
        weights and without drafts; packing on CPU only."""
        int8 = bool(self.int8) and not device.is_gpu
        dtype_name = "float32" if int8 else \
            self.dtype_name or (device.dtype_name if device.is_gpu else cpu_serving_dtype_name())
        return ServingOptions(
            dtype_name=dtype_name, int8=int8, batch_size=self.batch_size or (32 if device.is_gpu else 8),
            max_prompt_tokens=self.max_prompt_tokens, max_new_tokens=self.max_new_tokens,
            draft_tokens=0 if int8 else self.draft_tokens,
            pack_weights=self.pack_weights and not device.is_gpu and dtype_name == "bfloat16",
        )


def _model_folder(folder: Path, merged: bool = True) -> tuple[Path, dict, str]:
    """(folder holding the weights, manifest, version name) of a replies version or merged dir;
    a version's ``merged/`` is used when present unless ``merged`` is False.

    Raises:
        SupportbotError: ``folder`` is not a directory or holds no manifest.json (itself or,
            for a ``merged/`` folder, its parent).
    """
    if not folder.is_dir():
        raise SupportbotError(f"{folder}: no such reply-generator folder")
    if merged and (folder / MERGED / "config.json").is_file():
        return folder / MERGED, read_manifest(folder), folder.name
    if (folder / "config.json").is_file() and not (folder / MANIFEST).is_file():
        return folder, read_manifest(folder.parent), folder.parent.name
    return folder, read_manifest(folder), folder.name


def _base_dir(manifest: dict, base: str | Path | None, cache_dir: Path | None, folder: Path) -> Path:
    """Local base-model folder for an adapter: ``base``, else the manifest's ``base_model`` (the
    hub id or path training was given, as in ``adapter_config.json``) resolved on this machine by
    :func:`bot.base_models.resolve` (local path, the packaged copy, or the hub), so a version
    copied to another machine's home loads there.

    Raises:
        SupportbotError: it cannot be resolved (the message says how to fix it).
    """
    ref = str(base or manifest.get("base_model", ""))
    try:
        return resolve(ref, Path(cache_dir) if cache_dir else Settings.model_fields["home"].default / "cache")
    except SupportbotError as exc:
        raise SupportbotError(f"{folder}: base model of this adapter not found ({exc}); pass base=<folder>, "
                              "or train with --merge") from None


def _placement(device: str | Device | None, options: ServingOptions | None) -> tuple[Device, ServingOptions]:
    """The device (given, or :func:`pick_device`) and the options resolved for it.

    Raises:
        SupportbotError: ``"cuda"`` asked for but not available.
    """
    try:
        device = device if isinstance(device, Device) else pick_device(device)
    except ValueError as exc:
        raise SupportbotError(str(exc)) from None
    return device, (options or ServingOptions()).resolved(device)


def _optimised(model, options: ServingOptions):
    """``model`` in eval mode, cast to ``options.dtype_name``, int8-quantised when asked, else
    with its linear weights packed for draft checks (:mod:`bot.packing`) when asked; on CPU,
    attention over several query tokens shares the key/value heads (:func:`_share_kv_heads`)."""
    import torch

    model = model.to(getattr(torch, options.dtype_name)).eval()
    if model.device.type == "cpu":
        _share_kv_heads()
    if options.int8:
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    if options.pack_weights:
        pack_linears(model, options.draft_tokens + 1)
    return model


def _share_kv_heads() -> None:
    """Let transformers' SDPA attention use grouped-query attention natively (``enable_gqa``) also
    when a mask is given, as in a draft check, instead of copying the key/value cache once per
    query head group in every layer (``repeat_kv``). Same outputs (max difference 0.0 on
    SmolLM2-135M, float32 and bf16); a 5-token pass took 7-15 % less on 2 CPU cores. Set through
    transformers' ``TRANSFORMERS_SDPA_FORCE_GQA`` (``transformers/integrations/sdpa_attention.py``)
    unless the environment sets it; on CUDA it is left alone (masked GQA may leave the fused kernels).
    """
    os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")


def run_in_worker(fn):
    """``fn()`` run in a worker thread, its result returned and its exception re-raised.

    Generation runs off the main thread both when streaming and in batches: on a busy CPU,
    torch's OpenMP pool in the main thread was measured up to 18x slower than in a worker thread
    (SmolLM2-135M, 2 shared cores, ``bench/generation.py``).
    """
    result: list = []

    def body():
        try:
            result.append((True, fn()))
        except BaseException as exc:  # handed to the calling thread
            result.append((False, exc))

    worker = threading.Thread(target=body, daemon=True)
    worker.start()
    worker.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


class _Cancel:
    """A ``StoppingCriteria`` that stops generation once :meth:`set` is called (consumer left)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def set(self) -> None:
        self.event.set()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                          device=input_ids.device)


class ReplyGenerator:
    """A causal LM with its tokenizer, ready to answer customers.

    Attributes:
        model: the (merged, optimised) transformers model.
        tokenizer: its tokenizer, left padding.
        version: the version folder's name (``"base"`` etc. for :meth:`from_pretrained`).
        device: where it runs.
        options: resolved :class:`ServingOptions`.
        manifest: the version's manifest.json ({} when loaded without one).
        known_slots: the placeholder names replies may use (:mod:`bot.slot_decoding`), from the
            manifest's ``slots``; None (no constraint) when it has none. See :meth:`constrain_slots`.
        drafts: the datastore of speculative decoding (:mod:`bot.speculative`), seeded from the
            version's ``drafts.json`` and, in float32, grown with every streamed reply; None when
            ``options.draft_tokens`` is 0.
    """

    def __init__(self, model, tokenizer, version: str, device: Device, options: ServingOptions,
                 manifest: dict | None = None):
        self.model, self.tokenizer, self.version = model, tokenizer, version
        self.device, self.options, self.manifest = device, options, manifest or {}
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._lock = threading.Lock()
        self.known_slots: KnownSlots | None = None
        if self.manifest.get("slots"):
            self.constrain_slots(self.manifest["slots"])
        self.drafts = DraftStore(self.tokenizer.eos_token_id, draft_tokens=options.draft_tokens) \
            if options.draft_tokens else None
        if self.drafts:
            enable_drafting(self.model)

    def constrain_slots(self, slots) -> None:
        """Let replies use only these ``{{Slot}}`` names (constrained decoding,
        :mod:`bot.slot_decoding`); an empty collection removes the constraint.

        Raises:
            SupportbotError: a slot name holds a brace.
        """
        try:
            self.known_slots = KnownSlots(self.tokenizer, slots) if slots else None
        except ValueError as exc:
            raise SupportbotError(str(exc)) from None

    @classmethod
    def load(cls, folder: str | Path, base: str | Path | None = None, cache_dir: str | Path | None = None,
             device: str | Device | None = None, options: ServingOptions | None = None,
             merge: bool = True) -> "ReplyGenerator":
        """Load a replies version written by ``supportbot train replies``.

        Args:
            folder: the version folder (adapter + manifest.json; its ``merged/`` is used when
                present) or a ``merged/`` folder itself.
            base: local base-model folder for an adapter (default: found from the manifest and
                ``cache_dir``, see :func:`_base_dir`).
            cache_dir: the settings' cache folder (converted base models live in
                ``<cache_dir>/base-models/``).
            device: ``"cpu"``, ``"cuda"`` or a :class:`Device`; default :func:`pick_device`.
            options: serving options; defaults chosen from the device.
            merge: fold the adapter into the base weights (serving); False keeps the plain peft
                model with its adapter beside the base layers (slower; a baseline for benchmarks).

        Raises:
            SupportbotError: no such folder, no manifest.json, base model not found.
        """
        folder = Path(folder).expanduser()
        weights, manifest, version = _model_folder(folder, merged=merge)
        device, options = _placement(device, options)
        if (weights / "adapter_config.json").is_file():
            model = cls._adapter_model(weights, _base_dir(manifest, base, cache_dir and Path(cache_dir), folder), merge)
        else:
            model = cls._plain_model(weights)
        generator = cls._ready(model, weights, version, device, options, manifest)
        generator.seed_drafts(folder if (folder / MANIFEST).is_file() else folder.parent)
        return generator

    def seed_drafts(self, folder: Path) -> None:
        """Add the training replies of ``folder/drafts.json`` to :attr:`drafts` (when drafting
        is on and the file exists).

        Raises:
            SupportbotError: the file is malformed.
        """
        if not self.drafts:
            return
        try:
            replies = read_drafts(folder)
        except ValueError as exc:
            raise SupportbotError(str(exc)) from None
        self.drafts.add_texts(self.tokenizer, replies)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, version: str = "base", device: str | Device | None = None,
                        options: ServingOptions | None = None) -> "ReplyGenerator":
        """A generator from a plain transformers model folder (e.g. the base model, zero-shot).

        Raises:
            SupportbotError: ``model_dir`` holds no config.json.
        """
        model_dir = Path(model_dir).expanduser()
        if not (model_dir / "config.json").is_file():
            raise SupportbotError(f"{model_dir}: not a transformers model folder (no config.json)")
        device, options = _placement(device, options)
        return cls._ready(cls._plain_model(model_dir), model_dir, version, device, options, {})

    @staticmethod
    def _plain_model(model_dir: Path):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")

    @staticmethod
    def _adapter_model(adapter_dir: Path, base_dir: Path, merge: bool):
        from peft import PeftModel

        model = PeftModel.from_pretrained(ReplyGenerator._plain_model(base_dir), adapter_dir)
        return model.merge_and_unload() if merge else model

    @classmethod
    def _ready(cls, model, tokenizer_dir: Path, version: str, device: Device, options: ServingOptions,
               manifest: dict) -> "ReplyGenerator":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        model = _optimised(model.to(device.name), options)
        return cls(model, tokenizer, version, device, options, manifest)

    # ---- prompts -------------------------------------------------------------------------

    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end a reply: ``<|im_end|>`` (the tokenizer's eos) when known."""
        ids = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}
        return sorted(i for i in ids if isinstance(i, int) and i != self.tokenizer.unk_token_id)

    def _ids(self, messages: Messages) -> list[int]:
        return prompt_ids(self.tokenizer, messages)  # customer text cannot form special tokens

    def prompt_ids(self, messages: Messages) -> list[int]:
        """Token ids of the prompt, at most ``options.max_prompt_tokens`` long: the oldest
        exchanges are dropped first, then the customer's last message is cut at its end.

        Raises:
            SupportbotError: the system message alone exceeds the cap.
        """
        cap, ids = self.options.max_prompt_tokens, self._ids(messages)
        while len(ids) > cap and (shorter := drop_oldest_turn(messages)) is not None:
            messages, ids = shorter, self._ids(shorter)
        if len(ids) <= cap:
            return ids
        text = messages[-1]["content"]
        user_ids = text_ids(self.tokenizer, text)
        keep = len(user_ids) - (len(ids) - cap)
        if keep <= 0:
            raise SupportbotError(f"max_prompt_tokens={cap} is too small for the system prompt")
        cut = self.tokenizer.decode(user_ids[:keep])
        return self.prompt_ids(messages[:-1] + [{"role": "user", "content": cut}])

    @staticmethod
    def messages_for(messages: Messages | None = None, history: Sequence[Turn] | None = None,
                     user_text: str | None = None, intent: str | None = None) -> Messages:
        """``messages`` when given, else :func:`bot.prompting.build_messages` of the rest.

        Raises:
            SupportbotError: neither ``messages`` nor ``user_text`` given, or a malformed history.
        """
        if messages is not None:
            return list(messages)
        if user_text is None:
            raise SupportbotError("give either messages or user_text (with history and intent)")
        try:
            return build_messages(history, user_text, intent)
        except ValueError as exc:
            raise SupportbotError(str(exc)) from None

    # ---- generation ----------------------------------------------------------------------

    def _generate_kwargs(self, max_new_tokens: int | None, prompt_length: int) -> dict:
        from transformers import LogitsProcessorList

        processors = [self.known_slots.processor(prompt_length)] if self.known_slots else []
        return dict(max_new_tokens=max_new_tokens or self.options.max_new_tokens, do_sample=False,
                    eos_token_id=self.stop_token_ids, pad_token_id=self.tokenizer.pad_token_id,
                    logits_processor=LogitsProcessorList(processors))

    def stream(self, messages: Messages | None = None, *, history: Sequence[Turn] | None = None,
               user_text: str | None = None, intent: str | None = None,
               max_new_tokens: int | None = None) -> Iterator[str]:
        """Stream the reply as text chunks (greedy decoding).

        Call either ``stream(messages)`` with chat messages (e.g. from ``build_messages``) or
        ``stream(history=[(user, bot), ...], user_text=..., intent=...)``. Generation stops at
        ``<|im_end|>`` or after ``max_new_tokens`` tokens (default ``options.max_new_tokens``);
        closing the iterator early stops generation too. The prompt is capped as in
        :meth:`prompt_ids`. Chunks never contain special tokens; ``"".join(chunks)`` is the reply.

        Raises:
            SupportbotError: bad arguments (see :meth:`messages_for`); errors inside generation
                are re-raised in the caller's thread.
        """
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        ids = self.prompt_ids(self.messages_for(messages, history, user_text, intent))
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel, failure = _Cancel(), []
        kwargs = dict(input_ids=torch.tensor([ids], device=self.device.name), streamer=streamer,
                      stopping_criteria=StoppingCriteriaList([cancel]),
                      **self._generate_kwargs(max_new_tokens, len(ids)))
        if self.drafts:  # assisted generation is entered through prompt_lookup_num_tokens
            kwargs["prompt_lookup_num_tokens"] = self.drafts.draft_tokens
        worker = threading.Thread(target=self._run, args=(kwargs, failure, streamer, intent, cancel), daemon=True)
        worker.start()
        finished = False
        try:
            for chunk in streamer:
                if chunk:
                    yield chunk
            finished = True
        finally:
            if not finished:
                cancel.set()
            worker.join()
        if failure:
            raise failure[0]

    def _run(self, kwargs: dict, failure: list, streamer, intent: str | None, cancel: _Cancel) -> None:
        """Thread body: generate (drafting from :attr:`drafts` when on), store a complete reply
        as a future draft; on error record it and end the stream. Streams run concurrently (greedy
        decoding on a shared model is thread-safe); how many at once is bounded by the router's
        queue (:mod:`bot.queue`)."""
        import torch

        prompt = kwargs["input_ids"]
        try:
            with torch.inference_mode(), self._drafting(intent, kwargs):
                out = self.model.generate(attention_mask=torch.ones_like(prompt), **kwargs)
        except Exception as exc:  # handed to the consuming thread
            failure.append(exc)
            streamer.end()
            return
        if self.learns_drafts and not cancel.event.is_set():
            self.drafts.add(intent, out[0, prompt.shape[1]:].tolist())

    @property
    def learns_drafts(self) -> bool:
        """True when streamed replies join :attr:`drafts`: drafting and float32, where drafts
        change speed only (see ``ServingOptions.draft_tokens``)."""
        return bool(self.drafts) and self.options.dtype_name == "float32"

    def _drafting(self, intent: str | None, kwargs: dict):
        """Context of one streamed ``generate``: speculative decoding from :attr:`drafts`, or nothing."""
        if not self.drafts:
            return nullcontext()
        prompt_length = kwargs["input_ids"].shape[1]
        return drafting(DraftCandidates(self.drafts, intent, prompt_length,
                                        prompt_length + kwargs["max_new_tokens"]))

    def generate(self, messages: Messages | None = None, *, history: Sequence[Turn] | None = None,
                 user_text: str | None = None, intent: str | None = None,
                 max_new_tokens: int | None = None) -> str:
        """The whole reply as one string (same arguments as :meth:`stream`)."""
        return "".join(self.stream(messages, history=history, user_text=user_text, intent=intent,
                                   max_new_tokens=max_new_tokens)).strip()

    def generate_batch(self, conversations: Sequence[Messages], max_new_tokens: int | None = None,
                       progress: bool = False) -> list[str]:
        """Greedy replies of many prompts, ``options.batch_size`` at a time with left padding
        (much higher throughput than one by one). Returns one reply per conversation, in order."""
        from tqdm.auto import tqdm

        batches = range(0, len(conversations), self.options.batch_size)
        replies: list[str] = []
        for start in tqdm(batches, desc=f"generating ({self.version})", disable=not progress):
            replies += self._batch(conversations[start:start + self.options.batch_size], max_new_tokens)
        return replies

    def _batch(self, conversations: Sequence[Messages], max_new_tokens: int | None) -> list[str]:
        import torch

        prompts = [{"input_ids": self.prompt_ids(list(m))} for m in conversations]
        batch = self.tokenizer.pad(prompts, return_tensors="pt").to(self.device.name)

        def run():
            with self._lock, torch.inference_mode():
                return self.model.generate(**batch, **self._generate_kwargs(max_new_tokens, batch["input_ids"].shape[1]))

        new = run_in_worker(run)[:, batch["input_ids"].shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
