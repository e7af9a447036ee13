"""bot/classifier.py: loading a trained folder, predicting, OOS scores and threshold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bot.classifier import MAX_CHARS, NEIGHBOURS_FILE, IntentClassifier, cdf, combined_score, oos_scores
from bot.errors import SupportbotError
from bot.settings import load_settings
from training.intents import IntentTrainConfig, choose_threshold, train_intents


@pytest.fixture(scope="module")
def head_model(tiny_encoder_dir, tiny_intents_csv, tmp_path_factory):
    """A ``--method head`` model of the tiny encoder on the tiny CSV (a few seconds)."""
    home = tmp_path_factory.mktemp("home")
    return train_intents(str(tiny_intents_csv), load_settings(home=home, intent_base=str(tiny_encoder_dir)),
                         IntentTrainConfig(method="head", head_c=100.0), home / "models" / "intents" / "v1")


def test_load_exposes_version_labels_threshold(head_model):
    classifier = IntentClassifier.load(head_model, device="cpu")
    manifest = json.loads((head_model / "manifest.json").read_text())
    assert classifier.version == "v1"
    shop = [label for label in classifier.labels if not label.startswith("smalltalk_")]
    assert shop == ["cancel", "invoice", "refund", "track"] and len(classifier.labels) == 10  # + 6 small talk
    assert classifier.threshold == manifest["oos"]["threshold"]
    assert {"objective", "in_scope_answered", "oos_rejected", "balanced_accuracy"} <= set(manifest["oos"])
    assert classifier.oos_method == "msp+knn"
    assert set(manifest["oos"]["knots"]) == {"knn"} and len(manifest["oos"]["knots"]["knn"]) == 1001
    # the neighbours are the distinct in-scope and small-talk training rows and a noisy copy of each, unit length
    assert classifier.neighbours.shape[1] == classifier.model.config.hidden_size
    assert torch.allclose(classifier.neighbours.norm(dim=-1), torch.ones(len(classifier.neighbours)), atol=1e-2)


def test_plain_transformers_computes_the_same_logits(head_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    plain = AutoModelForSequenceClassification.from_pretrained(head_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(head_model)
    assert plain.config.id2label == dict(enumerate(IntentClassifier.load(head_model, "cpu").labels))
    # a plain pipeline has no neighbours: config.json carries the head-only rule
    manifest = json.loads((head_model / "manifest.json").read_text())
    assert (plain.config.oos_method, plain.config.oos_threshold) == ("msp", manifest["oos"]["msp_threshold"])
    texts = ["please refund my order", "can you track my parcel"]
    with torch.no_grad():
        expected = plain(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    assert torch.allclose(IntentClassifier.load(head_model, "cpu").outputs(texts).logits, expected, atol=1e-5)


def test_predict_learns_the_training_rows(head_model, tiny_intents_csv):
    import csv

    rows = list(csv.DictReader(tiny_intents_csv.open()))
    predictions = IntentClassifier.load(head_model, "cpu").predict([r["text"] for r in rows])
    right = sum(p.intent == r["intent"] for p, r in zip(predictions, rows))
    assert right / len(rows) >= 0.9


def test_prediction_fields(head_model):
    classifier = IntentClassifier.load(head_model, "cpu")
    [prediction] = classifier.predict(["please cancel my order"], top_k=2)
    assert len(prediction.top_k) == 2
    assert prediction.top_k[0] == (prediction.intent, prediction.confidence)
    assert prediction.top_k[0][1] >= prediction.top_k[1][1]
    assert 0 <= prediction.oos_score <= 1
    assert classifier.is_out_of_scope(prediction) == (prediction.oos_score > classifier.threshold)
    assert len(classifier.predict(["x"], top_k=99)[0].top_k) == len(classifier.labels)
    assert classifier.predict([]) == []


def test_msp_knn_rejects_what_the_head_rejects_and_what_lies_far_from_every_training_row(head_model, tiny_intents_csv):
    import csv

    classifier = IntentClassifier.load(head_model, "cpu")
    texts = [r["text"] for r in csv.DictReader(tiny_intents_csv.open())][:5] + ["zzqx vorpal flimflam"]
    outputs = classifier.outputs(texts)
    msp = oos_scores(outputs.logits, "msp", classifier.labels).numpy()
    knn = 1 - (outputs.features @ classifier.neighbours.T).max(dim=-1).values.numpy()
    assert knn[:5] == pytest.approx(0, abs=2e-3)  # training rows are their own nearest neighbours (float16)
    oos = classifier.manifest.oos
    expected = (msp > oos.msp_threshold) | (cdf(knn, oos.knots["knn"]) > oos.threshold)
    assert list(classifier.oos_score(outputs) > classifier.threshold) == list(expected)
    assert [classifier.is_out_of_scope(p) for p in classifier.predict(texts)] == list(expected)


def test_the_distance_is_read_as_a_mid_rank_cdf_and_the_head_keeps_its_own_threshold():
    knots = [0.0, 0.1, 0.1, 0.5, 1.0]
    assert list(cdf([-1, 0.1, 0.3, 2], knots)) == [0.0, 0.4, 0.6, 1.0]  # 0.1: one knot below, two tied (count half)
    # msp threshold 0.2 lands on the score's threshold 0.7; the distance's CDF counts as it is
    score = combined_score([0.1, 0.21, 0.1, 1.0], [-1, -1, 2, -1], knots, 0.2, 0.7)
    assert list(score > 0.7) == [False, True, True, True]
    assert score[0] == pytest.approx(0.35) and score[2] == 1.0 and score[3] == 1.0


def test_a_head_only_model_scores_msp(tiny_encoder_dir, tiny_intents_csv, tmp_path):
    folder = train_intents(str(tiny_intents_csv), load_settings(home=tmp_path, intent_base=str(tiny_encoder_dir)),
                           IntentTrainConfig(method="head", head_c=100.0, oos_method="msp"), tmp_path / "msp")
    classifier = IntentClassifier.load(folder, "cpu")
    assert classifier.neighbours is None and not (folder / NEIGHBOURS_FILE).exists()
    [prediction] = classifier.predict(["please cancel my order"])
    assert math.isclose(prediction.oos_score, 1 - prediction.confidence, abs_tol=1e-6)


def test_long_input_is_cut(head_model):
    classifier = IntentClassifier.load(head_model, "cpu")
    long = "please refund my order " * 2000
    [whole] = classifier.predict([long])
    [prefix] = classifier.predict([long[:MAX_CHARS]])
    assert whole == prefix


def test_load_errors_name_the_problem(tmp_path, head_model):
    with pytest.raises(SupportbotError, match="no manifest.json"):
        IntentClassifier.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((head_model / "manifest.json").read_text())
    del manifest["oos"]["threshold"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SupportbotError, match="missing field 'oos.threshold'"):
        IntentClassifier.load(broken)
    manifest = json.loads((head_model / "manifest.json").read_text())
    del manifest["oos"]["knots"]["knn"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SupportbotError, match="method msp\\+knn needs fields 'oos.knots.knn'"):
        IntentClassifier.load(broken)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(head_model, copy)
    (copy / NEIGHBOURS_FILE).unlink()
    with pytest.raises(SupportbotError, match=f"{NEIGHBOURS_FILE}: the in-scope neighbours of the msp\\+knn score"):
        IntentClassifier.load(copy)


def test_oos_scores_msp_and_energy():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    msp = oos_scores(logits, "msp")
    assert msp[0] < 0.001 and math.isclose(msp[1].item(), 2 / 3, rel_tol=1e-6)
    energy = oos_scores(logits, "energy")
    assert math.isclose(energy[1].item(), -math.log(3), rel_tol=1e-6)
    assert energy[0] < energy[1]
    with pytest.raises(SupportbotError, match="unknown OOS method 'maha'"):
        oos_scores(logits, "maha")


def test_threshold_maximises_weighted_accuracy_in_the_middle_of_the_best_gap():
    import numpy as np

    inside = np.array([0.1, 0.2, 0.3, 0.4])
    outside = np.array([0.8, 0.9, 0.95])
    threshold, rates = choose_threshold(inside, np.ones(4, bool), outside)
    assert math.isclose(threshold, 0.6) and rates == {"in_scope_answered": 1.0, "oos_rejected": 1.0,
                                                      "balanced_accuracy": 1.0, "weighted_accuracy": 1.0}
    # a wrong top intent is never "answered right", whatever the threshold
    threshold, rates = choose_threshold(inside, np.array([True, True, True, False]), outside)
    assert rates["in_scope_answered"] == 0.75 and rates["oos_rejected"] == 1.0
    # overlap: the objective trades one side against the other, out of scope counting oos_weight times
    rng = np.random.default_rng(0)
    inside, outside = rng.normal(0, 1, 500), rng.normal(2, 1, 500)
    for weight in (1.0, IntentTrainConfig().oos_weight):
        threshold, rates = choose_threshold(inside, np.ones(500, bool), outside, oos_weight=weight)
        assert rates["weighted_accuracy"] > 0.8
        for other in (threshold - 0.3, threshold + 0.3):
            worse = (np.mean(inside <= other) + weight * np.mean(outside > other)) / (1 + weight)
            assert worse <= rates["weighted_accuracy"] + 1e-9
    balanced, _ = choose_threshold(inside, np.ones(500, bool), outside, oos_weight=1.0)
    weighted, rates = choose_threshold(inside, np.ones(500, bool), outside, IntentTrainConfig().oos_weight)
    assert 0.6 < balanced < 1.4 and weighted < balanced and rates["oos_rejected"] > np.mean(outside > balanced)
    # no negatives: nothing in scope is rejected
    assert choose_threshold(inside, np.ones(500, bool), [])[0] == inside.max()


