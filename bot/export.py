"""Export the conversation log and the reviewed examples as CSV or JSONL.

``conversations``: one row per completed or incomplete turn (conversation id, index, times, user
text, intent, confidence, route, reason, reply, versions, latency, status, agent, the customer's
current rating: +1, -1 or 0).
``examples``: the reviewers' corrections in the generic training format (``text``, ``intent``,
``reply``) that ``supportbot train`` reads; out-of-scope labels are kept as ``out_of_scope``.
Text is redacted again on the way out (:mod:`bot.redaction`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from bot.errors import SupportbotError
from bot.redaction import redact

if TYPE_CHECKING:  # the command line imports the choices below without the store
    from bot.store import ConversationStore

What = Literal["conversations", "examples"]
"""What :func:`export` writes: every turn, or the reviewed corrections."""
WHAT: tuple[str, ...] = get_args(What)
Format = Literal["jsonl", "csv"]
FORMATS: tuple[str, ...] = get_args(Format)


def _clean(value: Any) -> Any:
    return redact(value).text if isinstance(value, str) else value


def conversation_rows(store: ConversationStore) -> list[dict[str, Any]]:
    """Every turn, oldest first, with its current rating (view ``current_feedback``); text fields redacted."""
    return [{k: _clean(v) for k, v in row.items()} for row in store.export_rows()]


def example_rows(store: ConversationStore) -> list[dict[str, Any]]:
    """Reviewed corrections with an intent, as ``{"text", "intent", "reply"}``; text redacted."""
    from bot.reviews import ReviewLog

    return [{"text": _clean(c.text), "intent": c.intent, "reply": _clean(c.reply) or ""}
            for c in ReviewLog(store).corrections() if c.intent]


def export(store: ConversationStore, what: str, fmt: str, output: Path, overwrite: bool = False) -> int:
    """Write ``what`` in ``fmt`` to ``output`` (written whole, then renamed); returns the row count.

    Raises:
        SupportbotError: unknown ``what`` or ``fmt``; ``output`` is a folder, the store's own
            database file, exists and ``overwrite`` is False, or its folder does not exist (no
            folder is created: a typo in the path must not scatter exports).
    """
    if what not in WHAT:
        raise SupportbotError(f"unknown export '{what}'; expected one of {', '.join(WHAT)}")
    if fmt not in FORMATS:
        raise SupportbotError(f"unknown format '{fmt}'; expected one of {', '.join(FORMATS)}")
    output = Path(output)
    if output.resolve() in {Path(f"{store.path.resolve()}{end}") for end in ("", "-wal", "-shm", "-journal")}:
        raise SupportbotError(f"{output} is the conversation log itself; choose another output file")
    if output.is_dir():
        raise SupportbotError(f"{output} is a folder; give a file name")
    if output.exists() and not overwrite:
        raise SupportbotError(f"{output} already exists; choose another name or pass overwrite", "overwrite")
    if not output.parent.is_dir():
        raise SupportbotError(f"{output}: the folder {output.parent} does not exist; create it first")
    rows = conversation_rows(store) if what == "conversations" else example_rows(store)
    scratch = output.with_name(output.name + ".tmp")
    with scratch.open("w", newline="", encoding="utf-8") as handle:
        if fmt == "jsonl":
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        else:
            fields = list(rows[0]) if rows else (["text", "intent", "reply"] if what == "examples" else [])
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    scratch.replace(output)
    return len(rows)
