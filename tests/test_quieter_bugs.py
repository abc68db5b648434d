"""Tests for plausible one-line bugs that no louder test would catch.

Each names the bug it is there for: the free-space margin applied to the wrong side, backups pruned
for databases this run did not back up, a one-sided completeness check or a dropped size check in
the backup copy, and a TG_parser 3.1 database missing a baseline table adopted anyway.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing

import pytest

from tests.conftest import LEGACY, add_revision, file_digest, tg_parser_run
from tests.test_earlier_releases import stamp_3_1
from tg_parser.migrate import backup

RAW = "raw_storage.sqlite"
ADD_NOTE = 'def upgrade():\n    op.add_column("{table}", sa.Column("note", sa.Text))\n\n\ndef downgrade():\n    pass\n'


@pytest.mark.parametrize(("size", "refused"), [("236k", True), ("256k", False)])
def test_the_space_margin_is_added_to_the_need_not_to_the_free_space(mount, tmp_path, size, refused):
    """The raw file (76 KiB) needs room for its journal and its backup, 2 x its size, plus 10 %.
    236k leaves 2.1 x free: enough without the margin, not with it. 256k leaves 2.4 x."""
    data = mount(tmp_path / "disk", size=size)
    shutil.copyfile(LEGACY / RAW, data / RAW)
    need = 2 * (data / RAW).stat().st_size
    free = shutil.disk_usage(data).free
    assert (need < free < need * 1.1) if refused else free > need * 1.1
    before = file_digest(data / RAW)
    result = tg_parser_run("db", "upgrade", "--only", "raw", env={"TG_PARSER_DATA_DIR": str(data)})
    if refused:
        assert result.returncode == 3, result.stderr
        assert f"not enough free disk in {data}: need {need * 1.1 / 1e6:.1f} MB" in result.stderr
        assert file_digest(data / RAW) == before
    else:
        assert result.returncode == 0, result.stderr


def test_only_the_databases_this_run_backed_up_have_their_backups_pruned(legacy_copy, projects):
    """ingestion has two backups; then its file is emptied, so the next run recreates it without a
    backup: with TG_PARSER_BACKUP_KEEP=1, its two backups must stay, raw's are pruned to one."""
    assert tg_parser_run("init").returncode == 0
    add_revision(projects, "ingestion", 2, ADD_NOTE.format(table="sources"))
    add_revision(projects, "raw", 2, ADD_NOTE.format(table="raw_messages"))
    assert tg_parser_run("db", "upgrade", projects=projects).returncode == 0
    backups = legacy_copy / "backups"
    assert len(backup.list_backups(backups, "ingestion")) == 2 and len(backup.list_backups(backups, "raw")) == 2
    (legacy_copy / "ingestion_state.sqlite").write_bytes(b"")
    add_revision(projects, "raw", 3, ADD_NOTE.format(table="raw_conflicts"))
    result = tg_parser_run("db", "upgrade", projects=projects, env={"TG_PARSER_BACKUP_KEEP": "1"})
    assert result.returncode == 0, result.stderr
    assert len(backup.list_backups(backups, "raw")) == 1  # backed up by this run, then pruned
    assert len(backup.list_backups(backups, "ingestion")) == 2  # not backed up by this run: untouched


@pytest.mark.parametrize("change", ["extra bytes", "missing bytes"])
def test_a_copy_whose_size_is_not_its_pages_is_incomplete(tmp_path, change):
    copy = tmp_path / RAW
    shutil.copyfile(LEGACY / RAW, copy)
    backup.check_complete(copy)  # the intact copy passes
    if change == "extra bytes":
        with open(copy, "ab") as file:
            file.write(b"\0" * 4096)
    else:
        os.truncate(copy, copy.stat().st_size - 4096)
    with pytest.raises(backup.BackupFailed, match="is incomplete"):
        backup.check_complete(copy)


def test_a_source_that_shrinks_during_the_copy_fails_the_copy(tmp_path, monkeypatch):
    """The copy stops at the end of the file; it must then see that it copied less than it meant to."""
    source, destination = tmp_path / "source", tmp_path / "copy"
    source.write_bytes(os.urandom(64 * 1024))
    monkeypatch.setattr(backup, "CHUNK", 16 * 1024)
    real = os.copy_file_range

    def shrinking_after_the_first_chunk(reader, writer, count, *args):
        copied = real(reader, writer, count, *args)
        os.truncate(source, 20 * 1024)
        return copied

    monkeypatch.setattr(os, "copy_file_range", shrinking_after_the_first_chunk)
    with pytest.raises(backup.BackupFailed, match="changed size while being copied"):
        backup._copy_hashed(source, destination)


def test_a_3_1_database_missing_a_baseline_table_is_refused(legacy_copy):
    raw = legacy_copy / RAW
    stamp_3_1(raw, "raw")
    with closing(sqlite3.connect(raw)) as connection, connection:
        connection.execute("DROP TABLE raw_conflicts")
    before = file_digest(raw)
    result = tg_parser_run("db", "upgrade", "--only", "raw")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "raw: schema differs from release 3.0.0 (TG_parser 3.1 revision 5c658f04eff0)" in result.stderr
    assert "raw_conflicts" in result.stderr
    assert file_digest(raw) == before
