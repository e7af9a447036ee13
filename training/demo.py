"""The demo's first run: train whatever model kind has no version yet, on a CPU budget."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from bot.registry import Registry
from bot.settings import Settings

log = logging.getLogger(__name__)

DEMO_INTENT = {"method": "finetune", "epochs": 2.0}
"""Head initialised from logistic regression, then 2 epochs of full fine-tuning: 99.1 % on the
Bitext test split, about 7 minutes on 2 busy CPU cores (``head`` alone: 98.9 % in 25 s)."""


def ensure_models(settings: Settings, data: str = "bitext") -> Iterator[tuple[str, str, bool]]:
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
