"""Shared fixtures: the shared data folder, an isolated home, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SUPPORTBOT_TEST_CACHE", str(REPO / ".supportbot" / "cache"))


def _shared_data() -> Path | None:
    named = os.environ.get("SUPPORTBOT_DATA_DIR")
    for candidate in ([Path(named)] if named else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "bitext-customer-support").is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the built-in data sets (``../shared/data`` here)."""
    found = _shared_data()
    if found is None:
        pytest.skip("no shared data folder (set SUPPORTBOT_DATA_DIR)")
    return found


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own SUPPORTBOT_HOME; the base-model cache is shared across tests."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SUPPORTBOT_HOME", str(home))
    monkeypatch.setenv("SUPPORTBOT_CACHE_DIR", os.environ["SUPPORTBOT_TEST_CACHE"])
    monkeypatch.delenv("SUPPORTBOT_CONFIG", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with the real MiniLM tokenizer, saved with
    ``save_pretrained``: a stand-in base model for fast classifier tests."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from training.base_models import resolve

    folder = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve("sentence-transformers/all-MiniLM-L6-v2", folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _smollm2_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer (read from the packaged GGUF once, ~10 s, then cached for all runs)."""
    from transformers import AutoTokenizer

    from training.base_models import PACKAGED, _packaged_folder

    cached = Path(os.environ["SUPPORTBOT_TEST_CACHE"]) / "smollm2-tokenizer"
    if not (cached / "tokenizer_config.json").is_file():
        packaged = PACKAGED["HuggingFaceTB/SmolLM2-135M-Instruct"]
        source = _packaged_folder("HuggingFaceTB/SmolLM2-135M-Instruct", packaged)
        AutoTokenizer.from_pretrained(source, gguf_file=packaged.gguf).save_pretrained(cached)
    return cached


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama (hidden 32) with SmolLM2's tokenizer and chat
    template, saved with ``save_pretrained``: a stand-in for SmolLM2 in fast generator tests."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(_smollm2_tokenizer_dir())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
