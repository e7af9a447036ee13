"""Retrieval-based speculative decoding and packed linear layers: drafts change speed, never a reply."""

from __future__ import annotations

import json

import pytest
import torch

from bot.errors import SupportbotError
from bot.generation import ReplyGenerator, ServingOptions
from bot.generation.packing import PackedLinear, pack_linears, packing_available
from bot.generation.speculative import DRAFTS_FILE, DraftCandidates, DraftStore, read_drafts

SEP = 0
PLAIN = ServingOptions(dtype_name="float32", int8=False, draft_tokens=0, pack_weights=False)
DRAFTING = ServingOptions(dtype_name="float32", int8=False, draft_tokens=4, pack_weights=False)
PACKED = ServingOptions(dtype_name="bfloat16", int8=False, draft_tokens=4, pack_weights=True)
BF16_PACKING = packing_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
REQUEST = dict(user_text="please cancel my order", intent="cancel_order", max_new_tokens=24)


def test_draft_follows_the_continuation_most_replies_share():
    store = DraftStore(SEP, max_ngram=2, draft_tokens=3)
    for reply in ([5, 6, 7, 8], [5, 6, 7, 8], [5, 6, 1, 2], [3, 6, 7, 9]):
        store.add("a", reply)
    assert store.draft("a", []) == [5, 6, 7]             # start of a reply: 3 of 4 begin with 5
    assert store.draft("a", [4, 5]) == [6, 7, 8]         # suffix [5] -> 6 (3 of 3) -> 7 (2 of 3) -> 8
    assert store.draft("a", [5, 6, 7, 8]) == []          # only the reply's end follows
    assert store.draft("a", [42]) == [] and store.draft("other", [5]) == []


def test_store_keeps_the_newest_replies_and_drops_the_separator():
    store = DraftStore(SEP, max_ngram=1, draft_tokens=2, capacity=2)
    store.add("a", [1, 2])
    assert store.draft("a", [1]) == [2]
    store.add("a", [1, 3, SEP])
    store.add("a", [1, 3])
    assert store.size("a") == 2 and store.draft("a", [1]) == [3]
    with pytest.raises(ValueError):
        DraftStore(SEP, draft_tokens=0)


def _forwards(generator: ReplyGenerator) -> list[int]:
    calls = [0]
    generator.model.register_forward_pre_hook(lambda *args: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_draft_candidates_are_cut_to_max_length():
    store = DraftStore(SEP, max_ngram=1, draft_tokens=4)
    store.add("a", [5, 6])
    prompt = torch.tensor([[1, 2, 3]])
    assert DraftCandidates(store, "a", 3, 20).get_candidates(prompt)[0].tolist() == [[1, 2, 3, 5, 6]]
    assert DraftCandidates(store, "a", 3, 5).get_candidates(prompt)[0].tolist() == [[1, 2, 3, 5]]
    assert DraftCandidates(store, "a", 3, 4).get_candidates(prompt)[0] is prompt
    assert DraftCandidates(store, "b", 3, 20).get_candidates(prompt)[0] is prompt


def test_transformers_still_asks_the_hook_drafting_replaces(tiny_lm_dir):
    """transformers 5.x takes no CandidateGenerator through a public ``generate`` argument (only
    ``assistant_model``, prompt lookup and a few built-in kinds, chosen in the private
    ``GenerationMixin._get_candidate_generator``); :func:`bot.generation.speculative.enable_drafting`
    wraps that method. This fails loudly when a transformers release renames or bypasses it."""
    from transformers.generation.utils import GenerationMixin

    from bot.generation.speculative import drafting

    assert callable(getattr(GenerationMixin, "_get_candidate_generator", None)), (
        "transformers no longer has GenerationMixin._get_candidate_generator: speculative decoding "
        "(bot/generation/speculative.py enable_drafting) must find the new way to pass DraftCandidates")
    fast = ReplyGenerator.from_pretrained(tiny_lm_dir, options=DRAFTING)
    asked = []

    class Counted(DraftCandidates):
        def get_candidates(self, input_ids, **kwargs):
            asked.append(input_ids.shape[1])
            return super().get_candidates(input_ids, **kwargs)

    prompt = torch.tensor([[1, 2, 3]])
    with drafting(Counted(fast.drafts, "a", 3, 8)):
        fast.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4,
                            do_sample=False, prompt_lookup_num_tokens=fast.drafts.draft_tokens)
    assert asked, ("assisted generate did not ask DraftCandidates for drafts: transformers changed how it picks "
                   "the candidate generator (private GenerationMixin._get_candidate_generator, wrapped by "
                   "bot.generation.speculative.enable_drafting)")


def test_drafting_gives_the_plain_reply_in_fewer_forward_passes(tiny_lm_dir):
    plain = ReplyGenerator.from_pretrained(tiny_lm_dir, options=PLAIN)
    fast = ReplyGenerator.from_pretrained(tiny_lm_dir, options=DRAFTING)
    calls = _forwards(fast)
    expected = plain.generate(**REQUEST)
    assert fast.generate(**REQUEST) == expected          # nothing stored yet: plain decoding
    first, calls[0] = calls[0], 0
    assert fast.drafts.size("cancel_order") == 1         # its own reply is now a draft source
    assert fast.generate(**REQUEST) == expected
    assert calls[0] <= first // 2, (calls[0], first)


def test_wrong_drafts_are_rejected(tiny_lm_dir):
    plain = ReplyGenerator.from_pretrained(tiny_lm_dir, options=PLAIN)
    fast = ReplyGenerator.from_pretrained(tiny_lm_dir, options=DRAFTING)
    for slots in (None, ["Order Number"]):
        for generator in (plain, fast):
            generator.constrain_slots(slots)
        reply = plain.generate(**REQUEST)
        ids = fast.tokenizer(reply, add_special_tokens=False)["input_ids"]
        fast.drafts.add("cancel_order", [t + 1 for t in ids])   # every draft token off by one
        fast.drafts.add("cancel_order", ids[:3] + ids[4:])      # right start, then a skipped token
        assert fast.generate(**REQUEST) == reply


def test_resolved_options_follow_the_device():
    from bot.device import Device, cpu_serving_dtype_name

    cpu, gpu = Device("cpu", "float32"), Device("cuda", "bfloat16")
    default = ServingOptions().resolved(cpu)
    assert (default.dtype_name, default.draft_tokens) == (cpu_serving_dtype_name(), 4)
    assert default.pack_weights == (default.dtype_name == "bfloat16")       # packing only pays in bf16
    bf16, fp32 = ServingOptions(dtype_name="bfloat16").resolved(cpu), ServingOptions(dtype_name="float32").resolved(cpu)
    assert (bf16.draft_tokens, bf16.pack_weights, fp32.pack_weights) == (4, True, False)
    int8 = ServingOptions(dtype_name="bfloat16", int8=True).resolved(cpu)
    assert (int8.dtype_name, int8.draft_tokens, int8.pack_weights) == ("float32", 0, False)
    on_gpu = ServingOptions(int8=True).resolved(gpu)
    assert (on_gpu.dtype_name, on_gpu.int8, on_gpu.pack_weights, on_gpu.draft_tokens) == ("bfloat16", False, False, 4)
    for bad in (-1, 17):
        with pytest.raises(ValueError, match="draft_tokens must be between 0 and 16"):
            ServingOptions(draft_tokens=bad)
    with pytest.raises(ValueError, match="dtype_name must be float32 or bfloat16"):
        ServingOptions(dtype_name="float16")


def test_bf16_replies_do_not_join_the_store_so_a_request_keeps_its_reply(tiny_lm_dir):
    bf16 = ReplyGenerator.from_pretrained(tiny_lm_dir, options=ServingOptions(dtype_name="bfloat16", draft_tokens=4))
    first = bf16.generate(**REQUEST)
    assert not bf16.learns_drafts and bf16.drafts.size("cancel_order") == 0
    assert bf16.generate(**REQUEST) == first


def test_a_closed_stream_is_not_stored(tiny_lm_dir):
    fast = ReplyGenerator.from_pretrained(tiny_lm_dir, options=DRAFTING)
    stream = fast.stream(**REQUEST)
    next(stream)
    stream.close()
    assert fast.drafts.size("cancel_order") == 0
    fast.generate(**REQUEST)
    assert fast.drafts.size("cancel_order") == 1


def test_own_replies_are_the_versions_served_replies_to_the_first_requests_of_each_intent(tiny_replies_version, tmp_path):
    from types import SimpleNamespace

    from bot.prompting import build_messages
    from bot.settings import load_settings
    from training.replies import own_replies

    requests = [("cancel it", "a"), ("cancel it now", "a"), ("where is it", "b")]
    examples = [SimpleNamespace(text=text, intent=intent) for text, intent in requests]
    settings = load_settings(home=tmp_path, cache_dir=tmp_path / "cache")
    served = ReplyGenerator.load(tiny_replies_version, options=ServingOptions(draft_tokens=0))
    expected = served.generate_batch([build_messages([], text, intent) for text, intent in (requests[0], requests[2])])
    assert own_replies(tiny_replies_version, settings, examples, per_intent=1) == \
        [(intent, reply) for intent, reply in zip("ab", expected) if reply]
    assert own_replies(tiny_replies_version, settings, examples, per_intent=0) == []


def test_training_replies_seed_the_drafts(tiny_replies_version, tmp_path):
    stored = read_drafts(tiny_replies_version)
    assert sorted(stored) == ["cancel_order", "get_refund", "track_order"]
    for replies in stored.values():                        # own replies (at most 4) first, then training ones
        training = [reply for reply in replies if reply.startswith("Sure, I can help you")]
        assert training and replies[len(replies) - len(training):] == training and len(replies) - len(training) <= 4
    generator = ReplyGenerator.load(tiny_replies_version, options=DRAFTING)
    assert generator.drafts.size("cancel_order") == len(stored["cancel_order"])
    assert ReplyGenerator.load(tiny_replies_version, options=PLAIN).drafts is None
    (tmp_path / DRAFTS_FILE).write_text(json.dumps({"cancel_order": "not a list"}))
    with pytest.raises(SupportbotError, match=f"{DRAFTS_FILE}: expected a JSON object"):
        generator.seed_drafts(tmp_path)
    for broken in (b'{"cancel_order": [', b'{"cancel_order": ["caf\xe9"]}', b""):
        (tmp_path / DRAFTS_FILE).write_bytes(broken)
        with pytest.raises(SupportbotError, match=f"{DRAFTS_FILE}: not a UTF-8 JSON file"):
            generator.seed_drafts(tmp_path)
    ReplyGenerator.load(tiny_replies_version, options=PLAIN).seed_drafts(tmp_path)   # drafts off: not read


@pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN packed linear")
@pytest.mark.parametrize("dtype, tolerance", [
    (torch.float32, 1e-5),
    pytest.param(torch.bfloat16, 2e-2, marks=pytest.mark.skipif(
        not BF16_PACKING, reason="this CPU's oneDNN cannot pack bf16 (needs AVX512-BW/VL/DQ or AVX-NE-CONVERT)")),
])
@pytest.mark.parametrize("rows", [1, 5, 7])
def test_packed_linear_computes_the_linear_layer(rows, dtype, tolerance):
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80).to(dtype)
    packed = PackedLinear(linear, rows=5)
    x = torch.randn(1, rows, 48, dtype=dtype)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), linear(x), rtol=tolerance, atol=tolerance)
    assert [p.shape for p in packed.parameters()] == [linear.bias.shape]   # the plain weight is gone


@pytest.mark.skipif(not BF16_PACKING, reason="no oneDNN bf16 packed linear on this CPU/torch build")
def test_packing_replaces_the_weights_except_the_output_embedding(tiny_lm_dir):
    plain = ReplyGenerator.from_pretrained(tiny_lm_dir, device="cpu", options=DRAFTING)
    fast = ReplyGenerator.from_pretrained(tiny_lm_dir, device="cpu", options=PACKED)
    packed = [m for m in fast.model.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == sum(type(m) is torch.nn.Linear for m in plain.model.modules()) - 1
    assert type(fast.model.lm_head) is torch.nn.Linear and packed[0].rows == 5
    assert sum(p.numel() for p in fast.model.parameters()) < sum(p.numel() for p in plain.model.parameters())
    assert not any(isinstance(m, PackedLinear) for m in plain.model.modules())
    assert pack_linears(fast.model, 5) == 0              # nothing left to pack


def test_a_cpu_that_cannot_pack_keeps_the_plain_weights(tiny_lm_dir, monkeypatch, caplog):
    import bot.generation.packing

    def no_kernel(*args):
        raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx512bw\nmore")

    monkeypatch.setattr(bot.generation.packing.PackedLinear, "__init__", no_kernel)
    generator = ReplyGenerator.from_pretrained(tiny_lm_dir, device="cpu", options=PACKED)
    assert not any(isinstance(m, PackedLinear) for m in generator.model.modules())
    assert "weights not packed (mkldnn_reorder_linear_weight" in caplog.text
    assert isinstance(generator.generate(**REQUEST), str)


@pytest.mark.parametrize("dtype, draft_tokens, pack", [("float32", 0, "false"), ("bfloat16", 3, "true")])
def test_serving_settings_reach_the_served_generator(tiny_home, monkeypatch, dtype, draft_tokens, pack):
    from bot.runtime import load_router
    from bot.settings import load_settings

    monkeypatch.setenv("SUPPORTBOT_SERVING__DTYPE", dtype)
    monkeypatch.setenv("SUPPORTBOT_SERVING__DRAFT_TOKENS", str(draft_tokens))
    monkeypatch.setenv("SUPPORTBOT_SERVING__PACK_WEIGHTS", pack)
    router = load_router(load_settings())
    generator = router.models.current()[1]
    assert generator.options.draft_tokens == draft_tokens and generator.model.dtype == getattr(torch, dtype)
    assert (generator.drafts is None) == (draft_tokens == 0)
    packed = any(isinstance(m, PackedLinear) for m in generator.model.modules())
    assert packed == (pack == "true" and BF16_PACKING)
    router.store.close()
