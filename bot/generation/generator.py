"""Serve the reply generator: load a trained version, stream a reply token by token.

Usage (the router's call)::

    generator = ReplyGenerator.load("~/.supportbot/models/replies/20261130-000550")
    for chunk in generator.stream(history=[("Where is my order?", "It ships today.")],
                                  user_text="Can I cancel it?", intent="cancel_order"):
        print(chunk, end="")

The prompt is :func:`bot.prompting.build_messages`, the same function training used, capped here
(:meth:`ReplyGenerator.prompt_ids`). Loading is :mod:`bot.generation.loading`, streaming
:mod:`bot.generation.streaming`, the speed-ups :mod:`bot.generation.speculative` and
:mod:`bot.generation.packing`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path

from bot.device import Device
from bot.errors import SupportbotError
from bot.generation import loading
from bot.generation.loading import ServingOptions
from bot.generation.speculative import DraftCandidates, DraftStore, drafting, enable_drafting, read_drafts
from bot.generation.streaming import run_in_worker, stream_text
from bot.manifest import MANIFEST, ReplyManifest
from bot.prompting import Turn, build_messages, drop_oldest_turn, prompt_ids, text_ids
from bot.slot_decoding import KnownSlots

Messages = list[dict[str, str]]


class ReplyGenerator:
    """A causal LM with its tokenizer, ready to answer customers.

    Attributes:
        model: the (merged, optimised) transformers model.
        tokenizer: its tokenizer, left padding.
        version: the version folder's name (``"base"`` etc. for :meth:`from_pretrained`); also
            :attr:`replies_version` (:class:`bot.interfaces.Generator`).
        device: where it runs.
        options: resolved :class:`ServingOptions`.
        manifest: the version's :class:`bot.manifest.ReplyManifest` (None when loaded without one).
        known_slots: the placeholder names replies may use (:mod:`bot.slot_decoding`), from the
            manifest's ``slots``; None (no constraint) when it has none. See :meth:`constrain_slots`.
        drafts: the datastore of speculative decoding (:mod:`bot.speculative`), seeded from the
            version's ``drafts.json`` and, in float32, grown with every streamed reply; None when
            ``options.draft_tokens`` is 0.
    """

    def __init__(self, model, tokenizer, version: str, device: Device, options: ServingOptions,
                 manifest: ReplyManifest | None = None):
        self.model, self.tokenizer, self.version = model, tokenizer, version
        self.replies_version = version
        self.device, self.options, self.manifest = device, options, manifest
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._lock = threading.Lock()
        self.known_slots: KnownSlots | None = None
        if manifest and manifest.slots:
            self.constrain_slots(manifest.slots)
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
                ``cache_dir``, see :func:`bot.generation.loading.base_dir`).
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
        weights, manifest, version = loading.model_folder(folder, merged=merge)
        device, options = loading.placement(device, options)
        if (weights / "adapter_config.json").is_file():
            model = loading.adapter_model(weights, loading.base_dir(manifest, base, cache_dir, folder), merge)
        else:
            model = loading.plain_model(weights)
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
        device, options = loading.placement(device, options)
        return cls._ready(loading.plain_model(model_dir), model_dir, version, device, options, None)

    @classmethod
    def _ready(cls, model, tokenizer_dir: Path, version: str, device: Device, options: ServingOptions,
               manifest: ReplyManifest | None) -> "ReplyGenerator":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        model = loading.optimised(model, device, options)
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
                     user_text: str | None = None, intent: str | None = None,
                     references: Sequence[str] = ()) -> Messages:
        """``messages`` when given, else :func:`bot.prompting.build_messages` of the rest.

        Raises:
            SupportbotError: neither ``messages`` nor ``user_text`` given, or a malformed history.
        """
        if messages is not None:
            return list(messages)
        if user_text is None:
            raise SupportbotError("give either messages or user_text (with history and intent)")
        try:
            return build_messages(history, user_text, intent, references)
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
               max_new_tokens: int | None = None, references: Sequence[str] = ()) -> Iterator[str]:
        """Stream the reply as text chunks (greedy decoding).

        Call either ``stream(messages)`` with chat messages (e.g. from ``build_messages``) or
        ``stream(history=[(user, bot), ...], user_text=..., intent=..., references=[...])``
        (``references``: retrieved approved answers, for a version trained with them; drafts
        of speculative decoding then come from the prompt too). Generation stops at
        ``<|im_end|>`` or after ``max_new_tokens`` tokens (default ``options.max_new_tokens``);
        closing the iterator early stops generation too. The prompt is capped as in
        :meth:`prompt_ids`. Chunks never contain special tokens; ``"".join(chunks)`` is the reply.
        The generator returns the finish reason, ``"length"`` (cut at ``max_new_tokens``) or
        ``"stop"`` (see :class:`bot.interfaces.Generator`).

        Raises:
            SupportbotError: bad arguments (see :meth:`messages_for`); errors inside generation
                are re-raised in the caller's thread.
        """
        import torch

        ids = self.prompt_ids(self.messages_for(messages, history, user_text, intent, references))
        kwargs = dict(input_ids=torch.tensor([ids], device=self.device.name),
                      **self._generate_kwargs(max_new_tokens, len(ids)))
        if self.drafts:  # assisted generation is entered through prompt_lookup_num_tokens
            kwargs["prompt_lookup_num_tokens"] = self.drafts.draft_tokens
        learn = (lambda reply: self.drafts.add(intent, reply)) if self.learns_drafts else None
        return (yield from stream_text(self.model, self.tokenizer, kwargs,
                                       self._drafting(intent, kwargs, bool(references)), learn))

    @property
    def learns_drafts(self) -> bool:
        """True when streamed replies join :attr:`drafts`: drafting and float32, where drafts
        change speed only (see ``ServingOptions.draft_tokens``)."""
        return bool(self.drafts) and self.options.dtype_name == "float32"

    def _drafting(self, intent: str | None, kwargs: dict, from_prompt: bool = False):
        """Context of one streamed ``generate``: speculative decoding from :attr:`drafts`, with
        ``from_prompt`` (the prompt holds retrieved approved answers) from the prompt first
        (prompt lookup, Saxena 2023, https://github.com/apoorvumang/prompt-lookup-decoding); or nothing."""
        if not self.drafts:
            return nullcontext()
        prompt_length = kwargs["input_ids"].shape[1]
        prompt = None
        if from_prompt:
            prompt = DraftStore(self.drafts.separator, self.drafts.max_ngram, self.drafts.draft_tokens, capacity=1)
            prompt.add(None, kwargs["input_ids"][0].tolist())
        return drafting(DraftCandidates(self.drafts, intent, prompt_length,
                                        prompt_length + kwargs["max_new_tokens"], prompt))

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
