"""`db check`: is each project linear, each database at head, and its schema what the code says?

Autogenerate alone misses partial-index predicates, unnamed CHECK and UNIQUE constraints,
triggers and views, so the reflected schema is compared too. A database an earlier release
made (no version table, or TG_parser 3.1's revision) is not at head: the check says whether
the next upgrade adopts it, or lists why it would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tg_parser.migrate import adopt
from tg_parser.migrate.errors import Unreadable
from tg_parser.migrate.target import Target
from tg_parser.storage.lock import LockTimeout
from tg_parser.storage.schema_compare import compare, expected_snapshot, snapshot


@dataclass
class CheckResult:
    name: str
    location: str
    current: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(target: Target) -> CheckResult:
    result = CheckResult(target.name, target.location, heads=list(target.heads()))
    if len(result.heads) != 1:
        result.problems.append(
            f"{len(result.heads)} heads ({', '.join(result.heads)}): merge them (alembic merge) into one"
        )
    if not target.exists():
        result.problems.append("database does not exist yet (run tg-parser init)")
        return result
    try:
        result.current = list(target.current())
    except (Unreadable, LockTimeout) as error:
        result.problems.append(str(error))
        return result
    release = target.db.earlier_release(tuple(result.current))
    if release or (not result.current and target.holds_data()):
        result.problems += _adoption(target, tuple(result.current), release)
        if result.problems:
            return result
    if set(result.current) != set(result.heads):
        result.problems.append(
            f"at {', '.join(result.current) or '(no revision)'}, not at head {', '.join(result.heads)}"
            " (run tg-parser db upgrade)"
        )
        return result
    db = target.db
    with target.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"version_table": db.version_table, "include_name": db.include_name, "compare_type": True},
        )
        diffs = compare_metadata(context, db.metadata)
        if connection.dialect.name != "sqlite":
            diffs = [diff for diff in diffs if not _primary_key_not_null(diff, db)]
        result.problems += [f"autogenerate: {diff}" for diff in diffs]
        found = snapshot(connection).without(db.foreign_tables)
        expected = expected_snapshot(db.metadata, connection)
        result.problems += [f"schema: {p}" for p in compare(expected, found)]
    return result


def _adoption(target: Target, current: tuple[str, ...], release: str | None) -> list[str]:
    """What the next upgrade does with a database an earlier release made: adopt it, or refuse and why."""
    with target.connect() as connection:
        try:
            adoption = adopt.plan(target, connection, current)
        except adopt.AdoptionRefused as refusal:
            return [f"{', '.join(current) or '(no revision)'}: the next upgrade refuses it:"] + refusal.problems
    if adoption is None:
        return []
    if release:
        return [f"{', '.join(current)}: {release} revision, adopted by the next upgrade"]
    return ["(no revision): a pre-Alembic database, adopted by the next upgrade"]


def _primary_key_not_null(diff, db) -> bool:
    """Autogenerate's nullability change on a primary key the server made NOT NULL: not drift."""
    if not (isinstance(diff, list) and len(diff) == 1 and diff[0][0] == "modify_nullable"):
        return False
    _op, _schema, table, column, _existing, _old, new = diff[0]
    return new is True and db.is_nullable_primary_key(table, column)
