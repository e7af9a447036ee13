"""training/intents.py and training/intent_eval.py on the tiny encoder and a tiny CSV."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from helpers import write_csv

from bot.errors import SupportbotError
from bot.settings import load_settings
from training.intent_eval import evaluate_intents, evaluate_oos
from training.intents import IntentTrainConfig, train_intents, weights_sha256


SPLIT_ONLY = {"cv_below": 0, "small_talk": False, "background": "none"}
"""The plain recipe: train/validation/test split of the file, its own intents only."""


def _config(csv, encoder, home, name, **options) -> tuple:
    """The arguments of :func:`train_intents`: data, settings, config, output."""
    return (str(csv), load_settings(home=home, intent_base=str(encoder)),
            IntentTrainConfig(head_c=100.0, **options), home / "models" / "intents" / name)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def finetuned(tiny_encoder_dir, tiny_intents_csv, home):
    """A two-epoch fine-tune of the tiny encoder."""
    return train_intents(*_config(tiny_intents_csv, tiny_encoder_dir, home, "ft1", epochs=2, lr=1e-3, batch_size=16,
                                 **SPLIT_ONLY))


def test_manifest_records_the_run(finetuned, tiny_intents_csv):
    manifest = json.loads((finetuned / "manifest.json").read_text())
    assert manifest["kind"] == "intents" and manifest["method"] == "finetune"
    assert manifest["data"]["name"] == str(tiny_intents_csv)
    assert len(manifest["data"]["sha256"]) == 64
    assert sum(manifest["data"]["split_sizes"].values()) == 64
    assert manifest["hyperparameters"]["lr"] == 1e-3 and manifest["hyperparameters"]["seed"] == 42
    assert set(manifest["metrics"]) == {"validation_accuracy", "validation_macro_f1"}
    oos = manifest["oos"]  # no out-of-scope rows: the threshold rejects no in-scope validation row
    assert oos["method"] == "msp+knn" and oos["negative_rows"] == 0 and oos["label"] is None
    assert oos["in_scope_answered"] == pytest.approx(manifest["metrics"]["validation_accuracy"])
    assert manifest["training"]["wall_time_s"] > 0 and manifest["training"]["epochs_run"] == 2
    assert not list(finetuned.parent.glob(".*")), "scratch or checkpoint folders left behind"


def test_saved_weights_are_the_trained_ones_and_reproducible(finetuned, tiny_encoder_dir, tiny_intents_csv, home):
    from transformers import AutoModelForSequenceClassification

    recorded = json.loads((finetuned / "manifest.json").read_text())["training"]["rank_weight_sha256"]
    assert recorded == [weights_sha256(AutoModelForSequenceClassification.from_pretrained(finetuned))]
    again = train_intents(*_config(tiny_intents_csv, tiny_encoder_dir, home, "ft2", epochs=2, lr=1e-3, batch_size=16,
                                  **SPLIT_ONLY))
    assert json.loads((again / "manifest.json").read_text())["training"]["rank_weight_sha256"] == recorded


def test_eval_intents_writes_report_and_plot(finetuned, tiny_intents_csv):
    report = evaluate_intents(finetuned, str(tiny_intents_csv), load_settings())
    written = json.loads((finetuned / "eval" / "intents.json").read_text())
    assert written["accuracy"] == report["accuracy"]
    assert report["accuracy"] == pytest.approx(1 - len(report["misclassified"]) / report["rows"])
    test_rows = json.loads((finetuned / "manifest.json").read_text())["data"]["split_sizes"]["test"]
    assert sum(map(sum, report["confusion_matrix"])) == report["rows"] == test_rows
    assert (finetuned / "eval" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "macro-F1" in (finetuned / "eval" / "intents_report.md").read_text()


def test_holdout_trains_without_the_unseen_intents(tiny_encoder_dir, tiny_intents_csv, home, finetuned):
    folder = train_intents(*_config(tiny_intents_csv, tiny_encoder_dir, home, "held", method="head", holdout=1,
                                   **SPLIT_ONLY))
    manifest = json.loads((folder / "manifest.json").read_text())
    [unseen] = manifest["data"]["held_out_intents"]
    assert unseen not in manifest["labels"] and len(manifest["labels"]) == 3
    result = evaluate_oos(folder, str(tiny_intents_csv), load_settings())
    assert result["oos_rows"] >= 1
    assert result["oos_rows"] + result["in_scope_rows"] == manifest["data"]["split_sizes"]["test"]
    assert set(result["auroc"]) == {"msp", "energy", "msp+knn"}
    assert all(0 <= value <= 1 for value in result["auroc"].values())
    with pytest.raises(SupportbotError, match="trained on every intent"):
        evaluate_oos(finetuned, str(tiny_intents_csv), load_settings())


def test_user_mistakes_are_clear(tiny_encoder_dir, tiny_intents_csv, tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,intent\n" + "".join(f"hello {i},greet\n" for i in range(10)))
    with pytest.raises(SupportbotError, match="at least 2 in-scope intents, found 1"):
        train_intents(*_config(one, tiny_encoder_dir, tmp_path, "x", method="head"))
    with pytest.raises(SupportbotError, match="holdout 3: the data has 4 intents"):
        train_intents(*_config(tiny_intents_csv, tiny_encoder_dir, tmp_path, "x", method="head", holdout=3))
    with pytest.raises(SupportbotError, match="^augment must be in"):
        train_intents(*_config(tiny_intents_csv, tiny_encoder_dir, tmp_path, "x", augment=1.5))
    (tmp_path / "models" / "intents" / "exists").mkdir(parents=True)
    with pytest.raises(SupportbotError, match="already exists"):
        train_intents(*_config(tiny_intents_csv, tiny_encoder_dir, tmp_path, "exists", method="head"))


def test_eval_on_other_data_is_refused(finetuned, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("text,intent\n" + "".join(f"hi {i},greet\nbye {i},leave\n" for i in range(10)))
    with pytest.raises(SupportbotError, match="test intents unknown to model ft1: greet, leave"):
        evaluate_intents(finetuned, str(other), load_settings())


def test_cli_train_and_eval(tiny_encoder_dir, tiny_intents_csv, tmp_path):
    exe = shutil.which("supportbot")
    folder = tmp_path / "cli-model"
    trained = subprocess.run([exe, "train", "intents", "--data", str(tiny_intents_csv), "--base", str(tiny_encoder_dir),
                              "--method", "head", "--head-c", "100", "--output", str(folder)],
                             capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    evaluated = subprocess.run([exe, "eval", "intents", str(folder), "--data", str(tiny_intents_csv)],
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    assert " test rows: accuracy " in evaluated.stdout
    bad = subprocess.run([exe, "eval", "intents", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr


def test_layer_wise_learning_rates(tiny_encoder_dir):
    from training.intents import _optimizer, build_model

    _, model = build_model(tiny_encoder_dir, ["a", "b"], seed=0)
    optimizer = _optimizer(model, IntentTrainConfig(lr=1e-3, layer_decay=0.5))
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == 1e-3
    assert lr_of[id(named["bert.encoder.layer.1.attention.self.query.weight"])] == 1e-3 * 0.5
    assert lr_of[id(named["bert.encoder.layer.0.output.dense.weight"])] == 1e-3 * 0.25
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == 1e-3 * 0.125
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decay_of[id(named["classifier.bias"])] == 0.0 and decay_of[id(named["classifier.weight"])] == 0.01


@pytest.fixture(scope="module")
def own_layout_csv(tiny_intents_csv, tmp_path_factory):
    """The tiny intents as ``sentence,label`` with out-of-scope rows labelled ``none``, and a
    test file in the same layout."""
    import csv

    rows = list(csv.DictReader(tiny_intents_csv.open()))
    off = ["play some jazz", "what is the weather", "set an alarm for six", "tell me a joke about cats",
           "who won the match", "turn the lights off", "how tall is everest", "book a taxi home"]
    folder = tmp_path_factory.mktemp("own")
    for name, part, oos in (("train.csv", rows[::2], off[:6]), ("test.csv", rows[1::2], off[6:])):
        write_csv(folder / name, ["sentence", "label"],
                  [(r["text"], r["intent"]) for r in part] + [(t, "none") for t in oos])
    return folder


def test_small_data_with_its_own_layout_is_cross_validated_then_trained_on_everything(
        own_layout_csv, tiny_encoder_dir, home):
    config = _config(own_layout_csv / "train.csv", tiny_encoder_dir, home, "own", method="finetune", epochs=2,
                     lr=1e-3, batch_size=16, oos_labels=["none"], background="none", small_talk=False,
                     test=str(own_layout_csv / "test.csv"))
    folder = train_intents(*config)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["labels"] == ["cancel", "invoice", "refund", "track", "out_of_scope"]
    assert manifest["data"]["split_sizes"]["train"] == 38 and manifest["data"]["split_sizes"]["validation"] == 0
    folds = manifest["training"]["cross_validation"]
    assert [f["fold"] for f in folds if "fold" in f] == [1, 2, 3]
    assert {f["epochs"] for f in folds if "epochs" in f} == {0, 1, 2}  # LR head alone, then each epoch
    oos = manifest["oos"]
    assert "out-of-fold" in oos["objective"] and 0 <= oos["oos_rejected"] <= 1 and oos["label"] == "out_of_scope"
    report = evaluate_intents(folder, str(own_layout_csv / "train.csv"), load_settings(), test_file=str(own_layout_csv / "test.csv"),
                              oos_labels=("none",))
    open_set = report["open_set"]
    assert open_set["rows"] == 34 and open_set["oos_rows"] == 2
    assert open_set["accuracy"] == pytest.approx(
        (open_set["in_scope_accuracy"] * 32 + open_set["oos_recall"] * 2) / 34)


def test_bad_out_of_scope_setups_name_file_and_field(tmp_path, tiny_encoder_dir, tiny_intents_csv):
    only = tmp_path / "only.csv"
    only.write_text("text,intent\n" + "".join(f"play song {i},oos\nhello {i},greet\n" for i in range(6)))
    with pytest.raises(SupportbotError, match=r"only.csv, field 'intent': a classifier needs at least 2 in-scope "
                                              r"intents, found 1 \(every other row is out of scope\)"):
        train_intents(*_config(only, tiny_encoder_dir, tmp_path, "x", method="head", background="none"))
    empty = tmp_path / "background.csv"
    empty.write_text("text,intent\n")
    with pytest.raises(SupportbotError, match="background.csv: no examples found"):
        train_intents(*_config(tiny_intents_csv, tiny_encoder_dir, tmp_path, "y", method="head", background=str(empty)))


def test_a_background_of_written_sentences(tmp_path, tiny_encoder_dir, tiny_intents_csv, monkeypatch):
    """A team's own background set: a .txt file, one out-of-scope sentence per line."""
    monkeypatch.setattr("training.intents.NEAR_IN_SCOPE", 1.01)  # the random tiny encoder finds everything near
    sentences = tmp_path / "not_ours.txt"
    sentences.write_text("\n".join(f"what's the weather in city {i}" for i in range(12)) + "\n\n")
    folder = train_intents(*_config(tiny_intents_csv, tiny_encoder_dir, tmp_path, "bg", method="head",
                                   background=str(sentences), cv_below=0))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["oos"]["negatives"]["background"] == str(sentences)
    assert manifest["oos"]["negatives"]["background_rows_train"] + manifest["oos"]["negatives"]["background_rows_held_out"] <= 12
    assert manifest["oos"]["negatives"]["background_rows_held_out"] >= 1
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(SupportbotError, match="empty.txt: no examples found"):
        train_intents(*_config(tiny_intents_csv, tiny_encoder_dir, tmp_path, "e", method="head", background=str(empty)))
