"""Which steps of a plan would destroy data, found by rehearsing them on an empty in-memory schema.

Each step runs first on a schema-only copy (the cost does not grow with the rows), one step at a
time; every table, column or CHECK constraint a step removes is then looked up in the real
database. A downgrade that removes a table or column holding data, or that reverts a project to
base, is destructive. So is any step, upgrade or downgrade, that removes a CHECK constraint
(named or not) of a table holding rows without dropping it itself: Alembic's batch mode leaves
unnamed CHECKs out of the table it recreates with no more than a warning.
"""

from __future__ import annotations

import contextlib
import re
from functools import cache
from pathlib import Path

from alembic import command
from alembic.operations import ops
from alembic.operations.base import AbstractOperations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool

from tg_parser.storage.databases import Database
from tg_parser.storage.schema_compare import normalize_sql, snapshot


REBUILDS = re.compile(r"\bbatch_alter_table\b")
"""Only an upgrade that rebuilds a table can lose a CHECK it does not drop: only those are rehearsed
(a rehearsal runs the revision's code once more)."""


def mark_destructive(target, connection: Connection | None, start: tuple[str, ...], steps: list,
                     show_upgrade_drops: bool = False) -> None:
    """Fill each step's `destructive` reasons (empty for a database that holds nothing yet).

    For an upgrade, only the CHECKs it would lose, unless `show_upgrade_drops` (`--plan`) asks for
    the tables and columns holding data it drops too."""
    if not steps or connection is None or not target.holds_data():
        return
    upgrading = steps[0].upgrade
    if upgrading and not show_upgrade_drops and not any(REBUILDS.search(Path(s.path).read_text()) for s in steps):
        return
    try:
        removals = _rehearse(target.db, start, tuple((step.revision, step.upgrade) for step in steps))
    except Exception as error:  # noqa: BLE001 - a step that cannot be rehearsed is treated as destructive
        if upgrading:
            return  # the run itself meets the same failure, and rolls back
        reason = f"{target.name}: cannot tell what it drops (its rehearsal on an empty schema failed: {error})"
        for step in steps:
            step.destructive = [reason]
        return
    existing = set(inspect(connection).get_table_names())
    for step, (tables, columns, to_base, checks) in zip(steps, removals):
        lost = [
            f"{target.name}: {step.revision} removes CHECK ({check}) from table {table}, which holds rows"
            for table, check in checks
            if table in existing and _holds_data(connection, table)
        ]
        if step.upgrade and not show_upgrade_drops:
            step.destructive = lost
            continue
        if to_base:
            step.destructive = [f"{target.name}: a downgrade to base drops every table of {target.location}"]
            continue
        step.destructive = lost + [
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
    """For each step: (tables removed, (table, column) pairs removed, whether it reached base,
    (table, CHECK) pairs removed that the step did not drop by name)."""
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
                named = _named_checks(connection, before)
                with _dropped_constraints() as dropped:
                    if upgrade:
                        command.upgrade(config, revision)
                    else:
                        command.downgrade(config, scratch.script.get_revision(revision).down_revision or "base")
                after = snapshot(connection).tables
                meant = {named[key] for key in dropped if key in named}
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
                    sorted(
                        (table, check)
                        for table in set(before) & set(after)
                        for check in before[table].checks - after[table].checks
                        if (table, check) not in meant
                    ),
                ))
    finally:
        engine.dispose()
    return removals


def _named_checks(connection: Connection, tables) -> dict[tuple[str, str], tuple[str, str]]:
    """(table, constraint name) → (table, normalized CHECK text), for the checks that have a name."""
    inspector = inspect(connection)
    return {
        (table, check["name"]): (table, normalize_sql(check["sqltext"]))
        for table in tables
        for check in inspector.get_check_constraints(table)
        if check.get("name")
    }


@contextlib.contextmanager
def _dropped_constraints():
    """The (table, name) of every constraint a step drops itself (`op.drop_constraint`, in batch mode too)."""
    dropped: list[tuple[str, str]] = []
    invoke = AbstractOperations.invoke

    def recording(self, operation):
        if isinstance(operation, ops.DropConstraintOp):
            dropped.append((operation.table_name, operation.constraint_name))
        return invoke(self, operation)

    AbstractOperations.invoke = recording
    try:
        yield dropped
    finally:
        AbstractOperations.invoke = invoke


def _columns(connection: Connection, table: str) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns(table)}


def _holds_data(connection: Connection, table: str, column: str | None = None) -> bool:
    quote = connection.dialect.identifier_preparer.quote
    where = f" WHERE {quote(column)} IS NOT NULL" if column else ""
    return connection.exec_driver_sql(f"SELECT 1 FROM {quote(table)}{where} LIMIT 1").first() is not None
