"""Values a SQLite database holds that the PostgreSQL column of the same name cannot.

SQLite keeps any value in any column: text in an INTEGER column, a blob anywhere, a 64-bit
integer, a NUL character in text. A binary COPY refuses most of them with a bare type error,
and cuts an integer beyond 32 bits short without a word (the checksums catch that). When a
transfer fails, this names the first such value, its row and its column. Only then: looking
costs a scan of the table.
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

INT4 = (-(2**31), 2**31 - 1)


def first_misfit(reader: Connection, table: Table) -> str | None:
    """The first row of `table` (a SQLite table) holding a value its PostgreSQL column cannot, said in a sentence."""
    quote = reader.dialect.identifier_preparer.quote
    whens = " ".join(f"WHEN {_misfits(quote(c.name), c)} THEN '{c.name}'" for c in table.columns)
    columns = ", ".join(quote(c.name) for c in table.columns)
    found = reader.exec_driver_sql(
        f"SELECT {columns}, CASE {whens} END AS tg_misfit FROM {quote(table.name)} WHERE tg_misfit IS NOT NULL LIMIT 1"
    ).first()
    if found is None:
        return None
    *values, column = found
    row = dict(zip(table.columns.keys(), values))
    key = ", ".join(f"{c.name}={row[c.name]!r}" for c in table.primary_key.columns)
    value = row[column]
    kind = {str: "text", bytes: "a blob", int: "the integer", float: "the real"}[type(value)]
    if isinstance(value, str) and "\0" in value:
        kind = "text with a NUL character"
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    column_type = table.columns[column].type.compile(dialect=postgresql.dialect())
    return f"the row with {key} holds {kind} {shown} in {column}, which PostgreSQL's {column_type} cannot hold"


def _misfits(name: str, column) -> str:
    if isinstance(column.type, Float):
        return f"typeof({name}) NOT IN ('real', 'integer', 'null')"
    if isinstance(column.type, Integer):
        return f"typeof({name}) NOT IN ('integer', 'null') OR {name} NOT BETWEEN {INT4[0]} AND {INT4[1]}"
    return f"typeof({name}) NOT IN ('text', 'null') OR instr({name}, char(0)) > 0"
