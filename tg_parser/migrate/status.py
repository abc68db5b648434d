"""Where each database stands, read without changing anything.

One answer for every command that reports it (`db current`, `db history`, `db check`, the
`--json` of every read command), so they can never call one database by two names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import inspect

from tg_parser.migrate.errors import Unreadable
from tg_parser.migrate.target import Target

NO_FILE = "no file yet"
EMPTY = "empty"
AT_HEAD = "at head"
BEHIND = "behind head"
NEWER = "newer than this tg-parser"
UNVERSIONED = "no version table: adopted by the next upgrade"
UNREADABLE = "unreadable"


@dataclass
class Status:
    name: str
    location: str
    state: str
    current: list[str]
    heads: list[str]
    problem: str | None = None
    """Why the database cannot be used as it is (unreadable, or newer than this tg-parser)."""

    def as_json(self) -> dict:
        """The keys every database entry of every `--json` output has."""
        return asdict(self)

    @property
    def at_head(self) -> bool:
        return self.state == AT_HEAD


def status(target: Target) -> Status:
    heads = list(target.heads())
    found = Status(target.name, target.location, NO_FILE, [], heads)
    if not target.exists():
        return found
    try:
        found.current = list(target.current())
        unknown = target.unknown_revisions(found.current)
        if unknown:
            found.state = NEWER
            found.problem = f"database is newer than this tg-parser (unknown revision {', '.join(unknown)})"
        elif not found.current:
            found.state = UNVERSIONED if _has_own_tables(target) else EMPTY
        else:
            found.state = AT_HEAD if set(found.current) == set(heads) else BEHIND
    except Unreadable as error:
        found.state, found.problem = UNREADABLE, str(error)
    return found


def _has_own_tables(target: Target) -> bool:
    if not target.holds_data():
        return False
    with target.connect() as connection:
        return bool(set(inspect(connection).get_table_names()) & set(target.db.metadata.tables))


def describe(found: Status) -> str:
    """The revision and its state in a few words, as `db current` prints it."""
    revisions = ", ".join(found.current)
    if found.state == AT_HEAD:
        return f"{revisions} (head)"
    if found.state == BEHIND:
        return f"{revisions} (behind head {', '.join(found.heads)})"
    if found.state == NEWER:
        return f"{revisions} (unknown revision: newer than this tg-parser)"
    if found.state == UNREADABLE:
        return f"(unreadable: {found.problem})"
    return f"({found.state})"
