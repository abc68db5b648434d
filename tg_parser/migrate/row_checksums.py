"""A table's row count and content checksum, computed by the database that holds it.

Both sides of `db transfer` run the same definition, so the target is verified without reading
a row back. Each row gets a canonical text: its columns in order, each `-` when NULL and
`<bytes>:<text>` otherwise, so that no two rows share one. Integers are in decimal, floats
their exact IEEE 754 bits in hex (SQLite's own float text keeps only 15 digits). The checksum
is the sum, modulo 2**64, of the first 64 bits of each canonical text's SHA-256 (which this CPU
class computes faster than MD5): order-independent, because SQLite and PostgreSQL return rows
in different orders. PostgreSQL computes it with its own functions; SQLite has no hash
function, so two small ones are registered on the connection that reads it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Float, Integer, Table
from sqlalchemy.engine import Connection

MODULUS = 2**64
MAX_ARGUMENTS = 50  # per concatenating call: PostgreSQL takes at most 100, SQLite 127


@dataclass(frozen=True)
class Checksum:
    rows: int
    value: int

    def __sub__(self, other: Checksum) -> Checksum:
        return Checksum(self.rows - other.rows, (self.value - other.value) % MODULUS)


def table_checksum(connection: Connection, table: Table) -> Checksum:
    """Count and checksum of `table` as `connection` sees it (inside its transaction, if any)."""
    if connection.dialect.name == "sqlite":
        _register_sqlite_functions(connection)
        canonical = _concat(_parts(connection, table), lambda p: f"printf('{'%s' * len(p)}', {', '.join(p)})")
        digest = f"tg_checksum(CAST({canonical} AS BLOB))"
    else:
        canonical = _concat(_parts(connection, table), lambda p: f"concat({', '.join(p)})")
        digest = f"sum(('x' || encode(substring(sha256(convert_to({canonical}, 'UTF8')) FROM 1 FOR 8), 'hex'))::bit(64)::bigint)"
    name = connection.dialect.identifier_preparer.quote(table.name)
    rows, value = connection.exec_driver_sql(f"SELECT count(*), {digest} FROM {name}").one()
    return Checksum(rows, int(value or 0) % MODULUS)


def _parts(connection: Connection, table: Table) -> list[str]:
    """For each column, the SQL of its length prefix (or `-`) and of its text (NULL adds nothing)."""
    parts = []
    for column in table.columns:
        value = _text_of(connection, column)
        size = f"length(CAST({value} AS BLOB))" if connection.dialect.name == "sqlite" else f"octet_length({value})"
        parts += [f"coalesce({size} || ':', '-')", value]
    return parts


def _text_of(connection: Connection, column: Column) -> str:
    name = connection.dialect.identifier_preparer.quote(column.name)
    sqlite = connection.dialect.name == "sqlite"
    if isinstance(column.type, Float):
        return f"tg_float8_hex({name})" if sqlite else f"encode(float8send({name}), 'hex')"
    if isinstance(column.type, Integer):
        return f"CAST({name} AS TEXT)"
    return name


def _concat(parts: list[str], call: Callable[[list[str]], str]) -> str:
    while len(parts) > MAX_ARGUMENTS:
        parts = [call(parts[i : i + MAX_ARGUMENTS]) for i in range(0, len(parts), MAX_ARGUMENTS)]
    return call(parts)


class _Sum:
    """SQLite aggregate: the sum of the first 64 bits of each canonical text's SHA-256, modulo 2**64."""

    def __init__(self) -> None:
        self.value = 0

    def step(self, canonical: bytes) -> None:
        self.value += int.from_bytes(hashlib.sha256(canonical).digest()[:8], "big")

    def finalize(self) -> int:
        value = self.value % MODULUS
        return value - MODULUS if value >= 2**63 else value  # SQLite integers are signed


def _float8_hex(value: float | None) -> str | None:
    """The bytes PostgreSQL's float8send gives, in hex."""
    return None if value is None else struct.pack(">d", value).hex()


def _register_sqlite_functions(connection: Connection) -> None:
    driver = connection.connection.driver_connection
    driver.create_aggregate("tg_checksum", 1, _Sum)
    driver.create_function("tg_float8_hex", 1, _float8_hex, deterministic=True)
