"""The ways a migration command can end badly, in a module light enough for every command to import."""

from __future__ import annotations


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
