"""A per-database migration lock: Alembic has none, so two migrators would race on the version table.

SQLite files are locked with a `<file>.lock` beside them; PostgreSQL databases with a session
advisory lock keyed by the project's version table, so the three projects sharing one database
do not block each other. Both kinds are released even when the process is killed, and both
`tg-parser` and a plain `alembic` run take them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import text
from sqlalchemy.engine import URL

from tg_parser.storage.engine import make_engine, sqlite_file

POLL_SECONDS = 0.1


class LockTimeout(RuntimeError):
    """Another process kept the database locked for longer than the lock timeout."""


@contextmanager
def database_lock(url: URL, name: str, timeout: float) -> Iterator[None]:
    """Hold the migration lock of database `name` (its version table's name) at `url`."""
    file = sqlite_file(url)
    if file is not None:
        with _file_lock(file, timeout):
            yield
    elif url.get_backend_name() == "postgresql":
        with _advisory_lock(url, name, timeout):
            yield
    else:
        yield


@contextmanager
def _file_lock(file: Path, timeout: float) -> Iterator[None]:
    file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{file}.lock", timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise _timeout(str(file), timeout) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _advisory_lock(url: URL, name: str, timeout: float) -> Iterator[None]:
    key = int.from_bytes(hashlib.sha256(f"tg_parser:{name}".encode()).digest()[:8], "big", signed=True)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            deadline = time.monotonic() + timeout
            while not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
                connection.rollback()
                if time.monotonic() >= deadline:
                    raise _timeout(url.render_as_string(hide_password=True), timeout)
                time.sleep(POLL_SECONDS)
            connection.commit()  # the lock belongs to the session, not to this transaction
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
    finally:
        engine.dispose()


def _timeout(where: str, timeout: float) -> LockTimeout:
    return LockTimeout(
        f"{where} is being migrated by another process; gave up after {timeout:g} s (TG_PARSER_LOCK_TIMEOUT)"
    )


@contextmanager
def all_locked(locks: list[tuple[URL, str]], timeout: float) -> Iterator[None]:
    """Lock several databases, always in the given (fixed) order, so two runs cannot deadlock."""
    with ExitStack() as stack:
        for url, name in locks:
            stack.enter_context(database_lock(url, name, timeout))
        yield
