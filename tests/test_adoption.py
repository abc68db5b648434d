"""Databases of releases 1.x–3.0.0 (no version table) are adopted, or refused with a precise diff."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from tests.conftest import LEGACY, content_checksums, file_digest, run_cli, table_names, version_rows
from tg_parser.storage.databases import DATABASES
from tg_parser.storage.schema.processing import ADDED_IN_3_0_0


def digests(data_dir):
    return {db.name: file_digest(data_dir / db.default_file) for db in DATABASES}


def test_upgrade_adopts_the_3_0_0_databases_without_changing_a_row(legacy_copy):
    before = {db.name: content_checksums(legacy_copy / db.default_file) for db in DATABASES}
    assert all(any(v for v in sums.values()) for sums in before.values())
    result = run_cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    for db in DATABASES:
        path = legacy_copy / db.default_file
        after = content_checksums(path)
        version_table = after.pop(db.version_table)
        assert after == before[db.name], db.name
        assert version_table
        assert version_rows(path, db.name) == [f"{db.name}_0001"]
        assert "adopted a pre-Alembic database" in result.output
    assert run_cli("db", "check").exit_code == 0


def test_a_2x_processing_database_is_adopted_and_gains_the_newer_tables(data_dir):
    data_dir.mkdir()
    path = data_dir / "processing_storage.sqlite"
    shutil.copyfile(LEGACY / "processing_storage.sqlite", path)
    with sqlite3.connect(path) as connection:
        for table in ADDED_IN_3_0_0:
            connection.execute(f"DROP TABLE {table}")
        (documents,) = connection.execute("SELECT count(*) FROM processed_documents").fetchone()
    assert documents > 0
    before = content_checksums(path)

    result = run_cli("db", "upgrade", "--only", "processing")
    assert result.exit_code == 0, result.output
    assert "created api_jobs, agent_states, task_history, agent_stats, handoff_history" in result.output
    after = content_checksums(path)
    assert {t: after[t] for t in before} == before
    assert set(ADDED_IN_3_0_0) <= table_names(path)
    check = run_cli("db", "check", "--only", "processing")
    assert check.exit_code == 0, check.output


def _extra_column(path):
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE raw_messages ADD COLUMN views INTEGER")


def _missing_index(path):
    with sqlite3.connect(path) as connection:
        connection.execute("DROP INDEX raw_messages_thread_idx")


def _garbage(path):
    path.write_bytes(b"\x00garbage, not a database\n" * 64)


def _unknown_revision(path):
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE alembic_version_raw (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version_raw VALUES ('raw_9999')")


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_extra_column, "table raw_messages: column views: not expected"),
        (_missing_index, "table raw_messages: index raw_messages_thread_idx: missing"),
        (_garbage, "is not a SQLite database"),
        (_unknown_revision, "database is newer than this tg-parser (unknown revision raw_9999)"),
    ],
    ids=["extra-column", "missing-index", "garbage", "unknown-revision"],
)
def test_a_raw_database_that_cannot_be_adopted_is_refused_and_nothing_changes(legacy_copy, spoil, message):
    spoil(legacy_copy / "raw_storage.sqlite")
    before = digests(legacy_copy)
    result = run_cli("db", "upgrade")
    assert result.exit_code == 3, result.output
    assert message in result.output
    assert "Nothing was changed." in result.output
    assert digests(legacy_copy) == before
    assert not (legacy_copy / "backups").exists()


def test_only_raw_touches_only_the_raw_file(legacy_copy):
    before = digests(legacy_copy)
    result = run_cli("db", "upgrade", "--only", "raw")
    assert result.exit_code == 0, result.output
    after = digests(legacy_copy)
    assert after["raw"] != before["raw"]
    assert after["ingestion"] == before["ingestion"] and after["processing"] == before["processing"]


def test_sql_prints_each_database_s_sql_and_touches_nothing(data_dir, legacy_copy):
    (legacy_copy / "processing_storage.sqlite").unlink()
    before = digests(legacy_copy)
    result = run_cli("db", "upgrade", "--sql")
    assert result.exit_code == 0, result.output
    assert "-- raw: adopting a pre-Alembic database" in result.output
    assert "CREATE TABLE api_jobs" in result.output
    assert "INSERT INTO alembic_version_processing" in result.output
    assert digests(legacy_copy) == before
