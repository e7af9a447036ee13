"""Load labelled utterances from built-in data sets and user files, and split them.

Formats a user can bring:

* CSV with a header naming the utterance, its intent and optionally a reply; the columns are
  found by name (:data:`TEXT_COLUMNS`, :data:`INTENT_COLUMNS`, :data:`REPLY_COLUMNS`, first match
  wins, case-insensitive) or given (``text_column=``, ``intent_column=``);
* JSONL, one object per line, keys found the same way;
* Rasa NLU YAML (``nlu.yml``): ``nlu: [{intent: NAME, examples: "- utterance\\n- ..."}]``,
  entity mark-up such as ``[Berlin](city)`` reduced to its text
  (https://rasa.com/docs/rasa/training-data-format/).

Rows labelled with an out-of-scope label (:data:`DEFAULT_OOS_LABELS` plus the caller's, compared
case-insensitively) get the intent :data:`bot.records.OUT_OF_SCOPE`: they teach the classifier
what to reject and measure how often it does.

Every problem is a :class:`DataError` naming the file, the row (1-based data row, or line for
JSONL) and the field.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bot.errors import DataError
from bot.rowfiles import csv_records, jsonl_records, read_text
from bot.records import OUT_OF_SCOPE
from training.datasets import BUILTIN, BuiltinDataset, locate, sha256_of

log = logging.getLogger(__name__)

REQUIRED = ("text", "intent")
TEXT_COLUMNS = ("text", "utterance", "sentence", "query", "question", "message", "instruction")
"""Column names taken as the utterance, in order of preference."""
INTENT_COLUMNS = ("intent", "label", "category", "class", "intent_name")
"""Column names taken as the intent label, in order of preference."""
REPLY_COLUMNS = ("reply", "response", "answer")
"""Column names taken as the example reply (optional), in order of preference."""
DEFAULT_OOS_LABELS = ("out_of_scope", "oos")
"""Labels that mark an out-of-scope row in any file (``--oos-label`` adds more)."""
LOGGED_FINDINGS = 5
"""Problems found on loading that are logged; ``supportbot data validate`` lists them all."""


@dataclass(frozen=True)
class Example:
    """One labelled utterance.

    Attributes:
        text: the customer's utterance.
        intent: its intent label.
        reply: an example reply (may hold ``{{Slot}}`` placeholders), or None.
        source: where it came from, ``<file name>:<row>``.
    """

    text: str
    intent: str
    reply: str | None = None
    source: str = ""


@dataclass
class LoadedData:
    """Examples of one data set.

    Attributes:
        name: built-in name or the file's path.
        sha256: sha256 of the file(s) read, joined with ``+`` when there are two.
        examples: the training rows.
        test: the publisher's own test rows, when the data set has an official split.
        columns: our field (``text``, ``intent``, ``reply``) -> the file's column or key that
            was read for it (empty for Rasa files).
    """

    name: str
    sha256: str
    examples: list[Example]
    test: list[Example] | None = None
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def intents(self) -> list[str]:
        """Sorted intent labels of ``examples``, out-of-scope rows excluded."""
        return sorted({e.intent for e in self.examples} - {OUT_OF_SCOPE})

    @property
    def out_of_scope(self) -> list[Example]:
        """The rows labelled out of scope."""
        return [e for e in self.examples if e.intent == OUT_OF_SCOPE]


@dataclass
class Splits:
    """Train / validation / test lists; see :func:`split`."""

    train: list[Example]
    validation: list[Example]
    test: list[Example] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        """Row count of each part."""
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def load(name_or_path: str, data_dir: Path | None = None, home: Path | None = None, *,
         text_column: str | None = None, intent_column: str | None = None,
         oos_labels: tuple[str, ...] | list[str] = ()) -> LoadedData:
    """Load a built-in data set by name (``bitext``, ``banking77``, ``hwu64``) or a user file by
    path.

    Args:
        name_or_path: a key of :data:`training.datasets.BUILTIN` or a ``.csv``/``.jsonl``/
            ``.yml``/``.yaml`` file, or a ``.txt`` file of out-of-scope utterances, one per line
            (a background set of sentences the team writes).
        data_dir: folder searched first for built-in data sets (the ``data_dir`` setting).
        home: the project home (the ``home`` setting); built-in data sets are looked for in and
            downloaded to ``home/data``; None: only ``data_dir`` is searched, nothing downloaded.
        text_column, intent_column: the CSV column / JSONL key of the utterance and of its
            intent; default: found by name (:data:`TEXT_COLUMNS`, :data:`INTENT_COLUMNS`).
        oos_labels: labels that mark out-of-scope rows besides :data:`DEFAULT_OOS_LABELS`; such
            rows get the intent :data:`bot.records.OUT_OF_SCOPE`.

    Raises:
        DataError: the file is missing, unreadable or malformed, or its columns cannot be
            found (names file, row, field, and the columns the file has).
        SupportbotError: a built-in data set is neither in ``data_dir`` nor in ``home/data`` and
            cannot be downloaded (no ``home``, or no network).
    """
    oos = {label.strip().casefold() for label in (*DEFAULT_OOS_LABELS, *oos_labels) if label.strip()}
    if name_or_path in BUILTIN:
        return _with_oos(_load_builtin(BUILTIN[name_or_path], data_dir, home), oos)
    path = Path(name_or_path)
    if path.is_dir():
        raise DataError(path, "is a folder; give a CSV, JSONL or nlu.yml file")
    if not path.is_file():
        raise DataError(
            path, f"no such file, and not a built-in data set (built-in: {', '.join(BUILTIN)})"
        )
    wanted = {"text": text_column, "intent": intent_column}
    readers = {
        ".csv": partial(_read_csv, columns=wanted),
        ".jsonl": partial(_read_jsonl, columns=wanted),
        ".yml": _read_rasa,
        ".yaml": _read_rasa,
        ".txt": _read_lines,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(path, f"unknown format '{path.suffix}'; expected one of {', '.join(readers)}")
    examples, columns = reader(path)
    data = _with_oos(LoadedData(str(path), sha256_of(path), examples, columns=columns), oos)
    _checked(path, data.examples, columns)
    return data


def _with_oos(data: LoadedData, oos: set[str]) -> LoadedData:
    """``data`` with every row whose intent is one of ``oos`` (casefolded) relabelled
    :data:`OUT_OF_SCOPE`."""
    def mapped(rows: list[Example]) -> list[Example]:
        return [Example(e.text, OUT_OF_SCOPE, e.reply, e.source) if e.intent.casefold() in oos else e
                for e in rows]

    data.examples = mapped(data.examples)
    if data.test is not None:
        data.test = mapped(data.test)
    return data


def describe_columns(columns: dict[str, str]) -> str:
    """The columns read, for messages: ``{"text": "sentence", "intent": "label"}`` ->
    ``"text='sentence', intent='label'"`` (``"Rasa nlu.yml"`` when there are none)."""
    return ", ".join(f"{ours}='{theirs}'" for ours, theirs in columns.items()) or "Rasa nlu.yml"


def find_columns(path: Path, header: list[str], wanted: dict[str, str | None]) -> dict[str, str]:
    """Our field -> the file's column: the column ``wanted`` names, else the first of
    :data:`TEXT_COLUMNS` / :data:`INTENT_COLUMNS` / :data:`REPLY_COLUMNS` in ``header``
    (case-insensitive). ``reply`` is left out when the file has none.

    Raises:
        DataError: a wanted column is not in the header, or no text / intent column is found
            (names the file, the columns it has and the names looked for).
    """
    by_fold = {name.strip().casefold(): name for name in header}
    found: dict[str, str] = {}
    for ours, names in (("text", TEXT_COLUMNS), ("intent", INTENT_COLUMNS), ("reply", REPLY_COLUMNS)):
        given = wanted.get(ours)
        if given:
            if given.casefold() not in by_fold:
                raise DataError(path, f"no column '{given}'; the columns are: {', '.join(header) or '(none)'}; "
                                f"give {ours}_column one of them", setting=f"{ours}_column")
            found[ours] = by_fold[given.casefold()]
            continue
        match = next((by_fold[n] for n in names if n in by_fold and by_fold[n] not in found.values()), None)
        if match is not None:
            found[ours] = match
        elif ours in REQUIRED:
            raise DataError(path, f"no {ours} column found; the columns are: {', '.join(header) or '(none)'}; "
                            f"name one {'/'.join(names[:5])} or give {ours}_column", setting=f"{ours}_column")
    return found


def _load_builtin(dataset: BuiltinDataset, data_dir: Path | None, home: Path | None) -> LoadedData:
    train_path = locate(dataset, dataset.train, data_dir, home)
    examples = _checked(train_path, _read_csv(train_path, dict(dataset.columns))[0], dict(dataset.columns), quiet=True)
    digest, test = dataset.train.sha256, None
    if dataset.test is not None:
        test_path = locate(dataset, dataset.test, data_dir, home)
        test = _checked(test_path, _read_csv(test_path, dict(dataset.columns))[0], dict(dataset.columns), quiet=True)
        digest += "+" + dataset.test.sha256
    return LoadedData(dataset.name, digest, examples, test, columns=dict(dataset.columns))


def _example(path: Path, row: int, values: dict[str, object], field_of: dict[str, str]) -> Example:
    """One Example from a row; ``field_of`` maps our field to the file's name for messages."""
    cleaned: dict[str, str | None] = {}
    for key in ("text", "intent", "reply"):
        value = values.get(key)
        if value is not None and not isinstance(value, str):
            raise DataError(path, f"expected a string, got {type(value).__name__}", row, field_of.get(key, key))
        cleaned[key] = value.strip() if isinstance(value, str) else None
    for key in REQUIRED:
        if not cleaned[key]:
            raise DataError(path, f"empty {key}", row, field_of.get(key, key))
    return Example(cleaned["text"], cleaned["intent"], cleaned["reply"] or None, f"{path.name}:{row}")


def _read_csv(path: Path, columns: dict[str, str | None]) -> tuple[list[Example], dict[str, str]]:
    """Rows of a CSV file and the columns read (see :func:`find_columns`)."""
    header, records = csv_records(path)
    found = find_columns(path, header, columns)
    return [_example(path, row, {ours: record.get(theirs) for ours, theirs in found.items()}, found)
            for row, record in records], found


def _read_jsonl(path: Path, columns: dict[str, str | None]) -> tuple[list[Example], dict[str, str]]:
    """Objects of a JSONL file (keys found as CSV columns are) and the keys read."""
    examples: list[Example] = []
    found: dict[str, str] = {}
    for line_no, record in jsonl_records(path):
        found = find_columns(path, list(record), columns)  # keys may differ per object (reply is optional)
        values = {ours: record.get(theirs) for ours, theirs in found.items()}
        examples.append(_example(path, line_no, values, found))
    return examples, found


_RASA_ENTITY = re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\{[^}]*\})")


def _read_lines(path: Path) -> tuple[list[Example], dict[str, str]]:
    """Non-blank lines of a text file, each an out-of-scope utterance."""
    rows = [(i, line.strip()) for i, line in enumerate(read_text(path).splitlines(), start=1)]
    return [Example(text, OUT_OF_SCOPE, None, f"{path.name}:{i}") for i, text in rows if text], {"text": "line"}


def _read_rasa(path: Path) -> tuple[list[Example], dict[str, str]]:
    import yaml

    try:
        document = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(path, f"not valid YAML ({getattr(exc, 'problem', exc)})",
                        mark.line + 1 if mark else None) from None
    blocks = document.get("nlu") if isinstance(document, dict) else None
    if not isinstance(blocks, list):
        raise DataError(path, "expected a top-level 'nlu:' list (Rasa NLU training data)", field="nlu")
    examples = []
    for number, block in enumerate(blocks, start=1):
        if not isinstance(block, dict) or "intent" not in block:
            continue  # synonyms, regexes and lookup tables are not intents
        intent = str(block["intent"] or "").strip()
        if not intent:
            raise DataError(path, "an intent without a name", number, "intent")
        lines = block.get("examples")
        if not isinstance(lines, str):
            raise DataError(path, f"intent '{intent}': 'examples' must be a '- utterance' block", number, "examples")
        for line in lines.splitlines():
            text = _RASA_ENTITY.sub(r"\1", line.strip().removeprefix("-").strip())
            if text:
                values = {"text": text, "intent": intent}
                examples.append(_example(path, number, values, {"text": "examples"}))
    return examples, {}


def _checked(path: Path, examples: list[Example], columns: dict[str, str], quiet: bool = False) -> list[Example]:
    """Refuse an empty file; log the first problems :func:`training.validate.load_findings` finds
    (the same utterance under two intents, single-example intents, intent names differing only
    in case) and point at ``supportbot data validate`` for the rest. ``quiet``: a built-in data
    set, which is what its publisher made (``data validate`` still lists its problems)."""
    if not examples:
        raise DataError(path, "no examples found")
    if quiet:
        return examples
    from training.validate import load_findings  # not at the top: training.validate imports this module

    findings = load_findings(str(path), examples, columns)
    for finding in findings[:LOGGED_FINDINGS]:
        log.warning("%s: %s", finding.where, finding.problem)
    if len(findings) > LOGGED_FINDINGS:
        log.warning("%s: %d more problem(s); `supportbot data validate %s` lists them all",
                    path, len(findings) - LOGGED_FINDINGS, path)
    return examples


def split(data: LoadedData, seed: int = 42, validation: float = 0.1, test: float = 0.1) -> Splits:
    """Stratified train/validation/test split by intent, fixed by ``seed``.

    When the data set has an official test split it is used as ``test`` unchanged and only the
    validation part is carved out of the training rows. Intents with fewer than three examples
    stay in ``train`` (stratification needs at least one per part). Uses
    ``sklearn.model_selection.train_test_split`` (NumPy's legacy RandomState: the same rows on
    every machine for the same file and seed).

    Args:
        validation, test: fractions of all rows, each in (0, 0.5).
    """
    counts = Counter(e.intent for e in data.examples)
    try:
        return _split(data, counts, seed, validation, test)
    except ValueError:  # scikit-learn: too few rows for the requested parts
        raise DataError(
            data.name, f"too few rows to make train/validation/test splits ({len(data.examples)} rows, "
            f"{len(counts)} intents; give each intent at least 10 examples)") from None


def _split(data: LoadedData, counts: Counter, seed: int, validation: float, test: float) -> Splits:
    from sklearn.model_selection import train_test_split

    rare = [e for e in data.examples if counts[e.intent] < 3]
    pool = [e for e in data.examples if counts[e.intent] >= 3]
    if data.test is None:
        pool, held = train_test_split(pool, test_size=test, random_state=seed,
                                      stratify=[e.intent for e in pool])
    else:
        held = list(data.test)
    share = validation if data.test is not None else validation / (1 - test)
    train, val = train_test_split(pool, test_size=share, random_state=seed,
                                  stratify=[e.intent for e in pool])
    return Splits(train + rare, val, held)
