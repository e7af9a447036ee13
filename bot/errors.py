"""The one exception family a user can cause; the CLI prints these as one clear line."""

from __future__ import annotations


class SupportbotError(Exception):
    """A user-fixable problem (bad file, missing package, wrong option), with a readable message.

    The command line catches this class, prints ``error: <message>`` and exits with status 2,
    so a user mistake never ends in a bare traceback.
    """


class DataError(SupportbotError):
    """A data file that cannot be used as it is; the message names file, row and field."""

    def __init__(self, path: object, problem: str, row: int | None = None, field: str | None = None):
        where = str(path)
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {problem}")
