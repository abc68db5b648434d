"""A wheel built from the repository carries the three Alembic projects and runs `tg-parser init`."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import venv

from tests.conftest import REPO
from tg_parser.storage.databases import DATABASES


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_wheel_in_a_fresh_virtualenv_runs_init_in_an_empty_folder(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO))
    (wheel,) = dist.glob("tg_parser-3.1.0a1-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    run(str(python), "-m", "pip", "install", "-q", str(wheel))

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TG_PARSER_DATA_DIR"}
    result = run(str(env_dir / "bin" / "tg-parser"), "init", cwd=empty, env=env)
    for db in DATABASES:
        path = empty / "data" / db.default_file
        assert str(path) in result.stdout
        with sqlite3.connect(path) as connection:
            (version,) = connection.execute(f"SELECT version_num FROM {db.version_table}").fetchone()
        assert version == f"{db.name}_0001"
    where = run(
        str(python), "-c", "import tg_parser, migrations_raw; print(tg_parser.__file__, *migrations_raw.__path__)",
        cwd=empty, env=env,
    ).stdout.split()
    assert all(path.startswith(str(env_dir)) for path in where), where
