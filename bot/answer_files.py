"""Team-written answers (:mod:`bot.answers`, ids ``a<n>``): the one reader of their files and the
one check of an answer a person gives (``supportbot answers add|import``).

Formats, chosen by the file's extension:

* ``.csv`` with a header, and ``.jsonl`` (one object per line): ``intent`` and ``reply``, and
  optionally the customer ``request`` the reply answers (the column may also be called ``text``
  or ``question``; names compared case-insensitively). Without a request, retrieval compares
  the customer's message with the reply itself.
* ``.md`` / ``.markdown``, a FAQ: a level-1 heading ``# intent_name`` sets the intent of the
  answers below it; each level-2 heading ``## question`` starts one answer, the heading being
  the request and everything up to the next level-1 or level-2 heading the reply (kept as
  written: lists, deeper headings and code blocks included). Headings are found by a CommonMark
  parser (markdown-it-py), so a ``#`` line inside a code block is not one.

Every problem is one :class:`bot.errors.DataError` line naming the file, the row (CSV data row,
JSONL line) or line (Markdown), the field, and what was expected.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bot.errors import DataError, SettingError
from bot.records import OUT_OF_SCOPE
from bot.rowfiles import csv_records, jsonl_records, read_text

FIELDS = ("intent", "reply", "request")
"""The fields of an answer; ``request`` is optional."""
REQUEST_NAMES = ("request", "text", "question")
"""Column names / JSON keys taken as the request, in order of preference."""
EXPECTED = "expected the fields intent, reply and optionally request (or text/question)"
SHOWN_INTENTS = 12
"""Known intents listed in an unknown-intent message (the rest are counted)."""


def check_intent(intent: Any, known_intents: Collection[str] | None = None) -> str:
    """``intent`` stripped, when answers may be given for it.

    Args:
        intent: the intent as given.
        known_intents: the intents answers may be for (the production classifier's labels);
            None: any intent but :data:`bot.records.OUT_OF_SCOPE`.

    Raises:
        SettingError: (field ``intent``) not text, empty, :data:`OUT_OF_SCOPE` (never answered)
            or not in ``known_intents``; the problem says what was expected.
    """
    intent = _text("intent", intent)
    if intent is None:
        raise SettingError("intent", "must not be empty (the intent the answer is for)")
    if intent == OUT_OF_SCOPE:
        raise SettingError("intent", f"'{OUT_OF_SCOPE}' is never answered; expected an intent the bot answers")
    if known_intents is not None and intent not in known_intents:
        known = sorted(set(known_intents) - {OUT_OF_SCOPE})
        listed = ", ".join(known[:SHOWN_INTENTS]) + (f", ... ({len(known)} in all)" if len(known) > SHOWN_INTENTS else "")
        raise SettingError("intent", f"'{intent}' is not an intent the production classifier knows "
                                     f"(known: {listed or 'none'})")
    return intent


def check_answer(values: Mapping[str, Any], known_intents: Collection[str] | None = None) -> dict[str, str | None]:
    """One answer as stored (:meth:`bot.store.ConversationStore.add_answers`): ``intent``,
    ``reply`` and ``request`` (None when absent or blank), each stripped.

    Args:
        values: ``intent``, ``reply`` and optionally ``request``, as given.
        known_intents: see :func:`check_intent`.

    Raises:
        SettingError: its ``field`` is the field at fault (``intent``, ``reply``, ``request``),
            its ``problem`` what is wrong and what was expected: a value that is not text, an
            empty reply, or an intent :func:`check_intent` refuses.
    """
    reply = _text("reply", values.get("reply"))
    request = _text("request", values.get("request"))
    intent = check_intent(values.get("intent"), known_intents)
    if reply is None:
        raise SettingError("reply", "must not be empty (the answer's text)")
    return {"intent": intent, "reply": reply, "request": request}


def _text(field: str, value: Any) -> str | None:
    """``value`` stripped, None when missing or blank.

    Raises:
        SettingError: ``value`` is not a string.
    """
    if value is not None and not isinstance(value, str):
        raise SettingError(field, f"must be text, not {type(value).__name__}")
    return (value or "").strip() or None


def read_answers(path: Path, known_intents: Collection[str] | None = None) -> list[dict[str, str | None]]:
    """The answers of a team-answers file (see the module docstring for the formats), in file order.

    Args:
        path: a ``.csv``, ``.jsonl``, ``.md`` or ``.markdown`` file.
        known_intents: see :func:`check_answer`.

    Returns:
        dicts with ``intent``, ``reply`` and ``request`` (str or None), as :func:`check_answer` returns them.

    Raises:
        DataError: unknown extension, unreadable or not UTF-8, malformed CSV/JSON, a missing
            column or key, an answer before any intent heading, text outside an answer, a field
            :func:`check_answer` refuses, or no answer at all; names file, row or line, and field.
    """
    path = Path(path)
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl, ".md": _read_markdown, ".markdown": _read_markdown}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(path, f"unknown format '{path.suffix}'; expected one of {', '.join(readers)}")
    answers = reader(path, known_intents)
    if not answers:
        raise DataError(path, f"no answers found; {EXPECTED}" if reader is not _read_markdown else
                        "no answers found; expected '# intent' headings with '## question' headings and replies below them")
    return answers


@contextmanager
def _located(path: Path, *, row: int | None = None, line: int | None = None, names: Mapping[str, str] | None = None):
    """Turn a :class:`SettingError` of :func:`check_answer` / :func:`check_intent` into a
    :class:`DataError` at ``row`` or ``line`` of ``path`` (``names``: our field -> the file's name for it)."""
    try:
        yield
    except SettingError as exc:
        raise DataError(path, exc.problem, row, (names or {}).get(exc.field, exc.field), line) from None


def _names(path: Path, keys: list[str], row: int | None) -> dict[str, str]:
    """Our field -> the file's column / key (case-insensitive; ``request`` may be missing).

    Raises:
        DataError: no ``intent`` or ``reply`` column / key.
    """
    by_fold = {key.strip().casefold(): key for key in keys}
    names = {}
    for field, accepted in (("intent", ("intent",)), ("reply", ("reply",)), ("request", REQUEST_NAMES)):
        name = next((by_fold[n] for n in accepted if n in by_fold), None)
        if name is not None:
            names[field] = name
        elif field != "request":
            what = "the columns are" if row is None else "the keys are"
            raise DataError(path, f"missing; {what}: {', '.join(keys) or '(none)'}; {EXPECTED}", row, field)
    return names


def _read_csv(path: Path, known: Collection[str] | None) -> list[dict[str, str | None]]:
    header, records = csv_records(path)
    names = _names(path, header, None)
    return [_answer(path, record, names, known, row) for row, record in records]


def _read_jsonl(path: Path, known: Collection[str] | None) -> list[dict[str, str | None]]:
    answers = []
    for row, record in jsonl_records(path):
        answers.append(_answer(path, record, _names(path, list(record), row), known, row))
    return answers


def _answer(path: Path, record: Mapping[str, Any], names: Mapping[str, str], known: Collection[str] | None,
            row: int) -> dict[str, str | None]:
    with _located(path, row=row, names=names):
        return check_answer({ours: record.get(theirs) for ours, theirs in names.items()}, known)


def _read_markdown(path: Path, known: Collection[str] | None) -> list[dict[str, str | None]]:
    from markdown_it import MarkdownIt

    text = read_text(path).replace("\r\n", "\n").replace("\r", "\n")  # lines as markdown-it counts them
    lines = text.split("\n")
    tokens = MarkdownIt("commonmark").parse(text)
    # (level, first line, line after the heading, heading text) of each top-level # and ## heading
    headings = [(int(token.tag[1]), token.map[0], token.map[1], _plain(tokens[i + 1]))
                for i, token in enumerate(tokens)
                if token.type == "heading_open" and token.tag in ("h1", "h2") and token.level == 0]
    answers, intent = [], None
    body_ends = [start for _, start, _, _ in headings[1:]] + [len(lines)]
    _nothing_between(path, lines, 0, headings[0][1] if headings else len(lines))
    for (level, start, end, title), body_end in zip(headings, body_ends):
        if level == 1:
            with _located(path, line=start + 1):
                intent = check_intent(title, known)
            _nothing_between(path, lines, end, body_end)
            continue
        if intent is None:
            raise DataError(path, f"an answer ('## {title}') before any intent heading; expected a "
                                  "'# intent_name' heading above it", line=start + 1)
        values = {"intent": intent, "request": title, "reply": "\n".join(lines[end:body_end])}
        with _located(path, line=start + 1):
            answers.append(check_answer(values))
    return answers


def _plain(inline) -> str:
    """The text of a heading's inline token, without Markdown marks (``# `track_order` `` -> ``track_order``)."""
    return "".join(child.content for child in inline.children or () if child.type in ("text", "code_inline")).strip()


def _nothing_between(path: Path, lines: list[str], start: int, end: int) -> None:
    """Refuse text in ``lines[start:end]`` (0-based): it would belong to no answer."""
    for number in range(start, end):
        if lines[number].strip():
            raise DataError(path, "text outside an answer; expected a '## question' heading above it "
                                  "(under a '# intent_name' heading)", line=number + 1)
