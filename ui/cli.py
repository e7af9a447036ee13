"""The ``supportbot`` command line (typer). Each command parses options and calls one function
of ``training`` or ``bot``; a :class:`bot.errors.SupportbotError` or a usage error (bad option
value, missing argument) becomes one plain ``error:`` line and exit status 2, whatever the
terminal width."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import sys
import typing
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Column, Table

from bot.classifier import OosMethod
from bot.errors import DataError, SettingError, SupportbotError, one_line
from bot.export import Format, What
from bot.registry import Kind
from bot.settings import DEFAULT_DATA, ReplyTrainConfig, RetrainConfig, load_settings
from training.data import DEFAULT_OOS_LABELS, INTENT_COLUMNS, TEXT_COLUMNS
from training.intents import IntentTrainConfig, Method
from training.validate import MIN_EXAMPLES, validate

# pretty_exceptions_enable=False: a bug's traceback is printed as Python prints it, not redrawn
# in a box at the terminal's width.
app = typer.Typer(help="Customer-service chatbot: train, evaluate, serve, review.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect data sets.", no_args_is_help=True)
train_app = typer.Typer(help="Train the intent classifier or the reply generator.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a trained model on a held-out split.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
models_app = typer.Typer(help="Model versions: list, show, promote, rollback.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(models_app, name="models")
db_app = typer.Typer(help="The conversation log: retention.", no_args_is_help=True)
app.add_typer(db_app, name="db")
answers_app = typer.Typer(help="Approved answers retrieved for the reply generator: list, add, remove, import.",
                          no_args_is_help=True)
app.add_typer(answers_app, name="answers")
KIND = typer.Argument(..., help="the model kind")
DB = typer.Option(None, help="SQLite conversation log (default <home>/conversations.db)")
MODELS = typer.Option(None, help="home folder whose models/ and registry.json to use (default: the home setting)")
DATA_DIR = typer.Option(None, help="folder searched first for built-in data sets", exists=True,
                        file_okay=False)
TEXT_COLUMN = typer.Option(None, "--text-column", metavar="COLUMN",
                           help=f"CSV column / JSONL key of the utterance (default: the first of "
                                f"{', '.join(TEXT_COLUMNS)} in the file)")
INTENT_COLUMN = typer.Option(None, "--intent-column", metavar="COLUMN",
                             help=f"CSV column / JSONL key of the intent (default: the first of "
                                  f"{', '.join(INTENT_COLUMNS)} in the file)")
OOS_LABEL = typer.Option([], "--oos-label", metavar="LABEL",
                         help=f"a label that marks out-of-scope rows, besides {' and '.join(DEFAULT_OOS_LABELS)} "
                              "(repeatable)")
SEED = typer.Option(None, help="seed of the data split and of training (default: the seed setting)")
HOST = typer.Option("127.0.0.1", help="address to listen on")
PORT = typer.Option(7860, min=1, max=65535, help="port to listen on")


def field_option(field: dataclasses.Field, note: str = "", default: typing.Any = dataclasses.MISSING):
    """The typer option of a config dataclass field made with :func:`bot.settings.option`: its
    help text (``note`` appended) and default (unless ``default`` is given)."""
    if default is dataclasses.MISSING:
        default = field.metadata.get("cli_default", field.default)
    return typer.Option(default, help=field.metadata["help"] + note)


def config_field(config_class, name: str) -> dataclasses.Field:
    """The field ``name`` of a config dataclass."""
    return next(f for f in dataclasses.fields(config_class) if f.name == name)


console = Console()


def config_options(config_class):
    """Decorator of a command whose ``config`` parameter is a ``config_class`` dataclass: the
    command gets one ``--field-name`` option per field made with :func:`bot.settings.option`, with
    that field's type (a ``Literal`` lists its choices in ``--help``), default and help text, and
    receives them as one ``config_class`` instance."""
    hints = typing.get_type_hints(config_class)
    exposed = [f for f in dataclasses.fields(config_class) if "help" in f.metadata]

    def decorate(command):
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "config"]
        options = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                     default=field_option(f),
                                     annotation=f.metadata.get("cli_type", hints[f.name])) for f in exposed]

        @functools.wraps(command)
        def run(**values):
            given = {f.name: f.metadata.get("parse", lambda v: v)(values.pop(f.name)) for f in exposed}
            return command(config=config_class(**given), **values)

        run.__signature__ = signature.replace(parameters=own + options)
        return run

    return decorate


@data_app.command("show")
def data_show(
    name: str = typer.Argument(..., help="built-in data set (bitext, banking77, hwu64) or a CSV/JSONL/nlu.yml file"),
    data_dir: Optional[Path] = DATA_DIR,
    seed: Optional[int] = SEED,
    text_column: Optional[str] = TEXT_COLUMN,
    intent_column: Optional[str] = INTENT_COLUMN,
    oos_label: list[str] = OOS_LABEL,
) -> None:
    """Row count, intents, columns read, out-of-scope rows, split sizes and the largest / smallest
    intents of a data set."""
    from bot.records import OUT_OF_SCOPE
    from training.data import describe_columns, load, split

    settings = load_settings(data_dir=data_dir, seed=seed)
    data = load(name, data_dir=settings.data_dir, home=settings.home, text_column=text_column,
                intent_column=intent_column, oos_labels=oos_label)
    try:
        sizes = ", ".join(f"{k} {v:,}" for k, v in split(data, seed=settings.seed).sizes().items())
    except DataError as exc:  # too small to split: still show what is there
        sizes = f"not possible: {exc}"
    counts = Counter(e.intent for e in data.examples if e.intent != OUT_OF_SCOPE)
    table = Table(title=f"data set: {data.name}", show_header=False)
    table.add_row("sha256", data.sha256)
    table.add_row("columns", describe_columns(data.columns))
    table.add_row("rows", f"{len(data.examples):,}" + (f" (+ {len(data.test):,} official test)" if data.test else ""))
    table.add_row("intents", str(len(counts)))
    oos_test = f" (+ {sum(e.intent == OUT_OF_SCOPE for e in data.test):,} in the test split)" if data.test else ""
    table.add_row("out-of-scope rows", f"{len(data.out_of_scope):,}{oos_test}")
    table.add_row("rows with a reply", f"{sum(e.reply is not None for e in data.examples):,}")
    table.add_row("split (seed %d)" % settings.seed, sizes)
    table.add_row("largest intents", ", ".join(f"{i} {n}" for i, n in counts.most_common(3)))
    table.add_row("smallest intents", ", ".join(f"{i} {n}" for i, n in counts.most_common()[-3:]))
    console.print(table)


@data_app.command("validate")
def data_validate(
    file: str = typer.Argument(..., metavar="FILE",
                               help="CSV/JSONL/nlu.yml file, or a built-in data set (its test split is checked too)"),
    test: Optional[str] = typer.Option(None, "--test", metavar="TEST_FILE",
                                       help="test file to check for leakage from FILE"),
    text_column: Optional[str] = TEXT_COLUMN,
    intent_column: Optional[str] = INTENT_COLUMN,
    oos_label: list[str] = OOS_LABEL,
    min_examples: int = typer.Option(MIN_EXAMPLES, min=1, help="warn about intents with fewer training examples"),
    data_dir: Optional[Path] = DATA_DIR,
) -> None:
    """Check a data file before training: the same utterance under two intents, duplicates,
    train/test leakage, intents with too few examples, unmapped out-of-scope labels.

    One line per finding (file, rows, field); exit status 1 when there is an error, 0 otherwise.
    """
    settings = load_settings(data_dir=data_dir)
    logging.getLogger("training.data").setLevel(logging.ERROR)  # its load-time warnings are findings here
    report = validate(file, test, data_dir=settings.data_dir, home=settings.home, text_column=text_column,
                      intent_column=intent_column, oos_labels=oos_label, min_examples=min_examples)
    for summary in report.files:
        typer.echo(str(summary))
    for finding in report.findings:
        typer.echo(_flagged(str(finding), finding.setting))
    typer.echo(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    raise typer.Exit(1 if report.errors else 0)


@app.command()
def serve(
    host: str = HOST,
    port: int = PORT,
    db: Optional[Path] = DB,
    models: Optional[Path] = MODELS,
) -> None:
    """Serve the chat at http://HOST:PORT/, the REST channel at /api/v1/, the reviewers' pages at
    /review/ and the agents' inbox at /inbox/ (both with a login)."""
    import uvicorn

    from bot.runtime import load_router
    from training import jobs
    from ui.api import build_api
    from ui.chat import browser_secret, build_chat_app
    from ui.inbox import build_inbox_app
    from ui.models_page import model_tabs
    from ui.review import build_review_app
    from ui.server import build_server

    settings = load_settings()
    router = load_router(settings, db, models)
    interrupted = router.store.mark_interrupted()
    if interrupted:
        console.print(f"{len(interrupted)} turn(s) interrupted by an earlier stop stay marked incomplete "
                      "and wait in the review queue")
    classifier, generator = router.models.current()
    failed = jobs.recover(settings.home)
    if failed:
        console.print(f"retraining job(s) interrupted by an earlier stop marked failed: {', '.join(failed)}")
    review = build_review_app(router.store, classifier.labels, extra_tabs=model_tabs(models or settings.home),
                              router=router)
    reviewers, agents = settings.accounts("review"), settings.accounts("inbox")
    admins = {name for name, account in settings.accounts().items() if account.role == "admin"}
    server = build_server(build_chat_app(router, browser_secret(settings.home), settings.chat.show_internals), review,
                          _hashes(reviewers), build_inbox_app(router.inbox, admins), _hashes(agents),
                          build_api(router, settings.api))
    base = f"http://{host}:{port}"
    review_url = f"{base}/review/" if reviewers else "off (no reviewers configured)"
    inbox_url = f"{base}/inbox/" if agents else "off (no agents configured)"
    console.print(f"chat: {base}/  REST: {base}/api/v1/docs  review: {review_url}  inbox: {inbox_url}  "
                  f"(classifier {classifier.version}, generator {generator.version}, log {router.store.path})")
    uvicorn.run(server, host=host, port=port, log_level="warning")


@app.command()
def demo(
    host: str = HOST,
    port: int = PORT,
    data: str = typer.Option(DEFAULT_DATA, help="data set to train on when no model exists yet"),
) -> None:
    """Train both models on the first run (CPU budget, or full training on a GPU), then serve.

    A later run finds the models in the registry and starts in seconds.
    """
    from bot.registry import Registry
    from training.demo import ensure_models_apart

    settings = load_settings()
    for kind, version, trained in ensure_models_apart(settings, data):  # training in a child process
        console.print(f"{kind}: {version} ({'trained now' if trained else 'already trained'})")
    console.print(f"registry: {Registry(settings.home).path}")
    serve(host=host, port=port, db=None, models=None)


def _hashes(accounts) -> dict[str, str]:
    return {name: account.password_hash for name, account in accounts.items()}


@app.command("hash-password")
def hash_password_command(
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True,
                                 help="the password (asked for, unseen, when not given)"),
) -> None:
    """Print the argon2 hash of a staff member's password, for the ``staff`` (or ``reviewers``) setting."""
    from ui.server import hash_password

    typer.echo(hash_password(password))


@app.command("api-key")
def api_key_command(name: str = typer.Argument(..., help="the integration's name, e.g. website")) -> None:
    """Make an API key for the REST channel: prints the key (give it to the integration) and the
    line for ``[api] keys`` in supportbot.toml (only the key's sha256 digest is configured)."""
    from ui.api import new_api_key

    key, hashed = new_api_key()
    typer.echo(f"key (shown once): {key}")
    typer.echo(f'supportbot.toml, [api] keys:  {json.dumps(name)} = "{hashed}"')


@app.command()
def chat(
    db: Optional[Path] = DB,
    models: Optional[Path] = MODELS,
    show_intent: bool = typer.Option(True, help="print intent, confidence and route after each reply"),
) -> None:
    """Chat in the terminal with the same router and log as the web page (empty line or Ctrl-D ends)."""
    from bot.runtime import load_router

    router = load_router(load_settings(), db, models)
    conversation = router.new_conversation()
    console.print(f"conversation {conversation}; an empty line ends it")
    while True:
        try:
            text = console.input("[bold]you>[/bold] ")
        except EOFError:
            break
        if not text.strip():
            break
        shown = ""
        console.print("[bold]bot>[/bold] ", end="")
        for chunk in router.respond(conversation, text):
            if not chunk.text.startswith(shown):  # the safety net replaced what was shown: show the new reply whole
                console.print("\n[bold]bot> (instead)[/bold] ", end="")
                shown = ""
            console.print(chunk.text[len(shown):], end="", markup=False, highlight=False)
            shown = chunk.text
        console.print()
        if show_intent and chunk.turn is not None:
            turn = chunk.turn
            console.print(f"[dim]{turn.decision.route}: {turn.decision.reason}[/dim]")


@train_app.command("replies")
@config_options(ReplyTrainConfig)
def train_replies_command(
    config: ReplyTrainConfig,
    data: str = typer.Option(DEFAULT_DATA, help="built-in data set or a CSV/JSONL file with a reply column"),
    base: Optional[str] = typer.Option(None, help="instruct LM: hub id or local path (default settings.reply_base)"),
    output: Optional[Path] = typer.Option(None, help="output folder (default <home>/models/replies/<version>)"),
    data_dir: Optional[Path] = DATA_DIR,
    seed: Optional[int] = SEED,
) -> None:
    """LoRA fine-tune of the reply generator (loss on reply tokens only)."""
    from training.replies import train_replies

    settings = load_settings(reply_base=base, data_dir=data_dir, seed=seed)
    folder = train_replies(data, settings, dataclasses.replace(config, seed=settings.seed), output)
    console.print(f"reply generator written to {folder}; {_register('replies', folder)}")


@eval_app.command("replies")
def eval_replies_command(
    adapter: Path = typer.Argument(..., help="replies version folder (adapter + manifest.json)"),
    data: Optional[str] = typer.Option(None, help="data set or file (default: the one it was trained on)"),
    limit: Optional[int] = typer.Option(None, help="score only the first N test examples"),
    max_new_tokens: int = typer.Option(128, help="reply cap of the generated systems, in tokens"),
    compare: list[Path] = typer.Option([], help="another replies version to score on the same rows (repeatable)"),
    test: Optional[str] = typer.Option(None, help="score every row of this file (text,intent,reply) instead "
                                                  "of the test split, e.g. data/reworded_replies.csv"),
    data_dir: Optional[Path] = DATA_DIR,
) -> None:
    """ROUGE-L, chrF, cosine, invented slots, new facts: base zero-shot, retrieval, the adapter
    (with its retrieved approved answers) and the versions to compare with."""
    from training.reply_eval import EvalOptions, evaluate_replies, report_table

    settings = load_settings(data_dir=data_dir)
    result = evaluate_replies(adapter, settings, data, EvalOptions(limit=limit, max_new_tokens=max_new_tokens,
                                                                   compare=tuple(compare), test=test))
    console.print(report_table(result), markup=False, highlight=False)
    stem = f"replies-{Path(test).stem}" if test else "replies"
    console.print(f"report: {Path(adapter) / 'eval' / (stem + '.md')}")


def _register(kind: str, folder: Path) -> str:
    """Record a version trained into the home's models folder in the registry: promoted when
    it is the first of its kind, else a candidate (``supportbot models promote`` to use it)."""
    from bot.registry import Registry

    registry = Registry(load_settings().home)
    if Path(folder).parent.resolve() != (registry.models / kind).resolve():
        return "not in the registry (custom --output)"
    return "promoted to production" if registry.register(kind, Path(folder).name) else \
        "kept as a candidate (supportbot models promote to use it)"


@train_app.command("intents")
@config_options(IntentTrainConfig)
def train_intents_command(
    config: IntentTrainConfig,
    data: str = typer.Option(DEFAULT_DATA, help="built-in data set (bitext, banking77, hwu64) or a CSV/JSONL/nlu.yml file"),
    base: Optional[str] = typer.Option(None, help="sentence encoder: hub id or local path (default settings.intent_base)"),
    seed: Optional[int] = SEED,
    output: Optional[Path] = typer.Option(None, help="version folder to create (default <home>/models/intents/<UTC time>)"),
    text_column: Optional[str] = TEXT_COLUMN,
    intent_column: Optional[str] = INTENT_COLUMN,
    oos_label: list[str] = OOS_LABEL,
    data_dir: Optional[Path] = DATA_DIR,
) -> None:
    """Train the intent classifier (runs unchanged under torchrun / accelerate launch)."""
    from training.intents import train_intents

    settings = load_settings(intent_base=base, data_dir=data_dir, seed=seed)
    config = dataclasses.replace(config, text_column=text_column, intent_column=intent_column,
                                 oos_labels=list(oos_label))
    folder = train_intents(data, settings, config, output)
    registered = "not in the registry (--holdout model)" if config.holdout else _register("intents", folder)
    console.print(f"intent classifier written to {folder}; {registered}", soft_wrap=True)
    _print_manifest_summary(folder)
    if config.test:
        _print_intent_report(folder, data, data_dir, config.test, text_column, intent_column, oos_label)


def _print_manifest_summary(folder: Path) -> None:
    from bot.manifest import read

    manifest = read(folder, "intents")
    oos, sizes = manifest.oos.model_dump(), manifest.data.split_sizes
    console.print(f"rows: {', '.join(f'{k} {v}' for k, v in sizes.items())}", soft_wrap=True)
    console.print(f"out-of-scope threshold {oos['threshold']:.4f} ({oos.get('objective', '')}): "
                  f"in-scope answered {oos.get('in_scope_answered', float('nan')):.2%}, "
                  f"out-of-scope rejected {oos.get('oos_rejected', float('nan')):.2%}", soft_wrap=True)


def _print_intent_report(model: Path, data: str, data_dir, test, text_column, intent_column, oos_label) -> None:
    from training.intent_eval import evaluate_intents

    report = evaluate_intents(model, data, load_settings(data_dir=data_dir), test, text_column=text_column, intent_column=intent_column,
                              oos_labels=tuple(oos_label))
    console.print(f"{report['rows']} in-scope test rows: accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}, "
                  f"rejected as out of scope {report['rejected_as_oos']:.2%}", soft_wrap=True)
    open_set = report["open_set"]
    if open_set["oos_rows"]:
        console.print(f"with {open_set['oos_rows']} out-of-scope rows ({open_set['rows']} in all): overall accuracy "
                      f"{open_set['accuracy']:.4f}, in-scope accuracy {open_set['in_scope_accuracy']:.4f}, "
                      f"out-of-scope recall {open_set['oos_recall']:.4f}, in-scope wrongly rejected "
                      f"{open_set['in_scope_rejected']:.2%}", soft_wrap=True)
    for pair in report["most_confused"][:5]:
        console.print(f"  confused: {pair['gold']} -> {pair['predicted']} ({pair['count']})", soft_wrap=True)
    console.print(f"report: {model / 'eval' / 'intents_report.md'}, plot: {model / 'eval' / 'confusion.png'}", soft_wrap=True)


@eval_app.command("intents")
def eval_intents_command(
    model: Path = typer.Argument(..., help="intent model folder (models/intents/<version>)"),
    data: str = typer.Option(DEFAULT_DATA, help="the data set the model was trained on (its test split is used)"),
    test: Optional[str] = typer.Option(None, help="your own test file instead (may hold out-of-scope rows)"),
    text_column: Optional[str] = TEXT_COLUMN,
    intent_column: Optional[str] = INTENT_COLUMN,
    oos_label: list[str] = OOS_LABEL,
    data_dir: Optional[Path] = DATA_DIR,
) -> None:
    """Accuracy, macro-F1, per-intent report and confusion matrix on the test split or --test FILE;
    with out-of-scope rows: overall accuracy, in-scope accuracy, OOS recall (writes MODEL/eval/)."""
    _print_intent_report(model, data, data_dir, test, text_column, intent_column, oos_label)


@eval_app.command("oos")
def eval_oos_command(
    model: Optional[Path] = typer.Argument(None, help="a model trained with --holdout; default: train one now"),
    data: str = typer.Option("banking77", help="built-in data set or file"),
    holdout: int = typer.Option(10, help="intents to hold out when training a model here"),
    method: Method = field_option(config_field(IntentTrainConfig, "method"), " (when training here)", "head"),
    epochs: float = field_option(config_field(IntentTrainConfig, "epochs"), " (when training here)"),
    oos_method: OosMethod = field_option(config_field(IntentTrainConfig, "oos_method"), " (when training here)"),
    seed: Optional[int] = SEED,
    data_dir: Optional[Path] = DATA_DIR,
) -> None:
    """Out-of-scope detection on whole unseen intents: AUROC and OOS recall at the model's threshold."""
    from training.intent_eval import evaluate_oos
    from training.intents import train_intents

    if model is None:
        model = train_intents(data, load_settings(data_dir=data_dir, seed=seed),
                              IntentTrainConfig(method=method, epochs=epochs, oos_method=oos_method, holdout=holdout))
    result = evaluate_oos(model, data, load_settings(data_dir=data_dir))
    aurocs = ", ".join(f"{name} {value:.4f}" for name, value in result["auroc"].items())
    console.print(f"{model}: {result['oos_rows']} unseen-intent vs {result['in_scope_rows']} in-scope test rows; "
                  f"AUROC {aurocs}; at the {result['method']} threshold {result['threshold']:.4f}: "
                  f"OOS recall {result['oos_recall']:.4f}, in-scope rejected {result['in_scope_rejected']:.4f}; "
                  f"OOS recall at 95 % in-scope answered {result['oos_recall_at_95_in_scope']:.4f}")


@app.command()
@config_options(RetrainConfig)
def retrain(config: RetrainConfig) -> None:
    """Train new versions from reviewed corrections with the production versions' recipes;
    promote each only if it does not regress."""
    from training import jobs

    reports = jobs.run(load_settings(), config)
    for kind, report in reports.items():
        scores = report.get("scores")
        console.print(f"{kind}: {report['decision']}" + (f"; old {scores['old']}, new {scores['new']}" if scores else ""))


@app.command()
def export(
    what: What = typer.Option("conversations", help="conversations (every turn) or examples (reviewed corrections)"),
    format: Format = typer.Option("jsonl", "--format", help="file format"),
    output: Path = typer.Option(..., help="file to write"),
    db: Optional[Path] = DB,
    overwrite: bool = typer.Option(False, help="replace OUTPUT if it exists"),
) -> None:
    """Export the log or the reviewed examples (the latter in the format `train` reads)."""
    from bot.export import export as write_export

    with _conversation_log(db) as store:
        count = write_export(store, what, format, output, overwrite)
    console.print(f"{count} {what} rows written to {output}")


def _conversation_log(db: Optional[Path], create: bool = False):
    """The existing conversation store at ``db`` (default ``<home>/conversations.db``); with
    ``create``, a new one when there is no file there yet.

    Raises:
        SupportbotError: there is no conversation log there (see ``ConversationStore.existing``).
    """
    from bot.store import ConversationStore

    path = db or load_settings().home / "conversations.db"
    return ConversationStore(path) if create and not path.exists() else ConversationStore.existing(path)


@db_app.command("prune")
def db_prune(
    older_than: float = typer.Option(..., metavar="DAYS", help="delete conversations with no activity for more than DAYS days (> 0)"),
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
    db: Optional[Path] = DB,
) -> None:
    """Retention: delete old conversations with their turns, feedback and reviews."""
    with _conversation_log(db) as store:
        if not yes:
            counts = store.prune(older_than, dry_run=True)
            typer.confirm(f"delete {_counted(counts)} from {store.path}?", abort=True)
        counts = store.prune(older_than)
    console.print(f"deleted {_counted(counts)} (no activity for more than {older_than:g} days)")


def _counted(counts: dict[str, int]) -> str:
    """``{"turns": 3, ...}`` -> ``"3 turns, ..."``."""
    return ", ".join(f"{count} {table}" for table, count in counts.items())


def _registry(home: Optional[Path] = None):
    from bot.registry import Registry

    return Registry(home or load_settings().home)


@models_app.command("list")
def models_list() -> None:
    """Every version of both model kinds, marking production and candidates."""
    from bot.manifest import read
    from bot.registry import KINDS

    registry = _registry()
    table = Table("kind", Column("version", no_wrap=True, min_width=15), "status", "base", "data", "metrics")
    for kind in KINDS:
        state = registry.state(kind)
        for version in registry.versions(kind):
            manifest = read(registry.folder(kind, version))
            status = "production" if version == state["production"] else (
                "candidate" if version in state["candidates"] else "")
            shown = ", ".join(f"{k} {v:.4f}" for k, v in manifest.metrics.items() if isinstance(v, float))[:60]
            table.add_row(kind, version, status, manifest.base_model, manifest.data.name, shown)
    console.print(table)


@models_app.command("show")
def models_show(kind: Kind = KIND, version: Optional[str] = typer.Argument(None, help="default: production")) -> None:
    """A version's manifest, and the registry history of its kind."""
    from bot.manifest import read

    registry = _registry()
    folder = registry.folder(kind, version) if version else registry.production_folder(kind)
    console.print_json(read(folder).model_dump_json())
    for event in registry.state(kind)["history"][-10:]:
        console.print(f"{event['time']} {event['action']}: {event.get('from') or ''} -> "
                      f"{event.get('to') or event.get('version')} {event.get('reason') or ''}")


@models_app.command("promote")
def models_promote(kind: Kind = KIND, version: str = typer.Argument(...),
                   reason: str = typer.Option("promoted by hand", help="why, kept in the history")) -> None:
    """Put a version in production (a running server switches to it before its next turn)."""
    _registry().promote(kind, version, reason)
    console.print(f"{kind}: {version} is in production")


@models_app.command("rollback")
def models_rollback(kind: Kind = KIND) -> None:
    """Put back the version that was in production before the current one."""
    console.print(f"{kind}: {_registry().rollback(kind)} is in production again")


BY = typer.Option("cli", "--by", help="who does it, kept in the answers log")
EXCERPT = 70
"""Characters of a reply ``answers list`` shows."""


def _known_intents(models: Optional[Path]) -> Optional[set[str]]:
    """The production classifier's labels (answers may be given for these), None when no
    classifier was trained yet (any intent is accepted)."""
    from bot.manifest import read

    registry = _registry(models)
    if not registry.versions("intents"):
        return None
    return set(read(registry.production_folder("intents"), "intents").labels) or None


def _excerpt(text: Optional[str]) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= EXCERPT else flat[:EXCERPT - 1] + "…"


@answers_app.command("list")
def answers_list(
    intent: Optional[str] = typer.Option(None, help="only the answers of this intent"),
    source: Optional[typing.Literal["training", "review", "team"]] = typer.Option(
        None, help="only training replies (of the production replies version), reviewed replies or team answers"),
    db: Optional[Path] = DB,
    models: Optional[Path] = MODELS,
) -> None:
    """The approved answers in effect: training replies of the production replies version (t<n>),
    replies reviewers approved or rewrote (r<review id>) and team answers (a<n>)."""
    from bot.answers import live_answers, read_base

    answers, notes = [], []
    registry = _registry(models)
    if source == "training" or (source is None and registry.versions("replies")):
        folder = registry.production_folder("replies")
        base = read_base(folder)
        if base is None:
            notes.append(f"replies version {folder.name} was trained without an answer store: no training answers")
        else:
            answers += base.answers
    path = db or load_settings().home / "conversations.db"
    if source != "training" and (db is not None or path.exists()):
        with _conversation_log(path) as store:
            answers += [a for a in live_answers(store) if source in (None, a.source)]
    shown = [a for a in answers if intent in (None, a.intent)]
    table = Table(Column("id", no_wrap=True), "source", Column("intent", no_wrap=True), "request", "reply")
    for answer in shown:
        table.add_row(answer.id, answer.source, answer.intent, _excerpt(answer.request), _excerpt(answer.reply))
    if shown:
        console.print(table)
    counts = Counter(a.source for a in shown)
    for note in notes:
        console.print(note, soft_wrap=True)
    console.print(f"{len(shown)} answer(s)" + (f": {_counted(counts)}" if counts else ""), soft_wrap=True)


@answers_app.command("add")
def answers_add(
    intent: str = typer.Option(..., help="the intent the answer is for (one the production classifier knows)"),
    reply: str = typer.Option(..., help="the answer's text; {{Slot}} placeholders are filled as in generated replies"),
    request: Optional[str] = typer.Option(None, help="a customer request it answers (retrieval compares messages "
                                                     "with it; without one, with the reply)"),
    by: str = BY,
    db: Optional[Path] = DB,
    models: Optional[Path] = MODELS,
) -> None:
    """Add a team answer; it is retrieved from the next turn on, no retrain needed."""
    from bot.answer_files import check_answer

    row = check_answer({"intent": intent, "reply": reply, "request": request}, _known_intents(models))
    with _conversation_log(db, create=True) as store:
        (answer_id,) = store.add_answers([row], by, "added by hand")
    console.print(f"added team answer a{answer_id} ({row['intent']})")


@answers_app.command("remove")
def answers_remove(
    answer_id: str = typer.Argument(..., metavar="ID", help="a team answer's id, a12 or 12 (see: supportbot answers list)"),
    note: Optional[str] = typer.Option(None, help="why, kept in the answers log"),
    by: str = BY,
    db: Optional[Path] = DB,
) -> None:
    """Withdraw a team answer (logged; nothing is deleted). Training and reviewed replies are
    withdrawn where they come from: the training data, or the review."""
    import re

    match = re.fullmatch(r"([tra]?)(\d+)", answer_id.strip())
    if match is None:
        raise SupportbotError(f"'{answer_id}' is not an answer id; expected a<n> or <n> (see: supportbot answers list)")
    prefix, number = match.group(1), int(match.group(2))
    if prefix == "t":
        raise SupportbotError(f"{answer_id} is a training reply of the replies version; it cannot be removed here: "
                              "edit the training data and retrain (supportbot train replies)")
    if prefix == "r":
        raise SupportbotError(f"{answer_id} is the reply of review {number}; it cannot be removed here: undo that "
                              "review on the review page (its reviewer's \"Undo my last review\"), or review the turn again")
    with _conversation_log(db) as store:
        store.remove_answer(number, by, note)
    console.print(f"withdrew team answer a{number}")


def _same(answer) -> tuple:
    """What makes two team answers the same answer."""
    return answer["intent"], answer["request"], answer["reply"]


@answers_app.command("import")
def answers_import(
    file: Path = typer.Argument(..., metavar="FILE", help="CSV or JSONL (intent, reply, optional request) or a "
                                                          "Markdown FAQ (# intent, ## question, reply)"),
    by: str = BY,
    db: Optional[Path] = DB,
    models: Optional[Path] = MODELS,
) -> None:
    """Add the answers of a file in one transaction (all or none); answers already in effect
    with the same intent, request and reply are skipped."""
    from bot.answer_files import read_answers

    rows = read_answers(file, _known_intents(models))
    with _conversation_log(db, create=True) as store:
        seen, new = {_same(answer) for answer in store.team_answers()}, []
        for row in rows:
            if _same(row) not in seen:
                seen.add(_same(row))
                new.append(row)
        ids = store.add_answers(new, by, file.name) if new else []
    added = f" (a{ids[0]}-a{ids[-1]})" if ids else ""
    skipped = len(rows) - len(new)
    console.print(f"imported {len(ids)} team answer(s) from {file}{added}"
                  + (f"; {skipped} already in effect, skipped" if skipped else ""), soft_wrap=True)


def _flags(args: list[str]) -> set[str]:
    """The option flags of the command ``args`` invokes (e.g. ``["train", "intents", ...]``)."""
    command = typer.main.get_command(app)
    for word in args:
        if not hasattr(command, "commands") or word not in command.commands:
            break
        command = command.commands[word]
    return {flag for param in command.params for flag in param.opts}


def _flagged(message: str, setting: str | None) -> str:
    """``message`` with the ``setting`` it names last (the fix, :class:`SupportbotError`'s
    ``setting``) written as this command's flag (``oos_label`` -> ``--oos-label``), when the
    command has that flag."""
    if setting and (flag := "--" + setting.replace("_", "-")) in _flags(sys.argv[1:]):
        head, _, tail = message.rpartition(setting)
        return head + flag + tail
    return message


def main() -> None:
    """Entry point of the ``supportbot`` script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        # standalone_mode=False: usage errors (bad option value, missing argument) reach us as
        # exceptions instead of being drawn by rich in a box that wraps at the terminal's width.
        status = app(standalone_mode=False)
    except SettingError as exc:  # named by its flag when the command has one
        flag = "--" + exc.field.replace("_", "-")
        typer.echo(f"error: {f'{flag} {exc.problem}' if flag in _flags(sys.argv[1:]) else exc}", err=True)
        raise SystemExit(2) from None
    except SupportbotError as exc:
        typer.echo(f"error: {_flagged(str(exc), exc.setting)}", err=True)
        raise SystemExit(2) from None
    except typer.TyperException as exc:  # typer's (vendored click's) ClickException and subclasses
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is the message (or already printed by rich)
            if exc.format_message().strip():
                typer.echo(exc.format_message())
        else:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:  # typer.confirm(abort=True) answered no, or Ctrl-C at a prompt
        typer.echo("Aborted!", err=True)
        raise SystemExit(1) from None
    raise SystemExit(status if isinstance(status, int) else 0)

if __name__ == "__main__":
    main()
