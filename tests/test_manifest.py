"""Typed manifests: one data shape, old replies manifests still load, the model card, clear errors."""

from __future__ import annotations

import json

import pytest
import yaml

from bot.errors import SupportbotError
from bot.manifest import IntentManifest, ReplyManifest, read, save

DATA = {"name": "bitext", "sha256": "ab" * 32, "split_seed": 42, "split_sizes": {"train": 8, "test": 2}}


def test_an_old_replies_manifest_loads_in_the_one_data_shape(tmp_path):
    old = {"kind": "replies", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "data": "bitext",
           "data_sha256": "ab" * 32, "split_seed": 42, "split_sizes": {"train": 8, "test": 2},
           "slots": ["Order Number"], "train_wall_seconds": 1.5, "something_newer": 1}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    manifest = read(tmp_path, "replies")
    assert isinstance(manifest, ReplyManifest) and manifest.data.model_dump(exclude_defaults=True) == DATA
    assert manifest.slots == ["Order Number"] and manifest.model_extra == {"something_newer": 1}
    with pytest.raises(SupportbotError, match="a replies manifest, expected intents"):
        read(tmp_path, "intents")


def test_save_writes_the_manifest_and_a_hugging_face_model_card(tmp_path):
    written = save(tmp_path, IntentManifest(method="head", base_model="sentence-transformers/all-MiniLM-L6-v2",
                                            data=DATA, labels=["cancel", "track"], metrics={"validation_macro_f1": 0.91},
                                            oos={"method": "msp", "threshold": 0.4321, "objective": "balanced"}))
    assert read(tmp_path) == written and written.created and written.software["python"]
    assert json.loads((tmp_path / "manifest.json").read_text())["data"] == {**DATA, "held_out_intents": [], "test": None}
    card = (tmp_path / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-classification"
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert DATA["sha256"] in card and "| validation_macro_f1 | 0.9100 |" in card and "**0.4321**" in card


@pytest.mark.parametrize("fields, error", [
    ({"kind": "intents", "data": DATA}, "missing field 'oos'"),
    ({"kind": "intents", "data": DATA, "oos": {"method": "msp"}}, "missing field 'oos.threshold'"),
    ({"data": DATA}, "missing field 'kind'"),
    ({"kind": "replies", "data": {"name": "x", "split_seed": "soon"}}, "field 'data.split_seed'"),
])
def test_a_bad_manifest_is_one_line_naming_file_and_field(tmp_path, fields, error):
    (tmp_path / "manifest.json").write_text(json.dumps(fields))
    with pytest.raises(SupportbotError, match=error) as raised:
        read(tmp_path)
    assert str(raised.value).startswith(str(tmp_path / "manifest.json")) and "\n" not in str(raised.value)
