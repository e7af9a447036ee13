"""The ``supportbot`` command line (typer). Each command parses options and calls one function
of ``training`` or ``bot``; a :class:`bot.errors.SupportbotError` becomes one ``error:`` line
and exit status 2."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from bot.errors import SupportbotError
from bot.settings import load_settings

app = typer.Typer(help="Customer-service chatbot: train, evaluate, serve, review.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect data sets.", no_args_is_help=True)
train_app = typer.Typer(help="Train the intent classifier or the reply generator.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a trained model on a held-out split.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
console = Console()


@data_app.command("show")
def data_show(
    name: str = typer.Argument(..., help="built-in data set (bitext, banking77) or a CSV/JSONL/nlu.yml file"),
    data_dir: Optional[Path] = typer.Option(None, help="folder searched first for built-in data sets"),
    seed: Optional[int] = typer.Option(None, help="split seed"),
) -> None:
    """Row count, intents, split sizes and the largest / smallest intents of a data set."""
    from training.data import load, split

    settings = load_settings(data_dir=data_dir, seed=seed)
    data = load(name, data_dir=settings.data_dir, home=settings.home)
    parts = split(data, seed=settings.seed)
    counts = Counter(e.intent for e in data.examples)
    table = Table(title=f"data set: {data.name}", show_header=False)
    table.add_row("sha256", data.sha256)
    table.add_row("rows", f"{len(data.examples):,}" + (f" (+ {len(data.test):,} official test)" if data.test else ""))
    table.add_row("intents", str(len(counts)))
    table.add_row("rows with a reply", f"{sum(e.reply is not None for e in data.examples):,}")
    table.add_row("split (seed %d)" % settings.seed, ", ".join(f"{k} {v:,}" for k, v in parts.sizes().items()))
    table.add_row("largest intents", ", ".join(f"{i} {n}" for i, n in counts.most_common(3)))
    table.add_row("smallest intents", ", ".join(f"{i} {n}" for i, n in counts.most_common()[-3:]))
    console.print(table)


def main() -> None:
    """Entry point of the ``supportbot`` script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except SupportbotError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
