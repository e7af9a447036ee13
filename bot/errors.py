"""The one exception family a user can cause; the CLI prints these as one clear line."""

from __future__ import annotations


class SupportbotError(Exception):
    """A user-fixable problem (bad file, missing package, wrong option), with a readable message.

    The command line catches this class, prints ``error: <message>`` and exits with status 2,
    so a user mistake never ends in a bare traceback.

    Attributes:
        setting: the setting (a field name such as ``text_column``) the message names last, after
            any text from the user's files, as the fix; the command line writes its flag there
            (``--text-column``) when the command has one. None when the message names none.
    """

    setting: str | None = None

    def __init__(self, message: str = "", setting: str | None = None):
        super().__init__(message)
        self.setting = setting


class DataError(SupportbotError):
    """A data file that cannot be used as it is; the message names file, row (or ``line``, for a
    text format such as Markdown) and field, on one line (see :func:`one_line`); ``setting`` as
    in :class:`SupportbotError`."""

    def __init__(self, path: object, problem: str, row: int | None = None, field: str | None = None,
                 line: int | None = None, setting: str | None = None):
        where = str(path)
        if row is not None:
            where += f", row {row}"
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(one_line(f"{where}: {problem}"), setting)


class SettingError(SupportbotError):
    """A setting or option out of range, named by its field (``epochs``, ``oos_method``); the
    command line names the matching flag (``--epochs``) instead when the command has one.

    Attributes:
        field: the setting's field name; problem: what is wrong, e.g. ``"must be > 0"``.
    """

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field} {problem}", field)


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters written as escapes (``\\n``,
    ``\\x00``), so that a message quoting a file's content stays one line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class GenerationFailed(Exception):
    """A reply could not be generated (a remote backend refused, timed out or sent garbage, or
    wrote an unknown ``{{Slot}}``); the message is the reason the router logs on the turn, with
    its no-answer reply given to the customer instead."""
