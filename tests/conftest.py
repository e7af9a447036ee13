"""Shared fixtures: the shared data folder, an isolated home, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    named = os.environ.get("SUPPORTBOT_DATA_DIR")
    for candidate in ([Path(named)] if named else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "bitext-customer-support").is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the built-in data sets (``../shared/data`` here)."""
    found = _shared_data()
    if found is None:
        pytest.skip("no shared data folder (set SUPPORTBOT_DATA_DIR)")
    return found


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own SUPPORTBOT_HOME; the base-model cache is shared across tests."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SUPPORTBOT_HOME", str(home))
    monkeypatch.setenv("SUPPORTBOT_CACHE_DIR", os.environ.get("SUPPORTBOT_TEST_CACHE", str(REPO / ".supportbot" / "cache")))
    monkeypatch.delenv("SUPPORTBOT_CONFIG", raising=False)
    return home
