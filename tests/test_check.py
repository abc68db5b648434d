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


def test_check_names_each_drift_once_in_a_readable_line(data_dir):
    run_cli("init")
    with sqlite3.connect(data_dir / "raw_storage.sqlite") as connection:
        connection.execute("ALTER TABLE raw_messages ADD COLUMN views INTEGER")
        connection.execute("DROP INDEX raw_messages_thread_idx")
    result = run_cli("db", "check")
    assert result.exit_code == 1
    assert result.output.count("table raw_messages: column views") == 1
    assert result.output.count("table raw_messages: index raw_messages_thread_idx") == 1
    assert "Column(" not in result.output and "('remove" not in result.output and "Index(" not in result.output


def test_autogenerate_differences_are_rendered_as_readable_lines(data_dir):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    from tg_parser.migrate.check import describe_diff
    from tg_parser.storage.databases import get_database

    run_cli("init")
    with sqlite3.connect(data_dir / "raw_storage.sqlite") as connection:
        connection.execute("ALTER TABLE raw_messages ADD COLUMN views INTEGER")
        connection.execute("DROP INDEX raw_messages_thread_idx")
        connection.execute("CREATE TABLE stray (id INTEGER)")
    raw = get_database("raw")
    engine = create_engine(f"sqlite:///{data_dir / 'raw_storage.sqlite'}")
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": raw.version_table})
        lines = sorted(describe_diff(diff) for diff in compare_metadata(context, raw.metadata))
    engine.dispose()
    assert lines == [
        "table raw_messages: column views: not in the schema code",
        "table raw_messages: index raw_messages_thread_idx: missing from the database",
        "table stray: not in the schema code",
    ]


def test_check_fails_on_drift_that_only_the_reflected_comparison_sees(data_dir):
    run_cli("init")
    with sqlite3.connect(data_dir / "processing_storage.sqlite") as connection:
        connection.execute("DROP INDEX topic_bundles_current_unique_idx")
        connection.execute("CREATE UNIQUE INDEX topic_bundles_current_unique_idx ON topic_bundles (topic_id)")
    result = run_cli("db", "check", "--only", "processing")
    assert result.exit_code == 1
    assert "table topic_bundles: index topic_bundles_current_unique_idx: expected" in result.output
