"""A per-database migration lock: Alembic has none, so two migrators would race on the version table.

SQLite files are locked with a `<file>.lock` beside them (an OS lock, released even when
the process is killed). Both `tg-parser` and a plain `alembic` run take it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy.engine import URL


class LockTimeout(RuntimeError):
    """Another process kept the database locked for longer than the lock timeout."""


def sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


@contextmanager
def database_lock(url: URL, timeout: float) -> Iterator[None]:
    file = sqlite_path(url)
    if file is None:
        yield
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{file}.lock", timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise LockTimeout(
            f"{file} is being migrated by another process; gave up after {timeout:g} s "
            "(TG_PARSER_LOCK_TIMEOUT)"
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def all_locked(urls: list[URL], timeout: float) -> Iterator[None]:
    """Lock several databases, always in the given (fixed) order, so two runs cannot deadlock."""
    with ExitStack() as stack:
        for url in urls:
            stack.enter_context(database_lock(url, timeout))
        yield
