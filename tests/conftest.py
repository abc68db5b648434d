"""Shared fixtures: every test runs in its own folder with its own data dir, never the user's.

The suite runs in parallel (pytest-xdist, `-n auto` in pyproject.toml): nothing here is shared
between tests but read-only files, and session fixtures are per worker.

PostgreSQL: `postgres_server` is TG_PARSER_TEST_POSTGRES_URL if set, else a private throwaway
server that each worker starts on first use with pytest-postgresql's executor (the class behind
its `postgresql_proc` fixture), from `pg_ctl` on PATH or in /usr/lib/postgresql/<version>/bin,
in a folder of its own under the system temp folder, on a free port, with trust authentication
and without fsync. PostgreSQL will not run as root, and the tests here and in CI do: as root,
pg_ctl (initdb, start, stop) runs as the `postgres` user through `runuser` (or `su`), found in the
system folders whatever PATH says, in a folder owned by
that user (pytest's own temp folders are root's alone, 0700, so the server's data cannot live
there). `postgresql_proc` itself is not used because it puts the data there. Each test gets
fresh databases (`postgres_databases`, `postgres_url`), dropped afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from tg_parser.cli.main import cli
from tg_parser.storage.databases import DATABASES

REPO = Path(__file__).resolve().parent.parent
LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy-v3.0.0"
LOCATION_VARIABLES = ["TG_PARSER_DATA_DIR"] + [
    f"{db.setting_stem}_DB_{kind}" for db in DATABASES for kind in ("PATH", "URL")
]


def pytest_collection_modifyitems(items):
    """Slow tests first: under xdist, a long test collected last would run alone at the end of the run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A clean environment and working folder: no inherited locations, no stray `.env`.

    Logs go to a file of the test's own (`tg-parser.log`), so standard error holds only the
    lines meant for people; the tests of the logs themselves set LOG_FILE as they need.
    """
    for variable in (*LOCATION_VARIABLES, "LOG_LEVEL", "LOG_FORMAT"):
        monkeypatch.delenv(variable, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TG_PARSER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOG_FILE", str(tmp_path / "tg-parser.log"))
    return work


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def legacy_copy(data_dir) -> Path:
    """The 3.0.0 fixture databases, copied into the test's data dir."""
    data_dir.mkdir(exist_ok=True)
    for db in DATABASES:
        shutil.copyfile(LEGACY / db.default_file, data_dir / db.default_file)
        os.chmod(data_dir / db.default_file, 0o644)
    return data_dir


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def version_rows(path: Path, name: str) -> list[str]:
    with closing(sqlite3.connect(path)) as connection, connection:
        return [row[0] for row in connection.execute(f"SELECT version_num FROM alembic_version_{name}")]


def table_names(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as connection, connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


def content_checksums(path: Path) -> dict[str, str]:
    """Per-table checksums of every row, with each value's type: equal means no row changed."""
    checksums = {}
    with closing(sqlite3.connect(path)) as connection, connection:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in sorted(tables):
            digest = hashlib.sha256()
            for row in connection.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                digest.update(repr(row).encode())
            checksums[table] = digest.hexdigest()
    return checksums


@pytest.fixture
def projects(tmp_path) -> Path:
    """Copies of the three Alembic projects, importable first, so a test can add revisions."""
    root = tmp_path / "projects"
    for db in DATABASES:
        shutil.copytree(REPO / db.project, root / db.project, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def add_revision(projects: Path, name: str, number: int, body: str, down: str | None = None) -> str:
    revision = f"{name}_{number:04d}"
    down = down or f"{name}_{number - 1:04d}"
    (projects / f"migrations_{name}" / "versions" / f"{revision}_test.py").write_text(
        f'''"""Test revision {revision}."""
import os
import time

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None

{body}
'''
    )
    return revision


def tg_parser_process(*args: str, projects: Path | None = None, env: dict | None = None, **kwargs):
    """`tg-parser` in its own process, seeing the project copies in `projects` if given."""
    full_env = {**os.environ, **(env or {})}
    if projects is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(projects), full_env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "tg_parser", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def tg_parser_run(
    *args: str, projects: Path | None = None, env: dict | None = None, timeout: float = 120, cwd: Path | None = None
):
    process = tg_parser_process(*args, projects=projects, env=env, cwd=cwd)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def commit_fault_run(fault: str, at: str, *args: str, projects: Path | None = None, env: dict | None = None):
    """`tg-parser *args` in its own process with a fault (raise, kill, term) just before the COMMIT of
    the database whose file name is `at` (tests/commit_hook.py)."""
    full_env = {**os.environ, **(env or {}), "COMMIT_FAULT": fault, "COMMIT_FAULT_AT": at}
    if projects is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(projects), full_env.get("PYTHONPATH")]))
    hook = Path(__file__).resolve().parent / "commit_hook.py"
    return subprocess.run([sys.executable, str(hook), *args], env=full_env, capture_output=True, text=True, timeout=120)


_HOLD_WRITE_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN " + sys.argv[2])
print("locked", flush=True)
sys.stdin.read()
connection.execute("ROLLBACK")
"""


@contextmanager
def write_locked(path: Path, mode: str = "IMMEDIATE"):
    """Another process holding `path`'s SQLite write lock, as a collector in mid-write would, until the block ends.

    IMMEDIATE: a writer that has not spilled to the file yet (readers go on); EXCLUSIVE: one that
    has, or is committing (readers wait too).
    """
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE_LOCK, str(path), mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def _pg_ctl() -> str | None:
    """pg_ctl on PATH, else the newest in Debian's and Ubuntu's /usr/lib/postgresql/<version>/bin (not on PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return found
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda path: int(path.parts[-3]))
    return str(installed[-1]) if installed else None


def _as_postgres() -> str:
    """The command that runs the rest of its line as the `postgres` user: `runuser`, else `su`, found
    in the system folders too (a root PATH without /usr/sbin is common: `env -i PATH=/usr/bin:/bin`)."""
    folders = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
    runuser = shutil.which("runuser", path=folders)
    if runuser:
        return f"{shlex.quote(runuser)} -u postgres --"
    su = shutil.which("su", path=folders)
    if su is None:
        raise RuntimeError("neither runuser nor su is installed: cannot run PostgreSQL as the postgres user")
    return f"{shlex.quote(su)} -s /bin/sh -c 'exec \"$0\" \"$@\"' postgres --"


@contextmanager
def private_postgres(pg_ctl: str) -> Iterator[str]:
    """A throwaway PostgreSQL server in a temporary folder; yields its URL, then stops it and removes the folder.

    As root, a wrapper runs pg_ctl as `postgres` (see the module docstring).
    """
    from port_for import select_random
    from pytest_postgresql.executors import PostgreSQLExecutor

    folder = Path(tempfile.mkdtemp(prefix="tg-parser-postgres-"))
    executable = pg_ctl
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        executable = str(folder / "pg_ctl")
        Path(executable).write_text(f"#!/bin/sh\ncd / && exec {_as_postgres()} {shlex.quote(pg_ctl)} \"$@\"\n")
        os.chmod(executable, 0o755)
    port = select_random()
    server = PostgreSQLExecutor(
        executable=executable,
        host="127.0.0.1",
        port=port,
        datadir=str(folder / "data"),
        unixsocketdir=str(folder),
        logfile=str(folder / "server.log"),
        startparams="-w",
        dbname="postgres",
        # A test server: durability buys nothing, and skipping it makes CREATE DATABASE fast.
        postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
    )
    try:
        server.start()
        server.process.wait(timeout=60)  # pg_ctl -w exits once the server accepts connections
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of the PostgreSQL server for this session: TG_PARSER_TEST_POSTGRES_URL, else a private one.

    The private server starts on first use, one per xdist worker, from pg_ctl found on PATH or
    under /usr/lib/postgresql. Without PostgreSQL's binaries the tests that need it are
    skipped, except under CI=true, where that is a failure.
    """
    server = os.environ.get("TG_PARSER_TEST_POSTGRES_URL")
    if server:
        yield server
        return
    pg_ctl = _pg_ctl()
    if pg_ctl is None:
        reason = "no PostgreSQL server binaries (pg_ctl) here and TG_PARSER_TEST_POSTGRES_URL is not set"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with private_postgres(pg_ctl) as url:
        yield url


@pytest.fixture
def postgres_databases(postgres_server):
    """make(encoding=None) → a fresh, empty PostgreSQL database's URL; every one is dropped after the test."""
    import uuid

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make(encoding: str | None = None):
        name = f"tg_parser_test_{uuid.uuid4().hex[:12]}"
        options = f" ENCODING '{encoding}' TEMPLATE template0" if encoding else ""
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"{options}')
        made.append(name)
        return make_url(postgres_server).set(database=name)

    try:
        yield make
    finally:
        with admin.connect() as connection:
            for name in made:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def postgres_tables(url) -> set[str]:
    """The names of the tables in a PostgreSQL database."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def postgres_url(postgres_databases):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    return postgres_databases()


class LiveWriter:
    """`tests/writer.py` in its own process: a collector committing rows into raw_messages the whole time."""

    def __init__(self, database: Path, folder: Path, pause: float = 0.002, pairs: bool = False):
        self.log, self.stop_file = folder / "writer.log", folder / "writer.stop"
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("writer.py")), str(database), str(self.log),
             str(self.stop_file), str(pause), *(["pairs"] if pairs else [])],
            stderr=subprocess.PIPE, text=True,
        )
        self.wait_for(5)

    def lines(self) -> list[tuple[str, float, float]]:
        if not self.log.exists():
            return []
        return [(ref, float(at), float(waited)) for ref, at, waited in
                (line.split() for line in self.log.read_text().splitlines() if line.count(" ") == 2)]

    def ids(self, before: float | None = None, after: float | None = None) -> set[str]:
        """Ids whose commit returned (optionally before or after a monotonic time)."""
        return {ref for ref, at, _ in self.lines() if (before is None or at < before) and (after is None or at > after)}

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines()) < count:
            assert self.process.poll() is None, self.process.stderr.read()
            assert time.monotonic() < deadline, "the writer committed nothing"
            time.sleep(0.02)

    def stop(self) -> set[str]:
        self.stop_file.touch()
        assert self.process.wait(timeout=120) == 0, self.process.stderr.read()
        return self.ids()


@contextmanager
def live_writer(database: Path, folder: Path, pause: float = 0.002, pairs: bool = False):
    writer = LiveWriter(database, folder, pause, pairs)
    try:
        yield writer
    finally:
        if writer.process.poll() is None:
            writer.stop_file.touch()
            writer.process.wait(timeout=120)


def source_refs(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as connection, connection:
        return {row[0] for row in connection.execute("SELECT source_ref FROM raw_messages")}


def checksums_without_writer(path: Path) -> dict[str, str]:
    """`content_checksums`, leaving out the rows the live writer added to raw_messages."""
    checksums = {}
    with closing(sqlite3.connect(path)) as connection, connection:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in sorted(tables):
            where = " WHERE source_ref NOT LIKE 'writer:%'" if table == "raw_messages" else ""
            digest = hashlib.sha256()
            for row in connection.execute(f'SELECT * FROM "{table}"{where} ORDER BY rowid'):
                digest.update(repr(row).encode())
            checksums[table] = digest.hexdigest()
    return checksums


def integrity(path: Path) -> str:
    with closing(sqlite3.connect(path)) as connection, connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def grow_raw(path: Path, rows: int, text_bytes: int = 400) -> None:
    """Add `rows` raw messages of about `text_bytes` each, in SQL (fast enough for tens of megabytes)."""
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(
            "INSERT INTO raw_messages (source_ref, id, message_type, channel_id, date, text, inserted_at)"
            " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " SELECT 'bulk:' || i, i, 'post', 'c' || (i % 50), '2026-01-01', hex(randomblob(?)), '2026-01-01' FROM n",
            (rows, text_bytes // 2),
        )


def _can_mount() -> bool:
    probe = Path(f"/tmp/tg-parser-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True).returncode:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    except FileNotFoundError:
        return False
    finally:
        probe.rmdir()


def need_mounts() -> None:
    """Skip where this machine cannot mount (never under CI=true, where it must)."""
    if not _can_mount():
        reason = "cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def mount(tmp_path):
    """mount(folder, size=None, bind=None, read_only=False): a tmpfs or a bind mount, unmounted afterwards."""
    need_mounts()
    mounted: list[Path] = []

    def make(folder: Path, size: str | None = None, bind: Path | None = None, read_only: bool = False) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if bind is not None:
            subprocess.run(["mount", "--bind", str(bind), str(folder)], check=True)
            if read_only:
                subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        else:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
        mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)
