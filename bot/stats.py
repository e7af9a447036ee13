"""Figures for the reviewers' dashboard, computed from the conversation store with SQL.

Rates count customer turns only: agents' replies and handoff notices (routes ``agent`` and
``notice``) are left out."""

from __future__ import annotations

from typing import Any

from bot.records import FALLBACK_ROUTES, STAFF_ROUTES, Route
from bot.store import ConversationStore, sql_routes


def daily(store: ConversationStore) -> list[dict[str, Any]]:
    """Per UTC day: ``day`` (YYYY-MM-DD), ``conversations``, ``turns``, ``fallback_rate`` and
    ``handoff_rate`` (shares of that day's completed turns, 0-1), oldest day first."""
    return list(store.db.query(f"""
        SELECT substr(started_at, 1, 10) AS day, COUNT(DISTINCT conversation_id) AS conversations,
               COUNT(*) AS turns, AVG(route IN {sql_routes(FALLBACK_ROUTES)}) AS fallback_rate,
               AVG(route = '{Route.HANDOFF}') AS handoff_rate
        FROM turns WHERE status = 'complete' AND route NOT IN {sql_routes(STAFF_ROUTES)} GROUP BY day ORDER BY day"""))


def totals(store: ConversationStore) -> dict[str, Any]:
    """Whole-log figures: ``turns``, ``conversations``, ``fallback_rate``, ``handoff_rate``,
    ``ratings`` (turns with a current rating, view ``current_feedback``) and ``thumbs_up_ratio``
    (share of them that are +1; None without ratings)."""
    row = next(store.db.query(f"""
        SELECT COUNT(*) AS turns, COUNT(DISTINCT conversation_id) AS conversations,
               AVG(route IN {sql_routes(FALLBACK_ROUTES)}) AS fallback_rate, AVG(route = '{Route.HANDOFF}') AS handoff_rate
        FROM turns WHERE status = 'complete' AND route NOT IN {sql_routes(STAFF_ROUTES)}"""))
    rated = next(store.db.query("SELECT COUNT(*) AS ratings, AVG(rating > 0) AS up FROM current_feedback"))
    return {**row, "ratings": rated["ratings"], "thumbs_up_ratio": rated["up"]}


def top_intents(store: ConversationStore, limit: int = 10) -> list[tuple[str, int]]:
    """The most predicted intents of answered turns, with their counts, most frequent first."""
    rows = store.db.query("""
        SELECT intent, COUNT(*) AS n FROM turns
        WHERE status = 'complete' AND intent IS NOT NULL GROUP BY intent ORDER BY n DESC, intent LIMIT ?""", [limit])
    return [(row["intent"], row["n"]) for row in rows]


def most_corrected(store: ConversationStore, limit: int = 10) -> list[tuple[str, int]]:
    """Predicted intents that reviewers relabelled to another intent most often."""
    rows = store.db.query("""
        SELECT t.intent AS intent, COUNT(DISTINCT t.id) AS n FROM reviews r JOIN turns t ON t.id = r.turn_id
        WHERE r.intent IS NOT NULL AND r.intent != COALESCE(t.intent, '')
        GROUP BY t.intent ORDER BY n DESC, t.intent LIMIT ?""", [limit])
    return [(row["intent"] or "(none)", row["n"]) for row in rows]


def handoffs(store: ConversationStore) -> dict[str, Any]:
    """Human-handoff figures: ``waiting`` (no agent yet) and ``held`` (an agent has it) now,
    ``first_agent_reply_p50_s`` / ``_p95_s`` (seconds from the handoff to the agent's first
    reply, over all handoffs that got one; None without any; linear-interpolated percentiles,
    numpy's default) and ``closed_by_agents`` (conversations an agent closed)."""
    import numpy as np

    now = next(store.db.query("""
        SELECT COALESCE(SUM(agent IS NULL), 0) AS waiting, COALESCE(SUM(agent IS NOT NULL), 0) AS held
        FROM handoffs WHERE ended_at IS NULL"""))
    seconds = [row["s"] for row in store.db.query("""
        SELECT (julianday(first_reply_at) - julianday(requested_at)) * 86400.0 AS s
        FROM handoffs WHERE first_reply_at IS NOT NULL""")]
    closed = next(store.db.query(
        "SELECT COUNT(DISTINCT conversation_id) AS n FROM handoffs WHERE outcome = 'closed'"))["n"]
    p50, p95 = (float(np.percentile(seconds, q)) for q in (50, 95)) if seconds else (None, None)
    return {**now, "first_agent_reply_p50_s": p50, "first_agent_reply_p95_s": p95, "closed_by_agents": closed}
