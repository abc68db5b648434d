"""The row checksums `db transfer` verifies with: SQLite and PostgreSQL agree on equal rows, and any one changed value shows."""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine

from tg_parser.migrate.row_checksums import table_checksum
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

        with source.connect() as left, target.connect() as right:
            assert table_checksum(left, probe) == table_checksum(right, probe)
            assert table_checksum(left, probe).rows == len(rows)

        if stored:
            k, *values = data.draw(st.sampled_from(stored))
            column = data.draw(st.sampled_from("tir"))
            new = changed(values["tir".index(column)], column)
            with target.begin() as connection:
                connection.execute(probe.update().where(probe.c.k == k).values({column: new}))
            with source.connect() as left, target.connect() as right:
                assert table_checksum(left, probe) != table_checksum(right, probe)
    finally:
        source.dispose()
        target.dispose()
