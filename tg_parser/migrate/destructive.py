"""Which steps of a plan would destroy data, found by rehearsing them on an empty in-memory schema.

Each step runs first on a schema-only copy (the cost does not grow with the rows), one step at a
time; every table or column a step removes is then looked up in the real database. A step that
removes something holding data, or that reverts a project to base, is destructive.
"""

from __future__ import annotations

from functools import cache

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool

from tg_parser.storage.databases import Database
from tg_parser.storage.schema_compare import snapshot


def mark_destructive(target, connection: Connection | None, start: tuple[str, ...], steps: list) -> None:
    """Fill each step's `destructive` reasons (empty for a database that holds nothing yet)."""
    if not steps or connection is None or not target.holds_data():
        return
    try:
        removals = _rehearse(target.db, start, tuple((step.revision, step.upgrade) for step in steps))
    except Exception as error:  # noqa: BLE001 - a step that cannot be rehearsed is treated as destructive
        reason = f"{target.name}: cannot tell what it drops (its rehearsal on an empty schema failed: {error})"
        for step in steps:
            step.destructive = [reason]
        return
    existing = set(inspect(connection).get_table_names())
    for step, (tables, columns, to_base) in zip(steps, removals):
        if to_base:
            step.destructive = [f"{target.name}: a downgrade to base drops every table of {target.location}"]
            continue
        step.destructive = [
            f"{target.name}: drops table {table}, which holds rows"
            for table in tables
            if table in existing and _holds_data(connection, table)
        ] + [
            f"{target.name}: drops column {table}.{column}, which holds data"
            for table, column in columns
            if table in existing and column in _columns(connection, table) and _holds_data(connection, table, column)
        ]


@cache
def _rehearse(db: Database, start: tuple[str, ...], steps: tuple[tuple[str, bool], ...]) -> list:
    """For each step: (tables removed, (table, column) pairs removed, whether it reached base)."""
    from tg_parser.migrate.target import Target

    scratch = Target.in_memory(db)
    engine = create_engine("sqlite://", poolclass=StaticPool)
    removals = []
    try:
        with engine.connect() as connection:
            config = scratch.config(connection)
            for head in start:
                command.upgrade(config, head)
            for revision, upgrade in steps:
                before = snapshot(connection).tables
                if upgrade:
                    command.upgrade(config, revision)
                else:
                    command.downgrade(config, scratch.script.get_revision(revision).down_revision or "base")
                after = snapshot(connection).tables
                to_base = not upgrade and not MigrationContext.configure(
                    connection, opts={"version_table": db.version_table}
                ).get_current_heads()
                removals.append((
                    sorted(set(before) - set(after)),
                    sorted(
                        (table, column.name)
                        for table in set(before) & set(after)
                        for column in before[table].columns
                        if column.name not in {c.name for c in after[table].columns}
                    ),
                    to_base,
                ))
    finally:
        engine.dispose()
    return removals


def _columns(connection: Connection, table: str) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns(table)}


def _holds_data(connection: Connection, table: str, column: str | None = None) -> bool:
    quote = connection.dialect.identifier_preparer.quote
    where = f" WHERE {quote(column)} IS NOT NULL" if column else ""
    return connection.exec_driver_sql(f"SELECT 1 FROM {quote(table)}{where} LIMIT 1").first() is not None
