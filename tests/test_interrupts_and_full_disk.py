"""Ctrl-C, SIGTERM and a full disk in the middle of a run: everything rolled back, each database's fate printed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import (
    LEGACY,
    add_revision,
    content_checksums,
    grow_raw,
    integrity,
    run_cli,
    tg_parser_process,
    version_rows,
)
from tg_parser.storage.databases import DATABASES

SLEEPS = '''
def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    open(os.environ["MARKER"], "w").close()
    time.sleep(120)


def downgrade():
    op.drop_table("half_done")
'''

LONG_STATEMENT = '''
def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    open(os.environ["MARKER"], "w").close()
    op.execute("CREATE TABLE counted AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
               " WHERE x < 5000000000) SELECT count(*) AS n FROM c")


def downgrade():
    op.drop_table("half_done")
'''

FILLS_THE_DISK = '''
def upgrade():
    op.execute("CREATE TABLE filler AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
               " WHERE x < 200000) SELECT x, randomblob(400) AS blob FROM c")


def downgrade():
    op.drop_table("filler")
'''

ADD_COLUMN = '''
def upgrade():
    with op.batch_alter_table("{table}") as batch:
        batch.add_column(sa.Column("note", sa.Text()))


def downgrade():
    with op.batch_alter_table("{table}") as batch:
        batch.drop_column("note")
'''


def states(data_dir):
    return {db.name: content_checksums(data_dir / db.default_file) for db in DATABASES}


@pytest.mark.parametrize(
    ("signum", "body", "exit_code"),
    [
        (signal.SIGINT, SLEEPS, 130),
        (signal.SIGTERM, SLEEPS, 143),
        (signal.SIGTERM, LONG_STATEMENT, 143),
    ],
    ids=["ctrl-c", "sigterm", "sigterm-during-a-long-sql-statement"],
)
def test_a_signal_mid_upgrade_rolls_everything_back(legacy_copy, projects, tmp_path, signum, body, exit_code):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "ingestion", 2, ADD_COLUMN.format(table="sources"))
    add_revision(projects, "raw", 2, body)
    add_revision(projects, "processing", 2, ADD_COLUMN.format(table="processed_documents"))
    before = states(legacy_copy)
    marker = tmp_path / "inside"

    process = tg_parser_process("db", "upgrade", projects=projects, env={"MARKER": str(marker)})
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    time.sleep(0.2)  # well inside the statement or the sleep
    sent = time.monotonic()
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == exit_code, stderr
    assert time.monotonic() - sent < 5, "the signal was not acted on promptly"
    assert f"interrupted by {signal.Signals(signum).name}: every change was rolled back" in stderr
    for db in DATABASES:
        assert f"  {db.name:<10} rolled back  ({db.name}_0001)" in stderr
        assert version_rows(legacy_copy / db.default_file, db.name) == [f"{db.name}_0001"]
        assert integrity(legacy_copy / db.default_file) == "ok"
    assert states(legacy_copy) == before


def test_a_full_disk_during_the_migration_changes_nothing(legacy_copy, projects, mount, tmp_path):
    data = mount(tmp_path / "small-disk", size="12m")
    for db in DATABASES:
        shutil.copyfile(legacy_copy / db.default_file, data / db.default_file)
    env = {"TG_PARSER_DATA_DIR": str(data)}
    assert subprocess.run([sys.executable, "-m", "tg_parser", "init"], env={**os.environ, **env},
                          capture_output=True).returncode == 0
    add_revision(projects, "raw", 2, FILLS_THE_DISK)
    before = states(data)

    process = tg_parser_process("db", "upgrade", projects=projects, env=env)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 1, stderr
    assert "error: raw: OperationalError: database or disk is full" in stderr.splitlines()[0]
    assert "Every database was rolled back: no data was changed." in stderr
    assert states(data) == before
    for db in DATABASES:
        assert integrity(data / db.default_file) == "ok"
        assert not (data / f"{db.default_file}-journal").exists()


_HOLD_READ = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN")
connection.execute("SELECT count(*) FROM raw_messages").fetchone()
print("reading", flush=True)
sys.stdin.read()
"""


def test_a_full_disk_during_a_restore_changes_nothing(legacy_copy, mount, tmp_path):
    """The free-space check passes; the disk then fills up while the restore waits for a reader."""
    data = mount(tmp_path / "small-disk", size="24m")
    raw = data / "raw_storage.sqlite"
    shutil.copyfile(LEGACY / "raw_storage.sqlite", raw)
    big_backup = tmp_path / "raw-bigger.sqlite"
    shutil.copyfile(LEGACY / "raw_storage.sqlite", big_backup)
    grow_raw(big_backup, 10_000, 1000)  # about 11 MB
    env = {"RAW_STORAGE_DB_PATH": str(raw), "TG_PARSER_DATA_DIR": str(tmp_path / "data")}
    before = content_checksums(raw)
    reader = subprocess.Popen([sys.executable, "-c", _HOLD_READ, str(raw)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "reading"

    process = tg_parser_process("db", "restore", "raw", str(big_backup), "--yes", env=env)
    said = [process.stderr.readline() for _ in range(3)]
    assert any("in use by another process; waiting" in line for line in said), said
    assert any("has no manifest, so its content cannot be checked" in line for line in said), said
    filler = data / "filler"
    with open(filler, "wb") as out:  # leave about 2 MB free
        out.write(b"\0" * (os.statvfs(data).f_bavail * os.statvfs(data).f_frsize - 2 * 1024 * 1024))
    reader.stdin.close()
    reader.wait(timeout=30)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 1, stdout + stderr
    assert "restore failed, " in stderr and "is unchanged: OperationalError: database or disk is full" in stderr
    filler.unlink()
    assert integrity(raw) == "ok"
    assert content_checksums(raw) == before

