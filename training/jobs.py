"""Background retraining jobs: one folder each under ``<home>/retrain/<job id>/`` holding
``status.json`` (state ``running``/``done``/``failed``, pid, times, error), ``log.txt`` (a failed
job's ends with the error) and the job's training files. A job whose process died (killed, machine
restarted) is found by :func:`recover` and marked ``failed``; its half-written model folders
(hidden scratch folders, never registered) are removed, so the production model is untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def jobs_dir(home: Path) -> Path:
    """The folder holding every job's folder."""
    return Path(home) / "retrain"


def new_job(home: Path) -> Path:
    """Create a job folder (id = UTC time) with status ``running`` for this process."""
    folder = jobs_dir(home) / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    folder.mkdir(parents=True)
    write_status(folder, state="running", pid=os.getpid(), started=_now())
    return folder


def write_status(folder: Path, **fields: Any) -> None:
    """Merge ``fields`` into ``status.json``, replacing the file atomically."""
    path = folder / "status.json"
    status = json.loads(path.read_text()) if path.exists() else {}
    status.update(fields)
    scratch = folder / "status.json.tmp"
    scratch.write_text(json.dumps(status, indent=2))
    os.replace(scratch, path)


def fail(folder: Path, error: str) -> None:
    """Mark a job ``failed`` with ``error`` (and its finish time) and end its log with
    ``failed: <error>``, so the log shown to reviewers says why it stopped."""
    write_status(folder, state="failed", error=error, finished=_now())
    with (folder / "log.txt").open("a", encoding="utf-8") as log:
        log.write(f"{time.strftime('%H:%M:%S')} failed: {error}\n")


def status(folder: Path) -> dict[str, Any]:
    """A job's status plus the last 40 lines of its log (``log``)."""
    state = json.loads((folder / "status.json").read_text())
    log = folder / "log.txt"
    state["log"] = "".join(log.read_text().splitlines(keepends=True)[-40:]) if log.exists() else ""
    state["job"] = folder.name
    return state


def latest(home: Path) -> Path | None:
    """The newest job folder, or None."""
    folders = sorted(p for p in jobs_dir(home).glob("*") if (p / "status.json").exists())
    return folders[-1] if folders else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(home: Path) -> list[str]:
    """Mark jobs left ``running`` by a dead process as ``failed`` and remove the scratch model
    folders (``models/<kind>/.<version>.tmp-<pid>``) of dead processes. Returns the job ids."""
    failed = []
    for folder in jobs_dir(home).glob("*"):
        path = folder / "status.json"
        if path.exists():
            state = json.loads(path.read_text())
            if state.get("state") == "running" and not _alive(int(state.get("pid", 0))):
                fail(folder, "interrupted: the process stopped")
                failed.append(folder.name)
    for scratch in Path(home).glob("models/*/.*.tmp-*"):
        if not _alive(int(scratch.name.rsplit("-", 1)[-1])):
            shutil.rmtree(scratch, ignore_errors=True)
    return failed


def start_background(home: Path, what: str) -> subprocess.Popen:
    """Start ``supportbot retrain --what WHAT`` as a separate process (the server keeps serving);
    its output goes to the job's ``log.txt``."""
    env = {**os.environ, "SUPPORTBOT_HOME": str(home)}
    command = [sys.executable, "-m", "ui.cli", "retrain", "--what", what]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
