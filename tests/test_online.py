"""Online upgrades: TG_parser's own clients (5 s busy timeout) never fail while raw_messages is rebuilt.

The clients are tests/clients.py: a writer into raw_messages, a reader of it by key and by range,
and a writer into ingestion, which the run does not change. The revision is
clients.ONLINE_REBUILD: `online.batch_alter_table("raw_messages", recreate="always")` with a
backfilled column and a new index.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from clients import ONLINE_REBUILD, Log, make_raw_database, running
from conftest import add_revision, tg_parser_process, tg_parser_run, version_rows

MESSAGES = 300_000
RAW, INGESTION = "raw_storage.sqlite", "ingestion_state.sqlite"


def query(path: Path, sql: str, *args) -> list[tuple]:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql, args).fetchall()


def leftovers(path: Path) -> list[tuple]:
    return query(path, "SELECT type, name FROM sqlite_master WHERE name LIKE '\\_tg\\_parser\\_%' ESCAPE '\\'")


def schema(path: Path) -> list[tuple]:
    """Every object with its SQL, a CREATE TABLE as the set of its lines (Alembic's batch mode writes
    a rebuilt table's constraints in set order)."""
    from tg_parser.migrate.online import create_table_lines

    rows = query(path, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
    return [(kind, name, table, create_table_lines(sql or "")) for kind, name, table, sql in rows]


def at_baselines(data_dir: Path, messages: int, journal_mode: str = "delete") -> None:
    """The three 3.0.0 fixtures, raw with `messages` more messages, adopted at the baselines."""
    from conftest import LEGACY

    data_dir.mkdir(exist_ok=True)
    make_raw_database(data_dir / RAW, messages)
    for name in (INGESTION, "processing_storage.sqlite"):
        (data_dir / name).write_bytes((LEGACY / name).read_bytes())
    result = tg_parser_run("db", "upgrade", "--no-backup")  # the repository's projects: the baselines
    assert result.returncode == 0, result.stderr
    for name in (INGESTION, RAW, "processing_storage.sqlite"):
        with closing(sqlite3.connect(data_dir / name)) as connection:
            assert connection.execute(f"PRAGMA journal_mode = {journal_mode}").fetchone()[0] == journal_mode


@pytest.fixture
def online_projects(projects: Path) -> Path:
    add_revision(projects, "raw", 2, ONLINE_REBUILD)
    return projects


def assert_rebuilt(raw: Path, writer: Log) -> None:
    """raw_messages rebuilt as the revision says, with every committed row, the backfill on every row
    written up to the swap, the indexes named as written, and the unnamed CHECKs still there."""
    assert query(raw, "PRAGMA integrity_check") == [("ok",)]
    assert leftovers(raw) == []
    present = {ref for (ref,) in query(raw, "SELECT source_ref FROM raw_messages WHERE channel_id = 'writer'")}
    assert writer.keys <= present, f"{len(writer.keys - present)} committed rows lost"
    assert query(raw, "SELECT count(*) FROM raw_messages WHERE channel_id <> 'writer' AND text_len IS NOT length(text)") == [(0,)]
    filled = [ref for ref, length in query(raw, "SELECT source_ref, text_len FROM raw_messages WHERE channel_id = 'writer'")
              if length is not None]
    numbers = sorted(int(ref.rsplit(":", 1)[1]) for ref in filled)
    assert numbers == list(range(1, len(numbers) + 1)), "the backfill must cover every row written before the swap"
    assert {name for (name,) in query(raw, "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                                           " AND tbl_name = 'raw_messages'")} == {
        "raw_messages_channel_date_idx", "raw_messages_thread_idx", "raw_messages_type_idx", "ix_text_len"}
    for bad in ("message_type = 'neither'", "raw_payload_truncated = 7"):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"), closing(sqlite3.connect(raw)) as connection:
            connection.execute(
                "INSERT INTO raw_messages (source_ref, id, message_type, channel_id, date, text, inserted_at,"
                " raw_payload_truncated) VALUES ('bad', '1', 'post', 'c', 'd', 't', 'i', 0)"
            )
            connection.execute(f"UPDATE raw_messages SET {bad} WHERE source_ref = 'bad'")


@pytest.mark.slow
@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_clients_never_fail_while_raw_messages_is_rebuilt_online(online_projects, data_dir, tmp_path, journal_mode):
    at_baselines(data_dir, MESSAGES, journal_mode)
    raw = data_dir / RAW
    with running(tmp_path, writer=("write-raw", raw), reader=("read-raw", raw),
                 ingestion=("write-ingestion", data_dir / INGESTION)) as logs:
        started = time.monotonic()
        result = tg_parser_run("db", "upgrade", projects=online_projects, timeout=600)
        took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rebuilt raw_messages online" in result.stdout
    writer, reader, ingestion = logs["writer"], logs["reader"], logs["ingestion"]
    print(f"{journal_mode}: upgrade {took:.1f} s; longest waits: write {writer.longest_wait:.3f} s,"
          f" read {reader.longest_wait:.3f} s, ingestion write {ingestion.longest_wait:.3f} s;"
          f" {len(writer.ok)} writes, {len(reader.ok)} reads")
    assert (writer.errors, reader.errors, ingestion.errors) == ([], [], [])
    assert ingestion.longest_wait <= 0.5
    assert version_rows(raw, "raw") == ["raw_0002"]
    assert_rebuilt(raw, writer)
    during = [key for at, _seconds, key in writer.ok if started < at < started + took]
    assert during, "the writer must have committed rows while the upgrade ran"
    backups = sorted((data_dir / "backups").glob("raw-raw_0001-*.sqlite"))
    assert len(backups) == 1 and query(backups[0], "SELECT count(*) FROM raw_messages")[0][0] >= MESSAGES


def test_plain_alembic_rebuilds_the_same_schema_and_rows(online_projects, data_dir, tmp_path):
    at_baselines(data_dir, 2_000)
    plain = tmp_path / "plain.sqlite"
    plain.write_bytes((data_dir / RAW).read_bytes())
    assert tg_parser_run("db", "upgrade", "--only", "raw", projects=online_projects).returncode == 0
    ini = online_projects / "migrations_raw" / "alembic.ini"
    result = subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"url=sqlite:///{plain}",
                             "upgrade", "head"], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(online_projects)})
    assert result.returncode == 0, result.stderr
    assert schema(plain) == schema(data_dir / RAW)
    rows = "SELECT * FROM raw_messages ORDER BY source_ref"
    assert query(plain, rows) == query(data_dir / RAW, rows)
    assert query(plain, "SELECT count(*) FROM raw_messages WHERE text_len = length(text)") == [(2_060,)]


def test_a_failure_in_processing_after_the_online_copy_rolls_back_everything(online_projects, data_dir, tmp_path):
    at_baselines(data_dir, 20_000)
    add_revision(online_projects, "processing", 2, "def upgrade():\n    raise RuntimeError('processing fails')\n")
    raw = data_dir / RAW
    before = query(raw, "SELECT * FROM raw_messages ORDER BY source_ref")
    with running(tmp_path, writer=("write-raw", raw)) as logs:
        result = tg_parser_run("db", "upgrade", projects=online_projects)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "processing fails" in result.stderr
    assert version_rows(raw, "raw") == ["raw_0001"]
    assert version_rows(data_dir / "processing_storage.sqlite", "processing") == ["processing_0001"]
    assert version_rows(data_dir / INGESTION, "ingestion") == ["ingestion_0001"]
    assert leftovers(raw) == []
    written = query(raw, "SELECT * FROM raw_messages WHERE channel_id = 'writer' ORDER BY source_ref")
    assert {row[0] for row in written} >= logs["writer"].keys
    assert query(raw, "SELECT * FROM raw_messages WHERE channel_id <> 'writer' ORDER BY source_ref") == before
    assert logs["writer"].errors == []


@pytest.mark.slow
def test_the_swap_is_all_or_nothing_under_sigkill_at_every_phase(online_projects, data_dir, tmp_path):
    """Kills spread over the backup, the online copy (the indexes grow with it) and the held
    transaction after the swap; after each, any `db` command leaves no trace of the run, the
    database is its before or its after state, and a rerun succeeds."""
    at_baselines(data_dir, 60_000)
    raw = data_dir / RAW
    before_schema = schema(raw)
    original = query(raw, "SELECT * FROM raw_messages ORDER BY source_ref")
    env = {"PAUSE_AFTER_SWAP": "2"}
    log = tmp_path / "tg-parser.log"
    states = {"before": 0, "after": 0}
    with running(tmp_path, writer=("write-raw", raw)) as logs:
        for delay in (0.15, 0.3, 0.5, 0.8, 1.1, 1.5, 2.0, 2.5, 3.0, "swap", "swap-late"):
            log.unlink(missing_ok=True)
            process = tg_parser_process("db", "upgrade", "--only", "raw", projects=online_projects, env=env)
            if isinstance(delay, float):
                time.sleep(delay)
            else:
                wait_for(lambda: log.exists() and "revision_applied" in log.read_text() or process.poll() is not None)
                time.sleep(0.2 if delay == "swap" else 1.5)
            process.kill()
            process.wait()
            assert tg_parser_run("db", "current", projects=online_projects).returncode == 0
            assert leftovers(raw) == []
            assert query(raw, "PRAGMA integrity_check") == [("ok",)]
            state = "after" if version_rows(raw, "raw") == ["raw_0002"] else "before"
            states[state] += 1
            if state == "before":
                assert schema(raw) == before_schema
            else:
                result = tg_parser_run("db", "downgrade", "raw_0001", "--only", "raw", "--yes", projects=online_projects)
                assert result.returncode == 0, result.stdout + result.stderr
            kept = query(raw, "SELECT * FROM raw_messages WHERE channel_id <> 'writer' ORDER BY source_ref")
            assert kept == original
    assert states["before"] >= 8, states
    result = tg_parser_run("db", "upgrade", "--only", "raw", projects=online_projects)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_rebuilt(raw, logs["writer"])
    assert logs["writer"].errors == []


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_copy_rolls_back_and_leaves_nothing(online_projects, data_dir, tmp_path, signum, code):
    at_baselines(data_dir, 60_000)
    raw = data_dir / RAW
    before = schema(raw)
    process = tg_parser_process("db", "upgrade", "--only", "raw", "--no-backup", projects=online_projects)
    wait_for(lambda: any(name == "_tg_parser_new_raw_messages" for _kind, name in leftovers(raw)))
    time.sleep(0.3)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stdout + stderr
    assert leftovers(raw) == []
    assert schema(raw) == before
    assert version_rows(raw, "raw") == ["raw_0001"]


def test_a_reader_across_the_commit_window_never_splits_the_commits(projects, legacy_copy, tmp_path):
    """A read transaction held on processing for longer than TG_PARSER_LOCK_TIMEOUT: in rollback-journal
    mode no database may commit (the run cannot secure processing's commit), and the output says so."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN'); c.execute('SELECT count(*) FROM sqlite_master').fetchone()\n"
         "print('reading', flush=True); sys.stdin.read()", str(legacy_copy / "processing_storage.sqlite")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "reading"
        result = tg_parser_run("db", "upgrade", projects=projects, env={"TG_PARSER_LOCK_TIMEOUT": "2"})
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TG_PARSER_LOCK_TIMEOUT" in result.stderr
    assert "committed" not in (result.stdout + result.stderr).replace("not committed", "").replace("nothing was committed", "")
    for name in ("ingestion", "raw", "processing"):
        with closing(sqlite3.connect(legacy_copy / f"{dict(ingestion='ingestion_state', raw='raw_storage', processing='processing_storage')[name]}.sqlite")) as c:
            assert not c.execute(f"SELECT 1 FROM sqlite_master WHERE name = 'alembic_version_{name}'").fetchall()


CONFLICTS_REBUILD = '''
def upgrade():
    from tg_parser.migrate import online

    with online.batch_alter_table("raw_conflicts", recreate="always", backfill={"reason_len": "length(reason)"}) as batch:
        batch.add_column(sa.Column("reason_len", sa.Integer()))


def downgrade():
    pass
'''


def test_an_online_rebuild_keeps_the_autoincrement_counter(projects, data_dir):
    """raw_conflicts has AUTOINCREMENT: ids of deleted rows are never given again, after a rebuild too."""
    at_baselines(data_dir, 0)
    raw = data_dir / RAW
    with closing(sqlite3.connect(raw)) as connection, connection:
        connection.executemany("INSERT INTO raw_conflicts (source_ref, observed_at, reason) VALUES (?, 'now', 'r')",
                               [(f"s{i}",) for i in range(50)])
        connection.execute("DELETE FROM raw_conflicts WHERE id > 40")
    counter = query(raw, "SELECT seq FROM sqlite_sequence WHERE name = 'raw_conflicts'")[0][0]
    add_revision(projects, "raw", 2, CONFLICTS_REBUILD)
    result = tg_parser_run("db", "upgrade", "--only", "raw", projects=projects)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rebuilt raw_conflicts online" in result.stdout
    assert query(raw, "SELECT seq FROM sqlite_sequence WHERE name = 'raw_conflicts'") == [(counter,)]
    with closing(sqlite3.connect(raw)) as connection, connection:
        new_id = connection.execute("INSERT INTO raw_conflicts (source_ref, observed_at, reason) VALUES ('n', 'now', 'r')"
                                    " RETURNING id").fetchone()[0]
    assert new_id == counter + 1
    assert leftovers(raw) == [] and query(raw, "PRAGMA integrity_check") == [("ok",)]


def test_too_little_room_for_the_new_table_is_refused_before_anything(online_projects, data_dir, tmp_path, mount):
    at_baselines(data_dir, 20_000)
    small = mount(tmp_path / "small-disk", size="60m")
    raw = small / RAW
    raw.write_bytes((data_dir / RAW).read_bytes())  # about 20 MB: journal and new table need 2 x 20 MB x 1.1
    free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
    (small / "filler").write_bytes(b"\0" * int(free - raw.stat().st_size * 1.5))
    before = schema(raw), query(raw, "SELECT count(*) FROM raw_messages")
    result = tg_parser_run("db", "upgrade", "--only", "raw", "--no-backup", projects=online_projects,
                           env={"RAW_STORAGE_DB_PATH": str(raw)})
    assert result.returncode == 3, result.stdout + result.stderr
    assert "raw online rebuild" in result.stderr and "not enough free disk" in result.stderr
    assert (schema(raw), query(raw, "SELECT count(*) FROM raw_messages")) == before
    assert leftovers(raw) == []


def test_a_disk_that_fills_up_during_the_copy_changes_nothing(online_projects, data_dir, tmp_path, mount):
    """The disk fills after the run checked it (the collector, another program): the copy fails, the
    run rolls back, the table and its rows stay as they were, and once there is room again the
    next command removes what the run could not."""
    at_baselines(data_dir, 60_000)
    small = mount(tmp_path / "small-disk", size="400m")
    raw = small / RAW
    raw.write_bytes((data_dir / RAW).read_bytes())
    rows = "SELECT * FROM raw_messages ORDER BY source_ref"
    before_schema, before_rows = schema(raw), query(raw, rows)
    env = {"RAW_STORAGE_DB_PATH": str(raw)}
    process = tg_parser_process("db", "upgrade", "--only", "raw", "--no-backup", projects=online_projects, env=env)
    wait_for(lambda: any(name == "_tg_parser_new_raw_messages" for _kind, name in leftovers(raw)))
    filler = small / "filler"
    with open(filler, "wb") as out:  # take every free byte
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError:
            pass
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stdout + stderr
    assert "disk is full" in stderr
    assert version_rows(raw, "raw") == ["raw_0001"]
    assert query(raw, "PRAGMA integrity_check") == [("ok",)]
    ours = [row for row in schema(raw) if row[1].startswith("_tg_parser_") or row[2].startswith("_tg_parser_")]
    assert [row for row in schema(raw) if row not in ours] == before_schema  # what the run left is its own only
    assert query(raw, rows) == before_rows
    filler.unlink()
    assert tg_parser_run("db", "current", projects=online_projects, env=env).returncode == 0
    assert leftovers(raw) == [] and schema(raw) == before_schema
