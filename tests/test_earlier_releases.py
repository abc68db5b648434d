"""Databases as earlier releases left them, built here from the 3.0.0 fixtures with plain SQL.

- stamped by TG_parser 3.1's own Alembic (its revision ids in our version tables);
- a pre-1.0 `topic_bundles` with `UNIQUE(topic_id, time_from, time_to)` in its CREATE TABLE, with
  and without the 3.0.0 indexes a later `init --force` added;
- extra triggers, views and CHECKs, a missing foreign key, another type spelling.
Each is adopted, repaired with `--repair`, or refused naming every difference, and a refusal
changes no byte.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import (
    content_checksums,
    file_digest,
    integrity,
    run_cli,
    tg_parser_process,
    tg_parser_run,
    version_rows,
)
from tg_parser.storage.databases import DATABASES, get_database

RELEASE_3_1 = {"ingestion": "89f91e768b9b", "raw": "5c658f04eff0", "processing": "f40d85317f03"}
PRE_1_0_UNIQUE = "UNIQUE(topic_id, time_from, time_to)"


def stamp_3_1(path: Path, name: str) -> None:
    """The version table as TG_parser 3.1's `alembic stamp head` left it."""
    with sqlite3.connect(path) as connection:
        connection.execute(
            f"CREATE TABLE alembic_version_{name} (version_num VARCHAR(32) NOT NULL,"
            f" CONSTRAINT alembic_version_{name}_pkc PRIMARY KEY (version_num))"
        )
        connection.execute(f"INSERT INTO alembic_version_{name} VALUES (?)", (RELEASE_3_1[name],))


def rebuild_table(path: Path, table: str, edit=lambda sql: sql, indexes: bool = True) -> None:
    """Make `table` again from its own CREATE TABLE, edited, keeping every row, rowid and AUTOINCREMENT counter."""
    sql = table_sql(path, table)
    with sqlite3.connect(path) as connection:
        index_sql = [r[0] for r in connection.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,))]
        counter = []
        if "AUTOINCREMENT" in sql:
            counter = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchall()
        columns = ", ".join(row[1] for row in connection.execute(f"PRAGMA table_info({table})"))
        connection.execute(f"CREATE TEMP TABLE kept AS SELECT rowid AS kept_rowid, * FROM {table}")
        connection.execute(f"DROP TABLE {table}")
        edited = edit(sql)
        assert edited != sql or not indexes, "the edit changed nothing"
        connection.execute(edited)
        connection.execute(f"INSERT INTO {table} (rowid, {columns}) SELECT kept_rowid, {columns} FROM kept")
        for statement in index_sql if indexes else ():
            connection.execute(statement)
        if counter:
            connection.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (counter[0][0], table))
        connection.execute("DROP TABLE kept")


def pre_1_0_topic_bundles(path: Path, with_3_0_0_indexes: bool) -> None:
    with_unique = lambda sql: sql.replace("metadata_json TEXT\n)", f"metadata_json TEXT,\n  {PRE_1_0_UNIQUE}\n)")
    rebuild_table(path, "topic_bundles", with_unique, indexes=with_3_0_0_indexes)


def digests(data_dir: Path) -> dict[str, str | None]:
    return {db.name: file_digest(data_dir / db.default_file) for db in DATABASES}


def rows(data_dir: Path) -> dict[str, dict[str, str]]:
    """Every table's content checksum, the version tables left out."""
    return {
        db.name: {t: s for t, s in content_checksums(data_dir / db.default_file).items() if t != db.version_table}
        for db in DATABASES
    }


def table_sql(path: Path, table: str) -> str:
    with sqlite3.connect(path) as connection:
        query = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?"
        return connection.execute(query, (table,)).fetchone()[0]


def assert_refused_unchanged(result, data_dir: Path, before: dict, *messages: str) -> None:
    assert result.exit_code == 3, result.output
    for message in messages:
        assert message in result.output, (message, result.output)
    assert "Nothing was changed." in result.output
    assert digests(data_dir) == before
    assert not (data_dir / "backups").exists()


# --- TG_parser 3.1's own revisions -------------------------------------------------------------


def test_3_1_stamped_databases_are_adopted_with_every_row_unchanged(legacy_copy):
    for db in DATABASES:
        stamp_3_1(legacy_copy / db.default_file, db.name)
    before = rows(legacy_copy)

    current = run_cli("db", "current")
    assert current.exit_code == 0, current.output
    for db in DATABASES:
        assert f"{RELEASE_3_1[db.name]} (TG_parser 3.1 revision, adopted by the next upgrade)" in current.output
    assert "behind head" not in current.output
    states = json.loads(run_cli("db", "current", "--json").output)
    assert [s["state"] for s in states["databases"]] == ["TG_parser 3.1 revision, adopted by the next upgrade"] * 3
    check = run_cli("db", "check")
    assert check.exit_code == 1
    assert check.output.count("TG_parser 3.1 revision, adopted by the next upgrade") == 3
    assert "behind head" not in check.output and "run tg-parser db upgrade" not in check.output

    result = run_cli("init")
    assert result.exit_code == 0, result.output
    assert "adopted a TG_parser 3.1 database (its revision f40d85317f03)" in result.output
    assert "adopted a TG_parser 3.1 database (its revision 89f91e768b9b)" in result.output
    assert rows(legacy_copy) == before
    for db in DATABASES:
        assert version_rows(legacy_copy / db.default_file, db.name) == [f"{db.name}_0001"]
    assert len(list((legacy_copy / "backups").glob("*.sqlite"))) == 3
    assert run_cli("db", "check").exit_code == 0


def test_a_3_1_database_whose_schema_differs_is_refused_naming_3_1_and_each_difference(legacy_copy):
    processing = legacy_copy / "processing_storage.sqlite"
    for db in DATABASES:
        stamp_3_1(legacy_copy / db.default_file, db.name)
    rebuild_table(processing, "agent_states", lambda sql: sql.replace("is_active INTEGER", "is_active BOOLEAN"))
    with sqlite3.connect(processing) as connection:
        connection.execute("DROP INDEX topic_bundles_current_unique_idx")
        connection.execute("CREATE INDEX topic_bundles_current_unique_idx ON topic_bundles(topic_id)")
    before = digests(legacy_copy)

    for command in (("init",), ("db", "upgrade", "--repair")):
        result = run_cli(*command)
        assert_refused_unchanged(
            result, legacy_copy, before,
            "processing: schema differs from release 3.0.0 (TG_parser 3.1 revision f40d85317f03):"
            " table agent_states: column is_active: type expected 'INTEGER', found 'BOOLEAN'",
            "processing: schema differs from release 3.0.0 (TG_parser 3.1 revision f40d85317f03):"
            " table topic_bundles: index topic_bundles_current_unique_idx: expected UNIQUE (topic_id)"
            " WHERE time_from IS NULL AND time_to IS NULL, found (topic_id)",
            "processing: it came from TG_parser 3.1's Alembic history (revision f40d85317f03)",
            "--repair cannot fix this: table agent_states: column is_active: type expected 'INTEGER', found 'BOOLEAN'"
            " (BOOLEAN has SQLite type affinity NUMERIC, INTEGER has INTEGER: stored values could change)",
        )
        assert result.output.count("refused: processing: schema differs") == 2
        assert "refused: ingestion" not in result.output and "refused: raw" not in result.output

    check = run_cli("db", "check", "--only", "processing")
    assert check.exit_code == 1
    assert "f40d85317f03: the next upgrade refuses it:" in check.output
    assert "table agent_states: column is_active: type expected 'INTEGER', found 'BOOLEAN'" in check.output
    assert "adopted by the next upgrade" not in check.output


def test_a_3_1_database_cannot_be_downgraded_before_it_is_adopted(legacy_copy):
    stamp_3_1(legacy_copy / "raw_storage.sqlite", "raw")
    before = digests(legacy_copy)
    result = run_cli("db", "downgrade", "base", "--only", "raw", "--yes")
    assert_refused_unchanged(result, legacy_copy, before, "raw: a TG_parser 3.1 database (revision 5c658f04eff0): upgrade it first")


# --- a pre-1.0 topic_bundles and --repair ------------------------------------------------------


@pytest.mark.parametrize("with_3_0_0_indexes", [True, False], ids=["after-1.2-init-force", "pre-1.0-only"])
def test_pre_1_0_unique_is_refused_then_repaired(legacy_copy, with_3_0_0_indexes):
    processing = legacy_copy / "processing_storage.sqlite"
    pre_1_0_topic_bundles(processing, with_3_0_0_indexes)
    assert PRE_1_0_UNIQUE in table_sql(processing, "topic_bundles")
    before, before_rows = digests(legacy_copy), rows(legacy_copy)

    refused = run_cli("init")
    expected = ["table topic_bundles: UNIQUE (topic_id, time_from, time_to): not expected",
                "--repair would fix this: it would rebuild table topic_bundles into the baseline's form"
                " (drop UNIQUE (topic_id, time_from, time_to)"]
    if not with_3_0_0_indexes:
        expected += ["table topic_bundles: index topic_bundles_current_unique_idx: missing",
                     "add index topic_bundles_current_unique_idx; add index topic_bundles_snapshot_unique_idx"]
    assert_refused_unchanged(refused, legacy_copy, before, *expected)
    check = run_cli("db", "check", "--only", "processing")
    assert check.exit_code == 1 and expected[0] in check.output

    repaired = run_cli("db", "upgrade", "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "rebuilt topic_bundles into the baseline's form (8 rows; count and checksum verified)" in repaired.output
    assert "UNIQUE" not in table_sql(processing, "topic_bundles")
    assert rows(legacy_copy) == before_rows
    assert version_rows(processing, "processing") == ["processing_0001"]
    assert integrity(processing) == "ok"
    check = run_cli("db", "check")
    assert check.exit_code == 0, check.output


@pytest.mark.parametrize("duplicates", [2, 12])
def test_repair_refuses_and_lists_rows_that_would_break_the_partial_unique_index(legacy_copy, duplicates):
    processing = legacy_copy / "processing_storage.sqlite"
    pre_1_0_topic_bundles(processing, with_3_0_0_indexes=False)
    with sqlite3.connect(processing) as connection:  # NULLs are distinct, so the pre-1.0 UNIQUE let these in
        connection.executemany(
            "INSERT INTO topic_bundles (rowid, topic_id, updated_at, items_json) VALUES (?, 'topic:twice', ?, '[]')",
            [(100 + n, f"2026-01-0{n % 9 + 1}") for n in range(duplicates)],
        )
    before = digests(legacy_copy)
    result = run_cli("db", "upgrade", "--repair")
    shown = min(duplicates, 10)
    listed = ", ".join(f"rowid {100 + n} (topic_id='topic:twice')" for n in range(shown))
    more = f", and {duplicates - shown} more" if duplicates > shown else ""
    assert_refused_unchanged(
        result, legacy_copy, before,
        f"--repair cannot rebuild topic_bundles: {duplicates} row(s) break unique index topic_bundles_current_unique_idx:"
        f" {listed}{more}\n",
    )


def _extra_trigger(path):
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TRIGGER raw_messages_touch AFTER INSERT ON raw_messages BEGIN SELECT 1; END")


def _extra_view(path):
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE VIEW recent_posts AS SELECT source_ref FROM raw_messages WHERE message_type = 'post'")


def _extra_check(path):
    rebuild_table(
        path, "raw_conflicts",
        lambda sql: sql.replace("reason TEXT NOT NULL", "reason TEXT NOT NULL CHECK (length(reason) > 0)"),
    )


def _missing_foreign_key(path):
    """3.0.0 and the baseline spell the key differently; both go."""
    foreign_key = re.compile(r",\s*FOREIGN KEY\s*\(agent_name\) REFERENCES agent_states\s*\(name\)")
    rebuild_table(path, "task_history", lambda sql: foreign_key.sub("", sql))


class Spoil(NamedTuple):
    database: str
    spoil: Callable[[Path], None]
    message: str
    repairable: bool


SPOILS = {
    "extra-trigger": Spoil("raw", _extra_trigger, "table raw_messages: trigger raw_messages_touch: not expected", False),
    "extra-view": Spoil("raw", _extra_view, "view recent_posts: not expected", False),
    "extra-check": Spoil("raw", _extra_check, "table raw_conflicts: CHECK (length(reason) > 0): not expected", True),
    "missing-foreign-key": Spoil(
        "processing", _missing_foreign_key,
        "table task_history: foreign key (agent_name) REFERENCES agent_states (name): missing", True,
    ),
}


@pytest.mark.parametrize("spoil", SPOILS, ids=list(SPOILS))
def test_each_kind_of_object_is_named_by_the_refusal_and_by_db_check(legacy_copy, tmp_path, monkeypatch, spoil):
    name, on, message, repairable = SPOILS[spoil]
    path = legacy_copy / get_database(name).default_file
    on(path)
    before = digests(legacy_copy)
    result = run_cli("init")
    assert_refused_unchanged(result, legacy_copy, before, f"{name}: schema differs from release 3.0.0", message)
    assert ("--repair would fix this" in result.output) is repairable
    assert ("--repair cannot fix this" in result.output) is not repairable
    legacy_check = run_cli("db", "check", "--only", name)
    assert legacy_check.exit_code == 1 and message in legacy_check.output

    fresh = tmp_path / "fresh"
    monkeypatch.setenv("TG_PARSER_DATA_DIR", str(fresh))
    assert run_cli("init").exit_code == 0
    on(fresh / path.name)
    check = run_cli("db", "check", "--only", name)
    assert check.exit_code == 1
    assert f"{message}" in check.output


@pytest.mark.parametrize("spoil", ["extra-check", "missing-foreign-key"])
def test_repair_removes_an_extra_check_and_restores_a_missing_foreign_key(legacy_copy, spoil):
    name, on, _message, _repairable = SPOILS[spoil]
    on(legacy_copy / get_database(name).default_file)
    before = rows(legacy_copy)
    result = run_cli("init", "--repair")
    assert result.exit_code == 0, result.output
    assert rows(legacy_copy) == before
    assert run_cli("db", "check").exit_code == 0


def test_repair_refuses_a_foreign_key_that_rows_break(legacy_copy):
    processing = legacy_copy / "processing_storage.sqlite"
    _missing_foreign_key(processing)
    with sqlite3.connect(processing) as connection:
        connection.execute("UPDATE task_history SET agent_name = 'retired' WHERE id = 'task_3'")
    before = digests(legacy_copy)
    result = run_cli("init", "--repair")
    assert_refused_unchanged(
        result, legacy_copy, before,
        "--repair cannot rebuild task_history: 1 row(s) break foreign key (agent_name) REFERENCES agent_states (name):"
        " rowid 4 (agent_name='retired')",
    )


def test_repair_changes_a_type_spelling_and_keeps_the_autoincrement_counter(legacy_copy):
    raw = legacy_copy / "raw_storage.sqlite"
    rebuild_table(raw, "raw_conflicts", lambda sql: sql.replace("new_text TEXT", "new_text VARCHAR(4000)"))
    with sqlite3.connect(raw) as connection:
        connection.execute("DELETE FROM raw_conflicts WHERE id = 5")  # the counter stays at 5: id 5 is never reused
        connection.execute("UPDATE sqlite_sequence SET seq = 40 WHERE name = 'raw_conflicts'")
    before = rows(legacy_copy)
    refused = run_cli("db", "upgrade", "--only", "raw")
    assert refused.exit_code == 3
    assert "table raw_conflicts: column new_text: type expected 'TEXT', found 'VARCHAR(4000)'" in refused.output
    result = run_cli("db", "upgrade", "--only", "raw", "--repair")
    assert result.exit_code == 0, result.output
    assert rows(legacy_copy) == before  # sqlite_sequence included: the counter is still 40
    assert "VARCHAR" not in table_sql(raw, "raw_conflicts")
    with sqlite3.connect(raw) as connection:
        connection.execute(
            "INSERT INTO raw_conflicts (source_ref, observed_at, reason) VALUES ('tg:x:post:1', '2026-01-01', 'r')"
        )
        assert connection.execute("SELECT max(id) FROM raw_conflicts").fetchone() == (41,)


def test_sql_with_repair_prints_the_rebuild_and_touches_nothing(legacy_copy):
    pre_1_0_topic_bundles(legacy_copy / "processing_storage.sqlite", with_3_0_0_indexes=True)
    before = digests(legacy_copy)
    result = run_cli("db", "upgrade", "--sql", "--repair", "--only", "processing")
    assert result.exit_code == 0, result.output
    assert "-- processing: --repair: rebuild table topic_bundles" in result.output
    assert 'DROP TABLE main."topic_bundles";' in result.output
    assert "CREATE UNIQUE INDEX topic_bundles_current_unique_idx" in result.output
    assert digests(legacy_copy) == before


def schema_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_sigkill_in_the_middle_of_a_repair_leaves_the_database_as_it_was(legacy_copy):
    """Two tables to rebuild: the kill comes while the second is rebuilt, after the first is done."""
    processing = legacy_copy / "processing_storage.sqlite"
    pre_1_0_topic_bundles(processing, with_3_0_0_indexes=True)
    with sqlite3.connect(processing) as connection:
        connection.execute("CREATE INDEX processed_documents_language_idx ON processed_documents(language)")
        connection.execute(  # enough rows for the second rebuild to take a while
            "INSERT INTO topic_bundles (topic_id, updated_at, items_json)"
            " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)"
            " SELECT 'bulk:' || i, '2026-01-01', hex(randomblob(400)) FROM n"
        )
    before, schema_before = content_checksums(processing), schema_rows(processing)
    journal = processing.with_name(processing.name + "-journal")
    halfway = processing.stat().st_size * 0.4  # topic_bundles is most of the file: its rebuild has begun

    process = tg_parser_process("db", "upgrade", "--repair", "--no-backup", "--only", "processing")
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.stat().st_size > halfway):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the repair never started"
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    stdout, _ = process.communicate()
    assert "rebuilt" not in stdout, "the kill came after the repair"

    assert integrity(processing) == "ok"
    assert content_checksums(processing) == before
    assert schema_rows(processing) == schema_before
    again = tg_parser_run("db", "upgrade", "--repair", "--only", "processing")
    assert again.returncode == 0, again.stderr
    assert "rebuilt processed_documents into the baseline's form (" in again.stdout
    assert "rebuilt topic_bundles into the baseline's form (60008 rows" in again.stdout


def test_a_rebuild_that_would_change_a_stored_value_is_caught_before_commit(legacy_copy):
    """The count-and-checksum comparison, against a rebuild planning would never make (another affinity)."""
    from sqlalchemy.engine import URL

    from tg_parser.migrate import adopt, repair
    from tg_parser.storage.databases import get_database
    from tg_parser.storage.engine import make_engine

    raw = legacy_copy / "raw_storage.sqlite"
    with sqlite3.connect(raw) as connection:
        connection.execute("UPDATE raw_conflicts SET reason = '42' WHERE id = 1")
    before = content_checksums(raw)
    baseline = adopt.baseline_of(get_database("raw"))
    create = next(sql for kind, name, sql in baseline.ddl if kind == "table" and name == "raw_conflicts")
    columns = tuple(c.name for c in baseline.shape.tables["raw_conflicts"].columns)
    rebuild = repair.Rebuild(
        "raw_conflicts", (), create.replace("reason TEXT", "reason INTEGER"), (), columns,
        copy_rowid=False, autoincrement=True,
    )
    engine = make_engine(URL.create("sqlite", database=str(raw)), write_lock=True)
    with engine.connect() as connection:
        transaction = connection.begin()
        with pytest.raises(repair.RepairFailed, match="rebuilding raw_conflicts changed its rows"):
            repair.apply(repair.Repair((rebuild,)), connection)
        transaction.rollback()
    engine.dispose()
    assert content_checksums(raw) == before
