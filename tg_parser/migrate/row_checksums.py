"""Row hashes and table checksums, computed in SQL by the database that holds the rows.

Both sides of `db transfer` use the one definition here, so the target is verified without
reading a row back. Each row gets a canonical text: for each column in order, the length of
its value in bytes, `:`, and the value, with NULL written as a bare `:` (a value has at least
the digit of its length), so no two rows share one. Integers are in decimal, floats their
exact IEEE 754 bits in hex (SQLite's own float text keeps only 15 digits). A row's hash is the
first 64 bits of its canonical text's SHA-256 (faster than MD5 on CPUs with SHA extensions), and
a table's checksum the sum of its rows' hashes modulo 2**64: order-independent, because SQLite
and PostgreSQL return rows in different orders. PostgreSQL computes all of it with its own
functions; SQLite has no hash function, so two small ones are registered on the connection.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from sqlalchemy import Column, Float, Integer, Table
from sqlalchemy.engine import Connection

MODULUS = 2**64
COLUMNS_PER_CALL = 30  # PostgreSQL's concat() takes at most 100 arguments (3 a column), SQLite's printf() 127


@dataclass(frozen=True)
class Checksum:
    rows: int
    value: int

    def __sub__(self, other: Checksum) -> Checksum:
        return Checksum(self.rows - other.rows, (self.value - other.value) % MODULUS)


def row_hash(connection: Connection, table: Table) -> str:
    """SQL for the hash of one row of `table`, a signed 64-bit integer, in `connection`'s dialect."""
    quote = connection.dialect.identifier_preparer.quote
    sqlite = connection.dialect.name == "sqlite"
    texts = [_text(quote(c.name), c, sqlite) for c in table.columns]
    call = _sqlite_call if sqlite else _postgres_call
    canonical = " || ".join(call(texts[i : i + COLUMNS_PER_CALL]) for i in range(0, len(texts), COLUMNS_PER_CALL))
    if sqlite:
        _register_sqlite_functions(connection)
        return f"tg_sha256_64(CAST({canonical} AS BLOB))"
    return f"('x' || encode(substring(sha256(convert_to({canonical}, 'UTF8')) FROM 1 FOR 8), 'hex'))::bit(64)::bigint"


def table_checksum(connection: Connection, table: Table) -> Checksum:
    """Count and checksum of a PostgreSQL table as `connection` sees it, in one aggregate on the server."""
    name = connection.dialect.identifier_preparer.quote(table.name)
    rows, value = connection.exec_driver_sql(f"SELECT count(*), sum({row_hash(connection, table)}) FROM {name}").one()
    return Checksum(rows, int(value or 0) % MODULUS)


def _sqlite_call(texts: list[str]) -> str:
    arguments = ", ".join(f"length(CAST({t} AS BLOB)), {t}" for t in texts)
    return f"printf('{'%s:%s' * len(texts)}', {arguments})"


def _postgres_call(texts: list[str]) -> str:
    arguments = ", ".join(f"octet_length({t}), ':', {t}" for t in texts)
    return f"concat({arguments})"


def _text(name: str, column: Column, sqlite: bool) -> str:
    """SQL for a value's canonical text (NULL stays NULL)."""
    if isinstance(column.type, Float):
        return f"tg_float8_hex({name})" if sqlite else f"encode(float8send({name}), 'hex')"
    if isinstance(column.type, Integer):
        return f"CAST({name} AS TEXT)"
    return name


_first_64_bits = struct.Struct(">q").unpack_from


def _sha256_64(canonical: bytes) -> int:
    return _first_64_bits(hashlib.sha256(canonical).digest())[0]


def _float8_hex(value: float | None) -> str | None:
    """The bytes PostgreSQL's float8send gives, in hex."""
    return None if value is None else struct.pack(">d", value).hex()


def _register_sqlite_functions(connection: Connection) -> None:
    driver = connection.connection.driver_connection
    driver.create_function("tg_sha256_64", 1, _sha256_64, deterministic=True)
    driver.create_function("tg_float8_hex", 1, _float8_hex, deterministic=True)
