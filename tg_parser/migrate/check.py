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
from sqlalchemy import UniqueConstraint

from tg_parser.migrate import adopt
from tg_parser.migrate.status import AT_HEAD, BUSY, NO_FILE, Status, status
from tg_parser.migrate.target import Target
from tg_parser.storage.schema_compare import ForeignKeyShape, compare, expected_snapshot, snapshot


@dataclass
class CheckResult:
    status: Status
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def refused(self) -> bool:
        """The database cannot be checked at all: unreadable, or newer than this tg-parser
        (one another process keeps locked is a failure to retry, not a refusal)."""
        return self.status.problem is not None and self.status.state != BUSY

    def as_json(self) -> dict:
        return {**self.status.as_json(), "ok": self.ok, "problems": self.problems}


def check(target: Target) -> CheckResult:
    found = status(target)
    result = CheckResult(found)
    if len(found.heads) != 1:
        result.problems.append(
            f"{len(found.heads)} heads ({', '.join(found.heads)}): merge them (tg-parser db merge --only {target.name})"
        )
    if found.problem is not None:
        result.problems.append(found.problem)
        return result
    if found.state == NO_FILE:
        result.problems.append("database does not exist yet (run tg-parser init)")
        return result
    if found.adoptable:
        result.problems += _adoption(target, tuple(found.current), target.db.earlier_release(tuple(found.current)))
        return result
    if found.state != AT_HEAD:
        result.problems.append(
            f"at {', '.join(found.current) or '(no revision)'}, not at head {', '.join(found.heads)}"
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
        found_schema = snapshot(connection).without(db.foreign_tables)
        expected = expected_snapshot(db.metadata, connection)
        reflected = compare(expected, found_schema)
    result.problems += reflected
    result.problems += [line for line in map(describe_diff, diffs) if not _said(line, reflected)]
    return result


def describe_diff(diff) -> str:
    """One of autogenerate's differences as a readable line: what, where, and which way it differs."""
    if isinstance(diff, list):  # column modifications come as a list of tuples
        return "; ".join(describe_diff(item) for item in diff)
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        where = "missing from the database" if kind == "add_table" else "not in the schema code"
        return f"table {diff[1].name}: {where}"
    if kind in ("add_column", "remove_column"):
        where = "missing from the database" if kind == "add_column" else "not in the schema code"
        return f"table {diff[2]}: column {diff[3].name}: {where}"
    where = "missing from the database" if kind.startswith("add") else "not in the schema code"
    if kind in ("add_index", "remove_index"):
        return f"table {diff[1].table.name}: index {diff[1].name}: {where}"
    if kind in ("add_constraint", "remove_constraint"):
        columns = ", ".join(column.name for column in diff[1].columns)
        what = f"UNIQUE ({columns})" if isinstance(diff[1], UniqueConstraint) else f"constraint {diff[1].name}"
        return f"table {diff[1].table.name}: {what}: {where}"
    if kind in ("add_fk", "remove_fk"):
        key = diff[1]
        shape = ForeignKeyShape(tuple(key.column_keys), key.referred_table.name,
                                tuple(element.column.name for element in key.elements))
        return f"table {key.parent.name}: {shape}: {where}"
    if kind.startswith("modify_"):
        _kind, _schema, table, column, _existing, database, code = diff
        return f"table {table}: column {column}: {kind.removeprefix('modify_')} is {database!r} in the database, {code!r} in the schema code"
    return " ".join(str(part) for part in diff)


def _said(line: str, reflected: list[str]) -> bool:
    """The reflected comparison already named this table and object: say it once."""
    head = ": ".join(line.split(": ")[:2])
    return any(problem.startswith(head) for problem in reflected)


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
