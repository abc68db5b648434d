"""One held-open transaction per database: where a run's all-or-nothing comes from.

Each selected database gets one connection whose transaction begins, holding the database's
write lock, before anything is read (`tg_parser.storage.lock`). Alembic runs inside it: a
connection already in a transaction is neither begun nor committed by Alembic. Nothing is
committed until every database has succeeded; on a failure, Ctrl-C or SIGTERM everything
is rolled back. Databases that share one server database share one connection, so their
changes commit as one transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, Engine, RootTransaction

from tg_parser.core.events import emit
from tg_parser.migrate.interrupt import watch_sqlite
from tg_parser.migrate.target import Target
from tg_parser.storage.engine import make_engine
from tg_parser.storage.lock import begin_locked, lock_project


log = logging.getLogger(__name__)


@dataclass
class Held:
    engine: Engine
    connection: Connection
    transaction: RootTransaction | None
    names: list[str] = field(default_factory=list)
    locked_at: float = field(default_factory=time.monotonic)
    state: str = "open"
    """open, committed or rolled back."""

    @property
    def held_seconds(self) -> float:
        return time.monotonic() - self.locked_at


class HeldTransactions:
    """Opens the transactions in the fixed upgrade order, so two runs can never deadlock."""

    def __init__(
        self,
        targets: Sequence[Target],
        timeout: float,
        on_wait: Callable[[Target], None] | None = None,
        exclusive: bool = False,
        quiet: bool = False,
    ):
        """`exclusive`: SQLite's BEGIN EXCLUSIVE (see make_engine); `quiet`: no events for an attempt
        that is only trying the locks (a run retries them all together)."""
        self._targets = sorted(targets, key=lambda t: t.db.order)
        self._exclusive = exclusive
        self._quiet = quiet
        self._timeout = timeout
        self._on_wait = on_wait
        self._held: dict[tuple, Held] = {}
        self._of: dict[str, Held] = {}
        self._revisions: dict[str, list[str]] = {}

    def __enter__(self) -> HeldTransactions:
        try:
            for target in self._targets:
                self._open(target)
        except BaseException:
            self.rollback()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.rollback(type(exc[1]).__name__ if exc[1] is not None else "not committed")

    def _open(self, target: Target) -> None:
        asked = time.monotonic()

        def wait() -> None:
            if self._quiet:
                return
            emit(log, "lock_waiting", logging.WARNING, database=target.name, timeout=self._timeout)
            if self._on_wait:
                self._on_wait(target)

        held = self._held.get(target.identity)
        if held is None:
            engine = make_engine(target.url, write_lock=True, busy_timeout=self._timeout, exclusive=self._exclusive)
            connection = engine.connect()
            held = Held(engine, connection, None)
            self._held[target.identity] = held
            if connection.dialect.name == "sqlite":
                watch_sqlite(connection.connection.driver_connection)
            held.transaction = begin_locked(connection, target.db.version_table, target.location, self._timeout, wait)
            held.locked_at = time.monotonic()
        else:
            lock_project(held.connection, target.db.version_table, target.location, self._timeout, wait)
        held.names.append(target.name)
        self._of[target.name] = held
        if not self._quiet:
            emit(log, "lock_acquired", database=target.name, waited_seconds=round(time.monotonic() - asked, 3))

    def announce(self, waited: float) -> None:
        """The locks of a run that tried them quietly are all held: one event per database."""
        self._quiet = False
        for name in self._of:
            emit(log, "lock_acquired", database=name, waited_seconds=round(waited, 3))

    @property
    def targets(self) -> list[Target]:
        return list(self._targets)

    def connection(self, target: Target) -> Connection:
        return self._of[target.name].connection

    def of(self, name: str) -> Held:
        return self._of[name]

    def commit(self, committed: Callable[[str], None] = lambda name: None) -> None:
        """Commit every transaction in order, calling `committed(name)` as soon as each has: if a
        later commit fails, the ones before it are known to have committed."""
        for held in self._held.values():
            held.transaction.commit()
            held.state = "committed"
            for name in held.names:
                emit(log, "database_committed", database=name, revision=self._revisions.get(name, []),
                     held_seconds=round(held.held_seconds, 3))
                committed(name)

    def note_revision(self, name: str, revisions) -> None:
        """What database `name` is at inside its transaction, for the commit and rollback events."""
        self._revisions[name] = list(revisions)

    def rollback(self, reason: str = "not committed") -> None:
        """Roll back whatever is not committed, and close every connection (safe to call twice)."""
        for held in self._held.values():
            if held.state == "open":
                held.state = "rolled back"
                try:
                    if held.transaction is not None:
                        held.transaction.rollback()
                except Exception:  # closing rolls back too: SQLite's journal or the server undoes it
                    pass
                for name in [] if self._quiet else held.names:
                    emit(log, "database_rolled_back", logging.WARNING, database=name,
                         revision=self._revisions.get(name, []), reason=reason)
            if not held.connection.closed:
                held.connection.close()
                held.engine.dispose()
