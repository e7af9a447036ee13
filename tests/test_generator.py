"""The serving side of the reply generator: prompt building, loading, streaming, caps."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch

from bot.errors import SupportbotError
from bot.generation import ReplyGenerator, ServingOptions
from bot.interfaces import Generator
from bot.prompting import SYSTEM_PROMPT, build_messages, drop_oldest_turn
from helpers import drain

FP32 = ServingOptions(dtype_name="float32", int8=False)


def test_build_messages_puts_history_in_order_and_intent_in_system():
    messages = build_messages([("hi", "hello"), ("where is it", "on its way")], "cancel it", "cancel_order")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"].startswith(SYSTEM_PROMPT)
    assert messages[0]["content"].endswith("about: cancel order.")
    assert [m["content"] for m in messages[1:]] == ["hi", "hello", "where is it", "on its way", "cancel it"]
    assert build_messages(None, " hi ", None) == [{"role": "system", "content": SYSTEM_PROMPT},
                                                  {"role": "user", "content": "hi"}]


@pytest.mark.parametrize("history, text", [([], "  "), ([("only one",)], "hi"), ([("a", 3)], "hi")])
def test_build_messages_refuses_bad_input(history, text):
    with pytest.raises(ValueError):
        build_messages(history, text, None)


def test_drop_oldest_turn_keeps_system_and_last_message():
    messages = build_messages([("a", "b"), ("c", "d")], "e")
    assert [m["content"] for m in drop_oldest_turn(messages)[1:]] == ["c", "d", "e"]
    assert drop_oldest_turn(build_messages([], "e")) is None


def test_load_adapter_and_merged_give_the_same_reply(tiny_replies_version):
    from_adapter = ReplyGenerator.load(tiny_replies_version, options=FP32)
    shutil.copytree(tiny_replies_version / "merged", tiny_replies_version.parent / "only-merged" / "merged")
    (tiny_replies_version.parent / "only-merged" / "manifest.json").write_text(
        (tiny_replies_version / "manifest.json").read_text())
    from_merged = ReplyGenerator.load(tiny_replies_version.parent / "only-merged" / "merged", options=FP32)
    assert from_adapter.version == "v1" and from_merged.version == "only-merged"
    kwargs = dict(history=[], user_text="cancel my order", intent="cancel_order", max_new_tokens=6)
    assert from_adapter.generate(**kwargs) == from_merged.generate(**kwargs)


def test_adapter_without_merged_folder_loads_base_from_manifest(tiny_replies_version, tmp_path):
    folder = tmp_path / "adapter-only"
    shutil.copytree(tiny_replies_version, folder, ignore=shutil.ignore_patterns("merged"))
    generator = ReplyGenerator.load(folder, options=FP32)
    assert generator.generate(user_text="hi", max_new_tokens=3) is not None


def test_load_refuses_folder_without_manifest_or_base(tiny_lm_dir, tiny_replies_version, tmp_path):
    with pytest.raises(SupportbotError, match="no manifest.json"):
        ReplyGenerator.load(tiny_lm_dir)
    with pytest.raises(SupportbotError, match="no such reply-generator folder"):
        ReplyGenerator.load(tmp_path / "missing")
    folder = tmp_path / "orphan"
    shutil.copytree(tiny_replies_version, folder, ignore=shutil.ignore_patterns("merged"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(base_model="nowhere/model", base_model_path="/nowhere")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SupportbotError, match="give base "):
        ReplyGenerator.load(folder)


def test_stream_stops_at_im_end(echo_lm_dir):
    generator = ReplyGenerator.from_pretrained(echo_lm_dir, options=FP32)
    assert isinstance(generator, Generator)  # what the router needs of it (bot/interfaces.py)
    chunks, finish = drain(generator.stream(history=[], user_text="hi", intent=None, max_new_tokens=20))
    assert "".join(chunks) == "Hello" and finish == "stop"
    assert generator.generate_batch([build_messages([], "hi"), build_messages([("a", "b")], "c")], 20) == ["Hello"] * 2


def test_cpu_attention_shares_kv_heads_on_the_model_only(tiny_lm_dir):
    """On CPU the model gets the shared-key/value attention function, with the same logits as
    transformers' SDPA, and no process-wide environment variable is set."""
    from transformers import AutoModelForCausalLM

    before = dict(os.environ)
    generator = ReplyGenerator.from_pretrained(tiny_lm_dir, options=FP32)
    assert generator.model.config._attn_implementation == "sdpa_shared_kv" and dict(os.environ) == before
    plain = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32, attn_implementation="sdpa")
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1]])
    with torch.inference_mode():
        assert torch.allclose(generator.model(ids, attention_mask=mask).logits[:, 1:],
                              plain(ids, attention_mask=mask).logits[:, 1:], atol=1e-5)


def test_stream_respects_max_new_tokens_and_chunks_join_to_generate(tiny_lm_dir):
    generator = ReplyGenerator.from_pretrained(tiny_lm_dir, options=FP32)
    chunks, finish = drain(generator.stream(build_messages([], "where is my parcel"), max_new_tokens=5))
    text = "".join(chunks)
    assert finish == "length"  # the cap stopped it (the router then drops an unfinished sentence)
    assert 0 < len(generator.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 6
    assert text.strip() == generator.generate(user_text="where is my parcel", max_new_tokens=5)


def test_closing_the_stream_early_stops_generation(tiny_lm_dir):
    generator = ReplyGenerator.from_pretrained(tiny_lm_dir, options=FP32)
    calls = []
    generator.model.register_forward_hook(lambda *args: calls.append(1))
    stream = generator.stream(user_text="hello", max_new_tokens=500)
    next(stream)
    stream.close()
    stopped = len(calls)
    time.sleep(0.5)
    assert stopped < 100 and len(calls) == stopped
    assert isinstance(generator.generate(user_text="hello", max_new_tokens=2), str)


def test_prompt_cap_drops_oldest_history_then_cuts_the_message(tiny_lm_dir):
    generator = ReplyGenerator.from_pretrained(tiny_lm_dir, options=ServingOptions(max_prompt_tokens=120))
    history = [(f"question {i} " + "word " * 20, f"answer {i}") for i in range(6)]
    ids = generator.prompt_ids(build_messages(history, "final question", "track_order"))
    text = generator.tokenizer.decode(ids)
    assert len(ids) <= 120 and "final question" in text and "answer 5" in text and "question 0" not in text
    long_ids = generator.prompt_ids(build_messages([], "please " * 500))
    assert len(long_ids) <= 120 and generator.tokenizer.decode(long_ids).endswith("<|im_start|>assistant\n")
    tiny = ReplyGenerator.from_pretrained(tiny_lm_dir, options=ServingOptions(max_prompt_tokens=10))
    with pytest.raises(SupportbotError, match="too small"):
        tiny.prompt_ids(build_messages([], "hi"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(tiny_lm_dir):
    with pytest.raises(SupportbotError, match="no CUDA device"):
        ReplyGenerator.from_pretrained(tiny_lm_dir, device="cuda")


def test_stream_needs_user_text(tiny_lm_dir):
    generator = ReplyGenerator.from_pretrained(tiny_lm_dir, options=FP32)
    with pytest.raises(SupportbotError, match="user_text"):
        list(generator.stream(history=[]))
    with pytest.raises(SupportbotError, match="history item 0"):
        list(generator.stream(history=[("only",)], user_text="hi"))


def test_int8_serving_path_runs_on_cpu(tiny_lm_dir):
    generator = ReplyGenerator.from_pretrained(tiny_lm_dir, options=ServingOptions(int8=True), device="cpu")
    assert generator.options.int8 and "quantized" in type(generator.model.model.layers[0].mlp.up_proj).__module__
    assert isinstance(generator.generate(user_text="hi", max_new_tokens=3), str)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_path_uses_cuda_bf16_and_batches(tiny_replies_version):
    generator = ReplyGenerator.load(tiny_replies_version)
    assert generator.device.is_gpu and generator.options.batch_size == 32 and not generator.options.int8
    assert next(generator.model.parameters()).device.type == "cuda"
    assert len(generator.generate_batch([build_messages([], "hi")] * 3, max_new_tokens=4)) == 3
