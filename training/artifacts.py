"""Atomic artifact folders and their ``manifest.json``.

A model version is built in a temporary sibling folder and renamed into place, so a crash never
leaves a half-written version where a reader would look.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bot.manifest import MANIFEST, read_manifest  # noqa: F401  (re-exported)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a scratch folder that becomes ``target`` when the block ends without error.

    Raises:
        FileExistsError: ``target`` already exists (versions are never overwritten).
    """
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        yield scratch
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    """Write ``folder/manifest.json`` with ``fields`` plus ``created`` (UTC ISO time) and versions
    of python, torch and transformers. Returns the dict written."""
    import torch
    import transformers

    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "software": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def new_version_dir(home: Path, kind: str) -> Path:
    """``<home>/models/<kind>/<version>`` for a new version, ``version`` = UTC ``YYYYMMDD-HHMMSS``
    (a ``-2``, ``-3``... suffix when that second is taken). ``kind`` is ``intents`` or ``replies``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder, n = home / "models" / kind / stamp, 1
    while folder.exists():
        n += 1
        folder = home / "models" / kind / f"{stamp}-{n}"
    return folder
