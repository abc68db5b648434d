"""Plain `alembic -c migrations_<name>/alembic.ini ...` works and touches exactly the file Settings names."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, run_cli, table_names, version_rows
from tg_parser.storage.databases import DATABASES

ALEMBIC = [sys.executable, "-m", "alembic"]


def alembic(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([*ALEMBIC, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def files_in(folder: Path) -> set[str]:
    """Files in `folder`, leaving out the `<db>.lock` files of the migration lock."""
    if not folder.exists():
        return set()
    return {p.name for p in folder.rglob("*") if p.is_file() and p.suffix != ".lock"}


def test_heads_prints_one_head_per_project():
    for name in ("ingestion", "raw", "processing"):
        result = alembic("-c", f"migrations_{name}/alembic.ini", "heads", cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{name}_0001 (head)"


def test_upgrade_from_repository_root_touches_only_the_settings_file(data_dir):
    result = alembic("-c", "migrations_raw/alembic.ini", "upgrade", "head", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert files_in(data_dir) == {"raw_storage.sqlite"}
    assert version_rows(data_dir / "raw_storage.sqlite", "raw") == ["raw_0001"]


def test_absolute_config_path_from_another_folder_uses_the_path_setting(tmp_path, data_dir):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "moved" / "raw.db"
    result = alembic(
        "-c", str(REPO / "migrations_raw" / "alembic.ini"), "upgrade", "head",
        cwd=elsewhere,
        env_extra={"RAW_STORAGE_DB_PATH": str(target)},
    )
    assert result.returncode == 0, result.stderr
    assert version_rows(target, "raw") == ["raw_0001"]
    assert files_in(elsewhere) == set() and files_in(data_dir) == set()


def test_relative_path_setting_resolves_against_the_working_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = alembic(
        "-c", str(REPO / "migrations_ingestion" / "alembic.ini"), "upgrade", "head",
        cwd=elsewhere,
        env_extra={"INGESTION_STATE_DB_PATH": "state/ingestion.sqlite"},
    )
    assert result.returncode == 0, result.stderr
    assert version_rows(elsewhere / "state" / "ingestion.sqlite", "ingestion") == ["ingestion_0001"]


def test_x_url_overrides_settings(tmp_path, data_dir):
    target = tmp_path / "x" / "override.sqlite"
    target.parent.mkdir()
    result = alembic(
        "-c", "migrations_processing/alembic.ini", "-x", f"url=sqlite:///{target}", "upgrade", "head", cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert version_rows(target, "processing") == ["processing_0001"]
    assert files_in(data_dir) == set()


def test_a_revision_failing_halfway_leaves_no_partial_table_and_the_version_unchanged(tmp_path):
    project = tmp_path / "migrations_raw"
    shutil.copytree(REPO / "migrations_raw", project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "versions" / "raw_0002_fails.py").write_text(
        '''
import sqlalchemy as sa
from alembic import op

revision = "raw_0002"
down_revision = "raw_0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.add_column("raw_messages", sa.Column("half_column", sa.Text))
    op.execute("INSERT INTO no_such_table VALUES (1)")


def downgrade():
    pass
'''
    )
    database = tmp_path / "raw.sqlite"
    url = f"url=sqlite:///{database}"
    assert alembic("-c", str(project / "alembic.ini"), "-x", url, "upgrade", "raw_0001", cwd=tmp_path).returncode == 0
    result = alembic("-c", str(project / "alembic.ini"), "-x", url, "upgrade", "head", cwd=tmp_path)
    assert result.returncode != 0
    assert "no_such_table" in result.stderr
    assert "half_done" not in table_names(database)
    with sqlite3.connect(database) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(raw_messages)")]
    assert "half_column" not in columns
    assert version_rows(database, "raw") == ["raw_0001"]


def test_three_projects_share_one_database_without_seeing_each_other(tmp_path):
    shared = f"url=sqlite:///{tmp_path / 'shared.sqlite'}"
    for name in ("ingestion", "raw", "processing"):
        result = alembic("-c", f"migrations_{name}/alembic.ini", "-x", shared, "upgrade", "head", cwd=REPO)
        assert result.returncode == 0, result.stderr
    for name in ("ingestion", "raw", "processing"):
        result = alembic("-c", f"migrations_{name}/alembic.ini", "-x", shared, "check", cwd=REPO)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "No new upgrade operations detected" in result.stdout
    with sqlite3.connect(tmp_path / "shared.sqlite") as connection:
        connection.execute("CREATE TABLE stray (id INTEGER)")
    result = alembic("-c", "migrations_raw/alembic.ini", "-x", shared, "check", cwd=REPO)
    assert result.returncode != 0 and "stray" in result.stdout + result.stderr


def test_db_paths_in_a_checkout_names_the_repository_projects_and_plain_alembic_runs_on_them(tmp_path, data_dir):
    lines = run_cli("db", "paths").output.splitlines()
    assert lines == [str(REPO / f"migrations_{name}" / "alembic.ini") for name in ("ingestion", "raw", "processing")]
    report = json.loads(run_cli("db", "paths", "--only", "processing", "--json").output)
    (entry,) = report["databases"]
    assert (entry["name"], entry["state"]) == ("processing", "no file yet")
    assert entry["project"] == str(REPO / "migrations_processing")
    assert entry["alembic_ini"] == str(REPO / "migrations_processing" / "alembic.ini")
    assert all(db.is_source_checkout for db in DATABASES)

    (ini,) = run_cli("db", "paths", "--only", "raw").output.split()
    assert alembic("-c", ini, "upgrade", "head", cwd=tmp_path).returncode == 0
    assert version_rows(data_dir / "raw_storage.sqlite", "raw") == ["raw_0001"]
