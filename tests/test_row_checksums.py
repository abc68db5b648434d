"""The row checksums `db transfer` verifies with: SQLite and PostgreSQL agree on equal rows, and any one changed value shows."""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine

from tg_parser.migrate.row_checksums import MODULUS, Checksum, row_hash, table_checksum
from tg_parser.storage.schema.columns import real_col

probe = Table(
    "probe",
    MetaData(),
    Column("k", Integer, primary_key=True),
    Column("t", Text),
    Column("i", Integer),
    Column("r", real_col("r", default="0.0").type),  # 3.0.0's REAL: DOUBLE PRECISION on PostgreSQL
)

TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=12)
ROW = st.tuples(st.none() | TEXT, st.none() | st.integers(-(2**31), 2**31 - 1), st.none() | st.floats(allow_nan=False))


def sqlite_checksum(engine) -> Checksum:
    """What `db transfer` sums from a SQLite source: the row hashes SQLite computes."""
    with engine.connect() as connection:
        hashes = connection.exec_driver_sql(f"SELECT {row_hash(connection, probe)} FROM probe").scalars().all()
    return Checksum(len(hashes), sum(hashes) % MODULUS)


def changed(value, column: str):
    """A value one step away from `value`: one more character, one more unit, the next float."""
    if value is None:
        return {"t": "", "i": 0, "r": 0.0}[column]
    if column == "t":
        return value + "x"
    if column == "i":
        return value - 1 if value > 0 else value + 1
    return math.nextafter(value, 0.0 if math.isinf(value) else math.inf)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=6), data=st.data())
def test_sqlite_and_postgres_agree_on_equal_rows_and_see_one_changed_value(tmp_path, postgres_url, rows, data):
    sqlite_file = tmp_path / "probe.sqlite"
    sqlite_file.unlink(missing_ok=True)
    source, target = create_engine(f"sqlite:///{sqlite_file}"), create_engine(postgres_url)
    try:
        for engine in (source, target):
            probe.drop(engine, checkfirst=True)
            probe.create(engine)
        with closing(sqlite3.connect(sqlite_file)) as connection, connection:
            connection.executemany("INSERT INTO probe (t, i, r) VALUES (?, ?, ?)", rows)
            stored = connection.execute("SELECT k, t, i, r FROM probe ORDER BY k").fetchall()  # as SQLite keeps them
        with target.begin() as connection:
            for row in reversed(stored):  # in another order: the checksum must not care
                connection.execute(probe.insert().values(dict(zip("ktir", row))))

        with target.connect() as connection:
            assert sqlite_checksum(source) == table_checksum(connection, probe)
        assert sqlite_checksum(source).rows == len(rows)

        if stored:
            k, *values = data.draw(st.sampled_from(stored))
            column = data.draw(st.sampled_from("tir"))
            new = changed(values["tir".index(column)], column)
            with target.begin() as connection:
                connection.execute(probe.update().where(probe.c.k == k).values({column: new}))
            with target.connect() as connection:
                assert sqlite_checksum(source) != table_checksum(connection, probe)
    finally:
        source.dispose()
        target.dispose()


def test_a_table_wider_than_one_concatenating_call_hashes_alike(tmp_path, postgres_url):
    wide = Table("wide", MetaData(), Column("k", Integer, primary_key=True), *(Column(f"c{i}", Text) for i in range(70)))
    row = {"k": 1, **{f"c{i}": None if i % 7 == 0 else f"value {i}" for i in range(70)}}
    source, target = create_engine(f"sqlite:///{tmp_path / 'wide.sqlite'}"), create_engine(postgres_url)
    try:
        for engine in (source, target):
            wide.create(engine)
            with engine.begin() as connection:
                connection.execute(wide.insert().values(row))
        with source.connect() as left, target.connect() as right:
            (hashed,) = left.exec_driver_sql(f"SELECT {row_hash(left, wide)} FROM wide").one()
            assert table_checksum(right, wide) == Checksum(1, hashed % MODULUS)
            right.execute(wide.update().values(c69="value 69!"))
            assert table_checksum(right, wide) != Checksum(1, hashed % MODULUS)
    finally:
        source.dispose()
        target.dispose()
