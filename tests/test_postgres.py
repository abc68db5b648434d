"""The same three Alembic projects on a real PostgreSQL server (`db transfer`: tests/test_transfer.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from tests.conftest import (
    REPO,
    add_revision,
    postgres_tables,
    run_cli,
    tg_parser_process,
    tg_parser_run,
)
from tg_parser.storage.databases import DATABASES

URL_VARIABLES = [f"{db.setting_stem}_DB_URL" for db in DATABASES]


def point_all_at(monkeypatch, url) -> str:
    rendered = url.render_as_string(hide_password=False)
    for variable in URL_VARIABLES:
        monkeypatch.setenv(variable, rendered)
    return rendered


@pytest.mark.parametrize("db", DATABASES, ids=lambda db: db.name)
def test_each_project_alone_upgrades_checks_downgrades_and_upgrades_again(monkeypatch, postgres_url, db):
    point_all_at(monkeypatch, postgres_url)
    assert run_cli("db", "heads", "--only", db.name).output.split()[1] == f"{db.name}_0001"
    up = run_cli("db", "upgrade", "--only", db.name)
    assert up.exit_code == 0, up.output
    assert postgres_tables(postgres_url) == set(db.metadata.tables) | {db.version_table}
    check = run_cli("db", "check", "--only", db.name)
    assert check.exit_code == 0, check.output
    down = run_cli("db", "downgrade", "base", "--only", db.name, "--yes")
    assert down.exit_code == 0, down.output
    assert postgres_tables(postgres_url) == {db.version_table}
    assert run_cli("db", "upgrade", "--only", db.name).exit_code == 0
    assert run_cli("db", "check", "--only", db.name).exit_code == 0


def test_all_three_share_one_database(monkeypatch, postgres_url):
    point_all_at(monkeypatch, postgres_url)
    result = run_cli("init")
    assert result.exit_code == 0, result.output
    expected = {t for db in DATABASES for t in (*db.metadata.tables, db.version_table)}
    assert postgres_tables(postgres_url) == expected
    check = run_cli("db", "check", "--json")
    assert check.exit_code == 0, check.output
    assert json.loads(check.output)["ok"] is True


def test_check_sees_drift_on_postgres(monkeypatch, postgres_url):
    point_all_at(monkeypatch, postgres_url)
    run_cli("init")
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX topic_bundles_current_unique_idx")
        connection.exec_driver_sql("CREATE UNIQUE INDEX topic_bundles_current_unique_idx ON topic_bundles (topic_id)")
    engine.dispose()
    result = run_cli("db", "check", "--only", "processing")
    assert result.exit_code == 1
    assert "index topic_bundles_current_unique_idx: expected" in result.output


def test_postgres_enforces_what_sqlite_enforces(monkeypatch, postgres_url):
    point_all_at(monkeypatch, postgres_url)
    assert run_cli("init").exit_code == 0
    engine = create_engine(postgres_url)
    now = "2025-12-28T12:00:00+00:00"
    try:
        with pytest.raises(IntegrityError, match="check"), engine.begin() as connection:
            connection.execute(
                text("INSERT INTO sources (source_id, channel_id, status, include_comments, created_at, updated_at)"
                     " VALUES ('s1', 'c1', 'deleted', 0, :now, :now)"),
                {"now": now},
            )
        bundle = text("INSERT INTO topic_bundles (topic_id, updated_at, items_json) VALUES ('topic:1', :now, '[]')")
        with engine.begin() as connection:
            connection.execute(bundle, {"now": now})
        with pytest.raises(IntegrityError, match="topic_bundles_current_unique_idx"), engine.begin() as connection:
            connection.execute(bundle, {"now": now})
        with engine.begin() as connection:  # snapshots of the same topic are a different kind of row
            connection.execute(
                text("INSERT INTO topic_bundles (topic_id, updated_at, time_from, time_to, items_json)"
                     " VALUES ('topic:1', :now, '2025-01-01', '2025-02-01', '[]')"),
                {"now": now},
            )
    finally:
        engine.dispose()


def test_a_database_that_does_not_store_utf8_is_refused(monkeypatch, postgres_databases):
    url = postgres_databases(encoding="SQL_ASCII")
    monkeypatch.setenv("RAW_STORAGE_DB_URL", url.render_as_string(hide_password=False))
    result = run_cli("db", "upgrade", "--only", "raw")
    assert result.exit_code == 3, result.output
    assert "the database's encoding is SQL_ASCII, not UTF8: create it with ENCODING 'UTF8'" in result.output


def test_a_url_that_asks_for_another_client_encoding_is_refused(monkeypatch, postgres_url):
    monkeypatch.setenv("RAW_STORAGE_DB_URL", postgres_url.update_query_dict({"client_encoding": "LATIN1"})
                       .render_as_string(hide_password=False))
    result = run_cli("db", "upgrade", "--only", "raw")
    assert result.exit_code == 3, result.output
    assert "the connection's client_encoding is LATIN1, not UTF8: remove it from the URL" in result.output
    assert postgres_tables(postgres_url) == set()


def test_two_concurrent_upgrades_of_one_postgres_database(postgres_url):
    rendered = postgres_url.render_as_string(hide_password=False)
    env = {variable: rendered for variable in URL_VARIABLES}
    processes = [tg_parser_process("db", "upgrade", env=env) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert [code for code, _o, _e in results] == [0, 0], results
    assert sum(out.count("applied ") for _c, out, _e in results) == 3
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        for db in DATABASES:
            versions = connection.exec_driver_sql(f"SELECT version_num FROM {db.version_table}").scalars().all()
            assert versions == [f"{db.name}_0001"]
    engine.dispose()


def test_a_password_with_special_characters_works_and_is_masked(monkeypatch, postgres_url):
    password = "p@ss:w/rd%?&#"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql("DROP ROLE IF EXISTS tg_parser_special")
        escaped = password.replace("%", "%%")  # the driver's own placeholder character
        connection.exec_driver_sql(f"CREATE ROLE tg_parser_special LOGIN PASSWORD '{escaped}'")
        connection.exec_driver_sql('GRANT ALL ON SCHEMA public TO tg_parser_special')
    try:
        url = postgres_url.set(username="tg_parser_special", password=password).render_as_string(hide_password=False)
        quoted = url.split("tg_parser_special:", 1)[1].split("@127.0.0.1", 1)[0]
        assert quoted != password and "%40" in quoted  # URL-encoded, as a user would write it
        for variable in URL_VARIABLES:
            monkeypatch.setenv(variable, url)
        result = run_cli("init")
        assert result.exit_code == 0, result.output
        current = run_cli("db", "current")
        for output in (result.output, current.output):
            assert "***" in output and password not in output and quoted not in output
        plain = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", "migrations_raw/alembic.ini", "-x", f"url={url}", "current"],
            cwd=REPO, capture_output=True, text=True, check=False,
        )
        assert plain.returncode == 0, plain.stderr
        assert "raw_0001 (head)" in plain.stdout
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql("DROP OWNED BY tg_parser_special")
            connection.exec_driver_sql("DROP ROLE tg_parser_special")
        admin.dispose()


def test_autogenerate_on_postgres_proposes_nothing_for_an_up_to_date_database(postgres_url, projects):
    from tests.conftest import tg_parser_run

    rendered = postgres_url.render_as_string(hide_password=False)
    env = {variable: rendered for variable in URL_VARIABLES}
    assert tg_parser_run("init", projects=projects, env=env).returncode == 0
    result = tg_parser_run("db", "revision", "--only", "processing", "-m", "probe", "--autogenerate",
                           projects=projects, env=env)
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout
    assert not list((projects / "migrations_processing" / "versions").glob("processing_0002_*.py"))


ADD_COLUMN = '''
def upgrade():
    op.add_column("{table}", sa.Column("note", sa.Text()))


def downgrade():
    op.drop_column("{table}", "note")
'''

FAILS = '''
def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO no_such_table VALUES (1)")


def downgrade():
    pass
'''


@pytest.mark.parametrize("layout", ["one-database", "separate-databases"])
def test_a_failure_in_processing_leaves_ingestion_and_raw_at_their_old_revision(postgres_databases, projects, layout):
    urls = [postgres_databases()] * 3 if layout == "one-database" else [postgres_databases() for _ in DATABASES]
    env = {f"{db.setting_stem}_DB_URL": url.render_as_string(hide_password=False) for db, url in zip(DATABASES, urls)}
    init = tg_parser_run("init", env=env)
    assert init.returncode == 0, init.stderr
    add_revision(projects, "ingestion", 2, ADD_COLUMN.format(table="sources"))
    add_revision(projects, "raw", 2, ADD_COLUMN.format(table="raw_messages"))
    add_revision(projects, "processing", 2, FAILS)

    result = tg_parser_run("db", "upgrade", projects=projects, env=env)

    assert result.returncode == 1, result.stderr
    assert "Every database was rolled back" in result.stderr
    for db, url in zip(DATABASES, urls):
        engine = create_engine(url)
        with engine.connect() as connection:
            assert connection.execute(text(f"SELECT version_num FROM {db.version_table}")).scalars().all() == [
                f"{db.name}_0001"
            ]
            columns = {c["name"] for t in ("sources", "raw_messages") if inspect(connection).has_table(t)
                       for c in inspect(connection).get_columns(t)}
            assert "note" not in columns and not inspect(connection).has_table("half_done")
        engine.dispose()


ADD_NOTE = '''
def upgrade():
    op.add_column("raw_messages", sa.Column("note", sa.Text()))


def downgrade():
    op.drop_column("raw_messages", "note")
'''


def _reader_holding_raw_messages(url: str):
    """An application transaction that has read raw_messages and stays open: it holds ACCESS SHARE,
    so an ALTER TABLE waits for it, and any query behind that ALTER would wait too."""
    script = ("import sys, psycopg\nc = psycopg.connect(sys.argv[1])\n"
              "c.execute('SELECT count(*) FROM raw_messages').fetchone()\nprint('reading', flush=True)\nsys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", script, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "reading"
    return holder


def _query_waits(url: str, seconds: float) -> list[float]:
    """How long each of a stream of application queries on raw_messages took, for `seconds`."""
    import time

    import psycopg

    waits = []
    with psycopg.connect(url, autocommit=True) as connection:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            connection.execute("SELECT count(*) FROM raw_messages").fetchone()
            waits.append(time.monotonic() - started)
            time.sleep(0.02)
    return waits


def _psycopg_url(url) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.parametrize("reader_ends", [True, False], ids=["reader-ends", "reader-outlasts-the-timeout"])
def test_a_migration_never_makes_application_queries_queue_behind_it(postgres_url, projects, reader_ends):

    rendered = postgres_url.render_as_string(hide_password=False)
    env = {variable: rendered for variable in URL_VARIABLES}
    assert tg_parser_run("db", "upgrade", env=env).returncode == 0
    add_revision(projects, "raw", 2, ADD_NOTE)
    holder = _reader_holding_raw_messages(_psycopg_url(postgres_url))
    try:
        timeout = 15 if reader_ends else 3
        process = tg_parser_process("db", "upgrade", "--only", "raw", projects=projects,
                                    env={**env, "TG_PARSER_LOCK_TIMEOUT": str(timeout)})
        waits = _query_waits(_psycopg_url(postgres_url), 2.0 if reader_ends else timeout + 1)
        if reader_ends:
            assert process.poll() is None, "the migration cannot have finished while the reader holds its lock"
        else:  # held until the migration gives up by itself, however late a loaded machine started it
            process.wait(timeout=60)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    stdout, stderr = process.communicate(timeout=60)
    assert max(waits) < 0.2 + 0.3, f"an application query waited {max(waits):.2f} s behind the migration"
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        version = connection.exec_driver_sql("SELECT version_num FROM alembic_version_raw").scalar()
    engine.dispose()
    if reader_ends:
        assert process.returncode == 0, stdout + stderr
        assert version == "raw_0002"
    else:
        assert process.returncode == 1, stdout + stderr
        assert "TG_PARSER_LOCK_TIMEOUT" in stderr
        assert version == "raw_0001"


ONLINE_INDEX = '''
def upgrade():
    from tg_parser.migrate import online

    online.create_index("ix_raw_language", "raw_messages", ["language"])


def downgrade():
    op.drop_index("ix_raw_language", table_name="raw_messages")
'''


def _index_valid(url, name: str):
    engine = create_engine(url)
    with engine.connect() as connection:
        valid = connection.execute(text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :n"),
            {"n": name}).scalar()
    engine.dispose()
    return valid


def test_an_online_index_is_built_concurrently_before_the_run_replacing_an_invalid_leftover(postgres_url, projects, tmp_path):
    import psycopg

    rendered = postgres_url.render_as_string(hide_password=False)
    env = {variable: rendered for variable in URL_VARIABLES}
    assert tg_parser_run("db", "upgrade", env=env).returncode == 0
    with psycopg.connect(_psycopg_url(postgres_url), autocommit=True) as connection:
        for ref in ("a", "b"):
            connection.execute("INSERT INTO raw_messages (source_ref, id, message_type, channel_id, date, text,"
                               " inserted_at, language) VALUES (%s, '1', 'post', 'c', 'd', 't', 'i', 'en')", (ref,))
        with pytest.raises(psycopg.errors.UniqueViolation):  # a failed concurrent build leaves an invalid index
            connection.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_raw_language ON raw_messages (language)")
    assert _index_valid(postgres_url, "ix_raw_language") is False
    add_revision(projects, "raw", 2, ONLINE_INDEX)
    log = tmp_path / "events.log"
    result = tg_parser_run("db", "upgrade", "--only", "raw", projects=projects,
                           env={**env, "LOG_FORMAT": "json", "LOG_FILE": str(log)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert _index_valid(postgres_url, "ix_raw_language") is True
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events.index("index_built") < events.index("lock_acquired") < events.index("database_committed")


def test_an_online_index_of_a_run_that_rolls_back_is_dropped(postgres_url, projects):
    rendered = postgres_url.render_as_string(hide_password=False)
    env = {variable: rendered for variable in URL_VARIABLES}
    assert tg_parser_run("db", "upgrade", env=env).returncode == 0
    add_revision(projects, "raw", 2, ONLINE_INDEX)
    add_revision(projects, "processing", 2, "def upgrade():\n    raise RuntimeError('processing fails')\n")
    result = tg_parser_run("db", "upgrade", projects=projects, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert _index_valid(postgres_url, "ix_raw_language") is None
