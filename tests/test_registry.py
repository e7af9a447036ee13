"""Model registry: candidates, promotion, rollback, history, atomic file, clear errors."""

from __future__ import annotations

import json

import pytest

from bot.errors import SupportbotError
from bot.registry import Registry


def make_version(home, kind, version):
    folder = home / "models" / kind / version
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"kind": kind, "data": {"name": "x"}, "oos": {"method": "msp", "threshold": 0.5}}))


def test_promote_rollback_history(tmp_path):
    registry = Registry(tmp_path)
    for version in ("v1", "v2", "v3"):
        make_version(tmp_path, "intents", version)
    assert registry.production("intents") is None
    registry.promote("intents", "v1", "first model")
    registry.add_candidate("intents", "v2", {"macro_f1": [0.9, 0.8]})
    assert registry.state("intents")["candidates"] == ["v2"]
    registry.promote("intents", "v3", "better")
    assert registry.production("intents") == "v3"
    assert registry.rollback("intents") == "v1"
    assert registry.production("intents") == "v1"
    with pytest.raises(SupportbotError, match="intents: no earlier production version"):
        registry.rollback("intents")
    actions = [e["action"] for e in json.loads((tmp_path / "registry.json").read_text())["intents"]["history"]]
    assert actions == ["promote", "candidate", "promote", "rollback"]
    assert registry.production("replies") is None
    assert not list(tmp_path.glob(".registry.json.tmp-*"))


def test_unknown_version_and_kind(tmp_path):
    registry = Registry(tmp_path)
    make_version(tmp_path, "replies", "a")
    with pytest.raises(SupportbotError, match=r"no replies version 'b' in .* \(known: a\)"):
        registry.promote("replies", "b", "x")
    with pytest.raises(SupportbotError, match="unknown model kind 'intent'"):
        registry.production("intent")


def test_damaged_registry_file_is_reported_not_overwritten(tmp_path):
    (tmp_path / "registry.json").write_text("{not json")
    make_version(tmp_path, "intents", "v1")
    with pytest.raises(SupportbotError, match="registry.json: not valid JSON"):
        Registry(tmp_path).promote("intents", "v1", "x")
    assert (tmp_path / "registry.json").read_text() == "{not json"


def test_wrong_shape_and_damaged_manifest_are_refused(tmp_path):
    make_version(tmp_path, "intents", "v1")
    (tmp_path / "registry.json").write_text("{}")
    with pytest.raises(SupportbotError, match="registry.json: expected an object with 'intents' and 'replies'"):
        Registry(tmp_path).production("intents")
    (tmp_path / "registry.json").unlink()
    (tmp_path / "models" / "intents" / "v1" / "manifest.json").write_text("not json")
    with pytest.raises(SupportbotError, match="manifest.json: not valid JSON"):
        Registry(tmp_path).promote("intents", "v1", "x")
    assert Registry(tmp_path).production("intents") is None
