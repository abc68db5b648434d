"""`--repair`: rebuild tables that differ from the baseline only in ways a rebuild removes.

A database whose tables carry an extra or missing UNIQUE or CHECK constraint, foreign key or
index, another default or nullability, or another spelling of a column's type (same SQLite
affinity, so no stored value can change) is otherwise refused by adoption. Such a table is
rebuilt into the baseline's exact form (its own DDL), SQLite's documented way to change a
table: copy the rows aside, drop it, create it again, copy them back with their rowids, and
put the AUTOINCREMENT counter back. It all happens inside the run's held transaction, so a
failure or a kill leaves the database as it was, and each table's row count and content
checksum are compared before the run may commit.

Planning checks first that every row satisfies the constraints the rebuild adds (first ten
offending rows listed, and how many); anything a rebuild cannot remove (a column, a primary
key, a trigger, a view, a type of another affinity) is refused, never guessed at.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from tg_parser.storage.schema_compare import Difference, Schema, TableShape

SHOWN_ROWS = 10
_COPY = "_tg_parser_rebuild"
_ROWID = "_tg_parser_rowid"
_SEQUENCE = "_tg_parser_sequence"
_NOT_REBUILT = {
    "table": "--repair neither creates nor drops tables",
    "view": "--repair does not drop views; drop it by hand if nothing needs it",
    "trigger": "a rebuild would silently drop it; drop it by hand if nothing needs it",
    "column": "a rebuild keeps every column",
    "column order": "a rebuild keeps every column where it is",
    "primary key": "a rebuild keeps every row's identity",
    "autoincrement": "a rebuild keeps every row's identity",
    "without rowid": "a rebuild keeps every row's identity",
}


class CannotRepair(RuntimeError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class RepairFailed(RuntimeError):
    """A rebuilt table's rows are not the rows it had: the run rolls back."""


@dataclass(frozen=True)
class Rebuild:
    table: str
    changes: tuple[Difference, ...]
    create_table: str
    create_indexes: tuple[str, ...]
    columns: tuple[str, ...]
    copy_rowid: bool
    """False when the baseline's INTEGER PRIMARY KEY is the rowid (copying the key copies it)."""
    autoincrement: bool

    def statements(self) -> list[str]:
        """The SQL of the rebuild, in order: what runs, and what `--sql` prints."""
        table, name = _quote(self.table), _literal(self.table)
        columns = ", ".join(map(_quote, self.columns))
        target, source = (f"rowid, {columns}", f"{_ROWID}, {columns}") if self.copy_rowid else (columns, columns)
        keep_counter = [f"CREATE TEMP TABLE {_SEQUENCE} AS SELECT seq FROM main.sqlite_sequence WHERE name = {name}"]
        put_counter_back = [
            f"DELETE FROM main.sqlite_sequence WHERE name = {name}",
            f"INSERT INTO main.sqlite_sequence (name, seq) SELECT {name}, seq FROM temp.{_SEQUENCE}",
            f"DROP TABLE temp.{_SEQUENCE}",
        ]
        return [
            f"CREATE TEMP TABLE {_COPY} AS SELECT rowid AS {_ROWID}, {columns} FROM main.{table}",
            *(keep_counter if self.autoincrement else []),
            f"DROP TABLE main.{table}",
            self.create_table,
            f"INSERT INTO main.{table} ({target}) SELECT {source} FROM temp.{_COPY} ORDER BY {_ROWID}",
            *self.create_indexes,
            *(put_counter_back if self.autoincrement else []),
            f"DROP TABLE temp.{_COPY}",
        ]

    def describe(self) -> str:
        return f"rebuild table {self.table} into the baseline's form ({'; '.join(map(_action, self.changes))})"


@dataclass(frozen=True)
class Repair:
    rebuilds: tuple[Rebuild, ...]


def plan(connection: Connection, baseline: Schema, ddl, found: Schema, differences: list[Difference]) -> Repair:
    """The rebuilds that remove `differences`; raise CannotRepair if a rebuild cannot, or a row forbids it.

    `ddl` is the baseline's (type, table, sql) as the baseline wrote them to sqlite_master.
    """
    problems = [
        f"--repair cannot fix this: {d} ({reason})"
        for d in differences
        if (reason := _not_repairable(d, baseline, found))
    ]
    if problems:
        raise CannotRepair(problems)
    rebuilds = []
    for table in sorted({d.table for d in differences}):
        expected, have = baseline.tables[table], found.tables[table]
        problems += _rows_against(connection, table, expected, have, found)
        rebuilds.append(
            Rebuild(
                table,
                tuple(d for d in differences if d.table == table),
                next(sql for kind, name, sql in ddl if kind == "table" and name == table),
                tuple(sql for kind, name, sql in ddl if kind == "index" and name == table),
                tuple(c.name for c in expected.columns),
                copy_rowid=not _rowid_alias(expected),
                autoincrement=expected.autoincrement,
            )
        )
    if problems:
        raise CannotRepair(problems)
    return Repair(tuple(rebuilds))


def apply(repair: Repair, connection: Connection) -> dict[str, int]:
    """Run the planned rebuilds on the held transaction; return each table's verified row count."""
    if connection.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RepairFailed("PRAGMA foreign_keys is on: dropping a table would delete or cascade rows")
    verified = {}
    for rebuild in repair.rebuilds:
        before = fingerprint(connection, rebuild.table, rebuild.columns)
        for statement in rebuild.statements():
            connection.exec_driver_sql(statement)
        after = fingerprint(connection, rebuild.table, rebuild.columns)
        if after != before:
            raise RepairFailed(
                f"rebuilding {rebuild.table} changed its rows ({before[0]} rows before, {after[0]} after,"
                " or their content or AUTOINCREMENT counter differs); every change was rolled back"
            )
        verified[rebuild.table] = before[0]
    return verified


def fingerprint(connection: Connection, table: str, columns: tuple[str, ...]) -> tuple[int, str, object]:
    """Row count, a checksum of every row with its rowid and each value's type, and the AUTOINCREMENT counter."""
    digest = hashlib.sha256()
    count = 0
    listed = ", ".join(map(_quote, columns))
    for row in connection.exec_driver_sql(f"SELECT rowid, {listed} FROM main.{_quote(table)} ORDER BY rowid"):
        digest.update(repr(tuple(row)).encode())
        count += 1
    return count, digest.hexdigest(), _counter(connection, table)


def _counter(connection: Connection, table: str):
    """The table's AUTOINCREMENT counter (None without one)."""
    if connection.exec_driver_sql("SELECT 1 FROM main.sqlite_master WHERE name = 'sqlite_sequence'").first() is None:
        return None
    return connection.exec_driver_sql("SELECT seq FROM main.sqlite_sequence WHERE name = ?", (table,)).scalar()


def _not_repairable(difference: Difference, baseline: Schema, found: Schema) -> str | None:
    kind = difference.kind
    if kind in ("unique", "check", "index", "foreign key"):
        return None
    if kind != "column" or difference.field not in ("type", "nullable", "default"):
        return _NOT_REBUILT[kind]
    if difference.field != "type":
        return None
    column = difference.label.removeprefix("column ")
    if column in baseline.tables[difference.table].primary_key:
        return "a primary key's type decides the row's identity"
    want = next(c.type for c in baseline.tables[difference.table].columns if c.name == column)
    have = next(c.type for c in found.tables[difference.table].columns if c.name == column)
    if affinity(want) != affinity(have):
        return (
            f"{have} has SQLite type affinity {affinity(have)}, {want} has {affinity(want)}: stored values could change"
        )
    return None


def affinity(declared: str) -> str:
    """SQLite's rules for a column's type affinity from its declared type (section 3.1 of its datatype docs)."""
    declared = declared.upper()
    if "INT" in declared:
        return "INTEGER"
    if any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in declared or not declared:
        return "BLOB"
    if any(word in declared for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _rowid_alias(table: TableShape) -> bool:
    return len(table.primary_key) == 1 and any(
        c.name == table.primary_key[0] and c.type == "INTEGER" for c in table.columns
    )


def _rows_against(
    connection: Connection, table: str, expected: TableShape, have: TableShape, found: Schema
) -> list[str]:
    """A line for each constraint the rebuild adds that some rows break."""
    problems = []
    nullable = {c.name: c.nullable for c in have.columns}
    for column in expected.columns:
        if not column.nullable and nullable.get(column.name):
            problems += _offending(connection, table, f"NOT NULL on column {column.name}", (column.name,),
                                   f"{_quote(column.name)} IS NULL")
    for check in sorted(expected.checks - have.checks):
        columns = tuple(c.name for c in expected.columns if re.search(rf"\b{re.escape(c.name)}\b", check))
        problems += _offending(connection, table, f"CHECK ({check})", columns, f"NOT ({check})")
    uniques = [(f"UNIQUE ({', '.join(cols)})", cols, None) for cols in sorted(expected.unique - have.unique)]
    uniques += [
        (f"unique index {name}", tuple(c.removesuffix(" DESC") for c in index.columns), index.where)
        for name, index in sorted(expected.indexes.items())
        if index.unique and have.indexes.get(name) != index
    ]
    for constraint, columns, where in uniques:
        problems += _offending(connection, table, constraint, columns, _duplicated(table, columns, where))
    for key in sorted(expected.foreign_keys - have.foreign_keys, key=str):
        problems += _offending(connection, table, str(key), key.columns, _orphaned(table, key, found))
    return problems


def _duplicated(table: str, columns: tuple[str, ...], where: str | None) -> str:
    """Rows that share their key with another row (NULLs are distinct in SQLite's unique indexes)."""
    listed = ", ".join(map(_quote, columns))
    condition = " AND ".join([f"{_quote(c)} IS NOT NULL" for c in columns] + ([f"({where})"] if where else []))
    return (
        f"{condition} AND ({listed}) IN (SELECT {listed} FROM main.{_quote(table)}"
        f" WHERE {condition} GROUP BY {listed} HAVING count(*) > 1)"
    )


def _orphaned(table: str, key, found: Schema) -> str:
    present = " AND ".join(f"{_quote(c)} IS NOT NULL" for c in key.columns)
    if key.table not in found.tables:
        return present
    match = " AND ".join(
        f"p.{_quote(r)} = main.{_quote(table)}.{_quote(c)}" for c, r in zip(key.columns, key.referred, strict=True)
    )
    return f"{present} AND NOT EXISTS (SELECT 1 FROM main.{_quote(key.table)} AS p WHERE {match})"


def _offending(connection: Connection, table: str, constraint: str, columns: tuple[str, ...], where: str) -> list[str]:
    source = f"FROM main.{_quote(table)} WHERE {where}"
    count = connection.exec_driver_sql(f"SELECT count(*) {source}").scalar()
    if not count:
        return []
    shown = ", ".join(["rowid", *map(_quote, columns)])
    rows = connection.exec_driver_sql(f"SELECT {shown} {source} ORDER BY rowid LIMIT {SHOWN_ROWS}").all()
    listed = ", ".join(_row(row[0], columns, row[1:]) for row in rows)
    more = f", and {count - len(rows)} more" if count > len(rows) else ""
    return [f"--repair cannot rebuild {table}: {count} row(s) break {constraint}: {listed}{more}"]


def _row(rowid: int, columns: tuple[str, ...], values) -> str:
    """`rowid 3 (topic_id='a', time_from=NULL)`: enough to find the row and see why."""
    shown = ", ".join(f"{column}={_show(value)}" for column, value in zip(columns, values, strict=True))
    return f"rowid {rowid}" + (f" ({shown})" if shown else "")


def _action(difference: Difference) -> str:
    if difference.detail == "missing":
        return f"add {difference.label}"
    if difference.detail == "not expected":
        return f"drop {difference.label}"
    return f"{difference.label}: {difference.detail}"


def _show(value) -> str:
    return "NULL" if value is None else repr(value)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
