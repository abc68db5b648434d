"""Where each database stands, read without changing anything.

One answer for every command that reports it (`db current`, `db history`, `db check`, the
`--json` of every read command), so they can never call one database by two names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import inspect

from tg_parser.migrate.errors import Unreadable
from tg_parser.migrate.target import Target
from tg_parser.storage.lock import LockTimeout

NO_FILE = "no file yet"
EMPTY = "empty"
AT_HEAD = "at head"
BEHIND = "behind head"
NEWER = "newer than this tg-parser"
UNVERSIONED = "no version table: adopted by the next upgrade"
EARLIER = "revision, adopted by the next upgrade"
"""After the release's name: `TG_parser 3.1 revision, adopted by the next upgrade`."""
UNREADABLE = "unreadable"
BUSY = "in use by another process"


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

    @property
    def adoptable(self) -> bool:
        """Made by an earlier release: the next upgrade adopts it (or says why it cannot)."""
        return self.state == UNVERSIONED or self.state.endswith(EARLIER)


def status(target: Target) -> Status:
    heads = list(target.heads())
    found = Status(target.name, target.location, NO_FILE, [], heads)
    if not target.exists():
        return found
    try:
        found.current = list(target.current())
        unknown = target.unknown_revisions(found.current)
        release = target.db.earlier_release(tuple(found.current))
        if release:
            found.state = f"{release} {EARLIER}"
        elif unknown:
            found.state = NEWER
            found.problem = f"database is newer than this tg-parser (unknown revision {', '.join(unknown)})"
        elif not found.current:
            found.state = UNVERSIONED if _has_own_tables(target) else EMPTY
        else:
            found.state = AT_HEAD if set(found.current) == set(heads) else BEHIND
    except Unreadable as error:
        found.state, found.problem = UNREADABLE, str(error)
    except LockTimeout as error:
        found.state, found.problem = BUSY, str(error)
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
    if found.adoptable:
        return f"{revisions} ({found.state})" if revisions else f"({found.state})"
    if found.state == UNREADABLE:
        return f"(unreadable: {found.problem})"
    if found.state == BUSY:
        return f"({found.problem})"
    return f"({found.state})"
