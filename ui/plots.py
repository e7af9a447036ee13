"""Matplotlib figures of the dashboard (conversations per day, rates, intents)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bot import stats  # noqa: E402
from bot.store import ConversationStore  # noqa: E402


def _bar(pairs: list[tuple[str, int]], title: str):
    figure, axis = plt.subplots(figsize=(6, 3.2))
    labels = [label for label, _ in pairs][::-1]
    axis.barh(labels, [n for _, n in pairs][::-1], color="#4c78a8")
    axis.set_title(title)
    axis.set_xlabel("turns")
    figure.tight_layout()
    return figure


def per_day_figure(rows: list[dict]):
    """Turns and conversations per day (bars) with fallback and handoff rates (lines, right axis)."""
    figure, axis = plt.subplots(figsize=(6, 3.2))
    days = [row["day"] for row in rows]
    axis.bar(days, [row["turns"] for row in rows], color="#9ecae9", label="turns")
    axis.plot(days, [row["conversations"] for row in rows], "o-", color="#4c78a8", label="conversations")
    axis.set_ylabel("count")
    rates = axis.twinx()
    rates.plot(days, [row["fallback_rate"] for row in rows], "s--", color="#e45756", label="fallback rate")
    rates.plot(days, [row["handoff_rate"] for row in rows], "^--", color="#f58518", label="handoff rate")
    rates.set_ylim(0, 1)
    rates.set_ylabel("share of turns")
    figure.legend(loc="upper left", fontsize=7)
    axis.set_title("Per day")
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def dashboard_figures(store: ConversationStore):
    """``(totals dict, per-day figure, top-intents figure, most-corrected figure)``; the totals
    hold the human-handoff figures under ``handoffs`` (:func:`bot.stats.handoffs`)."""
    plt.close("all")
    return ({**stats.totals(store), "handoffs": stats.handoffs(store)}, per_day_figure(stats.daily(store)),
            _bar(stats.top_intents(store), "Top intents"),
            _bar(stats.most_corrected(store), "Most corrected intents"))
