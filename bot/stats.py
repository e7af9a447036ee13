"""Figures for the reviewers' dashboard, from the conversation store's reports
(:meth:`bot.store.ConversationStore.turn_figures` and the like).

Rates count customer turns only: agents' replies and handoff notices (routes ``agent`` and
``notice``) are left out."""

from __future__ import annotations

from typing import Any

from bot.store import ConversationStore


def daily(store: ConversationStore) -> list[dict[str, Any]]:
    """Per UTC day: ``day`` (YYYY-MM-DD), ``conversations``, ``turns``, ``fallback_rate`` and
    ``handoff_rate`` (shares of that day's completed turns, 0-1), oldest day first."""
    return store.turn_figures(by_day=True)


def totals(store: ConversationStore) -> dict[str, Any]:
    """Whole-log figures: ``turns``, ``conversations``, ``fallback_rate``, ``handoff_rate``,
    ``ratings`` (turns with a current rating, view ``current_feedback``) and ``thumbs_up_ratio``
    (share of them that are +1; None without ratings)."""
    rated = store.rating_figures()
    return {**store.turn_figures()[0], "ratings": rated["ratings"], "thumbs_up_ratio": rated["up"]}


def top_intents(store: ConversationStore, limit: int = 10) -> list[tuple[str, int]]:
    """The most predicted intents of answered turns, with their counts, most frequent first."""
    return store.intent_counts(limit)


def most_corrected(store: ConversationStore, limit: int = 10) -> list[tuple[str, int]]:
    """Predicted intents that reviewers relabelled to another intent most often."""
    return [(intent or "(none)", n) for intent, n in store.intent_counts(limit, corrected=True)]


def handoffs(store: ConversationStore) -> dict[str, Any]:
    """Human-handoff figures: ``waiting`` (no agent yet) and ``held`` (an agent has it) now,
    ``first_agent_reply_p50_s`` / ``_p95_s`` (seconds from the handoff to the agent's first
    reply, over all handoffs that got one; None without any; linear-interpolated percentiles,
    numpy's default) and ``closed_by_agents`` (conversations an agent closed)."""
    import numpy as np

    figures = store.handoff_figures()
    seconds = figures.pop("reply_seconds")
    p50, p95 = (float(np.percentile(seconds, q)) for q in (50, 95)) if seconds else (None, None)
    return {**figures, "first_agent_reply_p50_s": p50, "first_agent_reply_p95_s": p95}
