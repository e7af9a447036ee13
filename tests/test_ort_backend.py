"""``[serving] backend = "ort"``: a version converted once to ONNX Runtime GenAI, same replies,
same stop token, same slot constraint, through the real router."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

pytest.importorskip("onnxruntime_genai")

from bot.generation import ReplyGenerator, ServingOptions  # noqa: E402
from bot.ort_backend import OrtGenerator  # noqa: E402
from bot.runtime import load_router  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from helpers import drain, save_chain_lm  # noqa: E402
from bot.placeholders import find_slots  # noqa: E402

FLOAT32 = ServingOptions(dtype_name="float32", draft_tokens=0, pack_weights=False)
ASKED = dict(history=[("hi", "Hello!")], user_text="please cancel my order", intent="cancel_order", max_new_tokens=12)


def test_an_adapter_version_is_converted_once_and_answers_as_transformers_does(tiny_replies_version, tmp_path):
    version = tmp_path / "v1"
    shutil.copytree(tiny_replies_version, version)
    shutil.rmtree(version / "merged")  # the adapter alone: merged at conversion
    generator = OrtGenerator.load(version, precision="fp32")
    config = version / "onnx-fp32" / "genai_config.json"
    assert config.is_file() and not list(version.glob(".onnx-*"))
    stamp = config.stat().st_mtime_ns
    reference = ReplyGenerator.load(version, device="cpu", options=FLOAT32)
    pieces = list(generator.stream(**ASKED))
    assert "".join(pieces) == "".join(reference.stream(**ASKED)) and generator.version == "v1+onnx-fp32"
    assert generator.known_slots is not None  # from the manifest, as in-process
    assert generator.batcher.last_only  # the LM head sees the last position only (last_position_logits)
    OrtGenerator.load(version, precision="fp32")
    assert config.stat().st_mtime_ns == stamp  # converted once


def test_the_reply_stops_at_the_end_of_turn_token(echo_lm_dir, tmp_path):
    folder = tmp_path / "echo"
    shutil.copytree(echo_lm_dir, folder)
    (folder / "manifest.json").write_text(json.dumps({"kind": "replies", "data": {"name": "tiny"}}))
    generator = OrtGenerator.load(folder, precision="fp32")
    assert generator.generate(user_text="hi", max_new_tokens=10) == "Hello"
    assert drain(generator.stream(user_text="hi", max_new_tokens=10))[1] == "stop"
    assert drain(generator.stream(user_text="hi", max_new_tokens=1)) == (["Hello"], "length")  # the cap came first


def test_greedy_generation_on_onnx_cannot_write_an_unknown_slot(tiny_lm_dir, tmp_path):
    """A model that wants to write ``{{Refund Portal}}``: unconstrained it does; with the
    manifest's slots the placeholder it opens becomes a known name (the in-process test of
    tests/test_slot_decoding.py, on the new engine)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    chain = tokenizer("Visit {{Refund Portal}} today.", add_special_tokens=False)["input_ids"]
    folder = save_chain_lm(tiny_lm_dir, tmp_path / "inventor", chain + [tokenizer.eos_token_id], default=chain[0])
    (folder / "manifest.json").write_text(json.dumps({"kind": "replies", "data": {"name": "tiny"}}))
    free = OrtGenerator.load(folder, precision="fp32")
    assert "Refund Portal" in find_slots(free.generate(user_text="hi", max_new_tokens=30))
    slots = {"Order Number", "Customer Support Phone Number"}
    (folder / "manifest.json").write_text(json.dumps({"kind": "replies", "data": {"name": "tiny"}, "slots": sorted(slots)}))
    constrained = OrtGenerator.load(folder, precision="fp32").generate(user_text="hi", max_new_tokens=30)
    names = find_slots(constrained)
    assert "{{" in constrained and set(names) <= slots


def test_the_router_answers_with_the_ort_backend(tiny_home, monkeypatch):
    monkeypatch.setenv("SUPPORTBOT_SERVING__BACKEND", "ort")
    monkeypatch.setenv("SUPPORTBOT_SERVING__ORT_PRECISION", "fp32")
    router = load_router(load_settings())
    conversation = router.store.new_conversation()
    turn = list(router.respond(conversation, "please refund my order"))[-1].turn
    assert turn.status == "complete" and turn.decision.route == "answer" and turn.generator_version == "v1+onnx-fp32"
    assert (tiny_home / "models" / "replies" / "v1" / "onnx-fp32" / "genai_config.json").is_file()
    stored = sqlite3.connect(tiny_home / "conversations.db").execute(
        "SELECT status, reply, generator_version FROM turns WHERE id = ?", (turn.id,)).fetchone()
    assert stored == ("complete", turn.reply, "v1+onnx-fp32")


def _prompts(generator, texts):
    return [generator.prompt_ids(generator.messages_for(user_text=t, intent="cancel_order")) for t in texts]


def _plain_version(tiny_lm_dir, folder):
    """The tiny Llama with large random weights (std 0.5) as a version folder: its greedy tokens
    change with every earlier token and position, so a wrong cache row or mask shows."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_lm_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() > 1:
                weight.normal_(0, 0.5)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(folder)
    (folder / "manifest.json").write_text(json.dumps({"kind": "replies", "data": {"name": "tiny"}}))
    return folder


def test_replies_that_join_a_running_batch_are_those_each_gets_alone(tiny_lm_dir, tmp_path):
    """Continuous batching: a reply that joins while others decode (prefilled in chunks between
    their steps, then decoded in the same forward passes, rows of different lengths) and replies
    that leave early change no token of any other; a reply that finds every row taken waits."""
    import threading

    version = _plain_version(tiny_lm_dir, tmp_path / "v1")
    reference = ReplyGenerator.from_pretrained(version, device="cpu", options=FLOAT32)  # transformers, one at a time
    texts = ["please cancel my order", "I want a refund for order 1234, it arrived broken",
             "hi", "where is my parcel, I ordered it two weeks ago and nothing came"]
    expected = [reference.generate(user_text=t, intent="cancel_order", max_new_tokens=40) for t in texts]
    assert all(len(reply) >= 40 for reply in expected), expected  # long enough to overlap

    batched = OrtGenerator.load(version, precision="fp32", slots=3, prefill_chunk=8)
    prompts = _prompts(batched, texts)
    steps: list[int] = []
    forward = batched.batcher._forward
    batched.batcher._forward = lambda *args: steps.append(args[2].shape[0]) or forward(*args)
    got: list = [None] * len(prompts)

    def run(i: int) -> None:
        got[i] = list(batched.tokens(prompts[i], 40))

    first = batched.tokens(prompts[0], 40)
    opened = [next(first)]  # the first reply is decoding; the others join it
    threads = [threading.Thread(target=run, args=(i,)) for i in range(1, len(prompts))]
    for thread in threads:
        thread.start()
    got[0] = opened + list(first)
    for thread in threads:
        thread.join(60)
    assert [batched.tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens in got] == expected
    assert max(steps) == 3  # three rows decoded in one pass: the batch was full, the fourth waited
    assert not batched.batcher.rows and not batched.batcher.waiting


def test_a_customer_who_leaves_frees_the_row_at_once(tiny_lm_dir, tmp_path):
    generator = OrtGenerator.load(_plain_version(tiny_lm_dir, tmp_path / "v1"), precision="fp32", slots=1)
    first, second = _prompts(generator, ["please cancel my order", "refund please"])
    expected = list(generator.tokens(second, 20))
    leaving = generator.tokens(first, 400)
    next(leaving)
    leaving.close()  # the customer closed the chat: the only row must serve the next one
    assert list(generator.tokens(second, 20)) == expected


def test_a_switched_out_version_frees_its_batch(tiny_lm_dir, tmp_path):
    """The scheduler thread holds its batcher weakly: once the generator is dropped (a new
    version in production, its replies done), its session, cache and thread go."""
    import gc
    import time
    import weakref

    generator = OrtGenerator.load(_plain_version(tiny_lm_dir, tmp_path / "v1"), precision="fp32", slots=2)
    assert generator.generate(user_text="hi", max_new_tokens=3)
    batcher, thread = weakref.ref(generator.batcher), generator.batcher.thread
    assert thread.is_alive()
    del generator
    deadline = time.monotonic() + 10
    while (batcher() is not None or thread.is_alive()) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.2)
    assert batcher() is None and not thread.is_alive()


def test_a_failed_step_fails_its_replies_and_the_batch_goes_on(tiny_lm_dir, tmp_path):
    """An onnxruntime error in a step: the replies in the batch raise GenerationFailed (the
    router's no-answer reply and logged reason), and the next reply is served as usual."""
    from bot.errors import GenerationFailed

    generator = OrtGenerator.load(_plain_version(tiny_lm_dir, tmp_path / "v1"), precision="fp32", slots=2)
    ids = _prompts(generator, ["please cancel my order"])[0]
    expected = list(generator.tokens(ids, 8))
    forward = generator.batcher._forward

    def broken(*args):
        generator.batcher._forward = forward  # fails once
        raise RuntimeError("injected onnxruntime failure")

    generator.batcher._forward = broken
    with pytest.raises(GenerationFailed, match="injected onnxruntime failure"):
        list(generator.tokens(ids, 8))
    assert list(generator.tokens(ids, 8)) == expected
