"""The ways a migration command can end badly, in a module light enough for every command to import."""

from __future__ import annotations


class Refused(RuntimeError):
    """A check made before any change failed, so nothing was changed."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class MigrationFailed(RuntimeError):
    """A database failed to migrate; `outcomes` tells what became of each database."""

    def __init__(self, name: str, message: str, outcomes: list):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.outcomes = outcomes


class Unreadable(RuntimeError):
    """The database cannot be opened or is not a database at all."""
