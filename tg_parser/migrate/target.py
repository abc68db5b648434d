"""One database as the orchestrator sees it: where it lives and its Alembic project."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DatabaseError, OperationalError

from tg_parser.core.settings import Settings
from tg_parser.migrate.errors import Unreadable
from tg_parser.storage.databases import Database
from tg_parser.storage.engine import SQLITE_BUSY_TIMEOUT_S, make_engine
from tg_parser.storage.lock import file_identity, is_busy, timed_out


@dataclass(frozen=True)
class Target:
    db: Database
    url: URL
    location: str
    sqlite_file: Path | None
    lock_timeout: float = SQLITE_BUSY_TIMEOUT_S
    """How long a read waits while another process holds the database locked (TG_PARSER_LOCK_TIMEOUT)."""

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> Target:
        return cls(db, settings.url(db), settings.location(db), settings.sqlite_file(db), settings.lock_timeout)

    @classmethod
    def in_memory(cls, db: Database) -> Target:
        """A throwaway target, for working out what a revision does to an empty schema."""
        return cls(db, URL.create("sqlite"), ":memory:", None)

    @property
    def name(self) -> str:
        return self.db.name

    def config(self, connection: Connection | None = None, output=None) -> Config:
        """The project's own alembic.ini; the connection and URL travel in `attributes`, never in the ini."""
        config = Config(str(self.db.alembic_ini), output_buffer=output, stdout=output or sys.stdout)
        config.attributes["url"] = self.url
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    @cached_property
    def script(self) -> ScriptDirectory:
        return ScriptDirectory.from_config(self.config())

    def heads(self) -> tuple[str, ...]:
        return tuple(self.script.get_heads())

    def has_revision(self, revision: str) -> bool:
        """Whether this project has `revision` (an id, a unique prefix of one, or a branch label)."""
        try:
            return bool(self.script.get_revisions(revision))
        except CommandError:
            return False

    def unknown_revisions(self, revisions) -> list[str]:
        """Those of `revisions` this project does not have: the database is newer than this code
        (an earlier release's own revision, which the next upgrade adopts, is not unknown)."""
        if self.db.earlier_release(tuple(revisions)):
            return []
        known = {script.revision for script in self.script.walk_revisions()}
        return [revision for revision in revisions if revision not in known]

    @property
    def identity(self) -> tuple:
        """Equal for two targets that are one database: a file by device and inode, a server by URL."""
        if self.sqlite_file is not None:
            return ("file", *file_identity(self.sqlite_file))
        return ("server", self.url.render_as_string(hide_password=False))

    def exists(self) -> bool:
        """False only for a SQLite file that is not there yet."""
        return self.sqlite_file is None or self.sqlite_file.exists()

    def holds_data(self) -> bool:
        """True unless a SQLite file is missing or empty (a server database always counts)."""
        return self.sqlite_file is None or (self.sqlite_file.exists() and self.sqlite_file.stat().st_size > 0)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection to read the database; on a server, its reads are one snapshot (REPEATABLE
        READ), so a plan never sees half of another run's commit (tables without their version)."""
        engine = make_engine(self.url, busy_timeout=self.lock_timeout)
        if self.sqlite_file is None and self.url.get_backend_name() == "postgresql":
            engine = engine.execution_options(isolation_level="REPEATABLE READ")
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()

    def current(self, connection: Connection | None = None) -> tuple[str, ...]:
        """The revisions the database is at; empty for a new or unversioned database.

        Read through `connection` when given (a run's held transaction), else a connection of its own.
        A SQLite file another process keeps locked past the lock timeout raises LockTimeout.
        """
        if not self.exists():
            return ()
        try:
            if connection is not None:  # never open the file outside SQLite while a lock is held on it
                return self._read_version(connection)
            if self.sqlite_file is not None and not _looks_like_sqlite(self.sqlite_file):
                raise Unreadable(f"{self.sqlite_file} is not a SQLite database")
            with self.connect() as own:
                return self._read_version(own)
        except (DatabaseError, OperationalError) as error:
            if is_busy(error):
                raise timed_out(self.location, self.lock_timeout) from None
            raise Unreadable(f"cannot read {self.location}: {error.orig}") from error

    def _read_version(self, connection: Connection) -> tuple[str, ...]:
        context = MigrationContext.configure(connection, opts={"version_table": self.db.version_table})
        return tuple(context.get_current_heads())


def _looks_like_sqlite(path: Path) -> bool:
    """An empty file is a new database to SQLite; anything else must carry its header."""
    with path.open("rb") as file:
        header = file.read(16)
    return header in (b"", b"SQLite format 3\x00")
