"""Typed configuration: defaults here, then ``supportbot.toml``, then ``SUPPORTBOT_*`` variables.

The file is ``$SUPPORTBOT_CONFIG`` when set, else ``./supportbot.toml`` when it exists.
Environment variables win over the file; command-line options win over both (each command
passes its overrides to :func:`load_settings`). Source: pydantic-settings
(https://docs.pydantic.dev/latest/concepts/pydantic_settings/).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    SettingsError,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.device import Device
from bot.errors import SupportbotError
from bot.redaction import PHONE_REGIONS
from bot.text import MAX_CHARS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_PROFILE = Path(__file__).resolve().parent / "defaults" / "company_profile.toml"
"""The example company profile, shipped as package data (a wheel has no ``data/`` folder)."""


def _config_file() -> Path | None:
    named = os.environ.get("SUPPORTBOT_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise SupportbotError(f"SUPPORTBOT_CONFIG names {path}, which is not a file")
        return path
    local = Path("supportbot.toml")
    return local if local.is_file() else None


class RouterConfig(BaseModel):
    """Routing policy (``[router]`` table in ``supportbot.toml``).

    Attributes:
        rephrase_limit: out-of-scope fallbacks in a row after which the conversation is handed off.
        handoff_intents: intents that always go to a human (the customer asked for one).
        templates: intent -> fixed reply (may hold ``{{Slot}}`` placeholders) used instead of
            generating.
        human_request: regular expression (case-insensitive) that marks a request for a person.
        identity_question: regular expression (case-insensitive) for a question about who is
            answering ("am I talking to a human?", "r u a real person?"): such a message is not a
            request for a person, whatever ``human_request`` says, and the classifier decides it
            (small talk ``smalltalk_bot`` when trained).
        max_new_tokens: cap on generated reply length, in tokens.
        history_turns: earlier turns given to the generator.
        max_concurrent_generations: replies generated at once (>= 1): the rows of the ``ort``
            backend's continuous batch; later turns that need a generated reply wait in line and
            are shown their place (:mod:`bot.queue`). Lower it for ``backend = "local"`` on a CPU,
            where each reply runs its own ``generate``.
        small_talk: small-talk intent (``smalltalk_*``) -> its reply (may hold ``{{Slot}}``
            placeholders); a small-talk intent without an entry gets ``smalltalk_other``'s.
        out_of_scope_reply: the reply to a message that is plainly out of scope (the classifier's
            out-of-scope class wins): route ``fallback``, which never counts towards a handoff.
        use_context: a message that is unclear alone (out of scope, or a bare "yes") right after
            an answered turn is classified together with the previous message, and an
            out-of-scope message that carries an order number or other entity keeps the
            previous intent; the turn's ``context`` says so.
    """

    rephrase_limit: int = Field(2, ge=1)
    handoff_intents: list[str] = ["contact_human_agent"]
    templates: dict[str, str] = {}
    human_request: str = (
        r"\b(talk|speak|chat|connect|transfer|put)\b.{0,25}\b(human|person|agent|"
        r"representative|operator|someone|somebody|people)\b"
        r"|\b(real|live|human) (agent|person|being|support)\b"
        r"|^\W*(agent|human|representative|operator)\W*(please)?\W*$"
    )
    identity_question: str = (
        r"^\W*(am i (talking|chatting|speaking) (to|with)|are (you|u)|r u|is (this|it|that))"
        r" (a |an )?(real |actual |live )?(human|person|bot|robot|computer|machine|ai|automated)\b"
    )
    max_new_tokens: int = Field(160, ge=1, le=1024)
    history_turns: int = Field(2, ge=0)
    max_concurrent_generations: int = Field(8, ge=1)
    small_talk: dict[str, str] = {
        "smalltalk_greeting": "Hello! How can I help you today?",
        "smalltalk_thanks": "You're welcome! Is there anything else I can help you with?",
        "smalltalk_goodbye": "Thank you for contacting us. Have a great day!",
        "smalltalk_bot": ("I'm the virtual assistant of our support team. I can help with orders, deliveries, "
                          "refunds, invoices and your account, and hand you over to a person at any time."),
        "smalltalk_affirm": "Great! What else can I do for you?",
        "smalltalk_negate": "All right. Is there anything else I can help you with?",
        "smalltalk_other": "How can I help you today?",
    }
    out_of_scope_reply: str = (
        "Sorry, that's not something I can help with here. I can help with your orders, deliveries, "
        "returns and refunds, payments, invoices and your account. What can I do for you?"
    )
    use_context: bool = True

    model_config = {"extra": "forbid"}

    @field_validator("human_request", "identity_question")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return pattern


class OpenAIBackendConfig(BaseModel):
    """The OpenAI-compatible server that writes replies when ``[serving] backend = "openai"``
    (``[serving.openai]`` table in ``supportbot.toml``; :mod:`bot.openai_backend`).

    Attributes:
        base_url: the server's API root, up to and including ``/v1``.
        model: the model name the server knows the reply generator by (for vLLM, the
            ``--lora-modules`` name of the adapter, e.g. ``supportbot``).
        api_key_env: environment variable holding the server's API key (sent as a bearer token);
            none is sent when the variable is unset or empty.
        connect_timeout_s: seconds to connect (and to send the request).
        read_timeout_s: seconds to wait for the first piece of the reply, and between pieces.
        total_timeout_s: seconds a whole reply may take.
        max_new_tokens: reply cap in tokens when the router gives none.
    """

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "supportbot"
    api_key_env: str = "SUPPORTBOT_OPENAI_API_KEY"
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    total_timeout_s: float = Field(60.0, gt=0)
    max_new_tokens: int = Field(160, ge=1, le=4096)

    model_config = {"extra": "forbid"}

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"https?://[^/\s]+", url):
            raise ValueError(f"{url!r} is not an http(s) URL such as 'http://127.0.0.1:8000/v1'")
        return url


class ServingConfig(BaseModel):
    """How the reply generator runs in ``supportbot serve`` (``[serving]`` table in ``supportbot.toml``).

    Attributes:
        dtype: ``"auto"`` (bf16 on a GPU or on a CPU with native bf16, else float32),
            ``"float32"`` (the exact replies of plain greedy decoding) or ``"bfloat16"``.
        draft_tokens: longest draft of speculative decoding (:mod:`bot.generation.speculative`); 0 turns it
            off. In float32 only speed changes; in bf16 drafts come from the version's
            ``drafts.json`` only (see :class:`bot.generation.ServingOptions`).
        pack_weights: on CPU in bf16, pack the linear weights once for draft checks
            (:mod:`bot.generation.packing`).
        int8: dynamic int8 quantisation on CPU: replies change and lose quality; no drafts
            (``bench/generation.py``).
        backend: ``"auto"`` (``ort`` on a CPU, ``local`` on a GPU), ``"local"`` (generate in this
            process with transformers, :mod:`bot.generation`), ``"ort"`` (in this process with
            ONNX Runtime, one continuous batch, :mod:`bot.ort_backend`; each version converted
            once, when trained or else on first load) or ``"openai"`` (stream
            replies from an OpenAI-compatible server such as vLLM or TGI, see
            :class:`OpenAIBackendConfig`).
        ort_precision: weights of the ``ort`` backend: ``int8`` (8-bit weights, float32
            compute), ``int4`` (faster, replies differ more) or ``fp32``.
        prefill_chunk: prompt tokens the ``ort`` backend prefills between two decode steps of the
            replies already streaming (smaller: they pause less when a customer joins; larger:
            the newcomer's first words come sooner).
        openai: the server of the ``openai`` backend.
    """

    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    draft_tokens: int = Field(4, ge=0, le=16)
    pack_weights: bool = True
    int8: bool = False
    backend: Literal["auto", "local", "ort", "openai"] = "auto"
    ort_precision: Literal["int8", "int4", "fp32"] = "int8"
    prefill_chunk: int = Field(128, ge=1)
    openai: OpenAIBackendConfig = OpenAIBackendConfig()

    model_config = {"extra": "forbid"}

    def options(self):
        """These settings as :class:`bot.generation.ServingOptions`."""
        from bot.generation import ServingOptions

        return ServingOptions(dtype_name=None if self.dtype == "auto" else self.dtype, int8=self.int8,
                              draft_tokens=self.draft_tokens, pack_weights=self.pack_weights)


class AnswersConfig(BaseModel):
    """Approved answers and the safety net around generated replies (``[answers]`` in
    ``supportbot.toml``; :mod:`bot.answers`). Scores are cosine similarities of MiniLM embeddings.

    Attributes:
        encoder: the sentence encoder of retrieval (hub id or folder); training and serving use it.
        verbatim_score: a message this similar to the request of an approved answer gets that
            answer as it is (placeholders filled), without generation: the next customer asking
            what a reviewer just corrected gets the correction.
        min_score: below this similarity of the best approved answer, no answer is close enough:
            the ``unsure`` rule applies instead of generation.
        unsure: ``"closest"`` (answer with the closest approved answer, filled) or ``"handoff"``
            (hand the conversation to a person).
        min_source_similarity: a generated reply less similar than this to every retrieved answer
            has strayed from its sources (so has one with a number, URL or e-mail address found
            in neither the sources nor the conversation): the ``unsure`` rule replaces it.
    """

    encoder: str = "sentence-transformers/all-MiniLM-L6-v2"
    verbatim_score: float = Field(0.9, ge=-1, le=1.01)
    min_score: float = Field(0.3, ge=-1, le=1)
    unsure: Literal["closest", "handoff"] = "closest"
    min_source_similarity: float = Field(0.5, ge=-1, le=1)

    model_config = {"extra": "forbid"}


Role = Literal["agent", "reviewer", "admin"]
"""What a staff account may do: ``agent`` answers customers in the inbox (``/inbox/``),
``reviewer`` uses the review, dashboard, retrain and models pages (``/review/``), ``admin`` both."""

ROLE_PAGES: dict[str, tuple[Role, ...]] = {"inbox": ("agent", "admin"), "review": ("reviewer", "admin")}
"""Page -> the roles that may log in to it."""


class StaffAccount(BaseModel):
    """One person who logs in to the staff pages (``[staff.<name>]`` in ``supportbot.toml``).

    Attributes:
        password_hash: argon2 hash of the password (``supportbot hash-password``).
        role: see :data:`Role`.
    """

    password_hash: str
    role: Role = "agent"
class ChatConfig(BaseModel):
    """The public chat page (``[chat]`` table in ``supportbot.toml``).

    Attributes:
        show_internals: show the customer the panel with the predicted intent, confidence,
            top-3 scores and the routing reason. Off on the public page; reviewers see it on
            their "Try the bot" tab whatever this says.
    """

    show_internals: bool = False

    model_config = {"extra": "forbid"}


class HandoffConfig(BaseModel):
    """Human handoff (``[handoff]`` table in ``supportbot.toml``); working hours come from the
    company profile's ``[working_hours]`` table (:mod:`bot.handoff`).

    The texts the customer sees may hold ``{{Slot}}`` placeholders, filled from the company
    profile (a sentence whose contact detail the profile lacks is dropped), and the ``{name}``
    fields their attribute names.

    Attributes:
        wait_minutes: when no agent has taken a waiting conversation after this many minutes,
            the customer is told so (``no_agent_reply``, once per handoff).
        acknowledge_every_minutes: while a conversation waits for an agent, a customer message
            gets ``waiting_reply`` (or ``off_hours_waiting_reply``) when the customer was not
            told so in the last this many minutes of the handoff: several lines sent in a row
            get one acknowledgement, a customer who writes again after a long wait is told
            again that the message arrived and their place in line. Once an agent holds the
            conversation the bot is silent (the agent answers).
        handoff_reply: the reply to the handoff itself, within working hours.
        off_hours_reply: the reply to the handoff outside working hours (counts as the
            ``no_agent_reply`` notice).
        no_agent_reply: the notice after ``wait_minutes`` without an agent.
        waiting_reply: the acknowledgement of a customer message while the conversation waits
            for an agent within working hours; ``{position}``: the conversation's place among
            those waiting (1 = next).
        off_hours_waiting_reply: the same outside working hours; ``{position}`` as above.
        joined: the notice when an agent takes the conversation; ``{agent}``: the agent's name.
        handed_back: the notice when the agent hands the conversation back to the bot; ``{agent}``.
        closed: the notice when the agent closes the conversation; ``{agent}``.
    """

    wait_minutes: float = Field(5.0, gt=0)
    acknowledge_every_minutes: float = Field(5.0, gt=0)
    handoff_reply: str = (
        "I'm passing this conversation to a member of our support team; they will reply here. "
        "You can also call us on {{Customer Support Phone Number}} ({{Customer Support Availability}})."
    )
    off_hours_reply: str = (
        "Our support team is not available right now; their hours are {{Customer Support Availability}}. "
        "Your conversation is kept, and a member of the team will reply here when they are back. "
        "You can also write to {{Customer Support Email}} or call {{Customer Support Phone Number}}."
    )
    no_agent_reply: str = (
        "Sorry for the wait: no one from our support team is free yet. Your conversation stays in "
        "our queue and a member of the team will reply here. You can also write to "
        "{{Customer Support Email}} or call {{Customer Support Phone Number}}."
    )
    waiting_reply: str = (
        "Thanks, your message has been passed on: a member of our support team will reply here. "
        "You're number {position} in line."
    )
    off_hours_waiting_reply: str = (
        "Thanks, your message is kept for our support team, who will reply here when they are back. "
        "Their hours are {{Customer Support Availability}}."
    )
    joined: str = "{agent} from our support team has joined the conversation."
    handed_back: str = "{agent} has handed the conversation back to our assistant, which answers from now on."
    closed: str = "{agent} has closed this conversation. Thank you for contacting us; write again any time."

    model_config = {"extra": "forbid"}


class ApiConfig(BaseModel):
    """The REST channel under ``/api/v1/`` (``[api]`` table in ``supportbot.toml``).

    Attributes:
        keys: integration name -> ``sha256:<hex>`` of its API key (``supportbot api-key NAME``
            makes one); a caller sends the key in the ``X-API-Key`` header.
        anonymous: whether callers without a key may create conversations (each gets a
            conversation token, the web chat's way in).
        key_rate: requests allowed per API key, as ``N/second|minute|hour`` (the ``limits``
            package's notation).
        address_rate: requests allowed per client address for callers without a key.
        max_message_chars: longer messages are refused with 413; at most :data:`bot.text.MAX_CHARS`.
    """

    keys: dict[str, str] = {}
    anonymous: bool = True
    key_rate: str = "120/minute"
    address_rate: str = "30/minute"
    max_message_chars: int = Field(MAX_CHARS, ge=1, le=MAX_CHARS)

    model_config = {"extra": "forbid"}

    @field_validator("keys")
    @classmethod
    def _hashed(cls, keys: dict[str, str]) -> dict[str, str]:
        for name, digest in keys.items():
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                raise ValueError(f"key '{name}' must be 'sha256:' and 64 hex digits "
                                 "(run `supportbot api-key NAME`), not the key itself")
        return keys

    @field_validator("key_rate", "address_rate")
    @classmethod
    def _rate(cls, rate: str) -> str:
        from limits import parse

        try:
            parse(rate)
        except ValueError:
            raise ValueError(f"{rate!r} is not a rate such as '30/minute'") from None
        return rate


def option(default: Any, help: str, **cli: Any) -> Any:
    """A field of a config dataclass whose default and help text the command line takes as they
    are (``ui/cli.py`` ``config_options``), so each exists once.

    Args:
        cli: ``cli_type`` and ``cli_default`` when the command line reads the value in another
            form, with ``parse`` turning it back (e.g. a comma-separated list).
    """
    return field(default=default, metadata={"help": help, **cli})


LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Attention and MLP projections of Llama-family models (SmolLM2): the default LoRA targets."""


CPU_REPLY_MINUTES_WITH_REFERENCES = 4.0
"""The reply adapter's training budget on a CPU (the demo's first run: classifier ~7 min + this +
loading and the answer store, within 13 minutes on 2 cores)."""


@dataclass
class ReplyTrainConfig:
    """Hyper-parameters of one fine-tuning run (``supportbot train replies``; each field's help
    text is its ``metadata["help"]``); ``None`` means "chosen from the device".

    ``draft_replies``: the model's own replies agree with it more often than training replies
    (~2.0 vs ~1.8 tokens per forward pass in a simulation on 48 test replies); generating 54
    Bitext replies takes minutes on 2 cores, hence fewer on CPU.
    """

    lora_r: int = option(16, "LoRA rank (Hu et al. 2021)")
    lora_alpha: int = option(32, "LoRA scale numerator (scale = alpha / r)")
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = option(LLAMA_PROJECTIONS, "comma-separated module names that get an adapter",
                                              cli_default=",".join(LLAMA_PROJECTIONS), cli_type=str,
                                              parse=lambda text: tuple(m.strip() for m in text.split(",") if m.strip()))
    epochs: float = option(1.0, "passes over the training examples (cut short by max_steps)")
    max_steps: int | None = option(None, "optimizer steps (default: 40 on CPU, the ~10-minute demo budget; "
                                          "no cap on GPU; 0 = no cap)")
    max_train_examples: int | None = option(None, "use at most this many training examples (random, fixed by seed)")
    max_length: int = option(640, "tokens of prompt + reply; longer replies are cut at the end")
    references: int = option(2, "approved answers retrieved into each prompt (retrieval-augmented generation, "
                                "bot/answers.py); 0 = train without retrieval")
    answers_per_intent: int = option(100, "training replies per intent kept in the version's answer store")
    lr: float = option(5e-4, "peak learning rate (AdamW, linear warm-up over 5 % of the steps, cosine decay)")
    batch_size: int | None = option(None, "examples per step (default: 16 on GPU; on CPU 4 with references "
                                          "(longer prompts), else 8)")
    validation_examples: int = 32
    merge: bool = option(False, "also write merged/: the base model with the adapter folded in")
    max_minutes: float | None = option(None, "wall-clock budget in minutes; training stops after the step that "
                                              "crosses it (default: none on GPU; on CPU "
                                              f"{CPU_REPLY_MINUTES_WITH_REFERENCES:g} with references, the demo's "
                                              "budget, else 10; 0 = none)")
    draft_replies: int | None = option(None, "per intent, the model's own replies to this many training requests "
                                              "seed speculative decoding (drafts.json; default: 0 with references, "
                                              "whose prompt drafts instead; else 2 on CPU, 4 on GPU; 0 = training "
                                              "replies only)")
    seed: int = 42

    def for_device(self, device: Device) -> "ReplyTrainConfig":
        """A copy with ``max_steps``, ``batch_size``, ``max_minutes``, ``draft_replies`` and, on
        CPU with a step cap, ``max_train_examples`` (the examples the steps can see, so no time
        goes into preparing the others) filled in for ``device``."""
        rag, cpu = self.references > 0, not device.is_gpu
        steps = self.max_steps if self.max_steps is not None else (40 if cpu else -1)
        batch = self.batch_size or (16 if not cpu else 4 if rag else 8)
        cpu_minutes = CPU_REPLY_MINUTES_WITH_REFERENCES if rag else 10.0
        minutes = self.max_minutes if self.max_minutes is not None else (cpu_minutes if cpu else None)
        drafts = self.draft_replies if self.draft_replies is not None else (0 if rag else 2 if cpu else 4)
        examples = self.max_train_examples
        if examples is None and cpu and steps > 0:
            examples = steps * batch
        return ReplyTrainConfig(**{**asdict(self), "max_steps": steps if steps > 0 else -1, "batch_size": batch,
                                   "max_minutes": minutes if minutes and minutes > 0 else None,
                                   "draft_replies": drafts, "max_train_examples": examples})


DEFAULT_DATA = "bitext"
"""The data set trained on when none is named (``--data`` of the training, evaluation and demo
commands, :attr:`RetrainConfig.data`)."""


@dataclass
class RetrainConfig:
    """Options of one retraining (``supportbot retrain``; each help text is the field's
    ``metadata["help"]``)."""

    what: Literal["intents", "replies", "both"] = option("both", "intents, replies or both")
    data: str = option(DEFAULT_DATA, "the original data set the corrections are added to")
    reply_max_steps: int | None = option(None, "LoRA steps (default: as for the production version)")
    macro_f1_tolerance: float = option(0.005, "largest accepted macro-F1 drop on the frozen test split "
                                              "(0.005 = 0.5 points)")
    rouge_tolerance: float = option(1.0, "largest accepted ROUGE-L drop (points, 0-100 scale) on the frozen "
                                         "test split")
    reply_eval_rows: int = 40
    """Frozen-split rows generated for the replies comparison (CPU cost)."""


class Settings(BaseSettings):
    """Every setting the project reads, with its default.

    Attributes:
        home: folder for models, registry, conversation database and caches.
        data_dir: folder searched first for built-in data sets (laid out as
            ``<data_dir>/<data set folder>/<file>``); downloads go to ``home/data`` otherwise.
        cache_dir: converted base models and other caches; default ``home/cache``.
        intent_base: Hugging Face id or local path of the sentence encoder.
        reply_base: Hugging Face id or local path of the instruct LM.
        profile: company profile (TOML) that fills reply placeholders.
        seed: seed of data splits and training.
        redact: redact e-mails, phone, card and IBAN numbers before a turn is stored.
        redact_regions: ISO 3166 regions whose national phone formats redaction recognises
            (``+`` international numbers are recognised for every country).
        reviewers: reviewer name -> argon2 hash of the password (``supportbot hash-password``);
            the same as a ``staff`` account with role ``reviewer`` (kept for older configs).
        staff: name -> :class:`StaffAccount` (password hash and role); the review pages are
            served when a reviewer or admin exists, the inbox when an agent or admin does.
        router: the routing policy, see :class:`RouterConfig`.
        handoff: human handoff, see :class:`HandoffConfig`.
        api: the REST channel, see :class:`ApiConfig`.
        chat: the public chat page, see :class:`ChatConfig`.
        serving: how the generator runs, see :class:`ServingConfig`.
    """

    model_config = SettingsConfigDict(
        env_prefix="SUPPORTBOT_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Path.home() / ".supportbot"
    data_dir: Path | None = None
    cache_dir: Path | None = None
    intent_base: str = "sentence-transformers/all-MiniLM-L6-v2"
    reply_base: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    profile: Path = DEFAULT_PROFILE
    seed: int = Field(42, ge=0, le=2**32 - 1)
    redact: bool = True
    redact_regions: list[str] = list(PHONE_REGIONS)
    reviewers: dict[str, str] = {}
    staff: dict[str, StaffAccount] = {}
    router: RouterConfig = RouterConfig()
    handoff: HandoffConfig = HandoffConfig()
    api: ApiConfig = ApiConfig()
    chat: ChatConfig = ChatConfig()
    serving: ServingConfig = ServingConfig()
    answers: AnswersConfig = AnswersConfig()

    @field_validator("home", "data_dir", "cache_dir", "profile")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        """``~`` means the user's home folder in a config file or variable too."""
        return Path(value).expanduser() if value is not None else None

    @model_validator(mode="after")
    def _one_account_per_name(self) -> "Settings":
        both = sorted(set(self.reviewers) & set(self.staff))
        if both:
            raise ValueError(f"{', '.join(both)} named in both 'reviewers' and 'staff'; keep one")
        return self

    def accounts(self, page: str | None = None) -> dict[str, StaffAccount]:
        """Every staff account (``reviewers`` entries as role ``reviewer``), or only those that
        may log in to ``page`` (``"inbox"`` or ``"review"``, see :data:`ROLE_PAGES`)."""
        everyone = {name: StaffAccount(password_hash=digest, role="reviewer")
                    for name, digest in self.reviewers.items()}
        everyone.update(self.staff)
        if page is None:
            return everyone
        return {name: account for name, account in everyone.items() if account.role in ROLE_PAGES[page]}
    @field_validator("redact_regions")
    @classmethod
    def _known_regions(cls, regions: list[str]) -> list[str]:
        from phonenumbers import SUPPORTED_REGIONS

        unknown = [region for region in regions if region.upper() not in SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone region(s) {', '.join(unknown)}; expected ISO 3166 codes such as US, GB")
        return [region.upper() for region in regions]

    @field_validator("data_dir")
    @classmethod
    def _existing_data_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not Path(value).is_dir():
            raise ValueError(f"{value}: no such folder")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = _config_file()
        if config is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)

    @property
    def cache(self) -> Path:
        """Cache folder (``cache_dir`` or ``home/cache``)."""
        return self.cache_dir or self.home / "cache"


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings`; ``overrides`` whose value is ``None`` are ignored.

    Raises:
        SupportbotError: a value in the file or environment has the wrong type or an unknown name.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SupportbotError(f"{_config_file()}: not a valid UTF-8 TOML file ({exc})") from None
    except SettingsError as exc:
        raise SupportbotError(f"invalid configuration: {exc} ({_sources()})") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SupportbotError(f"invalid configuration: {problems} ({_sources()})") from None


def _sources() -> str:
    """Where settings were read from, for error messages."""
    file = _config_file()
    return f"read from {file.resolve() if file else 'no supportbot.toml'}, SUPPORTBOT_* environment variables and options"
