"""Which downgrades would destroy data, found by rehearsing them on an empty in-memory schema.

The downgrade runs first on a schema-only copy (cost independent of rows); every table or
column it removes is then looked up in the real database. Those that hold data, and every
downgrade to base, need the operator's confirmation.
"""

from __future__ import annotations

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool

from tg_parser.migrate.target import Target
from tg_parser.storage.schema_compare import snapshot


def destructive_changes(target: Target, connection: Connection, current: tuple[str, ...], revision: str) -> list[str]:
    if not current:
        return []
    removed_tables, removed_columns, to_base = _rehearse(target, current, revision)
    if to_base:
        return [f"{target.name}: a downgrade to base drops every table of {target.location}"]
    reasons = []
    for table in removed_tables:
        if _holds_data(connection, table):
            reasons.append(f"{target.name}: drops table {table}, which holds rows")
    for table, column in removed_columns:
        if _holds_data(connection, table, column):
            reasons.append(f"{target.name}: drops column {table}.{column}, which holds data")
    return reasons


def _rehearse(target: Target, current: tuple[str, ...], revision: str):
    scratch = Target.in_memory(target.db)
    engine = create_engine("sqlite://", poolclass=StaticPool)
    try:
        with engine.connect() as connection:
            for head in current:
                command.upgrade(scratch.config(connection), head)
            before = snapshot(connection).tables
            command.downgrade(scratch.config(connection), revision)
            after = snapshot(connection).tables
            to_base = not MigrationContext.configure(
                connection, opts={"version_table": target.db.version_table}
            ).get_current_heads()
    finally:
        engine.dispose()
    removed_tables = sorted(set(before) - set(after))
    removed_columns = sorted(
        (table, column.name)
        for table in set(before) & set(after)
        for column in before[table].columns
        if column.name not in {c.name for c in after[table].columns}
    )
    return removed_tables, removed_columns, to_base


def _holds_data(connection: Connection, table: str, column: str | None = None) -> bool:
    quote = connection.dialect.identifier_preparer.quote
    where = f" WHERE {quote(column)} IS NOT NULL" if column else ""
    return connection.exec_driver_sql(f"SELECT 1 FROM {quote(table)}{where} LIMIT 1").first() is not None
