"""Engines whose transactions really cover DDL, and take SQLite's write lock up front when asked.

Python's sqlite3 driver commits before DDL on its own, so a failed migration would
leave half a schema behind. The fix documented by SQLAlchemy ("Serializable isolation /
Savepoints / Transactional DDL") is applied here: the driver's own transaction handling
is turned off and SQLAlchemy emits BEGIN itself.

A migration must begin with `BEGIN IMMEDIATE`: a deferred BEGIN that reads the version
table first and writes later gets SQLITE_BUSY at once, without waiting, when another
connection wrote in between. `BEGIN IMMEDIATE` takes the write lock first (readers go
on; other writers wait on their busy timeout), so the transaction never has to upgrade.
"""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_S = 30.0


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database or another backend."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def sqlite_uri(path: Path) -> str:
    """SQLite's URI of a file (for `?mode=ro`): a `%`, `?` or `#` in the path is escaped, or
    SQLite would read it as URI syntax and open another file."""
    return f"file:{quote(str(path))}"


def connect_read_only(path: Path, **options) -> sqlite3.Connection:
    """A sqlite3 connection that can only read `path` (`options` go to sqlite3.connect)."""
    return sqlite3.connect(f"{sqlite_uri(path)}?mode=ro", uri=True, **options)


def make_engine(
    url: URL, *, write_lock: bool = False, busy_timeout: float = SQLITE_BUSY_TIMEOUT_S, exclusive: bool = False
) -> Engine:
    """An engine for `url`; with `write_lock`, every SQLite transaction starts with BEGIN IMMEDIATE.

    `exclusive`: BEGIN EXCLUSIVE, which in rollback-journal mode also waits for readers to finish
    and keeps new ones out, so that the transaction's COMMIT can no longer be refused by a reader."""
    if url.get_backend_name() == "postgresql":
        engine = create_engine(url, poolclass=NullPool)
        event.listen(engine, "connect", _refuse_unless_utf8, insert=True)
        return engine
    if url.get_backend_name() != "sqlite":
        return create_engine(url, poolclass=NullPool)
    file = sqlite_file(url)
    if write_lock and file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=NullPool)
    begin = "BEGIN EXCLUSIVE" if exclusive else "BEGIN IMMEDIATE" if write_lock else "BEGIN"

    @event.listens_for(engine, "connect")
    def _driver_autocommit(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql(begin)

    return engine


def _refuse_unless_utf8(dbapi_connection, _record) -> None:
    """TG_parser's text is Telegram's, in any script: a server database must store UTF-8, and the
    connection speak it. (With SQL_ASCII the driver returns bytes, and SQLAlchemy fails to read
    the server's version.)"""
    server, client = (dbapi_connection.info.parameter_status(name) for name in ("server_encoding", "client_encoding"))
    if server != "UTF8" or client != "UTF8":
        driver = importlib.import_module(type(dbapi_connection).__module__.split(".")[0])  # psycopg or psycopg2
        raise driver.NotSupportedError(
            f"the database's encoding is {server}, not UTF8: create it with ENCODING 'UTF8'" if server != "UTF8" else
            f"the connection's client_encoding is {client}, not UTF8: remove it from the URL"
        )
