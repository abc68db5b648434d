"""Online table rebuilds on SQLite: the collector keeps writing while a big table is rebuilt.

A revision asks for one with `online.batch_alter_table`, which takes `op.batch_alter_table`'s
arguments and yields the same batch operations. What the rebuild is comes from Alembic itself:
the batch runs on an in-memory copy of the table's schema (no rows) and its statements are
recorded (a `Rebuild`). How it runs depends on who runs the revision:

- plain `alembic`: the recorded statements run on the database, then the backfill, in the one
  transaction of the command (blocking, as `op.batch_alter_table` plus an UPDATE would be);
- `tg-parser db upgrade`: before the run takes any lock, `prepare` rehearses the run's revisions
  on a schema-only copy of the database, and for each rebuild builds the new table beside the
  old one (`_tg_parser_new_<table>`, with its indexes under temporary names), puts capture
  triggers on the old table (every insert, update and delete is copied into the new table in
  the writer's own transaction) and copies the rows in short transactions of a target length,
  chunked by the declared key, with a pause between (pt-online-schema-change's and LHM's
  scheme). Inside the run's held transaction the revision then only swaps the tables
  (`_swap`): the capture triggers go, the old table is renamed aside, the new one takes its
  name, and the indexes their final names. The old table is emptied and dropped in short
  transactions after the run (`clean_leftovers`), which every `db` command also calls first,
  so nothing of a killed run outlives it.

The swap renames with `legacy_alter_table` on (a rename must not rewrite what triggers and views
of other tables say) and renames indexes through `writable_schema`, since SQLite has no
`ALTER INDEX ... RENAME`, exactly as SQLite's documentation describes for schema edits. The
rebuilt table keeps every CHECK constraint, named or not: the batch gets the table reflected
by SQLAlchemy, which keeps unnamed CHECKs, instead of reflecting it itself, which drops them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event
from sqlalchemy.pool import StaticPool

from tg_parser.core.events import emit
from tg_parser.storage.engine import connect_read_only
from tg_parser.storage.lock import retry_while_busy, timed_out

ATTRIBUTE = "tg_parser_online"
"""The `config.attributes` key under which `tg-parser` hands revisions its rehearsal or its swaps."""
SCHEMA_ATTRIBUTE = "tg_parser_schema"
"""The database's schema (`schema_rows`), handed to revisions rendered offline (`--sql`)."""
PREFIX = "_tg_parser_"
NEW, OLD, INDEX, CAPTURE = (f"{PREFIX}{kind}_" for kind in ("new", "old", "ix", "capture"))
CHUNK_SECONDS = 0.08
"""Target length of one copy transaction, its COMMIT included: a writer waits about this long."""
PAUSE_S, LONG_PAUSE_S = 0.03, 0.11
"""The pause after each short transaction. A client waiting on SQLite's busy timeout retries at
fixed steps (sqliteDefaultBusyCallback): 25 ms apart through its first 128 ms of waiting, then 50,
then 100 ms apart. A pause longer than the step a waiting client is at lets it in before the next
transaction: 30 ms after one shorter than 100 ms, 110 ms after a longer one (an index dropped)."""
FIRST_CHUNK_ROWS, MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 500, 50, 20_000
LOOK_S = 0.5
"""How long a look for leftovers waits for a busy database (the command's own reads then wait their full time)."""
CACHE_KIB = 262_144
"""Page cache of the copying connection: a chunk that spilled it would lock readers out early."""

log = logging.getLogger(__name__)
_WRITES = re.compile(r"^\s*(CREATE|INSERT|DROP|ALTER|UPDATE|DELETE)\b", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT INTO (?P<into>\S+) \((?P<columns>.*?)\) SELECT (?P<select>.*)\sFROM (?P<source>\S+)\s*$", re.DOTALL)
_INDEX_HEAD = re.compile(
    r'^(?P<create>CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?)(?P<name>"(?:[^"]|"")*"|[^\s(]+)'
    r'(?P<on>\s+ON\s+)(?P<table>"(?:[^"]|"")*"|[^\s(]+)', re.IGNORECASE)
"""The head of a CREATE INDEX as SQLite keeps it (3.0.0 wrote some across two lines): its name and table."""


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Rebuild:
    """What one `batch_alter_table` does to its table, as Alembic's batch mode worked it out."""

    table: str
    statements: tuple[str, ...]
    """Alembic's own statements for the blocking rebuild, in order."""
    backfill: tuple[tuple[str, str], ...]
    before: tuple[tuple, ...]
    """The table's entries in sqlite_master (type, name, sql) before the batch."""
    indexes: tuple[tuple[str, str], ...] = ()
    """(name, sql) of each explicit index of the rebuilt table."""
    key: tuple[str, ...] = ()
    """The columns a row is known by (its declared primary key, else rowid); empty: cannot run online."""
    triggers: tuple[str, ...] = ()
    """The table's own triggers, which a rebuild would drop and are put back after it."""
    why_blocking: str = ""

    @property
    def online(self) -> bool:
        return not self.why_blocking

    def same_as(self, other: Rebuild) -> bool:
        """The same rebuild: Alembic writes a new table's constraints in the order of a set, so the
        lines of a CREATE TABLE are compared as a multiset."""
        def canonical(rebuild: Rebuild) -> tuple:
            statements = tuple(create_table_lines(s) if s.upper().startswith("CREATE TABLE") else s
                               for s in rebuild.statements)
            return statements, replace(rebuild, statements=())

        return canonical(self) == canonical(other)

    @property
    def create(self) -> str:
        return next(s for s in self.statements if s.lstrip().upper().startswith("CREATE TABLE"))

    @property
    def insert(self) -> re.Match:
        return next(m for m in map(_INSERT.match, self.statements) if m)

    @property
    def columns(self) -> list[str]:
        """The new table's columns the copy fills, the backfilled ones last."""
        rowid = ["rowid"] if self.key == ("rowid",) else []
        return rowid + [c.strip() for c in self.insert["columns"].split(",")] + [quote(c) for c, _ in self.backfill]

    @property
    def select(self) -> str:
        """The values of `columns`, over the old table."""
        rowid = [f"{quote(self.table)}.rowid"] if self.key == ("rowid",) else []
        return ", ".join(rowid + [self.insert["select"].strip()] + [f"({expression})" for _, expression in self.backfill])

    def blocking_statements(self) -> list[str]:
        """The rebuild as one transaction runs it: Alembic's statements with the backfill in its copy."""
        out = []
        for statement in self.statements:
            match = _INSERT.match(statement)
            if match and self.backfill:
                extra_columns = ", ".join(quote(c) for c, _ in self.backfill)
                extra_values = ", ".join(f"({e})" for _, e in self.backfill)
                statement = (f"INSERT INTO {match['into']} ({match['columns']}, {extra_columns})"
                             f" SELECT {match['select'].rstrip()}, {extra_values} FROM {match['source']}")
            out.append(statement)
        if self.backfill and not any(_INSERT.match(s) for s in self.statements):
            sets = ", ".join(f"{quote(c)} = ({e})" for c, e in self.backfill)
            out.append(f"UPDATE {quote(self.table)} SET {sets}")
        dropped = any(re.match(rf"^DROP TABLE {re.escape(quote(self.table))}$|^DROP TABLE {re.escape(self.table)}$", s) for s in out)
        return out + (list(self.triggers) if dropped else [])


def create_table_lines(sql: str) -> tuple[str, ...]:
    """A CREATE TABLE as the sorted lines of its elements, without their separating commas."""
    return tuple(sorted(line.strip().rstrip(",").strip() for line in sql.splitlines()))


@contextmanager
def batch_alter_table(table_name: str, *, backfill: dict[str, str] | None = None, **kwargs) -> Iterator:
    """`op.batch_alter_table` that `tg-parser db upgrade` runs online; `backfill` maps each new column
    to an SQL expression over the table's existing columns, applied to every row.

        with online.batch_alter_table("raw_messages", recreate="always", backfill={"text_len": "length(text)"}) as batch:
            batch.add_column(sa.Column("text_len", sa.Integer()))
            batch.create_index("ix_text_len", ["text_len"])
    """
    context = op.get_context()
    if context.dialect.name != "sqlite":  # a server ALTERs in place: Alembic's batch, then the backfill
        with op.batch_alter_table(table_name, **kwargs) as batch:
            yield batch
        for column, expression in (backfill or {}).items():
            op.execute(f"UPDATE {quote(table_name)} SET {quote(column)} = ({expression})")
        return
    if context.as_sql:
        schema = (context.config.attributes if context.config else {}).get(SCHEMA_ATTRIBUTE)
        if schema is None:
            raise RuntimeError(
                f"online.batch_alter_table({table_name!r}) needs the database's schema to render its SQL:"
                " run `tg-parser db upgrade --sql` against the database, not over a range"
            )
        context.impl.static_output(f"-- {table_name}: rebuilt online by tg-parser db upgrade; as one transaction:\n")
    else:
        schema = schema_rows(context.bind)
    result: list[Rebuild] = []
    with _recorded(schema, table_name, dict(backfill or {}), kwargs, result) as batch:
        yield batch
    mode = (context.config.attributes if context.config else {}).get(ATTRIBUTE)
    if mode is not None and not context.as_sql:
        mode.apply(result[0], context.bind)
    else:
        for statement in result[0].blocking_statements():
            if context.as_sql:
                op.execute(statement)
            else:
                context.bind.exec_driver_sql(statement)


def create_index(index_name: str, table_name: str, columns: list[str], **kwargs) -> None:
    """`op.create_index` that `tg-parser db upgrade` builds on PostgreSQL with CREATE INDEX
    CONCURRENTLY before the run's transaction (writes to the table go on meanwhile); the revision
    then finds it built. Plain `alembic`, and SQLite, create it inside the transaction, as
    `op.create_index` does (on a big SQLite table, rebuild it with `batch_alter_table` instead)."""
    context = op.get_context()
    mode = (context.config.attributes if context.config else {}).get(ATTRIBUTE)
    if context.dialect.name == "postgresql" and isinstance(mode, (IndexCollector, Swaps)):
        mode.create_index(index_name, table_name, columns, kwargs)
    else:
        op.create_index(index_name, table_name, columns, **kwargs)


def schema_rows(connection) -> list[tuple]:
    """Every entry of sqlite_master (type, name, tbl_name, sql) in creation order, but SQLite's own
    and those of an online rebuild under way."""
    return [tuple(row) for row in connection.exec_driver_sql(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
        " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_tg\\_parser\\_%' ESCAPE '\\'"
        " ORDER BY rowid"
    )]


def _table_entries(rows: list[tuple], table: str) -> tuple[tuple, ...]:
    return tuple(sorted((kind, name, sql or "") for kind, name, tbl, sql in rows if tbl == table and kind != "table")) + tuple(
        (kind, name, sql) for kind, name, tbl, sql in rows if kind == "table" and name == table
    )


@contextmanager
def scratch(rows: list[tuple]) -> Iterator[sa.Connection]:
    """An in-memory database with the schema `rows` describe and no rows."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    try:
        with engine.connect() as connection:
            for kind in ("table", "index", "view", "trigger"):
                for row_kind, _name, _table, sql in sorted(rows, key=lambda row: row[1]) if kind != "table" else rows:
                    if row_kind == kind:
                        connection.exec_driver_sql(sql)
            connection.commit()
            yield connection
    finally:
        engine.dispose()


@contextmanager
def _recorded(rows: list[tuple], table: str, backfill: dict[str, str], kwargs: dict, result: list) -> Iterator:
    """Run the batch on a schema-only copy, recording Alembic's statements into a `Rebuild`."""
    with scratch(rows) as connection:
        statements: list[str] = []

        @event.listens_for(connection, "before_cursor_execute")
        def record(_conn, _cursor, statement, parameters, _context, _many):
            if _WRITES.match(statement):
                if parameters:
                    raise RuntimeError(f"online.batch_alter_table cannot replay a statement with parameters: {statement}")
                statements.append(statement.strip())

        operations = Operations(MigrationContext.configure(connection, opts={"render_as_batch": True}))
        if "copy_from" not in kwargs:  # SQLAlchemy's reflection keeps unnamed CHECKs; Alembic's own drops them
            create = next(sql for kind, name, _tbl, sql in rows if kind == "table" and name == table)
            kwargs["copy_from"] = sa.Table(  # reflection does not see AUTOINCREMENT: it is told
                table, sa.MetaData(), autoload_with=connection,
                sqlite_autoincrement=bool(re.search(r"\bAUTOINCREMENT\b", create, re.IGNORECASE)))
        with operations.batch_alter_table(table, **kwargs) as batch:
            yield batch
        event.remove(connection, "before_cursor_execute", record)
        result.append(_rebuild(connection, rows, table, tuple(statements), backfill))


def _rebuild(connection, rows: list[tuple], table: str, statements: tuple[str, ...], backfill: dict) -> Rebuild:
    """The recorded batch as a `Rebuild`, in a canonical order: Alembic creates the indexes in the
    order of a set, so the trailing CREATE INDEX statements (and the indexes) are sorted by name."""
    trailing = len(statements)
    while trailing and re.match(r"^CREATE\s+(UNIQUE\s+)?INDEX", statements[trailing - 1], re.I):
        trailing -= 1
    statements = statements[:trailing] + tuple(sorted(statements[trailing:], key=lambda s: _INDEX_HEAD.match(s)["name"]))
    after = schema_rows(connection)
    columns = {row[1] for row in connection.exec_driver_sql(f"PRAGMA table_info({quote(table)})")}
    unknown = sorted(set(backfill) - columns)
    if unknown:
        raise ValueError(f"backfill names {', '.join(unknown)}, not columns of {table} after the batch")
    rebuild = Rebuild(
        table, statements, tuple(backfill.items()), _table_entries(rows, table),
        indexes=tuple(sorted((name, sql) for kind, name, tbl, sql in after if kind == "index" and tbl == table)),
        triggers=tuple(sql for kind, _name, tbl, sql in rows if kind == "trigger" and tbl == table),
    )
    inserts = [m for m in map(_INSERT.match, statements) if m]
    if not any(s.upper().startswith("CREATE TABLE") for s in statements) or len(inserts) != 1:
        return replace(rebuild, why_blocking="the batch alters the table in place (no rebuild to run online)")
    copied = {c.strip().strip('"') for c in inserts[0]["columns"].split(",")}
    if copied & set(backfill):
        raise ValueError(f"backfill names {', '.join(sorted(copied & set(backfill)))}, columns the batch copies already")
    unexpected = [s for s in statements if not re.match(r"^(CREATE (UNIQUE )?INDEX|DROP INDEX|CREATE TABLE|INSERT INTO|DROP TABLE|ALTER TABLE \S+ RENAME TO)", s, re.I)]
    if unexpected:
        return replace(rebuild, why_blocking=f"the batch runs {unexpected[0].split('(')[0].strip()}, which has no online form")
    old_key = _key(rows, table)
    new_key = tuple(r[1] for r in sorted(connection.exec_driver_sql(f"PRAGMA table_info({quote(table)})"), key=lambda r: r[5]) if r[5])
    if old_key != ("rowid",) and old_key != new_key:
        return replace(rebuild, why_blocking="the batch changes the primary key")
    return replace(rebuild, key=old_key)


def _key(rows: list[tuple], table: str) -> tuple[str, ...]:
    with scratch([r for r in rows if r[0] == "table" and r[1] == table]) as connection:
        info = sorted(connection.exec_driver_sql(f"PRAGMA table_info({quote(table)})"), key=lambda r: r[5])
        return tuple(r[1] for r in info if r[5]) or ("rowid",)


# --- tg-parser's side: rehearse, prepare, swap, clean up -------------------------------------------


class Rehearsal:
    """Collects the rebuilds of a run while its revisions run on a schema-only copy."""

    def __init__(self):
        self.rebuilds: list[Rebuild] = []

    def apply(self, rebuild: Rebuild, connection) -> None:
        self.rebuilds.append(rebuild)
        for statement in rebuild.blocking_statements():
            connection.exec_driver_sql(statement)


@dataclass
class Prepared:
    """A rebuild whose new table is built, filled and kept current by the capture triggers."""

    number: int
    rebuild: Rebuild
    rows: int = 0
    seconds: float = 0.0

    @property
    def new(self) -> str:
        return f"{NEW}{self.rebuild.table}"

    @property
    def old(self) -> str:
        return f"{OLD}{self.rebuild.table}"

    def temporary_index(self, position: int) -> str:
        return f"{INDEX}{position}_{self.rebuild.table}"

    @property
    def triggers(self) -> list[str]:
        return [f"{CAPTURE}{kind}_{self.rebuild.table}" for kind in ("insert", "update", "delete")]


@dataclass
class Swaps:
    """What the held transaction's revisions find: the prepared rebuilds, matched in order, and
    (PostgreSQL) the indexes built concurrently before it."""

    prepared: dict[int, Prepared]
    built: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)
    _next: int = 0

    def create_index(self, name: str, table: str, columns: list[str], kwargs: dict) -> None:
        if name not in self.built:
            op.create_index(name, table, columns, **kwargs)

    def apply(self, rebuild: Rebuild, connection) -> None:
        number, self._next = self._next, self._next + 1
        prepared = self.prepared.get(number)
        why = _unready(connection, prepared, rebuild)
        if not why:
            _swap(connection, prepared)
            self.done.append(rebuild.table)
            return
        log.info("online rebuild of %s runs inside the held transaction: %s", rebuild.table, why)
        self.blocking.append(rebuild.table)
        for statement in rebuild.blocking_statements():
            connection.exec_driver_sql(statement)


class IndexCollector:
    """Collects the `create_index` calls of a run's revisions, rendered offline (nothing runs)."""

    def __init__(self):
        self.indexes: list[tuple[str, str, list[str], dict]] = []

    def create_index(self, name: str, table: str, columns: list[str], kwargs: dict) -> None:
        self.indexes.append((name, table, list(columns), dict(kwargs)))


def build_concurrently(database: str, url, indexes: list[tuple[str, str, list[str], dict]], timeout: float) -> list[str]:
    """CREATE INDEX CONCURRENTLY each index not already there and valid, after dropping an invalid
    leftover of a failed build; return the names this call built. Each statement waits at most
    `timeout` for a lock."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex

    from tg_parser.storage.engine import make_engine

    built = []
    engine = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SET lock_timeout = '{int(timeout * 1000)}ms'")
            for name, table, columns, kwargs in indexes:
                valid = connection.execute(sa.text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE c.relname = :name AND pg_table_is_visible(c.oid)"), {"name": name}).scalar()
                if valid:
                    continue
                if valid is False:
                    connection.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(name)}")
                started = time.perf_counter()
                shape = sa.Table(table, sa.MetaData(), *(sa.Column(c) for c in columns))
                index = sa.Index(name, *(shape.c[c] for c in columns), postgresql_concurrently=True, **kwargs)
                connection.exec_driver_sql(str(CreateIndex(index).compile(dialect=postgresql.dialect())))
                built.append(name)
                emit(log, "index_built", database=database, table=table, index=name,
                     seconds=round(time.perf_counter() - started, 3))
    finally:
        engine.dispose()
    return built


def drop_concurrently(url, names: list[str], timeout: float) -> None:
    """Drop the indexes a run built concurrently and then did not commit."""
    from tg_parser.storage.engine import make_engine

    engine = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SET lock_timeout = '{int(timeout * 1000)}ms'")
            for name in names:
                connection.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(name)}")
    finally:
        engine.dispose()


def rehearse(db, rows: list[tuple], versions: list[str], run: Callable) -> list[Rebuild]:
    """The rebuilds the run's revisions ask for, found by running them (`run(config)`) on a copy of
    the schema `rows` describe, at `versions`."""
    from tg_parser.migrate.target import Target

    rehearsal = Rehearsal()
    with scratch(rows) as connection:
        if versions:
            connection.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {db.version_table} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
            connection.exec_driver_sql(f"DELETE FROM {db.version_table}")
            for version in versions:
                connection.exec_driver_sql(f"INSERT INTO {db.version_table} VALUES ('{version}')")
        config = Target.in_memory(db).config(connection)
        config.attributes[ATTRIBUTE] = rehearsal
        run(config, connection)
    return rehearsal.rebuilds


def prepare(file: Path, rebuilds: list[Rebuild], timeout: float) -> dict[int, Prepared]:
    """Build and fill the new table of every rebuild that can run online on `file`, in short transactions."""
    prepared: dict[int, Prepared] = {}
    with closing(_connect(file, timeout)) as connection:
        live = [tuple(r) for r in connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid")]
        seen: set[str] = set()
        for number, rebuild in enumerate(rebuilds):
            if rebuild.online and rebuild.table not in seen and rebuild.before == _table_entries(live, rebuild.table):
                item = Prepared(number, rebuild)
                started = time.perf_counter()
                _build(connection, item, file, timeout)
                item.rows = _copy(connection, item, file, timeout)
                item.seconds = time.perf_counter() - started
                prepared[number] = item
            seen.add(rebuild.table)
    return prepared


def _connect(file: Path, timeout: float) -> sqlite3.Connection:
    from tg_parser.migrate.interrupt import watch_sqlite

    connection = sqlite3.connect(file, isolation_level=None, timeout=timeout)
    connection.execute("PRAGMA foreign_keys = OFF")  # a DROP must never cascade into other tables
    connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    watch_sqlite(connection)
    return connection


@contextmanager
def _short_transaction(connection: sqlite3.Connection, file: Path, timeout: float) -> Iterator[list[float]]:
    """One transaction of the copy or the cleanup, then a pause that lets every waiting client in.

    In WAL mode the WAL is checkpointed (PASSIVE: writers go on) after each one, so that the
    collector's commit never inherits a long checkpoint of the copy's pages. Yields a list that
    holds, once the block has committed, how long the transaction held the lock."""
    retry_while_busy(lambda: connection.execute("BEGIN IMMEDIATE"), connection, str(file), timeout)
    started = time.perf_counter()
    timing: list[float] = []
    try:
        yield timing
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    held = time.perf_counter() - started
    timing.append(held)
    if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    time.sleep(PAUSE_S if held < 0.1 else LONG_PAUSE_S)


def _build(connection: sqlite3.Connection, item: Prepared, file: Path, timeout: float) -> None:
    """The new table, its indexes under temporary names and the capture triggers, in one short transaction."""
    rebuild, table, new = item.rebuild, quote(item.rebuild.table), quote(item.new)
    create = re.sub(r'^\s*CREATE TABLE ("?)_alembic_tmp_', lambda m: f"CREATE TABLE {m[1]}{NEW}", rebuild.create, count=1)
    where_new = " AND ".join(f"{table}.{quote(k)} IS NEW.{quote(k)}" for k in rebuild.key)
    where_old = " AND ".join(f"{table}.{quote(k)} IS OLD.{quote(k)}" for k in rebuild.key)
    same = " AND ".join(f"OLD.{quote(k)} IS NEW.{quote(k)}" for k in rebuild.key)
    copy = f"INSERT OR IGNORE INTO {new} ({', '.join(rebuild.columns)}) SELECT {rebuild.select} FROM {table} WHERE "
    forget = f"DELETE FROM {new} WHERE " + " AND ".join(f"{quote(k)} IS {{row}}.{quote(k)}" for k in rebuild.key)
    insert, update, delete = item.triggers
    with _short_transaction(connection, file, timeout):
        connection.execute(create)
        for position, (_name, sql) in enumerate(rebuild.indexes):
            head = _INDEX_HEAD.match(sql)
            connection.execute(f"{head['create']}{quote(item.temporary_index(position))} ON {new}{sql[head.end():]}")
        # Unique constraints the rebuild adds are checked by the copy and the count at the swap; a
        # trigger ignores a conflicting row, so the collector's own write never fails because of it.
        connection.execute(f"CREATE TRIGGER {quote(insert)} AFTER INSERT ON {table} BEGIN"
                           f" {forget.format(row='NEW')}; {copy}{where_new}; END")
        connection.execute(f"CREATE TRIGGER {quote(update)} AFTER UPDATE ON {table} BEGIN"
                           f" {forget.format(row='OLD')}; {forget.format(row='NEW')};"
                           f" {copy}{where_new}; {copy}{where_old} AND NOT ({same}); END")
        connection.execute(f"CREATE TRIGGER {quote(delete)} AFTER DELETE ON {table} BEGIN"
                           f" {forget.format(row='OLD')}; {copy}{where_old}; END")


def _copy(connection: sqlite3.Connection, item: Prepared, file: Path, timeout: float) -> int:
    """Copy every row in key order, in chunks sized to last about CHUNK_SECONDS, each a transaction
    of its own that first forgets what the triggers copied of its range (the chunk reads the same rows)."""
    rebuild, table, new = item.rebuild, quote(item.rebuild.table), quote(item.new)
    key = ", ".join(f"{table}.{quote(k)}" for k in rebuild.key)
    key_new = ", ".join(quote(k) for k in rebuild.key)
    rows = f"({key})" if len(rebuild.key) > 1 else key
    rows_new = f"({key_new})" if len(rebuild.key) > 1 else key_new
    marks = "(" + ", ".join("?" * len(rebuild.key)) + ")" if len(rebuild.key) > 1 else "?"
    null = " OR ".join(f"{table}.{quote(k)} IS NULL" for k in rebuild.key)
    null_new = " OR ".join(f"{quote(k)} IS NULL" for k in rebuild.key)
    copy = f"INSERT INTO {new} ({', '.join(rebuild.columns)}) SELECT {rebuild.select} FROM {table} WHERE "
    total = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    with _short_transaction(connection, file, timeout):  # rows whose key is NULL (SQLite allows it in TEXT keys)
        connection.execute(f"DELETE FROM {new} WHERE {null_new}")
        connection.execute(copy + null)
    lower: tuple | None = None
    size = FIRST_CHUNK_ROWS
    while True:
        with _short_transaction(connection, file, timeout) as timing:
            above = f"NOT ({null})" + (f" AND {rows} > {marks}" if lower is not None else "")
            upper = connection.execute(
                f"SELECT {key} FROM {table} WHERE {above} ORDER BY {key} LIMIT 1 OFFSET ?", (*(lower or ()), size - 1)
            ).fetchone()
            bounds = (*(lower or ()), *(upper or ()))
            span = above + (f" AND {rows} <= {marks}" if upper is not None else "")
            span_new = f"NOT ({null_new})" + (f" AND {rows_new} > {marks}" if lower is not None else "") + (
                f" AND {rows_new} <= {marks}" if upper is not None else "")
            connection.execute(f"DELETE FROM {new} WHERE {span_new}", bounds)
            connection.execute(copy + span, bounds)
        if upper is None:
            return total
        lower = tuple(upper)
        size = max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, int(size * CHUNK_SECONDS / max(timing[0], 1e-4))))


def _unready(connection, item: Prepared | None, rebuild: Rebuild) -> str:
    """Under the held lock, why the prepared table cannot be swapped in ('' when it can): it must be
    the same rebuild, the old table as planned, and the new one must hold exactly its rows."""
    if item is None:
        return rebuild.why_blocking or "it was not prepared (the table changes earlier in this run)"
    if not item.rebuild.same_as(rebuild):
        return "the revision asks for another rebuild than the one prepared"
    ours = set(item.triggers) | {item.new}
    present = {name for (name,) in connection.exec_driver_sql("SELECT name FROM sqlite_master")}
    if not ours <= present:
        return "the prepared table or its capture triggers are gone"
    if _table_entries(schema_rows(connection), rebuild.table) != rebuild.before:
        return "the table changed since it was prepared"
    count = "SELECT count(*) FROM {}"
    old = connection.exec_driver_sql(count.format(quote(rebuild.table))).scalar()
    new = connection.exec_driver_sql(count.format(quote(item.new))).scalar()
    return "" if old == new else f"the prepared table holds {new} rows, not {old}"


def _swap(connection, item: Prepared) -> None:
    """The cut-over, inside the held transaction: schema changes only, no row is copied."""
    rebuild, table = item.rebuild, item.rebuild.table
    run = connection.exec_driver_sql
    for trigger in item.triggers:
        run(f"DROP TRIGGER {quote(trigger)}")
    own_triggers = [name for kind, name, tbl, _sql in schema_rows(connection) if kind == "trigger" and tbl == table]
    for trigger in own_triggers:
        run(f"DROP TRIGGER {quote(trigger)}")
    old_indexes = [name for kind, name, tbl, sql in schema_rows(connection) if kind == "index" and tbl == table]
    run("PRAGMA legacy_alter_table = ON")  # other tables' triggers and views keep naming `table`
    try:
        run(f"ALTER TABLE {quote(table)} RENAME TO {quote(item.old)}")
        run(f"ALTER TABLE {quote(item.new)} RENAME TO {quote(table)}")
    finally:
        run("PRAGMA legacy_alter_table = OFF")
    version = run("PRAGMA schema_version").scalar()
    run("PRAGMA writable_schema = ON")
    try:
        rename = "UPDATE sqlite_master SET name = ?, sql = ? WHERE type = 'index' AND name = ?"
        for position, name in enumerate(old_indexes):
            retired = f"{INDEX}old_{position}_{table}"
            sql = run("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)).scalar()
            head = _INDEX_HEAD.match(sql)
            run(rename, (retired, f"{head['create']}{quote(retired)} ON {quote(item.old)}{sql[head.end():]}", name))
        for position, (name, sql) in enumerate(rebuild.indexes):
            run(rename, (name, sql, item.temporary_index(position)))
        run(f"PRAGMA schema_version = {version + 1}")
    finally:
        run("PRAGMA writable_schema = OFF")
    if run("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").first():  # AUTOINCREMENT's counter
        counter = run("SELECT seq FROM sqlite_sequence WHERE name = ?", (item.old,)).scalar()
        if counter is not None and not run("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?",
                                           (counter, table)).rowcount:
            run("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, counter))
    for sql in rebuild.triggers:
        run(sql)


def leftovers(connection: sqlite3.Connection) -> list[tuple[str, str]]:
    """(type, name) of everything a run of online rebuilds left in the database."""
    return [tuple(row) for row in connection.execute(
        "SELECT type, name FROM sqlite_master WHERE name LIKE ? ESCAPE '\\' AND type IN ('trigger', 'table', 'index')",
        (PREFIX.replace("_", "\\_") + "%",))]


def has_leftovers(file: Path) -> bool:
    """A quick look, read-only: did a run of online rebuilds leave something in `file`?"""
    if not file.exists() or file.stat().st_size == 0:
        return False
    try:
        with closing(connect_read_only(file, timeout=LOOK_S)) as connection:
            return bool(leftovers(connection))
    except sqlite3.DatabaseError:
        return False


def clean_leftovers(file: Path, timeout: float) -> list[str]:
    """Remove what online rebuilds left behind, triggers first (a capture trigger must never outlive
    its new table), then the tables, emptied in short transactions before they are dropped."""
    if not file.exists() or file.stat().st_size == 0:
        return []
    try:
        connection = _connect(file, min(timeout, LOOK_S))
    except sqlite3.DatabaseError:
        return []  # not a database: the command's own checks say so
    with closing(connection):
        try:
            found = leftovers(connection)
        except sqlite3.DatabaseError:
            return []  # busy: the command's own reads wait for it, as long as they may
        connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        if any(kind == "trigger" for kind, _name in found):
            with _short_transaction(connection, file, timeout):
                for kind, name in found:
                    if kind == "trigger":
                        connection.execute(f"DROP TRIGGER IF EXISTS {quote(name)}")
        for kind, name in found:
            if kind == "index":
                with _short_transaction(connection, file, timeout):
                    connection.execute(f"DROP INDEX IF EXISTS {quote(name)}")
        for kind, name in found:
            if kind == "table":
                _empty(connection, name, file, timeout)
                with _short_transaction(connection, file, timeout):
                    connection.execute(f"DROP TABLE {quote(name)}")
        return [name for _kind, name in found]


def _empty(connection: sqlite3.Connection, table: str, file: Path, timeout: float) -> None:
    """Delete a table's rows in rowid ranges, each a short transaction (a DROP of a full table frees
    every page in one transaction, about a second per 300,000 messages, and writers would wait)."""
    if connection.execute("SELECT 1 FROM pragma_table_list WHERE name = ? AND wr", (table,)).fetchone():
        return  # WITHOUT ROWID (none of TG_parser's tables): the DROP frees it
    size = FIRST_CHUNK_ROWS * 4
    while True:
        with _short_transaction(connection, file, timeout) as timing:
            upper = connection.execute(
                f"SELECT rowid FROM {quote(table)} ORDER BY rowid LIMIT 1 OFFSET ?", (size,)).fetchone()
            if upper is None:
                connection.execute(f"DELETE FROM {quote(table)}")
                return
            connection.execute(f"DELETE FROM {quote(table)} WHERE rowid < ?", upper)
        size = max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS * 4, int(size * CHUNK_SECONDS / max(timing[0], 1e-4))))


@contextmanager
def run_lock(file: Path, timeout: float, wait: bool = True) -> Iterator[bool]:
    """Held by the one `tg-parser` run that builds, swaps or cleans a database's online tables (a
    second run must not clean away the first one's new table): an flock on a file beside the
    database's real file. Yields False, without waiting, when `wait` is off and another run has it."""
    real = Path(os.path.realpath(file))
    real.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(real.with_name(f".{real.name}.tg-parser-lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if time.monotonic() >= deadline:
                    raise timed_out(str(file), timeout) from None
                time.sleep(0.05)
        yield True
    finally:
        os.close(descriptor)
