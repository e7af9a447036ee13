"""Constrained placeholder decoding: only known ``{{Slot}}`` names can be generated."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM, LogitsProcessor

from bot.generation import ReplyGenerator
from bot.slot_decoding import KnownSlots, SlotGrammar
from bot.placeholders import find_slots

SLOTS = {"Order Number", "Customer Support Phone Number", "Website URL"}


def test_grammar_prefixes_completions_and_open_tail():
    grammar = SlotGrammar(SLOTS)
    assert grammar.allows("") and grammar.allows("Order") and grammar.allows("Order Number}}")
    assert grammar.allows("Order Number}} then {{Web")
    assert not grammar.allows("Order Name") and not grammar.allows(" Order")
    assert not grammar.allows("Order Number}} then {{Refund")
    assert grammar.allows_text("no placeholder at all") and not grammar.allows_text("see {{Refund Page}}")
    assert grammar.open_tail("call {{Customer Sup") == "Customer Sup"
    assert grammar.open_tail("call {{Website URL}} now") is None and grammar.open_tail("plain") is None
    with pytest.raises(ValueError):
        SlotGrammar({"Bad {name}"})


@pytest.fixture(scope="module")
def tokenizer(tiny_lm_dir):
    return AutoTokenizer.from_pretrained(tiny_lm_dir)


def _kept(known: KnownSlots, reply_so_far: str) -> list[str]:
    ids = known.tokenizer(reply_so_far, add_special_tokens=False, return_tensors="pt")["input_ids"]
    scores = known.processor(0)(ids, torch.zeros(1, len(known.pieces)))
    return [known.pieces[i] for i in torch.isfinite(scores[0]).nonzero().flatten().tolist()]


def test_inside_a_placeholder_only_known_continuations_survive(tokenizer):
    known = KnownSlots(tokenizer, SLOTS)
    kept = _kept(known, "Your order {{Order")
    assert kept and all(known.grammar.allows("Order" + piece) for piece in kept)
    assert " Number" in kept and " Name" not in kept


def test_outside_a_placeholder_only_bad_openings_are_masked(tokenizer):
    known = KnownSlots(tokenizer, SLOTS)
    kept = set(_kept(known, "Thanks for your message."))
    assert len(kept) > len(known.pieces) - 1000
    assert "{{" in kept and all(known.grammar.allows_text(p) for p in kept if "{{" in p)
    assert all(known.grammar.allows_text("{" + p) for p in _kept(known, "Call us on {") if p.startswith("{"))


class _Force(LogitsProcessor):
    """Pushes greedy generation to write ``text`` token by token (a model that wants to invent
    ``{{Refund Portal}}``); a token masked by a later processor stays impossible."""

    def __init__(self, tokenizer, text: str, prompt_length: int):
        self.ids, self.prompt_length = tokenizer(text, add_special_tokens=False)["input_ids"], prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        if step < len(self.ids):
            scores[:, self.ids[step]] += 100.0
        return scores


def test_greedy_generation_cannot_write_an_unknown_slot(tiny_lm_dir, tokenizer):
    """Unconstrained, the pushed reply invents ``{{Refund Portal}}``; constrained, the placeholder
    it opens is completed as a known name instead."""
    model = LlamaForCausalLM.from_pretrained(tiny_lm_dir).eval()
    known = KnownSlots(tokenizer, SLOTS)
    prompt = tokenizer("Reply:", return_tensors="pt")["input_ids"]

    def names(constrained: bool) -> list[str]:
        processors = [_Force(tokenizer, "Visit {{Refund Portal}} today.", prompt.shape[1])]
        processors += [known.processor(prompt.shape[1])] if constrained else []
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=30,
                             logits_processor=processors, pad_token_id=tokenizer.pad_token_id)
        return find_slots(tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True))

    assert "Refund Portal" in names(constrained=False)
    constrained = names(constrained=True)
    assert constrained and set(constrained) <= SLOTS


def test_generator_takes_its_slots_from_the_manifest(tiny_lm_dir):
    generator = ReplyGenerator.from_pretrained(tiny_lm_dir, device="cpu")
    assert generator.known_slots is None
    generator.constrain_slots(SLOTS)
    assert generator.known_slots.grammar.targets == sorted(s + "}}" for s in SLOTS)
    assert generator.generate(user_text="where is my order?", intent="track_order", max_new_tokens=8) is not None
    generator.constrain_slots([])
    assert generator.known_slots is None
