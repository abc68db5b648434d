"""`db transfer`: copy every row of the configured databases into PostgreSQL, then prove it.

The target is first brought to head by the same Alembic projects (one schema, never a
second copy of it). Rows are streamed in batches (memory stays bounded whatever the size),
each with its hash computed by the source (`row_checksums`), and written with PostgreSQL's
binary COPY; a table empty before the copy gets its secondary indexes built after it, as
pg_restore does, from their own definitions; identity sequences are moved past the copied
ids. Each table's row count and checksum are then compared with one aggregate query on the
target: nothing is read back. The whole copy is one transaction on the target, committed
only when every table verifies. Each source database is opened read-only and read in one
read transaction: a snapshot, which is what the target is verified against and what the row
counts describe (a collector writing meanwhile waits on a rollback-journal database, and its
later rows are not in the snapshot, so stop it for the cut-over).
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Table, func, inspect, select, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import NotSupportedError

from tg_parser.core.events import emit
from tg_parser.migrate.check import check
from tg_parser.migrate.errors import MigrationFailed, Refused, describe_error
from tg_parser.migrate.interrupt import Interrupted, raised_as_interrupted, watch_sqlite
from tg_parser.migrate.misfits import first_misfit
from tg_parser.migrate.row_checksums import MODULUS, Checksum, row_hash, table_checksum
from tg_parser.migrate.status import NO_FILE
from tg_parser.migrate.target import Target
from tg_parser.migrate.transactions import HeldTransactions
from tg_parser.storage.engine import connect_read_only, make_engine, sqlite_uri

BATCH_ROWS = 5000
log = logging.getLogger(__name__)


@dataclass
class TableReport:
    database: str
    table: str
    source_rows: int = 0
    target_rows: int = 0
    source_checksum: int = 0
    target_checksum: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum


def transfer(
    sources: list[Target],
    to_url: URL,
    *,
    upgrade: Callable[[list[Target]], object],
    lock_timeout: float,
    allow_existing_rows: bool = False,
    progress: Callable[[str, int], Callable[[int], None] | None] = lambda label, total: None,
) -> list[TableReport]:
    """Copy `sources` into `to_url`; `upgrade` brings the target databases to head."""
    if to_url.get_backend_name() != "postgresql":
        raise Refused([f"--to must be a PostgreSQL URL, not {to_url.get_backend_name()}"])
    destinations = [Target(s.db, to_url, to_url.render_as_string(hide_password=True), None) for s in sources]
    _check_sources(sources)
    _check_target(sources, destinations, allow_existing_rows)
    upgrade(destinations)  # takes and releases the migration locks itself
    with raised_as_interrupted() as signals:
        try:
            with HeldTransactions(destinations, lock_timeout) as held:  # one transaction: kept only if every table verifies
                writer = held.connection(destinations[0])
                reports = [r for source in sources for r in _copy_database(source, writer, progress, allow_existing_rows)]
                if all(r.ok for r in reports):
                    signals.deferred = True  # a signal now lets the COMMIT finish: the transfer is then done
                    held.commit()
        except BaseException as error:  # a signal inside SQLite's statement arrives as its error
            if signals.received is not None:
                raise Interrupted(signals.received) from error
            raise
    return reports


def _check_sources(sources: list[Target]) -> None:
    """Every source exists, can be read, is UTF-8, is at head and has the head's schema: a column
    or table the schema does not know would not be copied, and the checksums would not see it."""
    problems = []
    for source in sources:
        result = check(source)
        found = result.status
        if found.state == NO_FILE:
            problems.append(f"{found.name}: {found.location} does not exist")
        elif found.problem:
            problems.append(f"{found.name}: {found.problem}")
        elif not found.at_head:
            problems.append(
                f"{found.name}: source is at {', '.join(found.current) or '(no revision)'}, not at head;"
                " run tg-parser db upgrade first"
            )
        elif result.problems:
            problems += [f"{found.name}: {problem}" for problem in result.problems]
            problems.append(f"{found.name}: the transfer copies the schema at head only; see tg-parser db check")
        elif source.sqlite_file is not None and (encoding := _sqlite_encoding(source.sqlite_file)) != "UTF-8":
            problems.append(
                f"{found.name}: the source is encoded in {encoding}, not UTF-8: convert it first"
                f" (sqlite3 OLD .dump | sqlite3 NEW, then point {source.db.setting_stem}_DB_PATH at NEW)"
            )
    if problems:
        raise Refused(problems)


def _sqlite_encoding(file) -> str:
    with closing(connect_read_only(file)) as connection:
        return connection.execute("PRAGMA encoding").fetchone()[0]


def _check_target(sources: list[Target], destinations: list[Target], allow_existing_rows: bool) -> None:
    """The target can be read (`make_engine` refuses one that does not store UTF-8, which the
    checksums hash), is not a source, and, unless allowed, holds no rows (checked again under the lock)."""
    problems = []
    engine = make_engine(destinations[0].url)
    try:
        with engine.connect() as connection:
            target = _server_database(connection)
            problems += [f"{source.name}: the source is the target database" for source in sources
                         if source.sqlite_file is None and _server_database_of(source.url) == target]
            existing = set(inspect(connection).get_table_names())
            for destination in [] if allow_existing_rows else destinations:
                for table in destination.db.metadata.sorted_tables:
                    if table.name in existing and connection.execute(table.select().limit(1)).first():
                        problems.append(_holds_rows(destination.name, table))
    except NotSupportedError as error:
        raise Refused([f"cannot use {destinations[0].location}: {error.orig}"]) from None
    finally:
        engine.dispose()
    if problems:
        raise Refused(problems)


def _holds_rows(name: str, table: Table) -> str:
    return f"{name}: target table {table.name} already holds rows; pass --allow-existing-rows to copy into it anyway"


def _server_database(connection: Connection) -> tuple:
    """What tells one PostgreSQL database from another, whatever URL reached it."""
    return tuple(connection.exec_driver_sql("SELECT current_database(), pg_postmaster_start_time()").one())


def _server_database_of(url: URL) -> tuple:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return _server_database(connection)
    finally:
        engine.dispose()


def _copy_database(source: Target, writer: Connection, progress, allow_existing_rows: bool) -> list[TableReport]:
    """Copy and verify each table, all from one snapshot of the source."""
    source_engine = _read_only_engine(source)
    try:
        with source_engine.connect() as reader, reader.begin():
            if reader.dialect.name == "sqlite":
                watch_sqlite(reader.connection.driver_connection)
            return [_transfer_table(source, reader, writer, table, progress, allow_existing_rows)
                    for table in source.db.metadata.sorted_tables]
    finally:
        source_engine.dispose()


def _transfer_table(source: Target, reader: Connection, writer: Connection, table: Table, progress,
                    allow_existing_rows: bool) -> TableReport:
    """Copy one table, then compare its count and checksum on both sides.

    The source's count is its own query and its checksum the sum of the row hashes the
    source computes as it streams the rows; the target's are one aggregate on the server.
    Other sessions cannot write the table meanwhile (it is locked), and the checksum is
    additive, so rows the target already held (with --allow-existing-rows) are subtracted out:
    what must match the source is what this run added.
    """
    started = time.perf_counter()
    name = writer.dialect.identifier_preparer.quote(table.name)
    writer.exec_driver_sql(f"LOCK TABLE {name} IN EXCLUSIVE MODE")
    before = table_checksum(writer, table)
    if before.rows and not allow_existing_rows:  # another transfer may have filled it since the check
        raise Refused([_holds_rows(source.name, table)])
    rows = reader.execute(select(func.count()).select_from(table)).scalar()
    indexes = _drop_secondary_indexes(writer, table) if before.rows == 0 else []
    try:
        copied = _copy_table(reader, writer, table, progress(f"{source.name}.{table.name}", rows))
    except Exception as error:
        raise MigrationFailed(f"{source.name}.{table.name}",
                              _misfit(source, reader, table) or describe_error(error), outcomes=[]) from error
    for definition in indexes:
        writer.connection.driver_connection.execute(definition)  # as written: no parameter markers
    _move_identity_past_issued_ids(reader, writer, table)
    added = table_checksum(writer, table) - before
    if (rows, copied.value) != (added.rows, added.value) and (misfit := _misfit(source, reader, table)):
        raise MigrationFailed(f"{source.name}.{table.name}", misfit, outcomes=[])
    report = TableReport(source.name, table.name, rows, added.rows, copied.value, added.value,
                         time.perf_counter() - started)
    emit(log, "table_transferred", database=source.name, table=table.name, rows=report.source_rows,
         checksum=f"{report.source_checksum:016x}", equal=report.ok)
    return report


def _read_only_engine(source: Target):
    if source.sqlite_file is None:
        return make_engine(source.url).execution_options(isolation_level="REPEATABLE READ")
    return make_engine(
        URL.create("sqlite", database=sqlite_uri(source.sqlite_file), query={"mode": "ro", "uri": "true"})
    )


def _copy_table(reader: Connection, writer: Connection, table: Table, advance) -> Checksum:
    """Binary COPY, typed by the target's own columns (the server has no text to parse); returns
    the rows written and the sum of their hashes."""
    quote = writer.dialect.identifier_preparer.quote
    columns, name = ", ".join(quote(c.name) for c in table.columns), quote(table.name)
    cursor = writer.connection.driver_connection.cursor()
    cursor.execute(f"SELECT {columns} FROM {name} LIMIT 0")
    types = [column.type_code for column in cursor.description]
    rows = value = 0
    with cursor.copy(f"COPY {name} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in _stream(reader, table):
            copy.write_row(row[:-1])
            value += row[-1]
            rows += 1
            if advance and rows % BATCH_ROWS == 0:
                advance(BATCH_ROWS)
    if advance:
        advance(rows % BATCH_ROWS)
    return Checksum(rows, value % MODULUS)


def _stream(reader: Connection, table: Table) -> Iterator[tuple]:
    """The rows, each followed by its hash, computed by the source; through the driver's cursor in
    batches (from PostgreSQL a server-side cursor): building SQLAlchemy rows would make this
    process, not the server, bound the copy."""
    quote = reader.dialect.identifier_preparer.quote
    columns = ", ".join(quote(c.name) for c in table.columns)
    driver = reader.connection.driver_connection
    cursor = driver.cursor() if reader.dialect.name == "sqlite" else driver.cursor(name="tg_parser_transfer")
    cursor.execute(f"SELECT {columns}, {row_hash(reader, table)} FROM {quote(table.name)}")
    try:
        while rows := cursor.fetchmany(BATCH_ROWS):
            yield from rows
    finally:
        cursor.close()


def _misfit(source: Target, reader: Connection, table: Table) -> str | None:
    """Why a table failed to copy or verify, when a value PostgreSQL cannot hold is the reason."""
    if reader.dialect.name == "sqlite" and (misfit := first_misfit(reader, table)):
        return f"{misfit}; correct it in the source and run the transfer again"
    return None


def _drop_secondary_indexes(writer: Connection, table: Table) -> list[str]:
    """Drop the indexes no constraint owns; returns their definitions, to build them after the copy."""
    found = writer.execute(
        text(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " WHERE x.indrelid = quote_ident(:table)::regclass"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
        ),
        {"table": table.name},
    ).all()
    for index, _definition in found:
        writer.exec_driver_sql(f"DROP INDEX {writer.dialect.identifier_preparer.quote(index)}")
    return [definition for _index, definition in found]


def _move_identity_past_issued_ids(reader: Connection, writer: Connection, table: Table) -> None:
    """Ids the target gives next are above every id the source has given, a deleted row's included
    (SQLite's AUTOINCREMENT never gives one twice)."""
    for column in table.columns:
        if column.identity is None:
            continue
        highest = max(writer.execute(select(func.max(column))).scalar() or 0, _issued(reader, table, column))
        writer.execute(
            text("SELECT setval(pg_get_serial_sequence(:table, :column), :value, :called)"),
            {"table": table.name, "column": column.name, "value": max(highest, 1), "called": highest > 0},
        )


def _issued(reader: Connection, table: Table, column) -> int:
    """The highest id the source's counter has given: SQLite's sqlite_sequence, PostgreSQL's sequence."""
    if reader.dialect.name == "sqlite":
        if not table.dialect_options["sqlite"]["autoincrement"]:
            return 0
        return reader.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (table.name,)).scalar() or 0
    return reader.execute(text("SELECT pg_sequence_last_value(pg_get_serial_sequence(:table, :column))"),
                          {"table": table.name, "column": column.name}).scalar() or 0
