"""CSV and JSONL files a user brings (training data, team answers): decoded and split into
records here, so every reader refuses the same mistakes with the same one-line
:class:`bot.errors.DataError` (file, row, and what was expected).

Readers of the records' fields: :mod:`training.data` (labelled utterances) and
:mod:`bot.answer_files` (approved answers).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from bot.errors import DataError


def read_text(path: Path) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped).

    Raises:
        DataError: the file cannot be read, or is not UTF-8 (names the byte, offset and line).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            path,
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}); "
            "save the file as UTF-8",
        ) from None


def csv_records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header of a CSV file and its data rows as ``(row number, {column: value})``, rows
    numbered from 1 after the header.

    Raises:
        DataError: not UTF-8, a column named twice in the header, a row with more values than
            columns, or malformed CSV (an unclosed quote...), naming the row.
    """
    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), strict=True)
    try:
        header = list(reader.fieldnames or [])
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise DataError(path, f"column(s) {', '.join(repeated)} appear more than once in the header")
        records = []
        for row, record in enumerate(reader, start=1):
            if None in record:
                raise DataError(path, f"{len(header) + len(record[None])} values for {len(header)} columns", row)
            records.append((row, record))
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV ({exc})", reader.line_num) from None
    return header, records


def jsonl_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a JSONL file as ``(line number, object)``; blank lines are skipped.

    Lines end at ``"\\n"`` only: :meth:`str.splitlines` would also split at U+2028, U+0085 etc.,
    which JSON allows unescaped inside strings.

    Raises:
        DataError: not UTF-8, a line that is not JSON, or a JSON value that is not an object,
            naming the line (as ``row``).
    """
    path = Path(path)
    records = []
    for line_no, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON ({exc.msg} at column {exc.colno})", line_no) from None
        except (ValueError, RecursionError):  # a number over Python's 4300-digit limit, deep nesting
            raise DataError(path, "not usable JSON (a number with too many digits, or nested too deeply)",
                            line_no) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object, got {type(record).__name__}", line_no)
        records.append((line_no, record))
    return records
