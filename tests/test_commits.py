"""The bookkeeping of a run: which database committed, what is said of each, and what is held.

Each test here fails for one plausible one-line bug in the orchestrator: a failed commit skipped
while the others go on, a database with nothing to do called rolled back, a partial commit
reported as a plain failure, signals not deferred during the commits, the destructive re-check
reading the preview instead of the fresh plan, the plan-versus-ran check comparing only counts,
and the held time counting the wait for the lock.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import add_revision, commit_fault_run, run_cli, tg_parser_run, version_rows
from tg_parser.core.settings import load_settings
from tg_parser.migrate import destructive, orchestrator
from tg_parser.migrate.plan import Step
from tg_parser.migrate.target import Target
from tg_parser.storage.databases import DATABASES, get_database

NOTE = '''
def upgrade():
    op.add_column("{table}", sa.Column("note", sa.Text()))


def downgrade():
    with op.batch_alter_table("{table}") as batch:
        batch.drop_column("note")
'''
TABLES = {"ingestion": "sources", "raw": "raw_messages", "processing": "processed_documents"}


@pytest.fixture
def in_process(projects, monkeypatch) -> Path:
    """The project copies seen by tg-parser run inside this process (run_cli), and forgotten after."""
    monkeypatch.syspath_prepend(str(projects))

    def forget() -> None:
        for db in DATABASES:
            db.__dict__.pop("migrations_dir", None)
        destructive._rehearse.cache_clear()

    forget()
    yield projects
    forget()


def with_notes(projects: Path) -> None:
    for db in DATABASES:
        add_revision(projects, db.name, 2, NOTE.format(table=TABLES[db.name]))


def versions(data_dir: Path) -> dict[str, list[str]]:
    return {db.name: version_rows(data_dir / db.default_file, db.name) for db in DATABASES}


def test_a_failed_commit_stops_the_commits_and_the_partial_run_exits_4(legacy_copy, projects):
    assert run_cli("init").exit_code == 0
    with_notes(projects)
    result = commit_fault_run("raise", "raw_storage.sqlite", "db", "upgrade", projects=projects)
    assert result.returncode == 4, result.stdout + result.stderr
    assert versions(legacy_copy) == {"ingestion": ["ingestion_0002"], "raw": ["raw_0001"], "processing": ["processing_0001"]}
    assert "ingestion  committed" in result.stderr
    assert "raw        rolled back" in result.stderr and "processing rolled back" in result.stderr
    assert "run the same command again" in result.stderr
    assert "Every database was rolled back" not in result.stderr
    rerun = tg_parser_run("db", "upgrade", projects=projects)
    assert rerun.returncode == 0, rerun.stderr
    assert set(map(tuple, versions(legacy_copy).values())) == {(f"{db}_0002",) for db in TABLES}


def test_a_database_with_nothing_to_do_is_never_called_rolled_back(legacy_copy, projects):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "raw", 2, "def upgrade():\n    raise RuntimeError('raw fails')\n")
    result = tg_parser_run("db", "upgrade", projects=projects)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ingestion  unchanged" in result.stderr and "processing unchanged" in result.stderr
    assert "raw        rolled back" in result.stderr


def test_a_signal_during_the_commits_waits_until_every_database_committed(legacy_copy, projects):
    assert run_cli("init").exit_code == 0
    with_notes(projects)
    result = commit_fault_run("term", "ingestion_state.sqlite", "db", "upgrade", projects=projects)
    assert set(map(tuple, versions(legacy_copy).values())) == {(f"{db}_0002",) for db in TABLES}, result.stderr
    assert "rolled back" not in result.stderr


def test_the_destructive_check_under_the_lock_uses_the_fresh_plan(legacy_copy, in_process, monkeypatch):
    """The column is empty when the downgrade is planned, so nothing needs confirming; a writer fills
    it before the run takes its locks: the run must see that and refuse, changing nothing."""
    with_notes(in_process)
    assert run_cli("init").exit_code == 0
    raw = legacy_copy / "raw_storage.sqlite"
    checked = orchestrator._refuse_without_space

    def meanwhile_a_writer(plans, options):
        with closing(sqlite3.connect(raw)) as connection, connection:
            connection.execute("UPDATE raw_messages SET note = 'kept'")
        checked(plans, options)

    monkeypatch.setattr(orchestrator, "_refuse_without_space", meanwhile_a_writer)
    result = run_cli("db", "downgrade", "--only", "raw", "--yes")  # confirms the CHECKs the rebuild loses
    assert result.exit_code == 3, result.output
    assert "drops column raw_messages.note, which holds data" in result.output
    assert version_rows(raw, "raw") == ["raw_0002"]
    with closing(sqlite3.connect(raw)) as connection:
        assert connection.execute("SELECT count(*) FROM raw_messages WHERE note = 'kept'").fetchone()[0] > 0


def test_a_run_that_is_not_the_plan_fails(legacy_copy, in_process):
    """Alembic runs raw_0002 where the plan said another revision of the same count: a failure."""
    assert run_cli("init").exit_code == 0
    add_revision(in_process, "raw", 2, NOTE.format(table="raw_messages"))
    target = Target.from_settings(get_database("raw"), load_settings())
    with target.connect() as connection:
        plan = orchestrator.plan_database(target, connection, True, "head")
        plan.steps = [Step("raw_0001", "not what runs", True, plan.steps[0].path)]
        outcome = orchestrator.Outcome("raw", target.location, plan.before)
        with pytest.raises(RuntimeError, match="not the planned"):
            orchestrator._run(plan, connection, outcome, True)
        connection.rollback()


def test_the_held_time_leaves_out_the_wait_for_the_lock(legacy_copy, projects):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "raw", 2, NOTE.format(table="raw_messages"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(1.5); c.execute('ROLLBACK')",
         str(legacy_copy / "raw_storage.sqlite")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    result = tg_parser_run("db", "upgrade", "--only", "raw", projects=projects)
    took = time.monotonic() - started
    holder.wait(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    held = float(result.stdout.split("Held raw ")[1].split(" s")[0])
    assert took > 1.2 and held < 0.5, (took, held)


def test_a_relative_downgrade_cut_off_between_its_commits_is_finished_by_the_same_command(legacy_copy, projects):
    """downgrade -1 commits ingestion (commits go in the fixed order), then dies before raw's COMMIT;
    `downgrade -1` again must take raw and processing one step back, and leave ingestion where the
    first run put it."""
    with_notes(projects)
    assert tg_parser_run("init", projects=projects).returncode == 0
    killed = commit_fault_run("kill", "raw_storage.sqlite", "db", "downgrade", "-1", "--yes", projects=projects)
    assert killed.returncode == -9, killed.stderr
    assert versions(legacy_copy) == {"ingestion": ["ingestion_0001"], "raw": ["raw_0002"], "processing": ["processing_0002"]}
    rerun = tg_parser_run("db", "downgrade", "-1", "--yes", projects=projects)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert versions(legacy_copy) == {"ingestion": ["ingestion_0001"], "raw": ["raw_0001"], "processing": ["processing_0001"]}
    again = tg_parser_run("db", "downgrade", "-1", "--yes", projects=projects)
    assert again.returncode == 0, again.stdout + again.stderr
    assert versions(legacy_copy) == {"ingestion": [], "raw": [], "processing": []}


def test_a_transaction_s_held_time_starts_when_its_lock_is_held(legacy_copy):
    """HeldTransactions itself: waiting 1.5 s for a busy database is not holding it."""
    from tg_parser.migrate.transactions import HeldTransactions

    assert run_cli("init").exit_code == 0
    target = Target.from_settings(get_database("raw"), load_settings())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(1.5); c.execute('ROLLBACK')",
         str(legacy_copy / "raw_storage.sqlite")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    with HeldTransactions([target], 10, exclusive=True) as held:
        waited = time.monotonic() - started
        held_seconds = held.of("raw").held_seconds
    holder.wait(timeout=30)
    assert waited > 1.2 and held_seconds < 0.2, (waited, held_seconds)


def test_a_signal_after_the_commits_says_what_committed(legacy_copy, in_process, monkeypatch):
    """SIGTERM during the pause after the commits (before the leftovers are cleaned): the run must
    not call the committed databases rolled back."""
    import signal

    from tg_parser.migrate import online
    from tg_parser.migrate.interrupt import Interrupted

    assert run_cli("init").exit_code == 0
    add_revision(in_process, "raw", 2, NOTE.format(table="raw_messages"))
    sleep = orchestrator.time.sleep

    def terminated_in_the_pause(seconds):
        if seconds == online.LONG_PAUSE_S:
            raise Interrupted(signal.SIGTERM)
        sleep(seconds)

    monkeypatch.setattr(orchestrator.time, "sleep", terminated_in_the_pause)
    result = run_cli("db", "upgrade", "--only", "raw")
    assert result.exit_code == 143, result.output
    assert "interrupted by SIGTERM after raw committed" in result.output
    assert "every change was rolled back" not in result.output
    assert version_rows(legacy_copy / "raw_storage.sqlite", "raw") == ["raw_0002"]
