"""A collector holding a write transaction: TG_PARSER_LOCK_TIMEOUT alone bounds the wait, and nothing is left behind."""

from __future__ import annotations

import time

import pytest

from tests.conftest import file_digest, run_cli, write_locked
from tg_parser.storage.databases import DATABASES

TIMEOUT = 2


@pytest.mark.parametrize(
    "mode",
    ["IMMEDIATE", "EXCLUSIVE"],
    ids=["writer-before-spilling", "writer-spilling-or-committing"],
)
@pytest.mark.parametrize("command", [("init",), ("db", "upgrade")])
def test_a_busy_database_ends_the_run_within_the_lock_timeout(legacy_copy, monkeypatch, mode, command):
    monkeypatch.setenv("TG_PARSER_LOCK_TIMEOUT", str(TIMEOUT))
    before = {db.name: file_digest(legacy_copy / db.default_file) for db in DATABASES}
    with write_locked(legacy_copy / "raw_storage.sqlite", mode):
        started = time.monotonic()
        result = run_cli(*command)
        elapsed = time.monotonic() - started
        assert result.exit_code == 1, result.output  # documented: a database stayed in use past the timeout
    assert TIMEOUT <= elapsed < 2 * TIMEOUT, elapsed
    assert "raw_storage.sqlite is in use by another process" in result.output
    assert f"gave up after waiting {TIMEOUT} s (TG_PARSER_LOCK_TIMEOUT)" in result.output
    assert "Nothing was changed." in result.output
    assert {db.name: file_digest(legacy_copy / db.default_file) for db in DATABASES} == before
    backups = legacy_copy / "backups"
    assert not backups.exists() or not any(backups.iterdir()), list(backups.iterdir())


def test_db_current_and_check_wait_no_longer_than_the_lock_timeout(legacy_copy, monkeypatch):
    monkeypatch.setenv("TG_PARSER_LOCK_TIMEOUT", str(TIMEOUT))
    with write_locked(legacy_copy / "raw_storage.sqlite", "EXCLUSIVE"):
        started = time.monotonic()
        current = run_cli("db", "current")
        check = run_cli("db", "check", "--only", "raw")
        elapsed = time.monotonic() - started
    assert elapsed < 3 * TIMEOUT, elapsed
    assert current.exit_code == 1 and "is in use by another process" in current.output
    assert check.exit_code == 1 and "is in use by another process" in check.output
