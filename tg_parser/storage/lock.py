"""The migration lock is the database's own write lock, taken when its transaction begins.

SQLite: `BEGIN IMMEDIATE`. SQLite locks the file itself (its inode), so a symlink, a hard
link or a bind mount of one file shares one lock, and the kernel releases it when a process
dies. Readers go on; other writers (another migration, or the collector) wait. PostgreSQL: a
transaction-scoped advisory lock per project, so three projects sharing one database do not
block each other, plus `lock_timeout` so that DDL waiting on a busy table gives up in time.
Both `tg-parser` and a plain `alembic` run take these locks, and every wait is bounded by
TG_PARSER_LOCK_TIMEOUT.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection, RootTransaction
from sqlalchemy.exc import OperationalError

LOCK_NOT_AVAILABLE = "55P03"
WAIT_STEP_S = 0.2
T = TypeVar("T")


class LockTimeout(RuntimeError):
    """Another process kept the database locked for longer than the lock timeout."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.where = where


def begin_locked(
    connection: Connection, name: str, where: str, timeout: float, on_wait: Callable[[], None] | None = None
) -> RootTransaction:
    """Begin `connection`'s transaction holding the write lock of database `name` (its version table).

    `on_wait` is called once, before waiting, when another process holds the lock.
    """
    if connection.dialect.name == "sqlite":
        return _sqlite_begin(connection, where, timeout, on_wait)
    transaction = connection.begin()
    try:
        lock_project(connection, name, where, timeout, on_wait)
    except BaseException:
        transaction.rollback()
        raise
    return transaction


def lock_project(
    connection: Connection, name: str, where: str, timeout: float, on_wait: Callable[[], None] | None = None
) -> None:
    """On a PostgreSQL transaction already begun, take project `name`'s advisory lock."""
    if connection.dialect.name != "postgresql":
        return
    try:
        _advisory_lock(connection, name, timeout, on_wait)
    except OperationalError as error:
        if getattr(error.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            raise timed_out(where, timeout) from None
        raise


def _sqlite_begin(connection: Connection, where: str, timeout: float, on_wait) -> RootTransaction:
    return retry_while_busy(connection.begin, connection.connection.driver_connection, where, timeout, on_wait)


def retry_while_busy(attempt: Callable[[], T], driver, where: str, timeout: float, on_wait=None) -> T:
    """`attempt` (a BEGIN that takes a lock), retried in short waits while SQLite says the database
    is locked, until `timeout`: SQLite's own busy wait runs in C, where Ctrl-C and SIGTERM would go
    unheard until it gave up. `driver` is the sqlite3 connection whose busy timeout paces it."""
    deadline = time.monotonic() + timeout
    driver.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                return attempt()
            except (OperationalError, sqlite3.OperationalError) as error:
                if "database is locked" not in str(error):
                    raise
            if time.monotonic() >= deadline:
                raise timed_out(where, timeout)
            if on_wait:
                on_wait()
                on_wait = None
            driver.execute(f"PRAGMA busy_timeout = {int(max(0.0, min(WAIT_STEP_S, deadline - time.monotonic())) * 1000)}")
    finally:
        driver.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")


def is_busy(error: OperationalError) -> bool:
    """SQLite's SQLITE_BUSY: another connection holds the lock this one needs."""
    return "database is locked" in str(error.orig)


def _advisory_lock(connection: Connection, name: str, timeout: float, on_wait) -> None:
    key = int.from_bytes(hashlib.sha256(f"tg_parser:{name}".encode()).digest()[:8], "big", signed=True)
    connection.execute(text(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'"))
    if connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}).scalar():
        return
    if on_wait:
        on_wait()
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def timed_out(where: str, timeout: float) -> LockTimeout:
    return LockTimeout(
        f"{where} is in use by another process (a migration, a writer such as the collector, or a reader"
        f" holding a read transaction); gave up after waiting {timeout:g} s (TG_PARSER_LOCK_TIMEOUT)",
        where,
    )


def is_contention(error: BaseException) -> bool:
    """A lock another session holds: SQLite's SQLITE_BUSY or PostgreSQL's lock_timeout (55P03)."""
    if isinstance(error, LockTimeout):
        return True
    orig = getattr(error, "orig", error)
    return getattr(orig, "sqlstate", None) == LOCK_NOT_AVAILABLE or "database is locked" in str(orig)


def file_identity(path: Path) -> tuple:
    """What makes two paths one database file: its device and inode, not its name.

    A file not created yet is known by its folder's device and inode and its own name.
    """
    try:
        status = path.stat()
        return (status.st_dev, status.st_ino)
    except FileNotFoundError:
        pass
    try:
        folder = path.parent.stat()
        return (folder.st_dev, folder.st_ino, path.name)
    except FileNotFoundError:
        return (str(path.resolve()),)
