"""`tg-parser db check`, the CI job: fails for two heads, a database behind, or drift; passes when healthy."""

from __future__ import annotations

import json
import sqlite3

from tests.conftest import add_revision, run_cli, tg_parser_run

NOOP = '''
def upgrade():
    pass


def downgrade():
    pass
'''


def test_check_passes_on_a_healthy_set(data_dir):
    run_cli("init")
    result = run_cli("db", "check", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    assert [d["name"] for d in report["databases"]] == ["ingestion", "raw", "processing"]


def test_check_fails_when_a_project_has_two_heads(data_dir, projects):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "raw", 2, NOOP, down="raw_0001")
    add_revision(projects, "raw", 3, NOOP, down="raw_0001")
    result = tg_parser_run("db", "check", projects=projects)
    assert result.returncode == 1
    assert "2 heads (" in result.stdout and "raw_0002" in result.stdout and "raw_0003" in result.stdout


def test_check_fails_when_a_database_is_behind(data_dir, projects):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "processing", 2, NOOP)
    result = tg_parser_run("db", "check", "--json", projects=projects)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    processing = report["databases"][2]
    assert processing["problems"] == [
        "at processing_0001, not at head processing_0002 (run tg-parser db upgrade)"
    ]
    assert report["databases"][0]["ok"] and report["databases"][1]["ok"]


def test_check_fails_when_a_database_does_not_exist(data_dir):
    result = run_cli("db", "check")
    assert result.exit_code == 1
    assert result.output.count("does not exist yet") == 3


def test_check_fails_on_drift_that_autogenerate_sees(data_dir):
    run_cli("init")
    with sqlite3.connect(data_dir / "raw_storage.sqlite") as connection:
        connection.execute("ALTER TABLE raw_messages ADD COLUMN views INTEGER")
    result = run_cli("db", "check")
    assert result.exit_code == 1
    assert "autogenerate: ('remove_column'" in result.output
    assert "schema: table raw_messages: column views: not expected" in result.output


def test_check_fails_on_drift_that_only_the_reflected_comparison_sees(data_dir):
    run_cli("init")
    with sqlite3.connect(data_dir / "processing_storage.sqlite") as connection:
        connection.execute("DROP INDEX topic_bundles_current_unique_idx")
        connection.execute("CREATE UNIQUE INDEX topic_bundles_current_unique_idx ON topic_bundles (topic_id)")
    result = run_cli("db", "check", "--only", "processing")
    assert result.exit_code == 1
    assert "autogenerate:" not in result.output
    assert "schema: table topic_bundles: index topic_bundles_current_unique_idx: expected" in result.output
