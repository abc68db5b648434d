"""One voice on the terminal: with no log settings, only the human lines, each said once.

The structured events go to LOG_FILE when it is set, and to standard error only when asked for
(`--log-format json`, `-v`, `--log-level`, or LOG_FORMAT=json without LOG_FILE).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, add_revision, tg_parser_run
from tg_parser.core.events import EVENTS


@pytest.fixture
def no_log_settings(monkeypatch):
    monkeypatch.delenv("LOG_FILE", raising=False)


def test_init_on_an_empty_folder_leaves_stderr_empty(no_log_settings, data_dir):
    result = tg_parser_run("init")
    assert result.returncode == 0
    assert result.stderr == ""
    assert "Committed ingestion, raw, processing" in result.stdout
    assert "Running upgrade" not in result.stdout and "lock_acquired" not in result.stdout


def test_an_upgrade_at_head_is_one_line_and_no_warning(no_log_settings, data_dir):
    assert tg_parser_run("init").returncode == 0
    result = tg_parser_run("db", "upgrade")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines() == ["Nothing to do: every database is already where it was asked to be."]


def test_an_unconfirmed_downgrade_states_each_reason_once(no_log_settings, legacy_copy):
    assert tg_parser_run("init").returncode == 0
    result = tg_parser_run("db", "downgrade", "base")
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert len(lines) == len(set(lines)), result.stderr  # nothing said twice
    assert "run_refused" not in result.stderr and "[warning" not in result.stderr
    assert sum("a downgrade to base drops every table" in line for line in lines) == 3


@pytest.mark.parametrize("asked", [["--log-format", "json"], [], ["--log-level", "info", "--log-format", "json"]],
                         ids=["option", "setting", "both"])
def test_json_on_stderr_when_asked_every_line_parses(no_log_settings, data_dir, monkeypatch, asked):
    if not asked:
        monkeypatch.setenv("LOG_FORMAT", "json")
    result = tg_parser_run(*asked, "init")
    assert result.returncode == 0
    events = [json.loads(line) for line in result.stderr.splitlines()]  # every line parses
    names = {event["event"] for event in events}
    assert {"command_started", "lock_acquired", "revision_applied", "database_committed", "command_finished"} <= names
    assert names <= set(EVENTS) | {e["event"] for e in events if e["logger"].startswith("alembic")}


@pytest.mark.parametrize("asked", [["-v"], ["--verbose"], ["--log-level", "INFO"]])
def test_verbose_or_a_log_level_puts_the_events_on_stderr_as_text(no_log_settings, data_dir, asked):
    result = tg_parser_run(*asked, "init")
    assert result.returncode == 0
    assert "command_started" in result.stderr and "revision_applied" in result.stderr
    assert not result.stderr.lstrip().startswith("{")


def test_with_log_file_the_events_go_there_and_stderr_stays_for_people(data_dir, tmp_path, monkeypatch):
    log_file = tmp_path / "events.log"
    monkeypatch.setenv("LOG_FILE", str(log_file))
    result = tg_parser_run("init")
    assert result.returncode == 0 and result.stderr == ""
    assert "command_started" in log_file.read_text() and "database_committed" in log_file.read_text()


def test_a_python_warning_still_reaches_the_person_once(no_log_settings, data_dir, projects):
    assert tg_parser_run("init").returncode == 0
    add_revision(projects, "raw", 2, 'def upgrade():\n    import warnings\n    warnings.warn("mind the gap")\n\n\n'
                                     'def downgrade():\n    pass\n')
    result = tg_parser_run("db", "upgrade", projects=projects)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["warning: mind the gap"]


def test_a_dotenv_copied_from_the_example_keeps_the_terminal_quiet(no_log_settings, tmp_path):
    folder = tmp_path / "with-dotenv"
    folder.mkdir()
    (folder / ".env").write_text((REPO / ".env.example").read_text())
    result = tg_parser_run("init", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "Committed" in result.stdout


def test_a_log_file_that_cannot_be_opened_is_a_setting_error(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_FILE", str(tmp_path / "missing-folder" / "events.log"))
    result = tg_parser_run("init")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: invalid setting: LOG_FILE: cannot append to {tmp_path / 'missing-folder' / 'events.log'}"
        " (No such file or directory)")
    assert not data_dir.exists()
