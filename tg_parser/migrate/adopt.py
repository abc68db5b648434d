"""Adoption of databases made by releases 1.x–3.0.0, which have tables but no version table.

Alembic alone would re-run the baseline on them ("table already exists") or, after a blind
`stamp`, skip migrations forever. Instead the database's schema is compared with the schema
the baseline revision creates (built in memory, so the cost does not grow with rows):
- equal: stamp the baseline;
- only some baseline tables, each exactly as in the baseline (an older release): create the
  missing tables and indexes with the baseline's own DDL, then stamp;
- anything else: refuse, listing every difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from alembic import command
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool

from tg_parser.migrate.target import Target
from tg_parser.storage.databases import Database
from tg_parser.storage.schema_compare import TableShape, compare, snapshot


@dataclass(frozen=True)
class Baseline:
    revision: str
    shape: dict[str, TableShape]
    ddl: tuple[tuple[str, str, str], ...]
    """(type, table, sql) as the baseline wrote them to sqlite_master, tables first."""


@dataclass(frozen=True)
class Adoption:
    baseline: str
    missing_tables: tuple[str, ...]
    statements: tuple[str, ...]


class AdoptionRefused(RuntimeError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@cache
def baseline_of(db: Database) -> Baseline:
    """What the first revision creates, built in an in-memory SQLite database."""
    target = Target.in_memory(db)
    engine = create_engine("sqlite://", poolclass=StaticPool)
    with engine.connect() as connection:
        revision = target.script.get_base()
        command.upgrade(target.config(connection), revision)
        shape = snapshot(connection)
        rows = connection.exec_driver_sql(
            "SELECT type, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            " AND tbl_name NOT LIKE 'alembic_version%' AND tbl_name NOT LIKE 'sqlite_%'"
            " ORDER BY type = 'index', rowid"
        ).all()
    engine.dispose()
    return Baseline(revision, shape, tuple((r[0], r[1], r[2]) for r in rows))


def plan(target: Target, connection: Connection) -> Adoption | None:
    """None for a database with no tables of its own (Alembic starts it from scratch)."""
    found = snapshot(connection)
    found = {name: shape for name, shape in found.items() if name not in target.db.foreign_tables}
    if not found:
        return None
    if connection.dialect.name != "sqlite":
        raise AdoptionRefused(
            [f"has tables but no {target.db.version_table}: only SQLite databases of releases "
             "1.x–3.0.0 can be adopted"]
        )
    baseline = baseline_of(target.db)
    expected = {name: shape for name, shape in baseline.shape.items() if name in found}
    problems = compare(expected, found)
    if problems:
        raise AdoptionRefused(
            [f"schema differs from release 3.0.0 ({target.db.version_table} missing): {p}" for p in problems]
        )
    missing = tuple(table for kind, table, _sql in baseline.ddl if kind == "table" and table not in found)
    statements = tuple(sql for _type, table, sql in baseline.ddl if table in missing)
    return Adoption(baseline.revision, missing, statements)


def apply(target: Target, adoption: Adoption, connection: Connection) -> None:
    """Create what an older release lacked and stamp the baseline, inside the run's transaction."""
    for statement in adoption.statements:
        connection.exec_driver_sql(statement)
    command.stamp(target.config(connection), adoption.baseline)
