"""The operator's command line: true answers, refusals before work, the commands Alembic users reach for."""

from __future__ import annotations

import json
import sqlite3

import pytest
from pydantic import BaseModel, ConfigDict

from tests.conftest import add_revision, file_digest, run_cli, tg_parser_run, version_rows
from tg_parser.storage.databases import DATABASES


def digests(data_dir):
    return {p.name: file_digest(p) for p in sorted(data_dir.rglob("*")) if p.is_file()} if data_dir.exists() else {}


DROPS_NOTE = '''
def upgrade():
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("note")


def downgrade():
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("note", sa.Text()))
'''

ADDS_NOTE = '''
def upgrade():
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("note", sa.Text()))


def downgrade():
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("note")
'''

NOOP = "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"


# 1. One name for a database at a revision this code does not know.

def test_an_unknown_revision_is_newer_than_this_tg_parser_in_every_command(data_dir):
    assert run_cli("init").exit_code == 0
    with sqlite3.connect(data_dir / "raw_storage.sqlite") as connection:
        connection.execute("UPDATE alembic_version_raw SET version_num = 'raw_0002'")
    current = run_cli("db", "current")
    assert current.exit_code == 0
    assert "raw_0002 (unknown revision: newer than this tg-parser)" in current.output
    assert "behind" not in current.output
    check = run_cli("db", "check")
    assert check.exit_code == 3
    assert "newer than this tg-parser (unknown revision raw_0002)" in check.output
    assert "run tg-parser db upgrade" not in check.output
    upgrade = run_cli("db", "upgrade")
    assert upgrade.exit_code == 3 and "newer than this tg-parser (unknown revision raw_0002)" in upgrade.output


# 2. and 3. `db revision` acts on exactly one database.

def test_revision_with_two_databases_is_a_usage_error_and_writes_nothing(projects):
    result = tg_parser_run("db", "revision", "--only", "raw", "--only", "ingestion", "-m", "x", projects=projects)
    assert result.returncode == 2
    assert "give exactly one --only" in result.stderr
    assert not list(projects.rglob("*_0002_*.py"))


# 4. Bad settings: one line naming the variable, exit 2, nothing touched.

@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("RAW_STORAGE_DB_URL", "mysql://user:s3cret@db/tg", "is a mysql database; allowed: sqlite:////"),
        ("RAW_STORAGE_DB_URL", "foo://bar", "is a foo database; allowed"),
        ("RAW_STORAGE_DB_URL", "sqlite:///{folder}", "is a folder, not a database file"),
        ("RAW_STORAGE_DB_URL", "sqlite://", "is an in-memory database"),
        ("TG_PARSER_DATA_DIR", "{file}/sub", "is a file, not a folder"),
        ("RAW_STORAGE_DB_PATH", "{file}/raw.sqlite", "is a file, not a folder"),
        ("TG_PARSER_LOCK_TIMEOUT", "soon", "TG_PARSER_LOCK_TIMEOUT"),
    ],
    ids=["mysql", "unknown-scheme", "sqlite-folder", "in-memory", "data-dir-under-a-file", "path-under-a-file",
         "not-a-number"],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path, data_dir, monkeypatch, variable, value, said):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    monkeypatch.setenv(variable, value.format(folder=tmp_path, file=a_file))
    for command in (("init",), ("db", "current")):
        result = run_cli(*command)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: invalid setting: {variable}:"), lines
        assert said in lines[0]
        assert "s3cret" not in result.output
    assert not data_dir.exists()


# 5. One bad database does not hide the good ones.

def test_an_unreadable_database_is_marked_and_the_others_shown(data_dir):
    assert run_cli("init").exit_code == 0
    (data_dir / "raw_storage.sqlite").write_text("not a database\n" * 100)
    for command in (("db", "current"), ("db", "history")):
        result = run_cli(*command)
        assert result.exit_code == 3, result.output
        assert "ingestion_0001" in result.output and "processing_0001" in result.output
        assert "not a SQLite database" in result.output
    as_json = json.loads(run_cli("db", "current", "--json").output)
    assert [d["state"] for d in as_json["databases"]] == ["at head", "unreadable", "at head"]


# 6. Usage problems are refused before any work.

def test_two_heads_and_plus_one_at_head_are_usage_errors_before_any_work(data_dir, projects):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "raw", 2, NOOP, down="raw_0001")
    add_revision(projects, "raw", 3, NOOP, down="raw_0001")
    before = digests(data_dir)
    two_heads = tg_parser_run("db", "upgrade", projects=projects)
    assert two_heads.returncode == 2, two_heads.stderr
    assert "raw: cannot upgrade to 'head'" in two_heads.stderr and len(two_heads.stderr.splitlines()) == 2
    plus_one = tg_parser_run("db", "upgrade", "+1", "--only", "ingestion", projects=projects)
    assert plus_one.returncode == 2 and "cannot upgrade to '+1' from ingestion_0001" in plus_one.stderr
    assert digests(data_dir) == before
    assert not (data_dir / "backups").exists()


def test_downgrade_minus_one_is_a_revision_not_an_option(data_dir):
    assert run_cli("init").exit_code == 0
    result = run_cli("db", "downgrade", "-1", "--only", "raw", "--yes")
    assert result.exit_code == 0, result.output
    assert version_rows(data_dir / "raw_storage.sqlite", "raw") == []
    assert "0 database(s) adopted" not in result.output and "adopted" not in result.output


def test_a_range_renders_with_sql(data_dir):
    result = run_cli("db", "upgrade", "base:head", "--sql", "--only", "raw")
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE raw_messages" in result.output
    unknown = run_cli("db", "upgrade", "raw_0001:raw_0009", "--sql", "--only", "raw")
    assert unknown.exit_code == 2 and "'raw_0009' is not in the raw project" in unknown.output
    assert not data_dir.exists()


# 7. Autogenerate with nothing to say writes nothing.

def test_autogenerate_with_no_change_writes_nothing_unless_asked(data_dir, projects):
    assert run_cli("init").exit_code == 0
    nothing = tg_parser_run("db", "revision", "--only", "raw", "-m", "nothing", "--autogenerate", projects=projects)
    assert nothing.returncode == 0, nothing.stderr
    assert "No changes detected" in nothing.stdout
    assert not list((projects / "migrations_raw" / "versions").glob("raw_0002_*"))
    empty = tg_parser_run("db", "revision", "--only", "raw", "-m", "empty", "--autogenerate", "--empty",
                          projects=projects)
    assert empty.returncode == 0, empty.stderr
    assert len(list((projects / "migrations_raw" / "versions").glob("raw_0002_*"))) == 1


def test_autogenerate_on_a_database_behind_head_says_what_to_run(data_dir, projects):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "raw", 2, NOOP)
    result = tg_parser_run("db", "revision", "--only", "raw", "-m", "x", "--autogenerate", projects=projects)
    assert result.returncode == 3
    assert "run tg-parser db upgrade --only raw first" in result.stderr
    assert "CommandError" not in result.stderr
    assert not list((projects / "migrations_raw" / "versions").glob("raw_0003_*"))


# 8. A bad .env is named once.

def test_bad_env_lines_are_named_once_with_file_and_line(data_dir, isolated):
    (isolated / ".env").write_text("TG_PARSER_BACKUP_KEEP=3\nthis is not a setting\nLLM_API_KEY 'sk-hidden\n")
    result = tg_parser_run("db", "current")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert warnings == [
        f"warning: {isolated / '.env'} line 2 cannot be parsed and is ignored",
        f"warning: {isolated / '.env'} line 3 cannot be parsed and is ignored",
    ]
    assert "sk-hidden" not in result.stderr


# New commands.

def test_plan_shows_what_would_run_and_marks_a_step_that_drops_data(data_dir, projects):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "ingestion", 2, ADDS_NOTE)
    assert tg_parser_run("db", "upgrade", projects=projects).returncode == 0
    with sqlite3.connect(data_dir / "ingestion_state.sqlite") as connection:
        connection.execute(
            "INSERT INTO sources (source_id, channel_id, status, include_comments, created_at, updated_at, note)"
            " VALUES ('s', 'c', 'active', 0, 'now', 'now', 'kept')"
        )
    add_revision(projects, "ingestion", 3, DROPS_NOTE)
    before = digests(data_dir)

    text = tg_parser_run("db", "upgrade", "--plan", projects=projects)
    assert text.returncode == 0, text.stderr
    assert "would apply  ingestion_0003" in text.stdout
    assert "DESTRUCTIVE: ingestion: drops column sources.note, which holds data" in text.stdout
    assert "raw" in text.stdout and "nothing to run (at raw_0001)" in text.stdout
    as_json = json.loads(tg_parser_run("db", "upgrade", "--plan", "--json", projects=projects).stdout)
    (step,) = as_json["databases"][0]["steps"]
    assert step["revision"] == "ingestion_0003" and step["destructive"]
    down = json.loads(tg_parser_run("db", "downgrade", "ingestion_0001", "--only", "ingestion", "--plan", "--json",
                                    projects=projects).stdout)
    assert [s["revision"] for s in down["databases"][0]["steps"]] == ["ingestion_0002"]
    reasons = down["databases"][0]["steps"][0]["destructive"]
    assert "ingestion: drops column sources.note, which holds data" in reasons
    # the batch rebuild that drops the column also loses the table's three unnamed CHECKs
    assert sorted(r for r in reasons if "removes CHECK" in r) == [
        f"ingestion: ingestion_0002 removes CHECK ({check}) from table sources, which holds rows"
        for check in ("comments_unavailable IN (0, 1)", "include_comments IN (0, 1)",
                      "status IN ('active', 'paused', 'error')")
    ]
    assert digests(data_dir) == before


def test_stamp_needs_confirmation_backs_up_and_records_without_running(data_dir, projects):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "raw", 2, 'def upgrade():\n    op.create_table("never", sa.Column("id", sa.Integer, primary_key=True))\n\n\ndef downgrade():\n    pass\n')
    raw = data_dir / "raw_storage.sqlite"
    before = file_digest(raw)
    unconfirmed = tg_parser_run("db", "stamp", "raw_0002", "--only", "raw", projects=projects)
    assert unconfirmed.returncode == 3 and "stamp not confirmed" in unconfirmed.stderr
    assert file_digest(raw) == before
    two = tg_parser_run("db", "stamp", "raw_0002", "--only", "raw", "--only", "ingestion", "--yes", projects=projects)
    assert two.returncode == 2
    done = tg_parser_run("db", "stamp", "raw_0002", "--only", "raw", "--yes", projects=projects)
    assert done.returncode == 0, done.stderr
    assert "stamped raw_0002 (was raw_0001); nothing was run" in done.stdout
    assert version_rows(raw, "raw") == ["raw_0002"]
    with sqlite3.connect(raw) as connection:
        assert not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'never'").fetchall()
    assert list((data_dir / "backups").glob("raw-raw_0001-*.sqlite"))


def test_stamp_purge_repairs_a_version_table_holding_an_unknown_revision(data_dir):
    assert run_cli("init").exit_code == 0
    raw = data_dir / "raw_storage.sqlite"
    with sqlite3.connect(raw) as connection:
        connection.execute("UPDATE alembic_version_raw SET version_num = 'raw_7777'")
    refused = run_cli("db", "stamp", "raw_0001", "--only", "raw", "--yes")
    assert refused.exit_code == 3 and "pass --purge" in refused.output
    repaired = run_cli("db", "stamp", "raw_0001", "--only", "raw", "--yes", "--purge")
    assert repaired.exit_code == 0, repaired.output
    assert version_rows(raw, "raw") == ["raw_0001"]


@pytest.mark.parametrize("content", [b"", b"not a database at all, " * 300, "processing"], ids=["empty", "garbage", "another"])
def test_stamp_refuses_a_file_that_is_not_a_database_of_its_kind(data_dir, content):
    assert run_cli("init").exit_code == 0
    raw = data_dir / "raw_storage.sqlite"
    raw.write_bytes(content if isinstance(content, bytes) else (data_dir / "processing_storage.sqlite").read_bytes())
    before = file_digest(raw)
    result = run_cli("db", "stamp", "raw_0001", "--only", "raw", "--yes")
    assert result.exit_code == 3, result.output
    assert "refused: raw:" in result.output
    assert file_digest(raw) == before
    assert not list((data_dir / "backups").glob("raw-*"))


@pytest.mark.parametrize("command", [("db", "stamp", "base"), ("db", "downgrade", "base")], ids=["stamp", "downgrade"])
def test_a_reader_is_waited_for_within_the_lock_timeout_and_no_backup_is_left(data_dir, monkeypatch, command):
    import subprocess
    import sys

    assert run_cli("init").exit_code == 0
    raw = data_dir / "raw_storage.sqlite"
    monkeypatch.setenv("TG_PARSER_LOCK_TIMEOUT", "1")
    reader = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN'); c.execute('SELECT count(*) FROM sqlite_master').fetchone()\n"
         "print('reading', flush=True); sys.stdin.read()", str(raw)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "reading"
        result = run_cli(*command, "--only", "raw", "--yes")
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
    assert result.exit_code == 1, result.output
    assert "gave up after waiting 1 s (TG_PARSER_LOCK_TIMEOUT)" in result.output
    assert version_rows(raw, "raw") == ["raw_0001"]
    assert not list((data_dir / "backups").glob("raw-*"))


def test_merge_joins_two_heads_and_refuses_one(data_dir, projects):
    one = tg_parser_run("db", "merge", "--only", "raw", "-m", "join", projects=projects)
    assert one.returncode == 2 and "has one head" in one.stderr
    add_revision(projects, "raw", 2, NOOP, down="raw_0001")
    add_revision(projects, "raw", 3, NOOP, down="raw_0001")
    merged = tg_parser_run("db", "merge", "--only", "raw", "-m", "join", projects=projects)
    assert merged.returncode == 0, merged.stderr
    assert "merges raw_0002, raw_0003" in merged.stdout or "merges raw_0003, raw_0002" in merged.stdout
    heads = tg_parser_run("db", "heads", "--only", "raw", projects=projects)
    assert heads.stdout.split() == ["raw", "raw_0004"]


def test_show_prints_one_revision(data_dir):
    result = run_cli("db", "show", "raw_0001")
    assert result.exit_code == 0, result.output
    assert "Rev: raw_0001 (head)" in result.output and "raw_0001_baseline.py" in result.output
    assert "ingestion" not in result.output.split("\n", 1)[0]
    missing = run_cli("db", "show", "nope_0001")
    assert missing.exit_code == 2 and "no project has revision 'nope_0001'" in missing.output


# One JSON shape for every read command.

class DatabaseEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    location: str
    state: str
    current: list[str]
    heads: list[str]
    problem: str | None


class Output(BaseModel):
    model_config = ConfigDict(extra="allow")
    databases: list[DatabaseEntry]


@pytest.mark.parametrize(
    "command",
    [("db", "current"), ("db", "history"), ("db", "heads"), ("db", "backups"), ("db", "check"), ("db", "paths"),
     ("db", "upgrade", "--plan"), ("db", "downgrade", "--plan")],
    ids=lambda c: " ".join(c[1:]),
)
def test_every_read_command_prints_the_one_json_shape(legacy_copy, command):
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    result = run_cli(*command, "--json")
    assert result.exit_code in (0, 1), result.output
    parsed = Output.model_validate_json(result.output)
    assert [d.name for d in parsed.databases] == (
        ["processing", "raw", "ingestion"] if "downgrade" in command else ["ingestion", "raw", "processing"]
    )
    states = {d.name: d.state for d in parsed.databases}
    assert states["raw"] == "at head" and states["ingestion"] == "no version table: adopted by the next upgrade"


# Help and output.

def test_every_help_names_the_exit_codes_and_where_settings_come_from():
    from tg_parser.cli.main import cli

    def walk(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    for path in walk(cli, []):
        for flag in ("-h", "--help"):
            result = run_cli(*path, flag)
            assert result.exit_code == 0, (path, result.output)
            assert "Exit codes: 0 success" in result.output and ".env" in result.output, path
            summaries = result.output.split("Commands:", 1)[1].split("\n\n")[0] if "Commands:" in result.output else ""
            assert "..." not in summaries, f"a summary is cut off in {path}"
    assert "What to send" in run_cli("llm", "ping", "--help").output


def test_backup_sizes_are_readable_at_every_scale(legacy_copy):
    from tg_parser.cli.render import human_size

    assert [human_size(n) for n in (512, 45_056, 925_000_000, 1_200_000_000)] == [
        "512 B", "45.1 KB", "925.0 MB", "1.2 GB"
    ]
    assert run_cli("db", "upgrade").exit_code == 0
    listing = run_cli("db", "backups")
    assert " KB  " in listing.output and "0.0 MB" not in listing.output


def test_a_downgrade_refused_on_a_read_only_folder_says_so_once(legacy_copy, mount, tmp_path, monkeypatch):
    assert run_cli("init").exit_code == 0
    read_only = mount(tmp_path / "ro-mount", bind=legacy_copy, read_only=True)
    monkeypatch.setenv("TG_PARSER_DATA_DIR", str(read_only))
    result = run_cli("db", "downgrade", "--only", "raw", "--yes")
    assert result.exit_code == 3, result.output
    assert result.output.count("raw_storage.sqlite is read-only") == 1
    assert result.output.count("cannot write backups into") == 1
    assert "not restored" not in result.output and "Traceback" not in result.output
    for db in DATABASES:
        assert version_rows(legacy_copy / db.default_file, db.name) == [f"{db.name}_0001"]
