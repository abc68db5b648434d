"""A failing run rolls every database back; a killed run loses nothing; concurrent runs serialise."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

from tests.conftest import (
    add_revision,
    write_locked,
    content_checksums,
    file_digest,
    run_cli,
    tg_parser_process,
    tg_parser_run,
    version_rows,
)
from tg_parser.storage.databases import DATABASES

ADD_COLUMN = '''
def upgrade():
    with op.batch_alter_table("{table}") as batch:
        batch.add_column(sa.Column("note", sa.Text()))


def downgrade():
    with op.batch_alter_table("{table}") as batch:
        batch.drop_column("note")
'''

FAILS = '''
def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO no_such_table VALUES (1)")


def downgrade():
    pass
'''

SLOW = '''
def upgrade():
    op.create_table("slow_step", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO slow_step (id) SELECT rowid FROM raw_messages")
    marker = os.environ.get("SLOW_MARKER")
    if marker:
        open(marker, "w").close()
        time.sleep(120)


def downgrade():
    op.drop_table("slow_step")
'''


def digests(data_dir):
    return {db.name: file_digest(data_dir / db.default_file) for db in DATABASES}


def test_a_failure_in_processing_rolls_back_ingestion_and_raw(legacy_copy, projects):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "ingestion", 2, ADD_COLUMN.format(table="sources"))
    add_revision(projects, "raw", 2, ADD_COLUMN.format(table="raw_messages"))
    add_revision(projects, "processing", 2, FAILS)
    before = digests(legacy_copy)

    result = tg_parser_run("db", "upgrade", projects=projects)
    assert result.returncode == 1, result.stderr
    assert "applied  ingestion_0002" in result.stdout and "applied  raw_0002" in result.stdout
    assert "no_such_table" in result.stderr
    for name in ("ingestion", "raw", "processing"):
        assert f"  {name:<10} rolled back  ({name}_0001)" in result.stderr
    assert "Every database was rolled back: no data was changed." in result.stderr
    assert digests(legacy_copy) == before


def test_a_killed_upgrade_loses_no_row_and_a_rerun_reaches_head(legacy_copy, projects, tmp_path):
    assert run_cli("init").exit_code == 0
    raw = legacy_copy / "raw_storage.sqlite"
    rows_before = content_checksums(raw)
    add_revision(projects, "raw", 2, SLOW)
    marker = tmp_path / "slow-started"

    process = tg_parser_process("db", "upgrade", "--only", "raw", projects=projects, env={"SLOW_MARKER": str(marker)})
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the slow revision never started"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    assert version_rows(raw, "raw") == ["raw_0001"]
    assert content_checksums(raw) == rows_before
    rerun = tg_parser_run("db", "upgrade", "--only", "raw", projects=projects)
    assert rerun.returncode == 0, rerun.stderr
    assert version_rows(raw, "raw") == ["raw_0002"]
    after = content_checksums(raw)
    assert {t: after[t] for t in rows_before if t != "alembic_version_raw"} == {
        t: sums for t, sums in rows_before.items() if t != "alembic_version_raw"
    }
    with sqlite3.connect(raw) as connection:
        copied = connection.execute("SELECT count(*) FROM slow_step").fetchone()[0]
        messages = connection.execute("SELECT count(*) FROM raw_messages").fetchone()[0]
    assert copied == messages > 0


def test_four_concurrent_upgrades_of_a_fresh_data_dir_all_succeed_once(data_dir):
    processes = [tg_parser_process("db", "upgrade") for _ in range(4)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert [code for code, _out, _err in results] == [0, 0, 0, 0], results
    for db in DATABASES:
        assert version_rows(data_dir / db.default_file, db.name) == [f"{db.name}_0001"]
    applied = sum(out.count("applied ") for _code, out, _err in results)
    assert applied == 3, "each baseline must be applied exactly once"


def test_a_held_write_lock_times_out_with_a_clear_error_and_nothing_changes(legacy_copy, monkeypatch):
    monkeypatch.setenv("TG_PARSER_LOCK_TIMEOUT", "0.3")
    before = digests(legacy_copy)
    with write_locked(legacy_copy / "raw_storage.sqlite"):
        result = run_cli("db", "upgrade")
    assert result.exit_code == 1
    assert "raw        in use by another process; waiting up to 0.3 s (TG_PARSER_LOCK_TIMEOUT)" in result.output
    assert "is in use by another process" in result.output and "gave up after waiting 0.3 s" in result.output
    assert digests(legacy_copy) == before
    assert not (legacy_copy / "backups").exists() or not any((legacy_copy / "backups").iterdir())


def test_plain_alembic_waits_for_the_same_lock(legacy_copy, monkeypatch):
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "TG_PARSER_LOCK_TIMEOUT": "0.3"}
    with write_locked(legacy_copy / "raw_storage.sqlite"):
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", "migrations_raw/alembic.ini", "stamp", "head"],
            cwd=REPO, env=env, capture_output=True, text=True, check=False,
        )
    assert result.returncode != 0
    assert "is in use by another process" in result.stderr
