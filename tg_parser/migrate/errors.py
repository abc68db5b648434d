"""The ways a migration command can end badly, in a module light enough for every command to import."""

from __future__ import annotations

import sqlite3

from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError


class Refused(RuntimeError):
    """A check made before any change failed, so nothing was changed."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class UsageProblem(ValueError):
    """The command asks for something impossible (an unknown or unreachable revision); nothing was touched."""


class MigrationFailed(RuntimeError):
    """A database failed to migrate; `outcomes` tells what became of each database.

    `partial` is true only when the final commits were cut off: some databases committed,
    the rest rolled back (running the same command again finishes the job).
    """

    def __init__(self, name: str, message: str, outcomes: list, partial: bool = False):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.outcomes = outcomes
        self.partial = partial


class Unreadable(RuntimeError):
    """The database cannot be opened or is not a database at all."""


def describe_error(error: BaseException) -> str:
    """One line: the driver's own message for a database error, without SQLAlchemy's statement dump
    and link, or a driver's line breaks.

    When cleaning up after an error raised another (Alembic's batch mode drops its temporary
    table after a full disk had already rolled the transaction back), the first error is the cause.
    """
    if isinstance(error, CommandError):
        return str(error)
    first = error
    while first.__context__ is not None and isinstance(first.__context__, (DBAPIError, sqlite3.Error)):
        first = first.__context__
    if isinstance(first, DBAPIError) and first.orig is not None:
        first = first.orig
    return f"{type(first).__name__}: {' '.join(str(first).split())}"
