"""`db transfer` into a real PostgreSQL server: copied, verified by each database's own checksums, all or nothing."""

from __future__ import annotations

import signal
import sqlite3
import time
from contextlib import closing

import psycopg
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import (
    content_checksums,
    file_digest,
    grow_raw,
    live_writer,
    postgres_tables,
    run_cli,
    source_refs,
    tg_parser_process,
    tg_parser_run,
)
from tg_parser.storage.databases import DATABASES, get_database

URL_VARIABLES = [f"{db.setting_stem}_DB_URL" for db in DATABASES]


def upgrade_target(url, name: str) -> None:
    variable = f"{get_database(name).setting_stem}_DB_URL"
    result = tg_parser_run("db", "upgrade", "--only", name, env={variable: url.render_as_string(hide_password=False)})
    assert result.returncode == 0, result.stderr


def row_counts(url, names) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {name: connection.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar() for name in names}
    finally:
        engine.dispose()


def test_transfer_of_the_3_0_0_fixtures(monkeypatch, legacy_copy, postgres_databases):
    assert run_cli("db", "upgrade").exit_code == 0  # adoption first
    sources_before = {db.name: content_checksums(legacy_copy / db.default_file) for db in DATABASES}
    first = postgres_databases()
    target = first.render_as_string(hide_password=False)

    result = run_cli("db", "transfer", "--to", target)
    assert result.exit_code == 0, result.output
    assert "every count and checksum matches" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["ingestion"], ["raw"], ["processing"]) and "equal" in line]
    assert len(rows) == sum(len(db.metadata.tables) for db in DATABASES)
    assert all(row[2] == row[3] for row in rows)
    assert {db.name: content_checksums(legacy_copy / db.default_file) for db in DATABASES} == sources_before

    engine = create_engine(first)
    with engine.begin() as connection:
        copied = connection.exec_driver_sql("SELECT count(*), max(id) FROM raw_conflicts").one()
        assert copied[0] > 0
        new_id = connection.execute(
            text("INSERT INTO raw_conflicts (source_ref, observed_at, reason) VALUES ('x', 'now', 'test') RETURNING id")
        ).scalar()
        assert new_id > copied[1]
        new_attempt = connection.execute(
            text("INSERT INTO source_attempts (source_id, attempt_at, success) VALUES ('s', 'now', 1) RETURNING id")
        ).scalar()
        assert new_attempt > connection.exec_driver_sql("SELECT max(id) FROM source_attempts WHERE id < %s", (new_attempt,)).scalar()
    engine.dispose()

    again = run_cli("db", "transfer", "--to", target)
    assert again.exit_code == 3
    assert "already holds rows" in again.output and "Nothing was changed." in again.output

    for variable in URL_VARIABLES:  # the copy is the schema at head, indexes built after the rows included
        monkeypatch.setenv(variable, target)
    check = run_cli("db", "check")
    assert check.exit_code == 0, check.output

    second = postgres_databases()  # and PostgreSQL can be a source in its turn
    onward = run_cli("db", "transfer", "--to", second.render_as_string(hide_password=False))
    assert onward.exit_code == 0, onward.output
    names = [table for db in DATABASES for table in db.metadata.tables]
    assert row_counts(second, names) == row_counts(first, names)


def test_transfer_refuses_a_source_behind_head_and_a_non_postgres_target(legacy_copy, postgres_url):
    target = postgres_url.render_as_string(hide_password=False)
    behind = run_cli("db", "transfer", "--to", target, "--only", "raw")
    assert behind.exit_code == 3 and "run tg-parser db upgrade first" in behind.output
    wrong = run_cli("db", "transfer", "--to", "sqlite:////tmp/x.sqlite")
    assert wrong.exit_code == 2 and "must be a PostgreSQL URL" in wrong.output
    garbage = run_cli("db", "transfer", "--to", "::nonsense::")
    assert garbage.exit_code == 2 and "not a database URL (allowed: " in garbage.output
    mysql = run_cli("db", "transfer", "--to", "mysql://u@h/d")
    assert mysql.exit_code == 2 and "is a mysql database; allowed: " in mysql.output
    assert postgres_tables(postgres_url) == set()


def test_a_target_that_does_not_store_utf8_is_refused(legacy_copy, postgres_databases):
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    url = postgres_databases(encoding="SQL_ASCII")  # the checksums hash UTF-8, and 3.0.0's text is any script
    result = run_cli("db", "transfer", "--to", url.render_as_string(hide_password=False), "--only", "raw")
    assert result.exit_code == 3, result.output
    assert "encoding is SQL_ASCII, not UTF8: create it with ENCODING 'UTF8'" in result.output and "Nothing was changed." in result.output
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False)) as connection:
        assert connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_a_source_that_is_the_target_is_refused_at_once(legacy_copy, monkeypatch, postgres_url):
    target = postgres_url.render_as_string(hide_password=False)
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    assert run_cli("db", "transfer", "--only", "raw", "--to", target).exit_code == 0
    monkeypatch.setenv("RAW_STORAGE_DB_URL", target.replace("127.0.0.1", "localhost"))  # another spelling of it
    for extra in ((), ("--allow-existing-rows",)):
        started = time.monotonic()
        result = run_cli("db", "transfer", "--only", "raw", "--to", target, *extra)
        assert result.exit_code == 3, result.output
        assert "raw: the source is the target database" in result.output
        assert time.monotonic() - started < 10  # not a wait on its own lock until TG_PARSER_LOCK_TIMEOUT
    assert row_counts(postgres_url, ["raw_conflicts"]) == {"raw_conflicts": 5}


def test_a_source_whose_schema_differs_from_head_is_refused(legacy_copy):
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    with closing(sqlite3.connect(legacy_copy / "raw_storage.sqlite")) as connection, connection:
        connection.execute("ALTER TABLE raw_messages ADD COLUMN notes TEXT")
        connection.execute("UPDATE raw_messages SET notes = 'an operator wrote this'")
    result = run_cli("db", "transfer", "--only", "raw", "--to", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert result.exit_code == 3, result.output
    assert "notes" in result.output and "the transfer copies the schema at head only" in result.output


def test_a_utf16_source_is_refused_with_the_way_to_convert_it(data_dir, monkeypatch):
    data_dir.mkdir()
    raw = data_dir / "raw_storage.sqlite"
    with closing(sqlite3.connect(raw)) as connection:
        connection.execute("PRAGMA encoding = 'UTF-16le'")
        connection.execute("CREATE TABLE t (x)")
        connection.execute("DROP TABLE t")
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    result = run_cli("db", "transfer", "--only", "raw", "--to", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert result.exit_code == 3, result.output
    assert "raw: the source is encoded in UTF-16le, not UTF-8: convert it first (sqlite3 OLD .dump" in result.output


@pytest.mark.slow
def test_two_transfers_into_one_empty_target_copy_once(legacy_copy, postgres_url):
    """Both find the target empty before either holds its lock: the second looks again under it."""
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    grow_raw(legacy_copy / "raw_storage.sqlite", 100_000, 400)
    target = postgres_url.render_as_string(hide_password=False)
    processes = [tg_parser_process("db", "transfer", "--only", "raw", "--to", target) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert sorted(code for code, _out, _err in results) == [0, 3], results
    refused = next(err for code, _out, err in results if code == 3)
    assert "target table raw_conflicts already holds rows" in refused or "target table raw_messages already holds rows" in refused
    assert row_counts(postgres_url, ["raw_messages"]) == {"raw_messages": 60 + 100_000}


def test_ids_a_source_gave_to_deleted_rows_are_not_given_again(legacy_copy, postgres_url):
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    with closing(sqlite3.connect(legacy_copy / "raw_storage.sqlite")) as connection, connection:
        issued = connection.execute("SELECT max(id) FROM raw_conflicts").fetchone()[0]
        connection.execute("DELETE FROM raw_conflicts WHERE id = ?", (issued,))  # AUTOINCREMENT remembers it
    assert run_cli("db", "transfer", "--only", "raw", "--to", postgres_url.render_as_string(hide_password=False)).exit_code == 0
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        new_id = connection.execute(
            text("INSERT INTO raw_conflicts (source_ref, observed_at, reason) VALUES ('x', 'now', 'test') RETURNING id")
        ).scalar()
    engine.dispose()
    assert new_id == issued + 1


def test_transfer_into_a_database_with_rows_when_told_to(legacy_copy, postgres_url):
    assert run_cli("db", "upgrade", "--only", "ingestion").exit_code == 0
    upgrade_target(postgres_url, "ingestion")
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO sources (source_id, channel_id, status, include_comments, created_at, updated_at)"
            " VALUES ('already-here', 'c', 'active', 0, 'now', 'now')"
        )
    target = postgres_url.render_as_string(hide_password=False)
    refused = run_cli("db", "transfer", "--to", target, "--only", "ingestion")
    assert refused.exit_code == 3
    result = run_cli("db", "transfer", "--to", target, "--only", "ingestion", "--allow-existing-rows")
    assert result.exit_code == 0, result.output
    assert "every count and checksum matches" in result.stdout
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM sources").scalar() == 3 + 1
    engine.dispose()


RAW_REF = "tg:pg_news:post:102"
ONE_CHANGE = {  # a target that alters one value of one row as it stores it (plpgsql, on NEW)
    "one character of one message": ("raw", "raw_messages", f"""
        IF NEW.source_ref = '{RAW_REF}' THEN NEW.text := overlay(NEW.text PLACING 'X' FROM 1 FOR 1); END IF;"""),
    "NULL stored as empty text": ("raw", "raw_messages", f"""
        IF NEW.source_ref = '{RAW_REF}' THEN NEW.thread_id := ''; END IF;"""),
    "a character moved into the next column": ("raw", "raw_messages", f"""
        IF NEW.source_ref = '{RAW_REF}' THEN
            NEW.date := right(NEW.channel_id, 1) || NEW.date; NEW.channel_id := left(NEW.channel_id, -1);
        END IF;"""),
    "a float's 17th digit": ("processing", "agent_states", """
        IF NEW.name = 'processing' THEN NEW.avg_processing_time_ms := 0.3; END IF;"""),
}


@pytest.mark.parametrize("change", ONE_CHANGE, ids=list(ONE_CHANGE))
def test_one_value_changed_on_its_way_fails_the_transfer_and_rolls_it_back(legacy_copy, postgres_url, change):
    name, table, body = ONE_CHANGE[change]
    with closing(sqlite3.connect(legacy_copy / "processing_storage.sqlite")) as connection, connection:
        connection.execute("UPDATE agent_states SET avg_processing_time_ms = 0.1 + 0.2 WHERE name = 'processing'")
    assert run_cli("db", "upgrade", "--only", name).exit_code == 0
    upgrade_target(postgres_url, name)
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE FUNCTION change() RETURNS trigger AS $$ BEGIN {body} RETURN NEW; END $$"
                                   " LANGUAGE plpgsql")
        connection.exec_driver_sql(f"CREATE TRIGGER change BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION change()")
    engine.dispose()

    result = run_cli("db", "transfer", "--to", postgres_url.render_as_string(hide_password=False), "--only", name)

    assert result.exit_code == 1, result.output
    differs = [line.split()[1] for line in result.stdout.splitlines() if "DIFFERS" in line]
    assert differs == [table]
    assert f"MISMATCH in 1 table(s): {name}.{table}" in result.output
    assert set(row_counts(postgres_url, get_database(name).metadata.tables).values()) == {0}


MISFITS = {  # what SQLite lets a 3.0.0 database hold, and PostgreSQL's column cannot
    "text in an INTEGER column": ("raw_payload_original_size_bytes", "'12 KB'", f"source_ref='{RAW_REF}'", "text '12 KB'"),
    "a 64-bit integer": ("raw_payload_original_size_bytes", str(2**31), f"source_ref='{RAW_REF}'", f"the integer {2**31}"),
    "a blob in a TEXT column": ("text", "x'ff00'", f"source_ref='{RAW_REF}'", "a blob x'ff00'"),
    "a NUL character in text": ("text", "'a' || char(0) || 'b'", f"source_ref='{RAW_REF}'", "text with a NUL character 'a\\x00b'"),
    "bytes that are not UTF-8": ("text", "CAST(x'ff41' AS TEXT)", f"source_ref='{RAW_REF}'", "text that is not UTF-8, '\\\\xffA'"),
    "NULL in a TEXT PRIMARY KEY": ("source_ref", "NULL", "source_ref=None", "NULL"),
}


@pytest.mark.parametrize("misfit", MISFITS, ids=list(MISFITS))
def test_a_value_postgresql_cannot_hold_is_named_and_nothing_is_copied(legacy_copy, postgres_url, misfit):
    column, value, key, said = MISFITS[misfit]
    raw = legacy_copy / "raw_storage.sqlite"
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    with closing(sqlite3.connect(raw)) as connection, connection:
        connection.execute(f"UPDATE raw_messages SET {column} = {value} WHERE source_ref = ?", (RAW_REF,))
    before = file_digest(raw)

    result = run_cli("db", "transfer", "--to", postgres_url.render_as_string(hide_password=False), "--only", "raw")

    assert result.exit_code == 1, result.output
    assert f"error: raw.raw_messages: the row with {key} holds {said} in {column}, which PostgreSQL's" in result.output
    assert "rolled back" in result.output
    assert set(row_counts(postgres_url, ["raw_messages", "raw_conflicts"]).values()) == {0}
    assert file_digest(raw) == before


def test_transfer_while_the_collector_writes_copies_one_snapshot(legacy_copy, postgres_url, tmp_path):
    assert run_cli("db", "upgrade").exit_code == 0
    raw = legacy_copy / "raw_storage.sqlite"
    grow_raw(raw, 40_000, 400)
    target = postgres_url.render_as_string(hide_password=False)

    with live_writer(raw, tmp_path, pairs=True) as writer:
        result = tg_parser_run("db", "transfer", "--to", target)
        writer.wait_for(len(writer.lines()) + 20)
        committed = writer.stop()

    assert result.returncode == 0, result.stderr
    assert "every count and checksum matches" in result.stdout
    printed = next(line.split() for line in result.stdout.splitlines() if line.split()[:2] == ["raw", "raw_messages"])
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        copied = set(connection.exec_driver_sql("SELECT source_ref FROM raw_messages").scalars())
        conflicts = set(connection.exec_driver_sql("SELECT source_ref FROM raw_conflicts WHERE reason = 'writer'").scalars())
    engine.dispose()
    assert conflicts == {ref for ref in copied if ref.startswith("writer:")}, "the two tables come from two moments"
    assert int(printed[2].replace(",", "")) == int(printed[3].replace(",", "")) == len(copied)
    assert copied <= source_refs(raw)
    numbers = sorted(int(ref.rsplit(":", 1)[1]) for ref in copied if ref.startswith("writer:"))
    assert numbers == list(range(1, len(numbers) + 1)), "the copy is not one snapshot of the writer's sequence"
    assert len(committed) > len(numbers), "the writer committed nothing after the snapshot: no overlap"


def test_a_signal_during_the_commit_lets_it_finish_and_says_so(legacy_copy, postgres_url):
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    upgrade_target(postgres_url, "raw")
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:  # a commit that takes a while: a deferred trigger on each conflict row
        connection.exec_driver_sql("CREATE FUNCTION slow() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(0.2); RETURN NULL; END $$"
                                   " LANGUAGE plpgsql")
        connection.exec_driver_sql("CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON raw_conflicts DEFERRABLE INITIALLY DEFERRED"
                                   " FOR EACH ROW EXECUTE FUNCTION slow()")
        connection.exec_driver_sql(  # a table with rows keeps its indexes: pending trigger events forbid rebuilding them
            "INSERT INTO raw_conflicts (id, source_ref, observed_at, reason) VALUES (1000, 'x', 'now', 'already here')"
        )
        process = tg_parser_process("db", "transfer", "--only", "raw", "--allow-existing-rows",
                                    "--to", postgres_url.render_as_string(hide_password=False))
        try:
            deadline = time.monotonic() + 60
            while not connection.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'COMMIT' AND state = 'active'"
            ).scalar():
                assert time.monotonic() < deadline and process.poll() is None, "never saw the COMMIT"
                time.sleep(0.01)
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    engine.dispose()
    assert process.returncode == 0, stderr
    assert "every count and checksum matches" in stdout and "rolled back" not in stderr
    assert row_counts(postgres_url, ["raw_messages", "raw_conflicts"]) == {"raw_messages": 60, "raw_conflicts": 1 + 5}


PHASES = {  # what the target's server is running when the signal comes
    "copy": "query LIKE 'COPY raw_messages%'",
    "verification": "query LIKE 'SELECT count(*), sum(%raw_messages' AND now() - query_start > interval '50 ms'",
}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_signal_during_a_transfer_rolls_the_target_back(legacy_copy, postgres_url, phase, signum):
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    grow_raw(legacy_copy / "raw_storage.sqlite", 300_000, 400)
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")  # pg_stat_activity afresh each time
    process = tg_parser_process("db", "transfer", "--only", "raw", "--to", postgres_url.render_as_string(hide_password=False))
    try:
        with engine.connect() as connection:
            deadline = time.monotonic() + 60
            while not connection.execute(text(
                f"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND {PHASES[phase]}"
            )).scalar():
                assert time.monotonic() < deadline and process.poll() is None, f"never saw the {phase}"
                time.sleep(0.01)
        process.send_signal(signum)
        _stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 128 + signum, stderr
    assert f"interrupted by {signum.name}: every change was rolled back" in stderr
    assert set(row_counts(postgres_url, ["raw_messages", "raw_conflicts"]).values()) == {0}
    others = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
              " AND backend_type = 'client backend'")  # autovacuum may well be cleaning up after the rollback
    with engine.connect() as connection:  # the server is not left working for a run that is gone
        deadline = time.monotonic() + 10
        while connection.exec_driver_sql(others).scalar() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert connection.exec_driver_sql(others).scalar() == 0
    engine.dispose()
