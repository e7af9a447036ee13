"""The reworded reply test set (data/reworded_replies.csv): loads, covers the Bitext intents, and
uses only placeholder names Bitext's replies use (so the bot's slot filling treats them alike)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bot.placeholders import extract_entities, find_slots, slot_names
from training.data import load

DATA = Path(__file__).resolve().parents[1] / "data"
REWORDED = DATA / "reworded_replies.csv"


@pytest.fixture(scope="module")
def reworded():
    return load(str(REWORDED))


@pytest.fixture(scope="module")
def bitext(data_dir):
    return load("bitext", data_dir=data_dir)


def test_loads_with_a_reply_on_every_row(reworded):
    assert reworded.columns == {"text": "text", "intent": "intent", "reply": "reply"}
    assert len(reworded.examples) >= 40
    assert all(e.text.strip() and e.reply and e.reply.strip() for e in reworded.examples)


def test_not_copied_from_the_intent_evaluation_sets(reworded):
    """The realistic request files measure the classifier; this set must not repeat their rows."""
    realistic = {e.text.casefold() for name in ("realistic_requests.csv", "realistic_requests_holdout.csv")
                 for e in load(str(DATA / name)).examples}
    assert [e.text for e in reworded.examples if e.text.casefold() in realistic] == []


def test_a_number_the_customer_gave_is_in_the_reply_not_a_slot(reworded):
    for e in reworded.examples:
        order = extract_entities(e.text).get("order_number")
        if order:
            assert order in e.reply and "Order Number" not in find_slots(e.reply), e.source


def test_bitext_intents_and_placeholder_names(reworded, bitext):
    counts = Counter(e.intent for e in reworded.examples)
    assert set(counts) <= set(bitext.intents), set(counts) - set(bitext.intents)
    assert set(counts) == set(bitext.intents)
    known = slot_names(e.reply for e in bitext.examples)
    unknown = {e.source: sorted(set(find_slots(e.reply)) - known) for e in reworded.examples}
    assert {source: names for source, names in unknown.items() if names} == {}
