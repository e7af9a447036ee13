"""Background retraining jobs: one folder each under ``<home>/retrain/<job id>/`` holding
``status.json`` (state ``running``/``done``/``failed``, pid, times, error), ``log.txt`` (a failed
job's ends with the error) and the job's training files. A job whose process died (killed, machine
restarted) is found by :func:`recover` and marked ``failed``; its half-written model folders
(hidden scratch folders, never registered) are removed, so the production model is untouched."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.settings import Settings
    from training.retrain import RetrainConfig


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


def run(settings: Settings, config: RetrainConfig) -> dict[str, Any]:
    """Run one retraining (:func:`training.retrain.retrain`) as a job: jobs left by dead processes
    are recovered first, the job's log gets the progress, its status ``done`` with each kind's
    decision, or ``failed`` with the error (then re-raised). Returns the reports."""
    from training.retrain import retrain

    recover(settings.home)
    job = new_job(settings.home)
    handler = logging.FileHandler(job / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger().addHandler(handler)
    try:
        reports = retrain(settings, config, job)
    except BaseException as exc:
        fail(job, str(exc) or type(exc).__name__)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    write_status(job, state="done", decisions={kind: r["decision"] for kind, r in reports.items()})
    return reports


def start_background(home: Path, what: str) -> subprocess.Popen:
    """Start :func:`run` for ``what`` (``intents``, ``replies`` or ``both``) in a separate process
    in its own session (``python -m training.jobs WHAT``), so the server keeps serving and the job
    outlives a server restart; its output goes to the job's ``log.txt``."""
    env = {**os.environ, "SUPPORTBOT_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "training.jobs", what], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


if __name__ == "__main__":
    from bot.settings import load_settings
    from training.retrain import RetrainConfig

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(load_settings(), RetrainConfig(what=sys.argv[1]))
