"""Assemble a ready :class:`bot.router.Router` from settings: models, profile, store."""

from __future__ import annotations

from pathlib import Path

from bot.registry import Registry
from bot.settings import Settings


def load_router(settings: Settings, db: Path | None = None, models_dir: Path | None = None):
    """A router answering with the registry's production models (switched without a restart,
    :class:`bot.models.LiveModels`) and their approved answers (:class:`bot.answers.AnswerLibrary`),
    the company profile (with its working hours) and the conversation store.

    Args:
        db: SQLite file; default ``<home>/conversations.db``.
        models_dir: a home folder whose ``models/`` and ``registry.json`` to use instead of
            ``settings.home``'s.

    Returns:
        A :class:`bot.router.Router` (its store is ``router.store``).

    Raises:
        SupportbotError: a model kind has no trained version, or a file cannot be read.
    """
    from bot.answers import AnswerLibrary, load_encoder
    from bot.handoff import load_working_hours
    from bot.models import LiveModels
    from bot.placeholders import load_profile
    from bot.router import Router
    from bot.store import ConversationStore

    from bot.backends import generator_loader

    registry = Registry(models_dir or settings.home)
    models = LiveModels(registry, settings.cache, load_generator=generator_loader(
        settings.serving, settings.cache, settings.router.max_concurrent_generations))
    store = ConversationStore(db or settings.home / "conversations.db")
    answers = AnswerLibrary(lambda version: registry.folder("replies", version),
                            lambda ref: load_encoder(ref, settings.cache), store)
    return Router(models, store, load_profile(settings.profile), settings.router, redact=settings.redact,
                  handoff=settings.handoff, hours=load_working_hours(settings.profile),
                  redact_regions=settings.redact_regions, answers=answers, answers_config=settings.answers)
