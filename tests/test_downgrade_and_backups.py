"""Destructive downgrades need confirmation; backups are listed, pruned and restored byte for byte."""

from __future__ import annotations

import json
import sqlite3

from tg_parser.storage.databases import get_database
from tests.conftest import LEGACY, add_revision, content_checksums, file_digest, run_cli, tg_parser_run, version_rows

ADD_TABLE = '''
def upgrade():
    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text))


def downgrade():
    op.drop_table("notes")
'''


def test_downgrade_to_base_without_yes_and_without_a_terminal_is_refused(legacy_copy):
    run_cli("db", "upgrade")
    before = file_digest(legacy_copy / "raw_storage.sqlite")
    result = run_cli("db", "downgrade", "--only", "raw")
    assert result.exit_code == 3
    assert "a downgrade to base drops every table" in result.output
    assert "pass --yes" in result.output
    assert file_digest(legacy_copy / "raw_storage.sqlite") == before


def test_a_downgrade_that_drops_a_table_with_rows_needs_yes(data_dir, projects):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "raw", 2, ADD_TABLE)
    assert tg_parser_run("db", "upgrade", "--only", "raw", projects=projects).returncode == 0
    raw = data_dir / "raw_storage.sqlite"

    empty = tg_parser_run("db", "downgrade", "--only", "raw", projects=projects)
    assert empty.returncode == 0, empty.stderr
    assert version_rows(raw, "raw") == ["raw_0001"]

    assert tg_parser_run("db", "upgrade", "--only", "raw", projects=projects).returncode == 0
    with sqlite3.connect(raw) as connection:
        connection.execute("INSERT INTO notes (body) VALUES ('keep me')")
    before = file_digest(raw)
    refused = tg_parser_run("db", "downgrade", "--only", "raw", projects=projects)
    assert refused.returncode == 3
    assert "raw: drops table notes, which holds rows" in refused.stderr
    assert file_digest(raw) == before
    confirmed = tg_parser_run("db", "downgrade", "--only", "raw", "--yes", projects=projects)
    assert confirmed.returncode == 0, confirmed.stderr
    assert version_rows(raw, "raw") == ["raw_0001"]


def test_backups_are_listed_and_the_newest_n_are_kept(legacy_copy, monkeypatch):
    monkeypatch.setenv("TG_PARSER_BACKUP_KEEP", "2")
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    for _ in range(2):
        assert run_cli("db", "downgrade", "--only", "raw", "--yes", "--no-backup").exit_code == 0
        assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    backups = sorted((legacy_copy / "backups").glob("raw-*.sqlite"))
    assert len(backups) == 2
    listing = run_cli("db", "backups")
    assert listing.exit_code == 0
    assert all(path.name in listing.output for path in backups)


def test_restore_puts_back_exactly_the_original_content(legacy_copy):
    original = content_checksums(LEGACY / "raw_storage.sqlite")
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    upgraded = file_digest(legacy_copy / "raw_storage.sqlite")

    refused = run_cli("db", "restore", "raw")
    assert refused.exit_code == 3
    assert file_digest(legacy_copy / "raw_storage.sqlite") == upgraded

    result = run_cli("db", "restore", "raw", "--yes")
    assert result.exit_code == 0, result.output
    assert content_checksums(legacy_copy / "raw_storage.sqlite") == original
    assert "the replaced database was backed up to" in result.output
    current = json.loads(run_cli("db", "current", "--only", "raw", "--json").output)
    assert current["databases"][0]["current"] == []
    assert current["databases"][0]["state"] == "no version table: adopted by the next upgrade"


def test_restore_refuses_a_missing_or_garbage_backup(legacy_copy):
    before = file_digest(legacy_copy / "raw_storage.sqlite")
    missing = run_cli("db", "restore", "raw", "no-such-backup.sqlite", "--yes")
    assert missing.exit_code == 2 and "no backup 'no-such-backup.sqlite'" in missing.output
    garbage = legacy_copy / "junk.sqlite"
    garbage.write_bytes(b"junk" * 1000)
    bad = run_cli("db", "restore", "raw", str(garbage), "--yes")
    assert bad.exit_code == 3 and "is not a usable backup" in bad.output
    assert file_digest(legacy_copy / "raw_storage.sqlite") == before


def test_history_json_and_heads(data_dir):
    run_cli("db", "upgrade", "--only", "raw")
    history = json.loads(run_cli("db", "history", "--json").output)
    raw = next(entry for entry in history["databases"] if entry["name"] == "raw")
    assert raw["revisions"] == [
        {
            "revision": "raw_0001",
            "down_revision": None,
            "description": raw["revisions"][0]["description"],
            "path": str(get_database("raw").migrations_dir / "versions" / "raw_0001_baseline.py"),
            "head": True,
            "current": True,
        }
    ]
    heads = run_cli("db", "heads")
    assert heads.output.split() == ["ingestion", "ingestion_0001", "raw", "raw_0001", "processing", "processing_0001"]


def test_revision_writes_into_the_named_project_only(data_dir, projects):
    assert run_cli("init").exit_code == 0
    result = tg_parser_run("db", "revision", "--only", "raw", "-m", "add views", projects=projects)
    assert result.returncode == 0, result.stderr
    written = list((projects / "migrations_raw" / "versions").glob("raw_0002_*.py"))
    assert len(written) == 1 and str(written[0]) in result.stdout
    assert not list((projects / "migrations_processing" / "versions").glob("*0002*"))
    heads = tg_parser_run("db", "heads", "--only", "raw", projects=projects)
    assert "raw_0002" in heads.stdout


def test_revision_needs_one_database(data_dir):
    result = run_cli("db", "revision", "-m", "x")
    assert result.exit_code == 2 and "--only" in result.output


def test_a_backup_reports_progress_and_is_byte_identical(legacy_copy, tmp_path):
    from tg_parser.migrate import backup

    source = legacy_copy / "raw_storage.sqlite"
    calls = []
    made = backup.take(
        "raw", "unversioned", "upgrade", source, tmp_path, progress=lambda done, total: calls.append((done, total))
    )
    size = source.stat().st_size
    assert calls and calls[-1] == (size, size)
    assert file_digest(made.path) == file_digest(LEGACY / "raw_storage.sqlite")
    assert [b.path for b in backup.list_backups(tmp_path, "raw")] == [made.path]


def test_a_truncated_backup_is_refused_by_restore(legacy_copy):
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    (made,) = (legacy_copy / "backups").glob("raw-*.sqlite")
    made.write_bytes(made.read_bytes()[: 4096 * 3])
    before = file_digest(legacy_copy / "raw_storage.sqlite")
    result = run_cli("db", "restore", "raw", made.name, "--yes")
    assert result.exit_code == 3 and "is not a usable backup" in result.output
    assert file_digest(legacy_copy / "raw_storage.sqlite") == before
