"""Loading a reply generator: find the model and base folders, place it on a device, pick the dtype,
then int8 or weight packing (:class:`ServingOptions`).

A LoRA adapter (Hu et al. 2021, https://arxiv.org/abs/2106.09685) is folded into the base weights
at load time (``peft``'s ``merge_and_unload``), so serving costs the same as the base model. The
base model is the one ``adapter_config.json`` and the manifest name (a hub id by default),
resolved on this machine by :func:`bot.base_models.resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.base_models import resolve
from bot.device import Device, cpu_serving_dtype_name, pick_device
from bot.errors import SupportbotError
from bot.generation.packing import pack_linears
from bot.manifest import MANIFEST, ReplyManifest, read
from bot.settings import Settings

MERGED = "merged"
"""Sub-folder of a replies version with the merged model (``supportbot train replies --merge``)."""

SHARED_KV = "sdpa_shared_kv"
"""Name of the attention function :func:`optimised` gives a CPU model (:func:`_sdpa_shared_kv`)."""


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
        batch_size: prompts per forward pass in ``ReplyGenerator.generate_batch``;
            default 32 on GPU, 8 on CPU.
        max_prompt_tokens: prompt cap in tokens; the oldest history goes first, then the end of
            the customer's message.
        max_new_tokens: default cap on reply length, in tokens.
        draft_tokens: longest draft of retrieval-based speculative decoding
            (:mod:`bot.generation.speculative`) when streaming, 0 to 16; 0 turns it off. A draft
            check computes what one-token steps would, up to rounding: in float32 replies were the
            same token for token in every measurement; in bfloat16 a several-token pass rounds
            differently, so a reply depends on the drafts (ROUGE-L measured the same). So that in
            bf16 the same request still gets the same reply, and no reply depends on earlier
            customers, the store grows with served replies only in float32
            (``ReplyGenerator.learns_drafts``).
        pack_weights: on CPU in bfloat16, replace the linear weights by oneDNN-packed ones
            (:mod:`bot.generation.packing`): a 5-token draft check then costs about one float32
            token. Not done in float32, where it gained 0-7 % with drafts, cost 2x without them and
            kept more memory (fresh-user test); nor where this CPU's oneDNN cannot pack bf16.
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


def model_folder(folder: Path, merged: bool = True) -> tuple[Path, ReplyManifest, str]:
    """(folder holding the weights, manifest, version name) of a replies version or merged dir;
    a version's ``merged/`` is used when present unless ``merged`` is False.

    Raises:
        SupportbotError: ``folder`` is not a directory or holds no replies manifest.json (itself
            or, for a ``merged/`` folder, its parent), see :func:`bot.manifest.read`.
    """
    if not folder.is_dir():
        raise SupportbotError(f"{folder}: no such reply-generator folder")
    if merged and (folder / MERGED / "config.json").is_file():
        return folder / MERGED, read(folder, "replies"), folder.name
    if (folder / "config.json").is_file() and not (folder / MANIFEST).is_file():
        return folder, read(folder.parent, "replies"), folder.parent.name
    return folder, read(folder, "replies"), folder.name


def base_dir(manifest: ReplyManifest, base: str | Path | None, cache_dir: Path | None, folder: Path) -> Path:
    """Local base-model folder for an adapter: ``base``, else the manifest's ``base_model`` (the
    hub id or path training was given, as in ``adapter_config.json``) resolved on this machine by
    :func:`bot.base_models.resolve` (local path, the packaged copy, or the hub), so a version
    copied to another machine's home loads there.

    Raises:
        SupportbotError: it cannot be resolved (the message says how to fix it).
    """
    ref = str(base or manifest.base_model)
    try:
        return resolve(ref, Path(cache_dir) if cache_dir else Settings.model_fields["home"].default / "cache")
    except SupportbotError as exc:
        raise SupportbotError(f"{folder}: base model of this adapter not found ({exc}); give base (its "
                              "folder), or train the version with merge set") from None


def placement(device: str | Device | None, options: ServingOptions | None) -> tuple[Device, ServingOptions]:
    """The device (given, or :func:`pick_device`) and the options resolved for it.

    Raises:
        SupportbotError: ``"cuda"`` asked for but not available.
    """
    try:
        device = device if isinstance(device, Device) else pick_device(device)
    except ValueError as exc:
        raise SupportbotError(str(exc)) from None
    return device, (options or ServingOptions()).resolved(device)


def plain_model(model_dir: Path):
    """A transformers causal LM from ``model_dir``, float32."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")


def adapter_model(adapter_dir: Path, base: Path, merge: bool):
    """The base model in ``base`` with the LoRA adapter of ``adapter_dir``, folded in when ``merge``."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(plain_model(base), adapter_dir)
    return model.merge_and_unload() if merge else model


def optimised(model, device: Device, options: ServingOptions):
    """``model`` on ``device`` in eval mode, cast to ``options.dtype_name``, int8-quantised when
    asked, else with its linear weights packed for draft checks (:mod:`bot.generation.packing`)
    when asked; on CPU, attention over several query tokens shares the key/value heads
    (:func:`_sdpa_shared_kv`)."""
    import torch

    model = model.to(device.name).to(getattr(torch, options.dtype_name)).eval()
    if model.device.type == "cpu" and model.config._attn_implementation == "sdpa":
        _register_shared_kv()
        model.set_attn_implementation(SHARED_KV)
    if options.int8:
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    if options.pack_weights:
        pack_linears(model, options.draft_tokens + 1)
    return model


def _sdpa_shared_kv(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' SDPA attention (``integrations/sdpa_attention.py``) with grouped-query attention
    done by torch (``enable_gqa``) also when a mask is given, as in a draft check, instead of copying
    the key/value cache once per query head group in every layer (``repeat_kv``). Same outputs (max
    difference 0.0 on SmolLM2-135M, float32 and bf16); a 5-token pass took 7-15 % less on 2 CPU
    cores. Set on this model only; on CUDA not used (masked GQA may leave the fused kernels).

    Shapes: query ``[batch, heads, q, dim]``, key/value ``[batch, kv_heads, k, dim]``; returns
    ``([batch, q, heads, dim], None)``.
    """
    import torch

    causal = query.shape[2] > 1 and attention_mask is None and \
        (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=causal,
        enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _register_shared_kv() -> None:
    """Make :data:`SHARED_KV` an attention implementation a model can be set to (with SDPA's masks)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SHARED_KV, _sdpa_shared_kv)
    AttentionMaskInterface.register(SHARED_KV, sdpa_mask)
