"""Training-time augmentation: noisy copies and concrete details (training/augment.py)."""

import random
import re

from bot.records import OUT_OF_SCOPE
from training.augment import noisy, with_details
from training.intents import _with_details
from training.data import Example


def test_details_replace_template_ids_and_generic_objects():
    rng = random.Random(3)
    outs = [with_details("how can I cancel purchase 113542617735902?", rng) for _ in range(50)]
    assert all("113542617735902" not in o for o in outs)  # 15-digit template ids become short ones
    assert all(o.strip() for o in outs)
    assert len(set(outs)) > 30  # varied
    objects = [with_details("I want to return the item", random.Random(i)) for i in range(40)]
    assert any("item" not in o for o in objects)  # named goods instead of "the item"
    assert any(re.search(r"\d", o) or "@" in o for o in objects)  # numbers, amounts or e-mail


def test_details_are_for_in_scope_rows_only():
    rng = random.Random(0)
    for intent in (OUT_OF_SCOPE, "smalltalk_greeting"):
        row = Example("set an alarm for 7", intent, None, "x")
        assert all(_with_details(row, 1.0, rng) == row.text for _ in range(20))
    row = Example("cancel my order", "cancel_order", None, "x")
    assert any(_with_details(row, 1.0, rng) != row.text for _ in range(20))
    assert all(_with_details(row, 0.0, rng) == row.text for _ in range(20))


def test_noisy_never_empties():
    rng = random.Random(1)
    assert all(noisy("?", rng) for _ in range(50))
