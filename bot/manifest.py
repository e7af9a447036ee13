"""Read a model folder's ``manifest.json`` (written by ``training.artifacts.write_manifest``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.errors import SupportbotError

MANIFEST = "manifest.json"


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a model folder.

    Raises:
        SupportbotError: the folder has no readable manifest.json.
    """
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SupportbotError(f"{folder}: not a supportbot model folder (no {MANIFEST})") from None
    except json.JSONDecodeError as exc:
        raise SupportbotError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
