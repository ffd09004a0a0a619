"""The few exception types tunegate raises on purpose.

Each carries a message meant for a person: what went wrong, where, and what to change.
"""

from __future__ import annotations

from typing import Any


class TunegateError(Exception):
    """Base class for errors that tunegate reports without a traceback."""

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt as raised (message, attributes), not by calling ``__init__`` again: checks that run in a process
        # of their own (:mod:`tunegate.core.checks._parallel`) send their errors back pickled
        return _restore, (type(self), self.args, dict(self.__dict__))


def _restore(cls: type[TunegateError], args: tuple[Any, ...], state: dict[str, Any]) -> TunegateError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class InputError(TunegateError):
    """An input cannot be read at all: missing file, unknown format, unreadable container.

    Record-level problems never raise this: they become rows in ``rejected.jsonl``.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class ConfigError(TunegateError):
    """A policy file, suite file or argument is invalid; raised at construction time."""


class BatchHalted(TunegateError):
    """The gate decided ``halt``. Carries the bounded, human-readable reasons."""

    def __init__(self, message: str, reasons: list[str]) -> None:
        super().__init__(message)
        self.reasons = reasons


class HistoryError(TunegateError):
    """The history cannot be used as it is: damaged, partly missing, locked, or made another way."""


class HistoryConflict(HistoryError):
    """The history moved on (another batch was added) after this batch was checked against it: publishing
    now could accept records that duplicate the new ones. Re-check the batch, then publish."""


class ReviewError(TunegateError):
    """A review decision cannot be made as asked: an unknown record, a halted night, a record already decided
    the other way (without ``--override``), a selector that matches nothing."""
