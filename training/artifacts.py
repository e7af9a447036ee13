"""Atomic artifact folders (a version's ``manifest.json`` and model card: :mod:`bot.manifest`).

A model version is built in a temporary sibling folder and renamed into place, so a crash never
leaves a half-written version where a reader would look.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path


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


def new_version_dir(home: Path, kind: str) -> Path:
    """``<home>/models/<kind>/<version>`` for a new version, ``version`` = UTC ``YYYYMMDD-HHMMSS``
    (a ``-2``, ``-3``... suffix when that second is taken). ``kind`` is ``intents`` or ``replies``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder, n = home / "models" / kind / stamp, 1
    while folder.exists():
        n += 1
        folder = home / "models" / kind / f"{stamp}-{n}"
    return folder
