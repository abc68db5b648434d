"""`db transfer`: copy every row of the configured databases into PostgreSQL, then prove it.

The target is first brought to head by the same Alembic projects (one schema, never a
second copy of it). Rows are streamed in batches (memory stays bounded whatever the size)
and written with PostgreSQL's COPY; identity sequences are moved past the copied ids; then
each table's row count and content checksum are compared between source and target.
The whole copy is one transaction on the target, committed only when every table
verifies. Each source database is opened read-only and read in one read transaction: a
snapshot, which is what the target is verified against and what the row counts describe
(a collector writing meanwhile waits on a rollback-journal database, and its later rows
are not in the snapshot, so stop it for the cut-over).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Table, func, inspect, select, text
from sqlalchemy.engine import URL, Connection

from tg_parser.core.events import emit
from tg_parser.migrate.errors import Refused
from tg_parser.migrate.status import NO_FILE, status
from tg_parser.migrate.target import Target
from tg_parser.migrate.transactions import HeldTransactions
from tg_parser.storage.engine import make_engine

BATCH_ROWS = 5000
log = logging.getLogger(__name__)
CHECKSUM_MODULUS = 2**64


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


@dataclass
class RowChecksum:
    """Row count and an order-independent checksum (a sum of per-row hashes), built while streaming.

    Order-independent because SQLite and PostgreSQL sort text differently; both sides are
    hashed in this one process, so the same row always gives the same hash.
    """

    rows: int = 0
    value: int = 0

    def add(self, row: tuple) -> None:
        self.rows += 1
        self.value = (self.value + hash(row)) % CHECKSUM_MODULUS


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
    if not allow_existing_rows:
        _refuse_rows_in(destinations)
    upgrade(destinations)  # takes and releases the migration locks itself
    with HeldTransactions(destinations, lock_timeout) as held:  # one transaction: kept only if every table verifies
        writer = held.connection(destinations[0])
        reports = [r for source in sources for r in _copy_database(source, writer, progress)]
        if all(r.ok for r in reports):
            held.commit()
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


def _refuse_rows_in(destinations: list[Target]) -> None:
    problems = []
    engine = make_engine(destinations[0].url)
    try:
        with engine.connect() as connection:
            existing = set(inspect(connection).get_table_names())
            for destination in destinations:
                for table in destination.db.metadata.sorted_tables:
                    if table.name in existing and connection.execute(select(func.count()).select_from(table)).scalar():
                        problems.append(f"{destination.name}: target table {table.name} already holds rows")
    finally:
        engine.dispose()
    if problems:
        raise Refused(problems + ["pass --allow-existing-rows to copy into it anyway"])


def _copy_database(source: Target, writer: Connection, progress) -> list[TableReport]:
    """Copy each table, then read it back from the target inside the same transaction.

    The checksum is additive, so rows the target already held (with --allow-existing-rows)
    are subtracted out: what must match the source is what this run added.
    """
    reports = []
    source_engine = _read_only_engine(source)
    try:
        with source_engine.connect() as reader, reader.begin():  # one snapshot of the whole database
            for table in source.db.metadata.sorted_tables:
                report = TableReport(source.name, table.name)
                started = time.perf_counter()
                before = _checksum(writer, table)
                total = reader.execute(select(func.count()).select_from(table)).scalar()
                copied = _copy_table(reader, writer, table, progress(f"{source.name}.{table.name}", total))
                _move_identity_past_copied_ids(writer, table)
                after = _checksum(writer, table)
                report.source_rows, report.source_checksum = copied.rows, copied.value
                report.target_rows = after.rows - before.rows
                report.target_checksum = (after.value - before.value) % CHECKSUM_MODULUS
                report.seconds = time.perf_counter() - started
                reports.append(report)
                emit(log, "table_transferred", database=source.name, table=table.name, rows=report.source_rows,
                     checksum=f"{report.source_checksum:016x}", equal=report.ok)
    finally:
        source_engine.dispose()
    return reports


def _checksum(connection: Connection, table: Table) -> RowChecksum:
    checksum = RowChecksum()
    for row in _stream(connection, table):
        checksum.add(row)
    return checksum


def _read_only_engine(source: Target):
    if source.sqlite_file is None:
        return make_engine(source.url).execution_options(isolation_level="REPEATABLE READ")
    return make_engine(
        URL.create("sqlite", database=f"file:{source.sqlite_file}", query={"mode": "ro", "uri": "true"})
    )


def _stream(connection: Connection, table: Table) -> Iterator[tuple]:
    result = connection.execution_options(yield_per=BATCH_ROWS).execute(select(*table.columns))
    for partition in result.partitions():
        yield from (tuple(row) for row in partition)


def _copy_table(reader: Connection, writer: Connection, table: Table, advance) -> RowChecksum:
    checksum = RowChecksum()
    columns = ", ".join(writer.dialect.identifier_preparer.quote(c.name) for c in table.columns)
    name = writer.dialect.identifier_preparer.quote(table.name)
    cursor = writer.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {name} ({columns}) FROM STDIN") as copy:
        for row in _stream(reader, table):
            copy.write_row(row)
            checksum.add(row)
            if advance and checksum.rows % BATCH_ROWS == 0:
                advance(BATCH_ROWS)
    if advance:
        advance(checksum.rows % BATCH_ROWS)
    return checksum


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
