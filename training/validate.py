"""Check a labelled data file before training: ``supportbot data validate``.

Cheap checks, no model: the same utterance under two intents, duplicates, train/test leakage,
intents with too few examples, labels that look out of scope but are not mapped, and a file
whose only label is the out-of-scope one. The result is a :class:`ValidationReport`; this module
prints nothing (the command line prints each :class:`Finding` as one line and exits 1 when there
is an error, so the check can gate CI).

Utterances are compared after :func:`normalise` (Unicode NFKC, casefold, punctuation and symbols
dropped, whitespace collapsed); near-duplicates also ignore digits (:func:`normalise_loosely`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bot.records import OUT_OF_SCOPE
from training.data import Example, LoadedData, describe_columns, load

MIN_EXAMPLES = 5
"""Intents with fewer training rows than this get a warning (``--min-examples``)."""
LIKELY_OOS_LABELS = frozenset({
    "none", "other", "others", "fallback", "nlu_fallback", "default_fallback", "unknown", "misc",
    "miscellaneous", "no_intent", "nointent", "null", "na", "n_a", "irrelevant", "unsupported",
    "out_of_domain", "ood", "outofscope", "not_supported", "off_topic", "garbage", "noise",
})
"""Intent labels (after casefolding, ``-`` and spaces as ``_``) that usually mark out-of-scope
rows; a file using one without ``--oos-label`` gets a warning."""
SHOWN_ROWS = 8
"""Rows listed in one finding; the rest are counted."""

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem in a data file.

    Attributes:
        severity: ``error`` (training or evaluation on this file would be wrong) or ``warning``.
        file: the file (or built-in data set) it is in.
        rows: 1-based data rows (JSONL: lines; Rasa: intent blocks) it concerns; may be empty.
        field: the file's column (or key) concerned, or None.
        problem: what is wrong and what to do, one line.
        setting: the option the problem names last as the fix (``oos_label``), or None; the
            command line writes its flag there (:class:`bot.errors.SupportbotError`'s ``setting``).
    """

    severity: Severity
    file: str
    problem: str
    rows: tuple[int, ...] = ()
    field: str | None = None
    setting: str | None = None

    @property
    def where(self) -> str:
        """``"<file>, rows 3, 7, field 'text'"``."""
        where = self.file
        if self.rows:
            where += f", {_row_list(self.rows)}"
        if self.field:
            where += f", field '{self.field}'"
        return where

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.problem}"


@dataclass(frozen=True)
class FileSummary:
    """What was read from one file.

    Attributes:
        file: the file or built-in data set name.
        rows: data rows read.
        intents: intents other than out of scope.
        out_of_scope: rows labelled out of scope (after mapping the out-of-scope labels).
        columns: our field (``text``, ``intent``, ``reply``) -> the file's column or key read.
    """

    file: str
    rows: int
    intents: int
    out_of_scope: int
    columns: dict[str, str]

    def __str__(self) -> str:
        return (f"{self.file}: {self.rows} rows, {self.intents} intents, {self.out_of_scope} out-of-scope; "
                f"columns: {describe_columns(self.columns)}")


@dataclass
class ValidationReport:
    """Findings about a training file and an optional test file.

    Attributes:
        files: a summary per file read, training file first.
        findings: errors first, then warnings, each in the order found.
    """

    files: list[FileSummary]
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        """The findings of severity ``error``."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """The findings of severity ``warning``."""
        return [f for f in self.findings if f.severity == "warning"]


def validate(train: str, test: str | None = None, *, data_dir: Path | None = None, home: Path | None = None,
             text_column: str | None = None, intent_column: str | None = None,
             oos_labels: Iterable[str] = (), min_examples: int = MIN_EXAMPLES) -> ValidationReport:
    """Load ``train`` (and ``test``) as training would and check them.

    Args:
        train: a CSV/JSONL/nlu.yml file or a built-in data set name (its official test split,
            if any, is checked as the test file when ``test`` is not given).
        test: a test file checked against ``train`` for leakage.
        data_dir, home: where built-in data sets are found (see :func:`training.data.load`).
        text_column, intent_column, oos_labels: as for :func:`training.data.load`, for both files.
        min_examples: intents with fewer training rows get a warning (one row: an error).

    Returns:
        the report; ``report.errors`` is empty when the files can be used.

    Raises:
        DataError: a file cannot be read at all (missing, malformed, no text/intent column).
    """
    options = {"data_dir": data_dir, "home": home, "text_column": text_column,
               "intent_column": intent_column, "oos_labels": tuple(oos_labels)}
    train_data = load(train, **options)
    test_name, test_rows, test_columns = None, None, train_data.columns
    if test is not None:
        test_data = load(test, **options)
        test_name, test_rows, test_columns = test_data.name, test_data.examples, test_data.columns
    elif train_data.test is not None:
        test_name, test_rows = f"{train_data.name} (test split)", train_data.test
    return check(train_data, test_name, test_rows, test_columns, min_examples=min_examples)


def check(train: LoadedData, test_name: str | None = None, test: list[Example] | None = None,
          test_columns: dict[str, str] | None = None, *, min_examples: int = MIN_EXAMPLES) -> ValidationReport:
    """The checks of :func:`validate` on rows already loaded.

    Args:
        train: the training data (``train.examples``, ``train.columns``, ``train.name``).
        test_name, test, test_columns: the test file's name, rows and columns, or None.
        min_examples: see :func:`validate`.
    """
    text_field, intent_field = _fields(train.columns)
    report = ValidationReport([_summary(train.name, train.examples, train.columns)])
    found = list(_duplicates(train.name, train.examples, text_field))
    found += _too_few(train.name, train.examples, intent_field, min_examples)
    found += _case_variants(train.name, train.examples, intent_field)
    found += _unmapped_oos(train.name, train.examples, intent_field)
    if train.examples and all(e.intent == OUT_OF_SCOPE for e in train.examples):
        found.append(Finding("error", train.name, "the only label is the out-of-scope label: every row is "
                             "out of scope; add rows of the intents to answer", field=intent_field))
    if test is not None and test_name is not None:
        columns = test_columns if test_columns is not None else train.columns
        report.files.append(_summary(test_name, test, columns))
        test_text, test_intent = _fields(columns)
        found += _duplicates(test_name, test, test_text)
        found += _unmapped_oos(test_name, test, test_intent)
        found += _leakage(train.name, train.examples, test_name, test, test_text)
        found += _unseen_intents(train.examples, test_name, test, test_intent)
    report.findings = sorted(found, key=lambda f: f.severity != "error")
    return report


def load_findings(name: str, examples: list[Example], columns: dict[str, str]) -> list[Finding]:
    """What :func:`training.data.load` warns about in every file it reads: the same utterance
    under two intents, intents with a single example, intent names that differ only in case.

    Args:
        name: the file, as findings name it.
        examples: its rows; columns: our field -> the file's column (see ``LoadedData.columns``).
    """
    text_field, intent_field = _fields(columns)
    found = [f for f in _duplicates(name, examples, text_field) if f.severity == "error"]
    found += [f for f in _too_few(name, examples, intent_field, MIN_EXAMPLES) if f.severity == "error"]
    return found + list(_case_variants(name, examples, intent_field))


def _fields(columns: dict[str, str]) -> tuple[str, str]:
    """The file's names of the utterance and intent fields (Rasa: ``examples``, ``intent``)."""
    return columns.get("text", "text" if columns else "examples"), columns.get("intent", "intent")


def normalise(text: str) -> str:
    """``text`` for comparison: NFKC, casefolded, punctuation and symbols dropped, whitespace
    collapsed (``"Where's my ORDER?!"`` -> ``"wheres my order"``)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(c for c in folded if not unicodedata.category(c).startswith(("P", "S")))
    return " ".join(kept.split())


def normalise_loosely(text: str) -> str:
    """:func:`normalise` with digits dropped too, for near-duplicates (``"order 4471"`` ~
    ``"order 9"``)."""
    return " ".join(re.sub(r"\d+", " ", normalise(text)).split())


def _row(example: Example) -> int:
    """The 1-based row of ``example`` (from its ``source``, ``<file>:<row>``); 0 if unknown."""
    tail = example.source.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def _row_list(rows: tuple[int, ...]) -> str:
    """``(3, 7)`` -> ``"rows 3, 7"``; at most :data:`SHOWN_ROWS` listed, the rest counted."""
    shown = ", ".join(map(str, rows[:SHOWN_ROWS]))
    more = f" (+{len(rows) - SHOWN_ROWS} more)" if len(rows) > SHOWN_ROWS else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _rows(examples: Iterable[Example]) -> tuple[int, ...]:
    return tuple(sorted({_row(e) for e in examples}))


def _summary(name: str, examples: list[Example], columns: dict[str, str]) -> FileSummary:
    intents = {e.intent for e in examples} - {OUT_OF_SCOPE}
    return FileSummary(name, len(examples), len(intents), sum(e.intent == OUT_OF_SCOPE for e in examples),
                       dict(columns))


def _quoted(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _duplicates(name: str, examples: list[Example], text_field: str) -> Iterable[Finding]:
    """The same normalised utterance under two or more intents (error), or more than once
    under one intent (warning)."""
    groups: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        groups[normalise(e.text)].append(e)
    for rows in groups.values():
        if len(rows) < 2:
            continue
        by_intent: dict[str, list[Example]] = defaultdict(list)
        for e in rows:
            by_intent[e.intent].append(e)
        if len(by_intent) > 1:
            labels = ", ".join(f"{intent} ({_row_list(_rows(r))})" for intent, r in by_intent.items())
            yield Finding("error", name, f"the same utterance {_quoted(rows[0].text)} is labelled with "
                          f"{len(by_intent)} intents: {labels}; keep one", _rows(rows), text_field)
        else:
            yield Finding("warning", name, f"utterance {_quoted(rows[0].text)} appears {len(rows)} times "
                          f"under {rows[0].intent}; duplicates weigh it more in training", _rows(rows), text_field)


def _too_few(name: str, examples: list[Example], intent_field: str, minimum: int) -> Iterable[Finding]:
    """Intents (out of scope excepted) with one row (error) or fewer than ``minimum`` (warning)."""
    by_intent: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        if e.intent != OUT_OF_SCOPE:
            by_intent[e.intent].append(e)
    for intent, rows in sorted(by_intent.items(), key=lambda item: (len(item[1]), item[0])):
        if len(rows) == 1:
            yield Finding("error", name, f"intent {intent!r} has a single example: it cannot be split or "
                          f"cross-validated; add at least {minimum}", _rows(rows), intent_field)
        elif len(rows) < minimum:
            yield Finding("warning", name, f"intent {intent!r} has {len(rows)} examples (fewer than "
                          f"{minimum}); add more", _rows(rows), intent_field)


def _case_variants(name: str, examples: list[Example], intent_field: str) -> Iterable[Finding]:
    """Intent names that differ only in case (they are different intents)."""
    spellings: dict[str, Counter] = defaultdict(Counter)
    for e in examples:
        spellings[e.intent.casefold()][e.intent] += 1
    for names in spellings.values():
        if len(names) > 1:
            yield Finding("warning", name, f"intent names that differ only in case are different intents: "
                          f"{', '.join(sorted(names))}; rename to merge them", field=intent_field)


def _unmapped_oos(name: str, examples: list[Example], intent_field: str) -> Iterable[Finding]:
    """Rows whose label looks out of scope (:data:`LIKELY_OOS_LABELS`) but was not mapped."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        if re.sub(r"[\s\-]+", "_", e.intent.strip().casefold()) in LIKELY_OOS_LABELS:
            by_label[e.intent].append(e)
    for label, rows in by_label.items():
        yield Finding("warning", name, f"{len(rows)} row(s) labelled {label!r} look out of scope but are "
                      f"trained as an intent; pass oos_label {label} if they are", _rows(rows), intent_field,
                      "oos_label")


def _leakage(train_name: str, train: list[Example], test_name: str, test: list[Example],
             text_field: str) -> Iterable[Finding]:
    """Test utterances also in the training file (error) or equal to one but for digits (warning)."""
    exact: dict[str, list[Example]] = defaultdict(list)
    loose: dict[str, list[Example]] = defaultdict(list)
    for e in train:
        exact[normalise(e.text)].append(e)
        loose[normalise_loosely(e.text)].append(e)
    leaked, near = [], []
    for e in test:
        if normalise(e.text) in exact:
            leaked.append((e, exact[normalise(e.text)]))
        elif normalise_loosely(e.text) and normalise_loosely(e.text) in loose:
            near.append((e, loose[normalise_loosely(e.text)]))
    if leaked:
        example, twins = leaked[0]
        yield Finding("error", test_name, f"{len(leaked)} test utterance(s) are also in {train_name}, e.g. "
                      f"{_quoted(example.text)} (train row {_row(twins[0])}); the test score would be "
                      "too high: remove them from one file", _rows(e for e, _ in leaked), text_field)
    if near:
        example, twins = near[0]
        yield Finding("warning", test_name, f"{len(near)} test utterance(s) differ from a training utterance "
                      f"only in digits, e.g. {_quoted(example.text)} ~ {_quoted(twins[0].text)} "
                      f"(train row {_row(twins[0])})", _rows(e for e, _ in near), text_field)


def _unseen_intents(train: list[Example], test_name: str, test: list[Example],
                    intent_field: str) -> Iterable[Finding]:
    """Test intents with no training row: the classifier can never answer them."""
    known = {e.intent for e in train} | {OUT_OF_SCOPE}
    unseen: dict[str, list[Example]] = defaultdict(list)
    for e in test:
        if e.intent not in known:
            unseen[e.intent].append(e)
    for intent, rows in sorted(unseen.items()):
        yield Finding("warning", test_name, f"intent {intent!r} has no training rows; the classifier "
                      "cannot predict it", _rows(rows), intent_field)
