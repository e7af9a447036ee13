"""The model registry: which version of each model kind is in production, which are candidates,
and the history of every switch (``<home>/registry.json``).

Versions are folders ``<home>/models/<kind>/<version>/`` holding a ``manifest.json``. The file
is replaced atomically (write a temporary file, then ``os.replace``) under a file lock, so a
reader never sees half a registry and two writers never lose each other's change.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from bot.errors import SupportbotError
from bot.manifest import MANIFEST, read

Kind = Literal["intents", "replies"]
"""The model kinds the registry keeps."""
KINDS: tuple[str, ...] = get_args(Kind)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    """Production and candidate versions of the ``intents`` and ``replies`` models.

    Args:
        home: the project home; the registry is ``home/registry.json``, versions are under
            ``home/models``.
    """

    def __init__(self, home: Path):
        self.home = Path(home)
        self.path = self.home / "registry.json"
        self.models = self.home / "models"

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {kind: {"production": None, "candidates": [], "history": []} for kind in KINDS}
        try:
            state = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise SupportbotError(f"{self.path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in KINDS):
            raise SupportbotError(f"{self.path}: expected an object with '{KINDS[0]}' and '{KINDS[1]}' entries")
        return state

    def _write(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(f".registry.json.tmp-{os.getpid()}")
        scratch.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(scratch, self.path)

    def _update(self, kind: str, change) -> dict[str, Any]:
        from filelock import FileLock

        _check_kind(kind)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            state = self._read()
            change(state[kind])
            self._write(state)
        return state[kind]

    def folder(self, kind: str, version: str) -> Path:
        """The folder of a version.

        Raises:
            SupportbotError: no such version (no folder with a manifest).
        """
        _check_kind(kind)
        folder = self.models / kind / version
        if (folder / MANIFEST).is_file():
            read(folder, kind)  # a damaged manifest is refused here, not at serving time
        else:
            known = ", ".join(self.versions(kind)) or "none"
            raise SupportbotError(f"no {kind} version '{version}' in {self.models / kind} (known: {known})")
        return folder

    def versions(self, kind: str) -> list[str]:
        """All versions of ``kind`` on disk, oldest first."""
        return sorted(p.name for p in (self.models / kind).glob("*") if (p / MANIFEST).is_file())

    def state(self, kind: str) -> dict[str, Any]:
        """``{"production": str|None, "candidates": [str], "history": [event]}`` of ``kind``."""
        _check_kind(kind)
        return self._read()[kind]

    def production(self, kind: str) -> str | None:
        """The production version of ``kind``, or None when none was promoted yet."""
        return self.state(kind)["production"]

    def add_candidate(self, kind: str, version: str, report: dict[str, Any] | None = None) -> None:
        """Record a trained version that is not (yet) in production, with its comparison report."""
        self.folder(kind, version)

        def change(entry):
            if version not in entry["candidates"]:
                entry["candidates"].append(version)
            entry["history"].append({"time": _now(), "action": "candidate", "version": version,
                                     "report": report})
        self._update(kind, change)

    def register(self, kind: str, version: str) -> bool:
        """A newly trained version: promoted when ``kind`` has no production version yet, else
        kept as a candidate. Returns True when it was promoted."""
        if self.production(kind) is None:
            self.promote(kind, version, "first trained version", by="train")
            return True
        self.add_candidate(kind, version)
        return False

    def production_folder(self, kind: str) -> Path:
        """The folder of the production version; the newest version when none was promoted.

        Raises:
            SupportbotError: no version of ``kind`` exists (the message names the command).
        """
        version = self.production(kind) or (self.versions(kind) or [None])[-1]
        if version is None:
            raise SupportbotError(
                f"no trained {kind} model in {self.models / kind}; run: supportbot train {kind} --data bitext")
        return self.folder(kind, version)

    def promote(self, kind: str, version: str, reason: str, by: str = "cli") -> None:
        """Make ``version`` the production version of ``kind``.

        Raises:
            SupportbotError: unknown version.
        """
        self.folder(kind, version)

        def change(entry):
            entry["history"].append({"time": _now(), "action": "promote", "from": entry["production"],
                                     "to": version, "reason": reason, "by": by})
            entry["production"] = version
            entry["candidates"] = [v for v in entry["candidates"] if v != version]
        self._update(kind, change)

    def rollback(self, kind: str, by: str = "cli") -> str:
        """Put back the version that was in production before the current one was promoted.

        Returns:
            The version now in production.

        Raises:
            SupportbotError: there is no earlier production version.
        """
        entry = self.state(kind)
        previous = [e["from"] for e in entry["history"]
                    if e["action"] == "promote" and e["to"] == entry["production"] and e["from"]]
        if not previous:
            raise SupportbotError(f"{kind}: no earlier production version to roll back to")
        target = previous[-1]
        self.folder(kind, target)

        def change(entry):
            entry["history"].append({"time": _now(), "action": "rollback", "from": entry["production"],
                                     "to": target, "reason": "rollback", "by": by})
            entry["production"] = target
        self._update(kind, change)
        return target


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise SupportbotError(f"unknown model kind '{kind}'; expected one of {', '.join(KINDS)}")
