"""Bitext's training rows in customers' own words (training/builtin/bitext_customer_words.csv):
they cover Bitext's intents, repeat no evaluation row, and go to training and validation only."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest

from training.data import load
from training.datasets import BUILTIN
from training.intents import (BUILTIN_DIR, CUSTOMER_WORDS_REPEAT, CUSTOMER_WORDS_VALIDATION, IntentTrainConfig,
                              customer_word_rows, prepare)

DATA = Path(__file__).resolve().parents[1] / "data"
EVALUATION = ("realistic_requests.csv", "realistic_requests_holdout.csv", "reworded_replies.csv")


def _plain(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.casefold()).strip()


@pytest.fixture(scope="module")
def words():
    return load(str(BUILTIN_DIR / BUILTIN["bitext"].customer_words))


@pytest.fixture(scope="module")
def bitext(data_dir):
    return load("bitext", data_dir=data_dir)


def test_every_bitext_intent_has_rows_and_nothing_else(words, bitext):
    counts = Counter(e.intent for e in words.examples)
    assert set(counts) == set(bitext.intents)
    assert min(counts.values()) >= 10


def test_no_row_repeats_an_evaluation_row_or_bitext(words, bitext):
    evaluation = {_plain(e.text) for name in EVALUATION for e in load(str(DATA / name)).examples}
    templated = {_plain(e.text) for e in bitext.examples}
    mine = [_plain(e.text) for e in words.examples]
    assert len(set(mine)) == len(mine)
    assert [t for t in mine if t in evaluation or t in templated] == []


def test_a_share_of_each_intent_validates_the_rest_trains(words):
    intents = ["track_order", "cancel_order"]
    train, validation = customer_word_rows("bitext", intents, CUSTOMER_WORDS_VALIDATION, random.Random(0))
    for intent in intents:
        total = sum(e.intent == intent for e in words.examples)
        held = sum(e.intent == intent for e in validation)
        assert held == round(total * CUSTOMER_WORDS_VALIDATION) and held + sum(e.intent == intent for e in train) == total
    assert {e.intent for e in train + validation} == set(intents)
    assert customer_word_rows("my_file.csv", intents, 0.25, random.Random(0)) == ([], [])


def test_prepare_adds_them_to_training_and_validation_never_test(bitext, tmp_path):
    from bot.settings import load_settings

    settings = load_settings(home=tmp_path)
    config = IntentTrainConfig(background="none", small_talk=False)
    texts = {e.text for e in load(str(BUILTIN_DIR / BUILTIN["bitext"].customer_words)).examples}
    with_words = prepare(bitext, config, settings)
    without = prepare(bitext, IntentTrainConfig(background="none", small_talk=False, customer_words=False), settings)
    added_train = [e for e in with_words.train if e.text in texts]
    added_validation = [e for e in with_words.validation if e.text in texts]
    assert added_train and added_validation and not [e for e in with_words.test if e.text in texts]
    assert len(added_train) / CUSTOMER_WORDS_REPEAT + len(added_validation) == len(texts)
    assert [e.text for e in without.test] == [e.text for e in with_words.test]
    assert with_words.background["customer_words_validation"] == len(added_validation)
