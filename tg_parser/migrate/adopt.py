"""Adoption of databases made by earlier releases: no version table (1.x–3.0.0), or TG_parser 3.1's.

Alembic alone would re-run the baseline on them ("table already exists"), call 3.1's revisions
unknown, or, after a blind `stamp`, skip migrations forever. Instead the database's schema is
compared with the schema the baseline revision creates (built in memory, so the cost does not
grow with rows):
- equal: stamp the baseline (replacing 3.1's revision, which this project does not have);
- no version table and only some baseline tables, each exactly as in the baseline (an older
  release): create the missing tables and indexes with the baseline's own DDL, then stamp;
- differences a table rebuild removes, with `--repair`: rebuild those tables (`repair`), then
  as above; without it, refuse and say what `--repair` would change;
- anything else: refuse, listing every difference.
Which revisions belong to which earlier release is `Database.earlier_release`'s to say.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from alembic import command
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool

from tg_parser.migrate import repair as repairs
from tg_parser.migrate.target import Target
from tg_parser.storage.databases import Database
from tg_parser.storage.schema_compare import Schema, differences, snapshot


@dataclass(frozen=True)
class Baseline:
    revision: str
    shape: Schema
    ddl: tuple[tuple[str, str, str], ...]
    """(type, table, sql) as the baseline wrote them to sqlite_master, tables first."""


@dataclass(frozen=True)
class Adoption:
    baseline: str
    missing_tables: tuple[str, ...]
    statements: tuple[str, ...]
    release: str | None = None
    """The earlier release whose own revision the version table holds (None: no version table)."""
    replaced: tuple[str, ...] = ()
    """That release's revisions, replaced by the baseline."""
    repair: repairs.Repair | None = None

    @property
    def origin(self) -> str:
        if self.release:
            return f"a {self.release} database (its revision {', '.join(self.replaced)})"
        return "a pre-Alembic database"


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


def plan(target: Target, connection: Connection, before: tuple[str, ...], repair: bool = False) -> Adoption | None:
    """The adoption of a database at `before` (no revision, or an earlier release's), or AdoptionRefused.

    None for a database with no version table and no tables of its own (Alembic starts it from scratch).
    """
    release = target.db.earlier_release(before)
    found = snapshot(connection).without(target.db.foreign_tables)
    if not found.tables and release is None:
        return None
    origin = f"{release} revision {', '.join(before)}" if release else f"{target.db.version_table} missing"
    if connection.dialect.name != "sqlite":
        raise AdoptionRefused([f"{origin}: only SQLite databases made by earlier releases can be adopted"])
    baseline = baseline_of(target.db)
    expected = baseline.shape if release else baseline.shape.only(found.tables)
    found_differences = differences(expected, found)
    rebuilds = None
    if found_differences:
        problems = [f"schema differs from release 3.0.0 ({origin}): {d}" for d in found_differences]
        if release:
            problems.append(
                f"it came from {release}'s Alembic history (revision {', '.join(before)}), which is adopted"
                " only when its schema is exactly release 3.0.0's"
            )
        try:
            rebuilds = repairs.plan(connection, baseline.shape, baseline.ddl, found, found_differences)
        except repairs.CannotRepair as refusal:
            raise AdoptionRefused(problems + refusal.problems) from None
        if not repair:
            changes = "; ".join(rebuild.describe() for rebuild in rebuilds.rebuilds)
            raise AdoptionRefused(
                problems + [f"--repair would fix this: it would {changes}, copying every row and verifying"
                            " counts and checksums before committing"]
            )
    missing = tuple(table for kind, table, _sql in baseline.ddl if kind == "table" and table not in found.tables)
    statements = tuple(sql for _type, table, sql in baseline.ddl if table in missing)
    return Adoption(baseline.revision, missing, statements, release, tuple(before) if release else (), rebuilds)


def apply(target: Target, adoption: Adoption, connection: Connection) -> dict[str, int]:
    """Rebuild what `--repair` planned, create what an older release lacked and stamp the baseline,
    inside the run's transaction; return each rebuilt table's verified row count."""
    rebuilt = repairs.apply(adoption.repair, connection) if adoption.repair else {}
    for statement in adoption.statements:
        connection.exec_driver_sql(statement)
    command.stamp(target.config(connection), adoption.baseline, purge=bool(adoption.replaced))
    return rebuilt
