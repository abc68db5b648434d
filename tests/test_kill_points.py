"""SIGKILL at every phase of an upgrade and of a restore: each database is its before or its after, never a mix.

Kill points: during the backup, inside each database's revision, between two commits, during
`db restore`'s safety copy and during its page copy. Afterwards every database passes
`integrity_check`, equals its state before or after (per-table checksums), and the same
command run again succeeds.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    commit_fault_run,
    LEGACY,
    add_revision,
    content_checksums,
    grow_raw,
    integrity,
    run_cli,
    tg_parser_process,
    tg_parser_run,
    version_rows,
)
from tg_parser.storage.databases import DATABASES

SLOW = '''
def upgrade():
    op.create_table("step_{name}", sa.Column("id", sa.Integer, primary_key=True))
    marker = os.environ.get("MARKER_{name}")
    if marker:
        open(marker, "w").close()
        time.sleep(120)


def downgrade():
    op.drop_table("step_{name}")
'''


@pytest.fixture(scope="session")
def big_raw(tmp_path_factory) -> Path:
    """A 3.0.0 raw database of about 200 MB, built once: large enough for a copy to be caught midway."""
    path = tmp_path_factory.mktemp("big") / "raw_storage.sqlite"
    shutil.copyfile(LEGACY / "raw_storage.sqlite", path)
    grow_raw(path, 50_000, 4000)
    return path


def states(data_dir: Path) -> dict[str, dict[str, str]]:
    return {db.name: content_checksums(data_dir / db.default_file) for db in DATABASES}


def kill_when(process: subprocess.Popen, ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def assert_sound(data_dir: Path) -> None:
    for db in DATABASES:
        assert integrity(data_dir / db.default_file) == "ok", db.name


def add_slow_revisions(projects: Path) -> None:
    for db in DATABASES:
        add_revision(projects, db.name, 2, SLOW.format(name=db.name))


@pytest.mark.slow
def test_killed_during_the_backup(legacy_copy, big_raw, projects):
    assert run_cli("init").exit_code == 0
    shutil.copyfile(big_raw, legacy_copy / "raw_storage.sqlite")
    assert run_cli("db", "upgrade").exit_code == 0  # adopt the big raw database
    add_slow_revisions(projects)
    before = states(legacy_copy)
    backups = legacy_copy / "backups"

    process = tg_parser_process("db", "upgrade", projects=projects)
    kill_when(process, lambda: any(backups.glob(".raw-*.partial")))

    assert_sound(legacy_copy)
    assert states(legacy_copy) == before
    rerun = tg_parser_run("db", "upgrade", projects=projects)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(backups.glob(".*partial*")), "the killed backup's partial file was not cleaned up"
    for db in DATABASES:
        assert version_rows(legacy_copy / db.default_file, db.name) == [f"{db.name}_0002"]


@pytest.mark.parametrize("name", [db.name for db in DATABASES])
def test_killed_inside_a_revision(legacy_copy, projects, tmp_path, name):
    assert run_cli("init").exit_code == 0
    add_slow_revisions(projects)
    before = states(legacy_copy)
    marker = tmp_path / "inside"

    process = tg_parser_process("db", "upgrade", projects=projects, env={f"MARKER_{name}": str(marker)})
    kill_when(process, marker.exists)

    assert_sound(legacy_copy)
    assert states(legacy_copy) == before
    rerun = tg_parser_run("db", "upgrade", projects=projects)
    assert rerun.returncode == 0, rerun.stderr
    for db in DATABASES:
        assert version_rows(legacy_copy / db.default_file, db.name) == [f"{db.name}_0002"]


def test_killed_between_two_commits_and_a_rerun_finishes(legacy_copy, projects):
    """SIGKILL after ingestion committed, just before raw's COMMIT (tests/commit_hook.py)."""
    assert run_cli("init").exit_code == 0
    add_slow_revisions(projects)
    before = states(legacy_copy)
    ingestion = legacy_copy / "ingestion_state.sqlite"
    killed = commit_fault_run("kill", "raw_storage.sqlite", "db", "upgrade", projects=projects)
    assert killed.returncode == -signal.SIGKILL

    assert_sound(legacy_copy)
    after = states(legacy_copy)
    assert after["raw"] == before["raw"] and after["processing"] == before["processing"]
    assert version_rows(ingestion, "ingestion") == ["ingestion_0002"]
    rerun = tg_parser_run("db", "upgrade", projects=projects)
    assert rerun.returncode == 0, rerun.stderr
    assert "ingestion  " in rerun.stdout and "unchanged at ingestion_0002" in rerun.stdout
    for db in DATABASES:
        assert version_rows(legacy_copy / db.default_file, db.name) == [f"{db.name}_0002"]


def _restore_setup(legacy_copy: Path, big_raw: Path) -> tuple[dict, dict]:
    """The big raw database adopted (backup: its 3.0.0 state), then changed; returns (backup state, now)."""
    raw = legacy_copy / "raw_storage.sqlite"
    shutil.copyfile(big_raw, raw)
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    backed_up = content_checksums(big_raw)
    with sqlite3.connect(raw) as connection:
        connection.execute("DELETE FROM raw_messages WHERE rowid % 2 = 0")
    return backed_up, content_checksums(raw)


@pytest.mark.slow
def test_killed_during_the_restore_safety_copy(legacy_copy, big_raw):
    backed_up, now = _restore_setup(legacy_copy, big_raw)
    raw = legacy_copy / "raw_storage.sqlite"

    process = tg_parser_process("db", "restore", "raw", "--yes")
    kill_when(process, lambda: any((legacy_copy / "backups").glob(".raw-*.partial")))

    assert integrity(raw) == "ok"
    assert content_checksums(raw) == now
    again = tg_parser_run("db", "restore", "raw", "--yes")
    assert again.returncode == 0, again.stderr
    assert content_checksums(raw) == backed_up


@pytest.mark.slow
def test_killed_during_the_restore_page_copy(legacy_copy, big_raw):
    backed_up, now = _restore_setup(legacy_copy, big_raw)
    raw = legacy_copy / "raw_storage.sqlite"
    journal = raw.with_name(raw.name + "-journal")
    safety_done = lambda: any(  # noqa: E731
        b.stat().st_size > 0 for b in (legacy_copy / "backups").glob("raw-raw_0001-*.sqlite.json")
    )

    process = tg_parser_process("db", "restore", "raw", "--yes")
    kill_when(process, lambda: safety_done() and journal.exists() and journal.stat().st_size > 1_000_000)

    assert integrity(raw) == "ok"
    assert content_checksums(raw) in (now, backed_up)
    again = tg_parser_run("db", "restore", "raw", "--yes")
    assert again.returncode == 0, again.stderr
    assert "from raw-unversioned-" in again.stdout  # the adoption backup again, not the safety copy
    assert content_checksums(raw) == backed_up
