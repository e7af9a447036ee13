"""The demo's first run: train whatever model kind has no version yet, on a CPU budget."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from bot.registry import Registry
from bot.settings import DEFAULT_DATA, Settings

log = logging.getLogger(__name__)

DEMO_INTENT = {"method": "finetune", "epochs": 2.0}
"""Head initialised from logistic regression, then 2 epochs of full fine-tuning: 99.1 % on the
Bitext test split, about 7 minutes on 2 busy CPU cores (``head`` alone: 98.9 % in 25 s)."""


def ensure_models(settings: Settings, data: str = DEFAULT_DATA) -> Iterator[tuple[str, str, bool]]:
    """Make sure each model kind has a production version, training the missing ones.

    Yields:
        ``(kind, version, trained_now)`` for ``intents`` then ``replies``.
    """
    from training.intents import IntentTrainConfig, train_intents
    from training.replies import train_replies

    registry = Registry(settings.home)
    trainers = {
        "intents": lambda: train_intents(data, settings, IntentTrainConfig(**DEMO_INTENT)),
        "replies": lambda: train_replies(data, settings),
    }
    for kind, train in trainers.items():
        if registry.versions(kind):
            yield kind, registry.production_folder(kind).name, False
            continue
        log.info("no %s model yet: training one on %s", kind, data)
        version = train().name
        registry.register(kind, version)
        yield kind, version, True


def ensure_models_apart(settings: Settings, data: str = DEFAULT_DATA) -> list[tuple[str, str, bool]]:
    """:func:`ensure_models`, training in a child process when something is missing.

    Training leaves gigabytes in the process that ran it (the allocator keeps freed memory; the
    demo's serving process held 6.8 GB RSS after training in-process): in a spawned child
    (``multiprocessing`` "spawn", so no model or thread state is shared) it all goes back to the
    system when the child exits, and the serving process only ever loads the trained versions.
    When every kind has a version, nothing is started.

    Returns:
        ``(kind, version, trained_now)`` for ``intents`` then ``replies``.

    Raises:
        SupportbotError: from training (re-raised from the child).
    """
    registry = Registry(settings.home)
    if all(registry.versions(kind) for kind in ("intents", "replies")):
        return list(ensure_models(settings, data))
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_ensure_all, settings, data).result()


def _ensure_all(settings: Settings, data: str) -> list[tuple[str, str, bool]]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return list(ensure_models(settings, data))
