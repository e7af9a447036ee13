"""Shared fixtures: the shared data folder, an isolated home, tiny random models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import write_csv

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The venv's scripts (supportbot, torchrun) are found even when the venv is not activated.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests generate with transformers (the reference path) unless they choose a backend: the CPU's
# default, ``ort``, would convert each tiny model first (tests/test_ort_backend.py covers it).
os.environ.setdefault("SUPPORTBOT_SERVING__BACKEND", "local")

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

    from bot.base_models import resolve

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

    from bot.base_models import PACKAGED, _packaged_folder

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


@pytest.fixture(scope="session")
def tiny_intents_csv(tmp_path_factory) -> Path:
    """A CSV of 4 intents x 16 utterances, each intent marked by its own keywords: small enough
    for the tiny encoder to train on in seconds, distinct enough for it to learn."""
    import random

    keywords = {"refund": ["refund", "reimburse", "money back", "repay"],
                "cancel": ["cancel", "terminate", "abort", "annul"],
                "track": ["track", "locate", "trace", "follow"],
                "invoice": ["invoice", "bill", "receipt", "statement"]}
    subjects = ["my order", "the purchase", "order 1234", "my parcel"]
    rng = random.Random(0)
    rows = [(f"{rng.choice(['please', 'can you', 'I want to'])} {words[i % 4]} {subjects[i // 4]}", intent)
            for intent, words in keywords.items() for i in range(16)]
    return write_csv(tmp_path_factory.mktemp("intents") / "tiny_intents.csv", ["text", "intent"], rows)


@pytest.fixture(scope="session")
def reply_csv(tmp_path_factory) -> Path:
    """A small CSV (3 intents x 10 rows) with ``text``, ``intent`` and ``reply`` columns; replies
    hold ``{{Slot}}`` placeholders."""
    topics = {"cancel_order": "cancel my order", "track_order": "track my parcel",
              "get_refund": "get my money back"}
    rows = [(f"please help me {topic} number {i}", intent,
             f"Sure, I can help you {topic}. Open {{{{Order Section}}}} and follow step {i}.")
            for intent, topic in topics.items() for i in range(10)]
    return write_csv(tmp_path_factory.mktemp("replies-data") / "replies.csv", ["text", "intent", "reply"], rows)


@pytest.fixture(scope="session")
def tiny_replies_version(tmp_path_factory, tiny_lm_dir, reply_csv) -> Path:
    """A replies version folder (LoRA adapter + manifest + merged/) trained for 2 steps on
    ``reply_csv`` from ``tiny_lm_dir``."""
    from bot.settings import load_settings
    from training.replies import ReplyTrainConfig, train_replies

    home = tmp_path_factory.mktemp("replies-home")
    settings = load_settings(home=home, reply_base=str(tiny_lm_dir), cache_dir=home / "cache")
    config = ReplyTrainConfig(max_steps=2, batch_size=2, max_length=64, validation_examples=2,
                              merge=True, lora_r=4, lora_alpha=8, references=0)  # the plain prompt (no answer store)
    return train_replies(reply_csv, settings, config, output=home / "models" / "replies" / "v1")


@pytest.fixture(scope="session")
def echo_lm_dir(tmp_path_factory, tiny_lm_dir) -> Path:
    """A tiny Llama whose greedy output is fixed: after the prompt it says ``Hello``, then
    ``<|im_end|>`` (then ``Hello`` again if not stopped). Layers are zeroed so each logit row
    depends only on the current token (:func:`helpers.save_chain_lm`)."""
    from transformers import AutoTokenizer

    from helpers import save_chain_lm

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    hello, eos = tokenizer.convert_tokens_to_ids("Hello"), tokenizer.eos_token_id
    return save_chain_lm(tiny_lm_dir, tmp_path_factory.mktemp("echo-lm"), [hello, eos, hello], default=hello)


@pytest.fixture(scope="session")
def tiny_home_template(tmp_path_factory, tiny_encoder_dir, tiny_intents_csv, tiny_replies_version) -> Path:
    """A home with a tiny intent model (v1, ``--method head`` on ``tiny_intents_csv``, msp, no small talk
    and no background set) and a tiny
    reply adapter (v1), both in production. Copy it (``tiny_home``) before changing it."""
    import shutil

    from bot.registry import Registry
    from bot.settings import load_settings
    from training.intents import IntentTrainConfig, train_intents

    home = tmp_path_factory.mktemp("tiny-home")
    # The tiny encoder cannot tell small talk or out-of-scope rows apart: its own 4 intents only,
    # and the head's msp score (its random features put any unseen wording far from every
    # training row, which msp+knn would reject; tests/test_classifier.py covers msp+knn).
    train_intents(str(tiny_intents_csv), load_settings(home=home, intent_base=str(tiny_encoder_dir)),
                  IntentTrainConfig(method="head", head_c=100.0, small_talk=False, background="none",
                                    oos_method="msp"),
                  home / "models" / "intents" / "v1")
    shutil.copytree(tiny_replies_version, home / "models" / "replies" / "v1")
    registry = Registry(home)
    registry.register("intents", "v1")
    registry.register("replies", "v1")
    return home


@pytest.fixture()
def tiny_home(tiny_home_template, tmp_path, monkeypatch) -> Path:
    """A private copy of ``tiny_home_template``, set as SUPPORTBOT_HOME."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(tiny_home_template, home)
    monkeypatch.setenv("SUPPORTBOT_HOME", str(home))
    return home
