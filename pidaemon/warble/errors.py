"""Warble's errors: one exception type for users, one plain record for results.

A `WarbleError` always carries a message meant for the person who wrote the
program, and the line and column (1-based) of the place that failed when one
is known. Its `status` says which kind of ending it is in a `Result`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# How alike (difflib's ratio, case ignored) a name must be to be suggested:
# PRNT/PRINT 0.89, totl/total 0.89, SQR/SQRT 0.86, POWER/POW 0.75, but not
# ABX/ABS or xy/x (0.67): for names this short one wrong letter is a guess.
SUGGESTION_CUTOFF = 0.7


@dataclass(frozen=True)
class ErrorInfo:
    """The error part of a `Result`: what went wrong and where."""

    message: str
    line: int | None = None
    column: int | None = None

    def to_dict(self) -> dict:
        return {"message": self.message, "line": self.line, "column": self.column}

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"line {self.line}, column {self.column}: {self.message}"


def closest_name(word: str, names: Iterable[str]) -> str | None:
    """The one of `names` most like `word`, case ignored, or None if none is alike enough."""
    import difflib   # only on the way to an error message

    by_key: dict[str, str] = {}
    for name in sorted(names):
        if name != word:
            by_key.setdefault(name.upper(), name)
    close = difflib.get_close_matches(word.upper(), list(by_key), n=1, cutoff=SUGGESTION_CUTOFF)
    return by_key[close[0]] if close else None


def did_you_mean(word: str, names: Iterable[str]) -> str:
    """"; did you mean NAME?" to end an error message with, or "" when no name is close."""
    name = closest_name(word, names)
    return f"; did you mean {name}?" if name else ""


class WarbleError(Exception):
    """An error in a Warble program (syntax, runtime or a limit reached).

    Built-ins (also those that plugins add) raise it with just a message from
    `validate` or `perform`; the runtime fills in the line and column of the
    call.
    """

    status = "error"

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def at(self, line: int | None, column: int | None) -> "WarbleError":
        """Set the position unless one is already known; returns self."""
        if self.line is None and line is not None:
            self.line, self.column = line, column
        return self

    def info(self) -> ErrorInfo:
        return ErrorInfo(self.message, self.line, self.column)

    def __str__(self) -> str:
        return str(self.info())


class UnknownFunction(WarbleError):
    """A call of a function that is neither Warble's nor one of the given built-ins.

    `name` is the name as written. A service that compiles without the
    workers' plugins asks `may_be_plugin_builtin` instead of reading the message.
    """

    def __init__(self, name: str, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message, line, column)
        self.name = name

    @property
    def may_be_plugin_builtin(self) -> bool:
        """Whether a plugin could add a built-in of this name: built-in names are upper case."""
        return self.name.isupper()


class StepLimitExceeded(WarbleError):
    status = "step_limit"


class TimeLimitExceeded(WarbleError):
    status = "timeout"


class OutputLimitExceeded(WarbleError):
    status = "output_limit"


class MemoryLimitExceeded(WarbleError):
    status = "memory_limit"


class QuotaExceeded(WarbleError):
    """SAVE went over a store quota (key count, value size, writes per run)."""
