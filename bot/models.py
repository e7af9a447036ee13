"""Which classifier and generator answer a turn: fixed ones, or the registry's production
versions, reloaded without a restart when ``registry.json`` changes (promote / rollback)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.interfaces import Classifier, Generator
from bot.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FixedModels:
    """Always the same classifier and generator (tests, one-off scripts)."""

    classifier: Classifier
    generator: Generator

    def current(self) -> tuple[Classifier, Generator]:
        """``(classifier, generator)``."""
        return self.classifier, self.generator


class LiveModels:
    """The production versions of the registry, switched when the registry file changes.

    :meth:`current` costs one ``stat`` of ``registry.json`` when nothing changed. A switch loads
    the new version before it replaces the old one (turns in flight finish with the models they
    started with) and is logged.

    Args:
        registry: the model registry.
        cache_dir: where converted base models are kept (the generator's base).
        serving: the generator's :class:`bot.generation.ServingOptions` (default: its defaults).
        load_generator: ``folder -> generator`` for a replies version (default: an in-process
            :class:`bot.generation.ReplyGenerator` with ``serving``); see :func:`bot.backends.generator_loader`.
    """

    def __init__(self, registry: Registry, cache_dir: Path, serving: Any = None,
                 load_generator: Callable[[Path], Any] | None = None):
        self.registry, self.cache_dir, self.serving = registry, cache_dir, serving
        self.load_generator = load_generator
        self._lock = threading.Lock()
        self._stamp: int | None = -1
        self._folders: dict[str, Path] = {}
        self._models: dict[str, Any] = {}
        self.current()

    def _registry_stamp(self) -> int | None:
        path = self.registry.path
        return path.stat().st_mtime_ns if path.exists() else None

    def current(self) -> tuple[Classifier, Generator]:
        """``(classifier, generator)`` of the production versions now."""
        stamp = self._registry_stamp()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._reload()
                    self._stamp = stamp
        return self._models["intents"], self._models["replies"]

    def _reload(self) -> None:
        from bot.classifier import IntentClassifier
        from bot.generation import ReplyGenerator

        loaders = {"intents": IntentClassifier.load,
                   "replies": self.load_generator or (lambda folder: ReplyGenerator.load(
                       folder, cache_dir=self.cache_dir, options=self.serving))}
        for kind, load in loaders.items():
            folder = self.registry.production_folder(kind)
            if self._folders.get(kind) != folder:
                self._models[kind] = load(folder)
                if kind in self._folders:
                    log.info("switched %s model: %s -> %s", kind, self._folders[kind].name, folder.name)
                self._folders[kind] = folder
