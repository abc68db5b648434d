"""Shared fixtures: every test runs in its own folder with its own data dir, never the user's."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
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


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A clean environment and working folder: no inherited locations, no stray `.env`."""
    for variable in LOCATION_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TG_PARSER_DATA_DIR", str(tmp_path / "data"))
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
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute(f"SELECT version_num FROM alembic_version_{name}")]


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


def content_checksums(path: Path) -> dict[str, str]:
    """Per-table checksums of every row, with each value's type: equal means no row changed."""
    checksums = {}
    with sqlite3.connect(path) as connection:
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


def tg_parser_run(*args: str, projects: Path | None = None, env: dict | None = None, timeout: float = 120):
    process = tg_parser_process(*args, projects=projects, env=env)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


_HOLD_WRITE_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
connection.execute("ROLLBACK")
"""


@contextmanager
def write_locked(path: Path):
    """Another process holding `path`'s SQLite write lock, as a collector in mid-write would, until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    The server comes from TG_PARSER_TEST_POSTGRES_URL. Without it the test is skipped,
    except under CI=true, where a missing server is a failure.
    """
    server = os.environ.get("TG_PARSER_TEST_POSTGRES_URL")
    if not server:
        reason = "TG_PARSER_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    import uuid

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"tg_parser_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
