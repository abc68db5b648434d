"""`tg-parser init` and `tg-parser db ...` on real SQLite files in a temporary data dir."""

from __future__ import annotations

import logging

from tests.conftest import file_digest, run_cli, table_names, version_rows
from tg_parser.storage.databases import DATABASES, get_database


def db_files(data_dir):
    return sorted(p.name for p in data_dir.glob("*.sqlite"))


def digests(data_dir):
    return {db.name: file_digest(data_dir / db.default_file) for db in DATABASES}


def test_init_creates_three_files_at_head(data_dir):
    result = run_cli("init")
    assert result.exit_code == 0, result.output
    for db in DATABASES:
        path = data_dir / db.default_file
        assert version_rows(path, db.name) == [f"{db.name}_0001"]
        assert set(db.metadata.tables) <= table_names(path)
        assert str(path) in result.output


def test_second_init_changes_nothing_and_says_so(data_dir):
    run_cli("init")
    before = digests(data_dir)
    mtimes = {p.name: p.stat().st_mtime_ns for p in data_dir.glob("*.sqlite")}
    result = run_cli("init")
    assert result.exit_code == 0
    assert "Nothing to do" in result.output
    assert digests(data_dir) == before
    assert {p.name: p.stat().st_mtime_ns for p in data_dir.glob("*.sqlite")} == mtimes


def test_upgrade_only_raw_on_an_empty_data_dir_creates_only_the_raw_file(data_dir):
    result = run_cli("db", "upgrade", "--only", "raw")
    assert result.exit_code == 0, result.output
    assert db_files(data_dir) == ["raw_storage.sqlite"]
    assert "ingestion" not in result.output


def test_downgrade_only_raw_to_base_leaves_the_others_untouched(data_dir):
    run_cli("init")
    before = digests(data_dir)
    result = run_cli("db", "downgrade", "--only", "raw", "base", "--yes")
    assert result.exit_code == 0, result.output
    after = digests(data_dir)
    assert after["ingestion"] == before["ingestion"] and after["processing"] == before["processing"]
    raw = data_dir / get_database("raw").default_file
    assert version_rows(raw, "raw") == []
    assert {t for t in table_names(raw) if not t.startswith("sqlite_")} == {"alembic_version_raw"}


def test_default_downgrade_is_one_step_in_reverse_order(data_dir):
    run_cli("init")
    result = run_cli("db", "downgrade", "--yes")
    assert result.exit_code == 0, result.output
    order = [line.split()[0] for line in result.stdout.splitlines() if not line.startswith((" ", "holds"))][:3]
    assert order == ["processing", "raw", "ingestion"]
    for db in DATABASES:
        assert version_rows(data_dir / db.default_file, db.name) == []


def test_current_and_history_show_every_database(data_dir):
    run_cli("db", "upgrade", "--only", "ingestion")
    current = run_cli("db", "current")
    assert current.exit_code == 0
    lines = current.output.splitlines()
    assert [line.split()[0] for line in lines] == ["ingestion", "raw", "processing"]
    assert "ingestion_0001 (head)" in lines[0]
    assert "(no file yet)" in lines[1] and str(data_dir / "raw_storage.sqlite") in lines[1]
    assert not (data_dir / "raw_storage.sqlite").exists(), "db current must not create files"
    history = run_cli("db", "history")
    assert history.exit_code == 0
    assert "ingestion_0001 (head, current)" in history.output
    assert "raw_0001 (head)" in history.output and "processing_0001 (head)" in history.output


def test_unknown_database_name_is_a_usage_error_listing_the_valid_names(data_dir):
    result = run_cli("db", "upgrade", "--only", "rawx")
    assert result.exit_code == 2
    assert "'ingestion', 'raw', 'processing'" in result.output
    assert not data_dir.exists()


def test_unknown_revision_is_refused_before_any_file_is_touched(data_dir):
    result = run_cli("db", "upgrade", "no_such_rev")
    assert result.exit_code == 2
    assert "no_such_rev" in result.output and "ingestion_0001" in result.output
    assert not data_dir.exists()


def test_bad_setting_names_the_variable_and_touches_nothing(data_dir, monkeypatch):
    monkeypatch.setenv("RAW_STORAGE_DB_URL", "::not a url::")
    result = run_cli("init")
    assert result.exit_code == 2
    assert "RAW_STORAGE_DB_URL" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not data_dir.exists()


def test_garbage_file_is_refused_before_any_database_is_touched(data_dir):
    data_dir.mkdir()
    garbage = data_dir / "raw_storage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    before = file_digest(garbage)
    result = run_cli("init")
    assert result.exit_code == 3
    assert "raw" in result.output and "not a SQLite database" in result.output
    assert db_files(data_dir) == ["raw_storage.sqlite"]
    assert file_digest(garbage) == before


def test_database_at_a_revision_this_code_does_not_know_is_refused(data_dir):
    run_cli("init")
    import sqlite3

    with sqlite3.connect(data_dir / "raw_storage.sqlite") as connection:
        connection.execute("UPDATE alembic_version_raw SET version_num = 'raw_9999'")
    before = digests(data_dir)
    result = run_cli("db", "upgrade")
    assert result.exit_code == 3
    assert "newer than this tg-parser (unknown revision raw_9999)" in result.output
    assert digests(data_dir) == before


def test_running_inside_another_program_keeps_its_loggers(data_dir):
    logger = logging.getLogger("host.program")
    run_cli("init")
    assert logger.disabled is False
