"""Checks every revision of every project, present and future, so a new revision is tested on arrival.

- Up and down, one step at a time: each downgrade gives back exactly the schema before its upgrade.
- Data preservation: upgrading the 3.0.0 fixtures to head keeps every row of every 3.0.0 table
  (the tables a later revision may reshape are compared by row count).
"""

from __future__ import annotations

import sqlite3

import pytest
from alembic import command
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from tests.conftest import content_checksums, run_cli
from tg_parser.migrate.target import Target
from tg_parser.storage.databases import DATABASES
from tg_parser.storage.schema_compare import snapshot


def walk(db) -> list[str]:
    """The project's revisions from the first to head."""
    script = Target.in_memory(db).script
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


@pytest.mark.parametrize("db", DATABASES, ids=lambda db: db.name)
def test_each_step_down_undoes_its_step_up(db, tmp_path):
    path = tmp_path / db.default_file
    target = Target(db, URL.create("sqlite", database=str(path)), str(path), path)
    engine = create_engine(f"sqlite:///{path}")
    shapes = []
    with target.connect() as connection:
        for revision in walk(db):
            with engine.connect() as reader:
                shapes.append(snapshot(reader))
            command.upgrade(target.config(connection), revision)
        for revision in reversed(walk(db)):
            command.downgrade(target.config(connection), "-1")
            with engine.connect() as reader:
                assert snapshot(reader) == shapes.pop(), f"downgrade of {revision} did not undo its upgrade"
    engine.dispose()


def row_counts(path) -> dict[str, int]:
    with sqlite3.connect(path) as connection:
        names = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: connection.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def test_upgrading_the_3_0_0_fixtures_to_head_keeps_every_row(legacy_copy):
    before = {db.name: (content_checksums(legacy_copy / db.default_file), row_counts(legacy_copy / db.default_file))
              for db in DATABASES}
    assert run_cli("db", "upgrade").exit_code == 0
    for db in DATABASES:
        path = legacy_copy / db.default_file
        sums, counts = before[db.name]
        after_sums, after_counts = content_checksums(path), row_counts(path)
        for table, count in counts.items():
            assert after_counts.get(table) == count, f"{db.name}.{table} lost rows"
            if len(walk(db)) == 1:  # only the baseline: rows must be byte for byte the same
                assert after_sums[table] == sums[table]
