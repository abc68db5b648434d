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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Table, func, inspect, select, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import NotSupportedError

from tg_parser.core.events import emit
from tg_parser.migrate.errors import MigrationFailed, Refused
from tg_parser.migrate.interrupt import Interrupted, raised_as_interrupted, watch_sqlite
from tg_parser.migrate.misfits import first_misfit
from tg_parser.migrate.row_checksums import MODULUS, Checksum, row_hash, table_checksum
from tg_parser.migrate.status import NO_FILE, status
from tg_parser.migrate.target import Target
from tg_parser.migrate.transactions import HeldTransactions
from tg_parser.storage.engine import make_engine, sqlite_uri

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
    _check_target(destinations, allow_existing_rows)
    upgrade(destinations)  # takes and releases the migration locks itself
    with raised_as_interrupted() as signals:
        try:
            with HeldTransactions(destinations, lock_timeout) as held:  # one transaction: kept only if every table verifies
                writer = held.connection(destinations[0])
                reports = [r for source in sources for r in _copy_database(source, writer, progress)]
                if all(r.ok for r in reports):
                    held.commit()
        except BaseException as error:  # a signal inside SQLite's statement arrives as its error
            if signals.received is not None:
                raise Interrupted(signals.received) from error
            raise
    return reports


def _check_sources(sources: list[Target]) -> None:
    """Every source exists, can be read, and is at head."""
    problems = []
    for found in map(status, sources):
        if found.state == NO_FILE:
            problems.append(f"{found.name}: {found.location} does not exist")
        elif found.problem:
            problems.append(f"{found.name}: {found.problem}")
        elif not found.at_head:
            problems.append(
                f"{found.name}: source is at {', '.join(found.current) or '(no revision)'}, not at head;"
                " run tg-parser db upgrade first"
            )
    if problems:
        raise Refused(problems)


def _check_target(destinations: list[Target], allow_existing_rows: bool) -> None:
    """The target can be read (`make_engine` refuses one that does not store UTF-8, which the
    checksums hash) and, unless allowed, holds no rows."""
    problems = []
    engine = make_engine(destinations[0].url)
    try:
        with engine.connect() as connection:
            existing = set(inspect(connection).get_table_names())
            for destination in [] if allow_existing_rows else destinations:
                for table in destination.db.metadata.sorted_tables:
                    if table.name in existing and connection.execute(table.select().limit(1)).first():
                        problems.append(f"{destination.name}: target table {table.name} already holds rows")
    except NotSupportedError as error:
        raise Refused([f"cannot use {destinations[0].location}: {error.orig}"]) from None
    finally:
        engine.dispose()
    if problems:
        raise Refused(problems + ["pass --allow-existing-rows to copy into it anyway"])


def _copy_database(source: Target, writer: Connection, progress) -> list[TableReport]:
    """Copy and verify each table, all from one snapshot of the source."""
    source_engine = _read_only_engine(source)
    try:
        with source_engine.connect() as reader, reader.begin():
            if reader.dialect.name == "sqlite":
                watch_sqlite(reader.connection.driver_connection)
            return [_transfer_table(source, reader, writer, table, progress) for table in source.db.metadata.sorted_tables]
    finally:
        source_engine.dispose()


def _transfer_table(source: Target, reader: Connection, writer: Connection, table: Table, progress) -> TableReport:
    """Copy one table, then compare its count and checksum on both sides.

    The source's count is its own query and its checksum the sum of the row hashes the
    source computes as it streams the rows; the target's are one aggregate on the server.
    The checksum is additive, so rows the target already held (with --allow-existing-rows)
    are subtracted out: what must match the source is what this run added.
    """
    started = time.perf_counter()
    before = table_checksum(writer, table)
    rows = reader.execute(select(func.count()).select_from(table)).scalar()
    indexes = _drop_secondary_indexes(writer, table) if before.rows == 0 else []
    try:
        copied = _copy_table(reader, writer, table, progress(f"{source.name}.{table.name}", rows))
    except Exception:
        _explain_failure(source, reader, table)
        raise
    for definition in indexes:
        writer.connection.driver_connection.execute(definition)  # as written: no parameter markers
    _move_identity_past_copied_ids(writer, table)
    added = table_checksum(writer, table) - before
    if (rows, copied.value) != (added.rows, added.value):
        _explain_failure(source, reader, table)
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


def _explain_failure(source: Target, reader: Connection, table: Table) -> None:
    """A table that failed to copy or verify: name the value PostgreSQL could not hold, if that is why."""
    if reader.dialect.name == "sqlite" and (misfit := first_misfit(reader, table)):
        raise MigrationFailed(f"{source.name}.{table.name}",
                              f"{misfit}; correct it in the source and run the transfer again", outcomes=[])


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


def _move_identity_past_copied_ids(writer: Connection, table: Table) -> None:
    """Rows inserted after the transfer must get ids above the copied ones."""
    for column in table.columns:
        if column.identity is None:
            continue
        writer.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence(:table, :column),"
                f" COALESCE((SELECT max({column.name}) FROM {table.name}), 1),"
                f" (SELECT max({column.name}) FROM {table.name}) IS NOT NULL)"
            ),
            {"table": table.name, "column": column.name},
        )
