"""Reflected-schema comparison: what a database really contains, compared object by object.

Alembic's autogenerate ignores partial-index predicates, unnamed CHECK and UNIQUE constraints,
triggers and views, so this module reflects every kind of schema object: columns in order with
their declared types, nullability and defaults; primary keys; foreign keys with their ON DELETE;
UNIQUE and CHECK constraints; indexes with uniqueness, column order, DESC and WHERE; triggers;
views; AUTOINCREMENT and WITHOUT ROWID. Used by the schema tests, adoption, repair and `db check`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.engine import Connection

_IGNORED_TABLE = re.compile(r"^(sqlite_|alembic_version|_tg_parser_)")
"""SQLite's own tables, version tables, and the work tables and capture triggers of an online rebuild
(tg_parser.migrate.online), which exist only while a run lasts."""
_ACTIONS = {"ondelete": "ON DELETE", "onupdate": "ON UPDATE"}


@dataclass(frozen=True)
class ColumnShape:
    name: str
    type: str
    """As declared (SQLite keeps the spelling: `INT` is not `INTEGER` for a primary key)."""
    nullable: bool
    default: str | None


@dataclass(frozen=True)
class IndexShape:
    unique: bool
    columns: tuple[str, ...]
    where: str | None


@dataclass(frozen=True)
class ForeignKeyShape:
    columns: tuple[str, ...]
    table: str
    referred: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()
    """ON DELETE, ON UPDATE, DEFERRABLE as reflected."""

    def __str__(self) -> str:
        actions = "".join(f" {_ACTIONS.get(key, key.upper())} {value}" for key, value in self.options)
        return f"foreign key ({', '.join(self.columns)}) REFERENCES {self.table} ({', '.join(self.referred)}){actions}"


@dataclass(frozen=True)
class TableShape:
    columns: tuple[ColumnShape, ...]
    primary_key: tuple[str, ...]
    foreign_keys: frozenset[ForeignKeyShape]
    indexes: dict[str, IndexShape]
    checks: frozenset[str]
    autoincrement: bool
    unique: frozenset[tuple[str, ...]] = frozenset()
    triggers: dict[str, str] = field(default_factory=dict)
    """Trigger name → its normalized CREATE TRIGGER statement."""
    without_rowid: bool = False


@dataclass(frozen=True)
class Schema:
    tables: dict[str, TableShape]
    views: dict[str, str] = field(default_factory=dict)
    """View name → its normalized definition."""

    def without(self, names) -> Schema:
        """The same schema without the tables `names` (another database's, in a shared server database)."""
        return Schema({n: s for n, s in self.tables.items() if n not in names}, self.views)

    def only(self, names) -> Schema:
        return Schema({n: s for n, s in self.tables.items() if n in names}, self.views)


@dataclass(frozen=True)
class Difference:
    """One schema object missing, not expected, or different: one readable line."""

    table: str | None
    """None for a view."""
    kind: str
    """table, view, column, column order, primary key, autoincrement, without rowid,
    foreign key, unique, check, index or trigger."""
    detail: str
    label: str = ""
    """The object as shown: `column views`, `UNIQUE (a, b)`, `index x`."""
    field: str = ""
    """For a column: type, nullable or default."""

    def __str__(self) -> str:
        if self.table is None:
            return f"view {self.label}: {self.detail}"
        return f"table {self.table}: " + (f"{self.label}: " if self.label else "") + self.detail


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


def snapshot(connection: Connection, schema: str | None = None) -> Schema:
    """The shape of every user table (version tables excluded) and view."""
    inspector = inspect(connection)
    names = sorted(n for n in inspector.get_table_names(schema=schema) if not _IGNORED_TABLE.match(n))
    views = {
        name: normalize_sql(inspector.get_view_definition(name, schema=schema))
        for name in sorted(inspector.get_view_names(schema=schema))
    }
    return Schema({name: _table(connection, inspector, name, schema) for name in names}, views)


def _table(connection: Connection, inspector, name: str, schema: str | None) -> TableShape:
    sqlite = connection.dialect.name == "sqlite"
    primary_key = tuple(inspector.get_pk_constraint(name, schema=schema)["constrained_columns"])
    reflected_columns = inspector.get_columns(name, schema=schema)
    declared = _declared_types(connection, name) if sqlite else {}
    columns = []
    for column in reflected_columns:
        type_ = declared.get(column["name"]) or column["type"].compile(dialect=connection.dialect).upper()
        nullable = bool(column["nullable"])
        if sqlite and primary_key == (column["name"],) and type_ == "INTEGER":
            nullable = False  # a rowid alias can never hold NULL, whatever PRAGMA says
        columns.append(ColumnShape(column["name"], type_, nullable, normalize_sql(column["default"])))
    foreign_keys = frozenset(
        ForeignKeyShape(
            tuple(fk["constrained_columns"]),
            fk["referred_table"],
            tuple(fk["referred_columns"]),
            tuple(sorted((k, str(v).upper()) for k, v in (fk.get("options") or {}).items())),
        )
        for fk in inspector.get_foreign_keys(name, schema=schema)
    )
    checks = frozenset(normalize_sql(c["sqltext"]) for c in inspector.get_check_constraints(name, schema=schema))
    unique = frozenset(tuple(u["column_names"]) for u in inspector.get_unique_constraints(name, schema=schema))
    indexes = {
        index["name"]: _index(connection, index)
        for index in inspector.get_indexes(name, schema=schema)
        if not index.get("duplicates_constraint")
    }
    if sqlite:
        sql = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).scalar() or ""
        autoincrement = bool(re.search(r"\bAUTOINCREMENT\b", sql, re.IGNORECASE))
        without_rowid = bool(re.search(r"\)\s*WITHOUT\s+ROWID\s*$", sql, re.IGNORECASE))
    else:
        autoincrement = any(column.get("identity") for column in reflected_columns)
        without_rowid = False
    triggers = _triggers(connection, name, schema)
    return TableShape(
        tuple(columns), primary_key, foreign_keys, indexes, checks, autoincrement, unique, triggers, without_rowid
    )


def _declared_types(connection: Connection, table: str) -> dict[str, str]:
    """SQLite's declared type of each column, as written (SQLAlchemy reflects `INT` as INTEGER)."""
    rows = connection.exec_driver_sql(f'PRAGMA table_xinfo("{table}")').all()
    return {row[1]: normalize_sql(row[2]).upper() for row in rows if row[2]}


def _triggers(connection: Connection, table: str, schema: str | None) -> dict[str, str]:
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,)
        ).all()
    else:
        qualified = f'"{schema}"."{table}"' if schema else f'"{table}"'
        rows = connection.execute(
            text(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger"
                " WHERE tgrelid = to_regclass(:table) AND NOT tgisinternal"
            ),
            {"table": qualified},
        ).all()
        if schema:  # the scratch schema's name must not make two equal triggers differ
            rows = [(name, sql.replace(f"{qualified}.", "").replace(f"{schema}.", "")) for name, sql in rows]
    return {name: normalize_sql(sql) for name, sql in sorted(rows) if not _IGNORED_TABLE.match(name)}


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


def metadata_snapshot(metadata: MetaData) -> Schema:
    """The shape `metadata` gives a fresh SQLite database (built in memory)."""
    engine = create_engine("sqlite://")
    with engine.begin() as connection:
        metadata.create_all(connection)
        return snapshot(connection)


def expected_snapshot(metadata: MetaData, connection: Connection) -> Schema:
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


def differences(expected: Schema, found: Schema) -> list[Difference]:
    """Every difference, sorted by table; empty when the schemas are equal."""
    found_list = [Difference(n, "table", "missing") for n in expected.tables if n not in found.tables]
    found_list += [Difference(n, "table", "not expected") for n in found.tables if n not in expected.tables]
    for name in sorted(expected.tables.keys() & found.tables.keys()):
        found_list += _compare_table(name, expected.tables[name], found.tables[name])
    found_list += [Difference(None, "view", "missing", n) for n in expected.views if n not in found.views]
    found_list += [Difference(None, "view", "not expected", n) for n in found.views if n not in expected.views]
    found_list += [
        Difference(None, "view", f"expected {expected.views[n]!r}, found {found.views[n]!r}", n)
        for n in expected.views.keys() & found.views.keys()
        if expected.views[n] != found.views[n]
    ]
    return sorted(found_list, key=str)


def compare(expected: Schema, found: Schema) -> list[str]:
    """Every difference, one readable line each; empty when the schemas are equal."""
    return [str(d) for d in differences(expected, found)]


def _compare_table(table: str, expected: TableShape, found: TableShape) -> list[Difference]:
    problems: list[Difference] = []

    def add(kind: str, detail: str, label: str = "", field: str = "") -> None:
        problems.append(Difference(table, kind, detail, label, field))

    want = {c.name: c for c in expected.columns}
    have = {c.name: c for c in found.columns}
    for name in want.keys() - have.keys():
        add("column", "missing", f"column {name}")
    for name in have.keys() - want.keys():
        add("column", "not expected", f"column {name}")
    for name in want.keys() & have.keys():
        for attribute in ("type", "nullable", "default"):
            a, b = getattr(want[name], attribute), getattr(have[name], attribute)
            if a != b:
                add("column", f"{attribute} expected {a!r}, found {b!r}", f"column {name}", attribute)
    if want.keys() == have.keys() and list(want) != list(have):
        add("column order", f"column order expected {list(want)}, found {list(have)}")
    for attribute in ("primary_key", "autoincrement", "without_rowid"):
        a, b = getattr(expected, attribute), getattr(found, attribute)
        if a != b:
            add(attribute.replace("_", " "), f"{attribute.replace('_', ' ')} expected {a!r}, found {b!r}")
    for columns, change in _sides(expected.unique, found.unique):
        add("unique", change, f"UNIQUE ({', '.join(columns)})")
    for check, change in _sides(expected.checks, found.checks):
        add("check", change, f"CHECK ({check})")
    for key, change in _sides(expected.foreign_keys, found.foreign_keys):
        add("foreign key", change, str(key))
    for name, index in expected.indexes.items():
        other = found.indexes.get(name)
        if other is None:
            add("index", "missing", f"index {name}")
        elif other != index:
            add("index", f"expected {_show(index)}, found {_show(other)}", f"index {name}")
    for name in found.indexes.keys() - expected.indexes.keys():
        add("index", "not expected", f"index {name}")
    for name, sql in expected.triggers.items():
        other = found.triggers.get(name)
        if other != sql:
            add("trigger", "missing" if other is None else f"expected {sql!r}, found {other!r}", f"trigger {name}")
    for name in found.triggers.keys() - expected.triggers.keys():
        add("trigger", "not expected", f"trigger {name}")
    return problems


def _sides(expected: frozenset, found: frozenset):
    """(item, 'missing' or 'not expected') for what only one side has."""
    yield from ((item, "missing") for item in sorted(expected - found, key=str))
    yield from ((item, "not expected") for item in sorted(found - expected, key=str))


def _show(index: IndexShape) -> str:
    text = ("UNIQUE " if index.unique else "") + f"({', '.join(index.columns)})"
    return text + (f" WHERE {index.where}" if index.where else "")
