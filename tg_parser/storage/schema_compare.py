"""Reflected-schema comparison: what a database really contains, compared field by field.

Alembic's autogenerate ignores partial-index predicates and unnamed CHECKs, so this
module reflects everything the 3.0.0 schema relies on: columns in order with types,
nullability and defaults; primary and foreign keys; indexes with uniqueness, DESC and
WHERE; CHECK expressions; AUTOINCREMENT. Used by the schema tests, adoption and `db check`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy import MetaData, create_engine, inspect
from sqlalchemy.engine import Connection

_IGNORED_TABLE = re.compile(r"^(sqlite_|alembic_version)")


@dataclass(frozen=True)
class ColumnShape:
    name: str
    type: str
    nullable: bool
    default: str | None


@dataclass(frozen=True)
class IndexShape:
    unique: bool
    columns: tuple[str, ...]
    where: str | None


@dataclass(frozen=True)
class TableShape:
    columns: tuple[ColumnShape, ...]
    primary_key: tuple[str, ...]
    foreign_keys: frozenset[tuple]
    indexes: dict[str, IndexShape]
    checks: frozenset[str]
    autoincrement: bool


def normalize_sql(text: str | None) -> str | None:
    """Collapse whitespace and redundant outer parentheses: `(0.0)` and `0.0` are one default."""
    if text is None:
        return None
    text = re.sub(r"\s+", " ", str(text)).strip()
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"\s+\)", ")", text)
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def snapshot(connection: Connection, tables: set[str] | None = None, schema: str | None = None) -> dict[str, TableShape]:
    """The shape of every user table (or of `tables`), version tables excluded."""
    inspector = inspect(connection)
    names = [n for n in inspector.get_table_names(schema=schema) if not _IGNORED_TABLE.match(n)]
    if tables is not None:
        names = [n for n in names if n in tables]
    return {name: _table(connection, inspector, name, schema) for name in sorted(names)}


def _table(connection: Connection, inspector, name: str, schema: str | None) -> TableShape:
    sqlite = connection.dialect.name == "sqlite"
    primary_key = tuple(inspector.get_pk_constraint(name, schema=schema)["constrained_columns"])
    reflected_columns = inspector.get_columns(name, schema=schema)
    columns = []
    for column in reflected_columns:
        type_ = column["type"].compile(dialect=connection.dialect).upper()
        nullable = bool(column["nullable"])
        if sqlite and primary_key == (column["name"],) and type_ == "INTEGER":
            nullable = False  # a rowid alias can never hold NULL, whatever PRAGMA says
        columns.append(ColumnShape(column["name"], type_, nullable, normalize_sql(column["default"])))
    foreign_keys = frozenset(
        (
            tuple(fk["constrained_columns"]),
            fk["referred_table"],
            tuple(fk["referred_columns"]),
            tuple(sorted((fk.get("options") or {}).items())),
        )
        for fk in inspector.get_foreign_keys(name, schema=schema)
    )
    checks = frozenset(normalize_sql(c["sqltext"]) for c in inspector.get_check_constraints(name, schema=schema))
    indexes = {
        index["name"]: _index(connection, index)
        for index in inspector.get_indexes(name, schema=schema)
        if not index.get("duplicates_constraint")
    }
    if sqlite:
        sql = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).scalar()
        autoincrement = bool(re.search(r"\bAUTOINCREMENT\b", sql or "", re.IGNORECASE))
    else:
        autoincrement = any(column.get("identity") for column in reflected_columns)
    return TableShape(tuple(columns), primary_key, foreign_keys, indexes, checks, autoincrement)


def _index(connection: Connection, index: dict) -> IndexShape:
    dialect = connection.dialect.name
    where = index.get("dialect_options", {}).get(f"{dialect}_where")
    if dialect == "sqlite":
        rows = connection.exec_driver_sql(f'PRAGMA index_xinfo("{index["name"]}")').all()
        descending = {row[2] for row in rows if row[5] and row[3]}
    else:
        sorting = index.get("column_sorting") or {}
        descending = {column for column, flags in sorting.items() if "desc" in flags}
    columns = tuple(
        f"{column} DESC" if column in descending else str(column) for column in index["column_names"]
    )
    return IndexShape(bool(index["unique"]), columns, normalize_sql(where))


def metadata_snapshot(metadata: MetaData) -> dict[str, TableShape]:
    """The shape `metadata` gives a fresh SQLite database (built in memory)."""
    engine = create_engine("sqlite://")
    with engine.begin() as connection:
        metadata.create_all(connection)
        return snapshot(connection)


def expected_snapshot(metadata: MetaData, connection: Connection) -> dict[str, TableShape]:
    """The shape `metadata` gets on `connection`'s own server, so both sides are reflected alike.

    SQLite: built in memory. PostgreSQL: built in a scratch schema inside a transaction
    that is rolled back, leaving nothing behind.
    """
    if connection.dialect.name == "sqlite":
        return metadata_snapshot(metadata)
    schema = f"tg_parser_expected_{uuid.uuid4().hex[:12]}"
    with connection.engine.connect() as scratch:
        transaction = scratch.begin()
        try:
            scratch.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            metadata.create_all(scratch.execution_options(schema_translate_map={None: schema}))
            return snapshot(scratch, schema=schema)
        finally:
            transaction.rollback()


def compare(expected: dict[str, TableShape], found: dict[str, TableShape]) -> list[str]:
    """Every difference, one readable line each; empty when the schemas are equal."""
    problems = [f"table {name}: missing" for name in expected if name not in found]
    problems += [f"table {name}: not expected" for name in found if name not in expected]
    for name in expected.keys() & found.keys():
        problems += [f"table {name}: {p}" for p in _compare_table(expected[name], found[name])]
    return sorted(problems)


def _compare_table(expected: TableShape, found: TableShape) -> list[str]:
    problems: list[str] = []
    want = {c.name: c for c in expected.columns}
    have = {c.name: c for c in found.columns}
    problems += [f"column {n}: missing" for n in want if n not in have]
    problems += [f"column {n}: not expected" for n in have if n not in want]
    for column_name in want.keys() & have.keys():
        for field in ("type", "nullable", "default"):
            a, b = getattr(want[column_name], field), getattr(have[column_name], field)
            if a != b:
                problems.append(f"column {column_name}: {field} expected {a!r}, found {b!r}")
    if want.keys() == have.keys() and list(want) != list(have):
        problems.append(f"column order expected {list(want)}, found {list(have)}")
    for field in ("primary_key", "autoincrement"):
        a, b = getattr(expected, field), getattr(found, field)
        if a != b:
            problems.append(f"{field.replace('_', ' ')} expected {a!r}, found {b!r}")
    problems += [f"CHECK ({c}): missing" for c in sorted(expected.checks - found.checks)]
    problems += [f"CHECK ({c}): not expected" for c in sorted(found.checks - expected.checks)]
    problems += [f"foreign key {fk[:3]}: missing" for fk in expected.foreign_keys - found.foreign_keys]
    problems += [f"foreign key {fk[:3]}: not expected" for fk in found.foreign_keys - expected.foreign_keys]
    for index_name, index in expected.indexes.items():
        other = found.indexes.get(index_name)
        if other is None:
            problems.append(f"index {index_name}: missing")
        elif other != index:
            problems.append(f"index {index_name}: expected {_show(index)}, found {_show(other)}")
    problems += [f"index {n}: not expected" for n in found.indexes if n not in expected.indexes]
    return problems


def _show(index: IndexShape) -> str:
    text = ("UNIQUE " if index.unique else "") + f"({', '.join(index.columns)})"
    return text + (f" WHERE {index.where}" if index.where else "")
