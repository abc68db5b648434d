"""Each project's baseline recreates the 3.0.0 schema exactly and agrees with its MetaData."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from tests.conftest import LEGACY
from tg_parser.migrate.target import Target
from tg_parser.storage.databases import DATABASES
from tg_parser.storage.schema_compare import compare, metadata_snapshot, snapshot


def reflect(path: Path):
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        return snapshot(connection)


def target_for(db, path: Path) -> Target:
    from sqlalchemy.engine import URL

    return Target(db, URL.create("sqlite", database=str(path)), str(path), path)


def alembic_to(target: Target, revision: str, downgrade: bool = False) -> None:
    with target.connect() as connection:
        (command.downgrade if downgrade else command.upgrade)(target.config(connection), revision)


@pytest.mark.parametrize("db", DATABASES, ids=lambda db: db.name)
def test_each_project_has_exactly_one_head(db):
    target = target_for(db, Path("unused.sqlite"))
    assert len(target.heads()) == 1


@pytest.mark.parametrize("db", DATABASES, ids=lambda db: db.name)
def test_upgrade_head_on_an_empty_file_creates_every_table_and_index(db, tmp_path):
    path = tmp_path / db.default_file
    alembic_to(target_for(db, path), "head")
    found = reflect(path)
    assert set(found.tables) == set(db.metadata.tables)
    expected_indexes = {index.name for table in db.metadata.tables.values() for index in table.indexes}
    assert {name for shape in found.tables.values() for name in shape.indexes} == expected_indexes
    assert compare(metadata_snapshot(db.metadata), found) == []


@pytest.mark.parametrize("db", DATABASES, ids=lambda db: db.name)
def test_fresh_upgrade_equals_the_3_0_0_fixture_schema(db, tmp_path):
    path = tmp_path / db.default_file
    alembic_to(target_for(db, path), "head")
    assert compare(reflect(LEGACY / db.default_file), reflect(path)) == []


@pytest.mark.parametrize("db", DATABASES, ids=lambda db: db.name)
def test_downgrade_to_base_and_upgrade_again_gives_the_same_schema(db, tmp_path):
    path = tmp_path / db.default_file
    target = target_for(db, path)
    alembic_to(target, "head")
    first = reflect(path)
    alembic_to(target, "base", downgrade=True)
    assert reflect(path).tables == {}
    alembic_to(target, "head")
    assert reflect(path) == first


@pytest.mark.parametrize("db", DATABASES, ids=lambda db: db.name)
def test_autogenerate_finds_no_difference_after_upgrade(db, tmp_path):
    path = tmp_path / db.default_file
    target = target_for(db, path)
    alembic_to(target, "head")
    with target.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": db.version_table}
        )
        assert compare_metadata(context, db.metadata) == []


def clone_schema(source: Path, destination: Path, edit=lambda sql: sql, skip=()) -> Path:
    """A new database with `source`'s DDL, edited: how the tests build schema variants."""
    with sqlite3.connect(source) as src:
        statements = [
            (name, sql)
            for name, sql in src.execute(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'sqlite_sequence'"
                " ORDER BY type DESC"
            )
        ]
    with sqlite3.connect(destination) as dst:
        for name, sql in statements:
            if name not in skip:
                dst.execute(edit(sql))
    return destination


def test_comparator_catches_a_removed_index(tmp_path):
    fixture = LEGACY / "raw_storage.sqlite"
    variant = clone_schema(fixture, tmp_path / "v.sqlite", skip={"raw_messages_thread_idx"})
    assert compare(reflect(fixture), reflect(variant)) == ["table raw_messages: index raw_messages_thread_idx: missing"]


def test_comparator_catches_a_changed_default(tmp_path):
    fixture = LEGACY / "raw_storage.sqlite"
    edit = lambda sql: sql.replace("raw_payload_truncated INTEGER NOT NULL DEFAULT 0", "raw_payload_truncated INTEGER NOT NULL DEFAULT 1")
    variant = clone_schema(fixture, tmp_path / "v.sqlite", edit=edit)
    assert compare(reflect(fixture), reflect(variant)) == [
        "table raw_messages: column raw_payload_truncated: default expected '0', found '1'"
    ]


def test_comparator_catches_a_missing_check(tmp_path):
    fixture = LEGACY / "ingestion_state.sqlite"
    edit = lambda sql: sql.replace(" CHECK(status IN ('active', 'paused', 'error'))", "")
    variant = clone_schema(fixture, tmp_path / "v.sqlite", edit=edit)
    assert compare(reflect(fixture), reflect(variant)) == [
        "table sources: CHECK (status IN ('active', 'paused', 'error')): missing"
    ]


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("WHERE time_from IS NULL AND time_to IS NULL", "", "index topic_bundles_current_unique_idx: expected"),
        ("ON api_jobs(created_at DESC)", "ON api_jobs(created_at)", "index api_jobs_created_at_idx: expected"),
        ("id INTEGER PRIMARY KEY AUTOINCREMENT", "id INTEGER PRIMARY KEY", "autoincrement expected True"),
        ("FOREIGN KEY (agent_name) REFERENCES agent_states(name)", "CHECK (1)", "foreign key"),
        ("CREATE UNIQUE INDEX topic_bundles_snapshot", "CREATE INDEX topic_bundles_snapshot", "snapshot_unique_idx: expected UNIQUE"),
    ],
)
def test_comparator_catches_partial_desc_autoincrement_fk_and_uniqueness(tmp_path, old, new, problem):
    for db in DATABASES:
        fixture = LEGACY / db.default_file
        variant = clone_schema(fixture, tmp_path / f"{db.name}.sqlite", edit=lambda sql: sql.replace(old, new))
        problems = compare(reflect(fixture), reflect(variant))
        if problems:
            assert any(problem in p for p in problems), problems
            return
    pytest.fail(f"no fixture contains {old!r}")


def test_comparator_sees_the_declared_type_as_written(tmp_path):
    """SQLAlchemy reflects `INT` as INTEGER; SQLite does not (an `INT PRIMARY KEY` is no rowid)."""
    fixture = LEGACY / "ingestion_state.sqlite"
    edit = lambda sql: sql.replace("fail_count INTEGER NOT NULL", "fail_count INT NOT NULL")
    variant = clone_schema(fixture, tmp_path / "v.sqlite", edit=edit)
    assert compare(reflect(fixture), reflect(variant)) == [
        "table sources: column fail_count: type expected 'INTEGER', found 'INT'"
    ]
