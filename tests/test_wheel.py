"""The README's two commands in a fresh copy of the repository, and the wheel the first one installs.

The commands run as the README writes them, one after the other, under `sh`, on a PATH whose only
program is `python3` (Debian and Ubuntu have no `python`), with pip refusing to install outside a
virtual environment (PIP_REQUIRE_VIRTUALENV, as PEP 668 makes the system Python refuse). Between
them, the wheel the first one installed is checked. The second command's pytest gets
`tests/test_docs.py -n 0` appended: a selection, in one process. That proves the environment
installs the test dependencies and runs with the suite's configuration (its plugins and options),
without running the whole suite, and this test, again inside the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_docs import quickstart
from tg_parser.storage.databases import DATABASES

pytestmark = pytest.mark.slow


def fresh_copy(folder: Path) -> Path:
    """What a `git clone` of this working tree would hold (with uncommitted edits): no .venv, no data."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    return folder


def shell(command: str, cwd: Path, tmp: Path, extra_path: Path | None = None, timeout: float = 600):
    """`command` under sh, as on a fresh Debian or Ubuntu machine (see the module docstring)."""
    bin_dir = tmp / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        (bin_dir / "python3").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TG_PARSER_", "PYTEST_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(str(p) for p in (extra_path, bin_dir) if p)
    env["PIP_REQUIRE_VIRTUALENV"] = "true"
    env["PIP_NO_COMPILE"] = "true"  # bytecode for every installed file: seconds of CPU this test does not need
    result = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def version(path: Path, name: str) -> str:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT version_num FROM alembic_version_{name}").fetchone()[0]


def site_packages(copy: Path) -> Path:
    (found,) = (copy / ".venv" / "lib").glob("python3*/site-packages")
    return found


def test_the_readme_commands_in_a_fresh_copy_and_the_wheel_the_first_one_installs(tmp_path):
    copy = fresh_copy(tmp_path / "tg_parser")
    first, second = quickstart()

    result = shell(first, copy, tmp_path)
    for db in DATABASES:
        assert version(copy / "data" / db.default_file, db.name) == f"{db.name}_0001"
        assert f"{db.name}_0001 (head)" in result.stdout
    check_the_wheel(copy, tmp_path)

    result = shell(f"{second} tests/test_docs.py -n 0", copy, tmp_path)
    assert " passed" in result.stdout and "failed" not in result.stdout, result.stdout
    assert not (site_packages(copy) / "tg_parser").exists(), "the second command installs tg_parser editable"


def check_the_wheel(copy: Path, tmp_path: Path) -> None:
    """The wheel's layout, and `init`, `db paths` with plain Alembic, and `db revision` run from it."""
    # The projects are inside the package; nothing named migrations_* lands in site-packages.
    site = site_packages(copy)
    packaged = site / "tg_parser" / "migrations"
    assert not list(site.glob("migrations*")), "top-level migrations_* installed into site-packages"
    for db in DATABASES:
        assert (packaged / db.name / "alembic.ini").is_file() and (packaged / db.name / "env.py").is_file()
        assert list((packaged / db.name / "versions").glob(f"{db.name}_0001_*.py"))

    # `tg-parser init` from the wheel, in an empty folder.
    venv_bin = copy / ".venv" / "bin"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = shell("tg-parser init", empty, tmp_path, venv_bin)
    for db in DATABASES:
        assert str(empty / "data" / db.default_file) in result.stdout
        assert version(empty / "data" / db.default_file, db.name) == f"{db.name}_0001"

    # `db paths` gives plain Alembic the projects inside the package.
    lines = shell("tg-parser db paths", tmp_path, tmp_path, venv_bin).stdout.splitlines()
    assert lines == [str(packaged / db.name / "alembic.ini") for db in DATABASES]
    report = json.loads(shell("tg-parser db paths --only raw --json", tmp_path, tmp_path, venv_bin).stdout)
    (entry,) = report["databases"]
    assert (entry["name"], entry["project"]) == ("raw", str(packaged / "raw"))
    assert entry["alembic_ini"] == str(packaged / "raw" / "alembic.ini")
    plain = tmp_path / "plain"
    plain.mkdir()
    shell('alembic -c "$(tg-parser db paths --only raw)" upgrade head', plain, tmp_path, venv_bin)
    assert [p.name for p in (plain / "data").glob("*.sqlite")] == ["raw_storage.sqlite"]
    assert version(plain / "data" / "raw_storage.sqlite", "raw") == "raw_0001"

    # `db revision` refuses to write into the installed package.
    before = sorted(p.name for p in (packaged / "raw" / "versions").iterdir())
    refused = subprocess.run([venv_bin / "tg-parser", "db", "revision", "--only", "raw", "-m", "x"],
                             cwd=empty, capture_output=True, text=True, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "inside the installed tg_parser package" in refused.stderr
    assert sorted(p.name for p in (packaged / "raw" / "versions").iterdir()) == before
