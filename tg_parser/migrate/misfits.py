"""Values a SQLite database holds that the PostgreSQL column of the same name cannot.

SQLite keeps any value in any column: text in an INTEGER column, a blob anywhere, a 64-bit
integer, a NUL character or bytes that are not UTF-8 in text, NULL in a TEXT PRIMARY KEY. A
binary COPY refuses most of them with a bare type or decoding error, and cuts an integer beyond
32 bits short without a word (the checksums catch that). When a transfer fails, this names the
first such value, its row and its column. Only then: looking costs a scan of the table.
"""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import Float, Integer, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

INT4 = (-(2**31), 2**31 - 1)


def first_misfit(reader: Connection, table: Table) -> str | None:
    """The first row of `table` (a SQLite table) holding a value its PostgreSQL column cannot, said in a sentence."""
    return _first_of_another_kind(reader, table) or _first_not_utf8(reader, table)


def _first_of_another_kind(reader: Connection, table: Table) -> str | None:
    quote = reader.dialect.identifier_preparer.quote
    whens = " ".join(f"WHEN {_misfits(quote(c.name), c)} THEN '{c.name}'" for c in table.columns)
    columns = ", ".join(quote(c.name) for c in table.columns)
    with _text_as(reader, lambda raw: raw.decode("utf-8", "backslashreplace")):
        found = reader.connection.driver_connection.execute(
            f"SELECT {columns}, CASE {whens} END AS tg_misfit FROM {quote(table.name)} WHERE tg_misfit IS NOT NULL LIMIT 1"
        ).fetchone()
    if found is None:
        return None
    *values, column = found
    value = values[list(table.columns.keys()).index(column)]
    kind = {str: "text", bytes: "a blob", int: "the integer", float: "the real", type(None): "NULL"}[type(value)]
    if isinstance(value, str) and "\0" in value:
        kind = "text with a NUL character"
    return _sentence(table, values, column, kind, "" if value is None else _shown(value))


def _first_not_utf8(reader: Connection, table: Table) -> str | None:
    """SQL cannot tell valid UTF-8 from invalid: each text is decoded here."""
    quote = reader.dialect.identifier_preparer.quote
    columns = ", ".join(quote(c.name) for c in table.columns)
    with _text_as(reader, bytes):
        for values in reader.connection.driver_connection.execute(f"SELECT {columns} FROM {quote(table.name)}"):
            for position, (column, value) in enumerate(zip(table.columns.keys(), values)):
                try:
                    value.decode("utf-8") if isinstance(value, bytes) else None
                except UnicodeDecodeError:
                    readable = [v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v for v in values]
                    return _sentence(table, readable, column, "text that is not UTF-8,", _shown(readable[position]))
    return None


def _sentence(table: Table, values: list, column: str, kind: str, shown: str) -> str:
    row = dict(zip(table.columns.keys(), values))
    key = ", ".join(f"{c.name}={_shown(row[c.name])}" for c in table.primary_key.columns)
    column_type = table.columns[column].type.compile(dialect=postgresql.dialect())
    if _not_null(table.columns[column]):
        column_type += " NOT NULL"
    return f"the row with {key} holds {' '.join(filter(None, [kind, shown]))} in {column}, which PostgreSQL's {column_type} cannot hold"


def _shown(value) -> str:
    shown = f"x'{value.hex()}'" if isinstance(value, bytes) else repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


@contextmanager
def _text_as(reader: Connection, factory):
    """Read text with `factory`, not Python's strict UTF-8 decoding, which fails on the very values looked for."""
    driver = reader.connection.driver_connection
    previous, driver.text_factory = driver.text_factory, factory
    try:
        yield
    finally:
        driver.text_factory = previous


def _misfits(name: str, column) -> str:
    """SQLite SQL: true when the column's value does not fit PostgreSQL's column."""
    null = f"{name} IS NULL OR " if _not_null(column) else ""
    if isinstance(column.type, Float):
        return f"{null}typeof({name}) NOT IN ('real', 'integer', 'null')"
    if isinstance(column.type, Integer):
        return f"{null}typeof({name}) NOT IN ('integer', 'null') OR {name} NOT BETWEEN {INT4[0]} AND {INT4[1]}"
    return f"{null}typeof({name}) NOT IN ('text', 'null') OR instr({name}, char(0)) > 0"


def _not_null(column) -> bool:
    """NOT NULL on PostgreSQL: declared so, or part of the primary key (SQLite lets a TEXT key be NULL)."""
    return not column.nullable or column.primary_key
