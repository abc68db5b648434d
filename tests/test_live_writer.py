"""A collector writing the whole time loses nothing: through an upgrade, a failed upgrade, a restore, a transfer."""

from __future__ import annotations

import re
import sqlite3
import time

from tests.conftest import (
    add_revision,
    checksums_without_writer,
    live_writer,
    run_cli,
    source_refs,
    table_names,
    tg_parser_run,
    version_rows,
)
from tg_parser.storage.databases import DATABASES

ADD_COLUMN = '''
def upgrade():
    with op.batch_alter_table("{table}") as batch:
        batch.add_column(sa.Column("note", sa.Text()))
    time.sleep(float(os.environ.get("PAUSE_S", "0")))


def downgrade():
    with op.batch_alter_table("{table}") as batch:
        batch.drop_column("note")
'''

REBUILD_RAW = '''
def upgrade():
    with op.batch_alter_table("raw_messages", recreate="always") as batch:
        batch.add_column(sa.Column("text_length", sa.Integer))
    op.execute("UPDATE raw_messages SET text_length = length(text)")
    time.sleep(float(os.environ.get("PAUSE_S", "0")))


def downgrade():
    with op.batch_alter_table("raw_messages", recreate="always") as batch:
        batch.drop_column("text_length")
'''

PAUSE_THEN_FAIL = '''
def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    time.sleep(float(os.environ.get("PAUSE_S", "0")))
    op.execute("INSERT INTO no_such_table VALUES (1)")


def downgrade():
    pass
'''


def all_checksums(data_dir):
    return {db.name: checksums_without_writer(data_dir / db.default_file) for db in DATABASES}


def test_a_writer_loses_nothing_through_an_upgrade_that_succeeds(legacy_copy, projects, tmp_path):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "ingestion", 2, ADD_COLUMN.format(table="sources"))
    add_revision(projects, "raw", 2, REBUILD_RAW)
    add_revision(projects, "processing", 2, ADD_COLUMN.format(table="processed_documents"))
    raw = legacy_copy / "raw_storage.sqlite"

    with live_writer(raw, tmp_path) as writer:
        started = time.monotonic()
        result = tg_parser_run("db", "upgrade", "--yes", projects=projects, env={"PAUSE_S": "1"})
        writer.wait_for(len(writer.lines()) + 20)
        committed = writer.stop()

    assert result.returncode == 0, result.stderr
    assert committed <= source_refs(raw), f"{len(committed - source_refs(raw))} committed rows lost"
    assert writer.ids(before=started) and writer.ids(after=started + 3)
    assert max(waited for _ref, _at, waited in writer.lines()) >= 0.9, "the writer never waited: no overlap"
    for db in DATABASES:
        assert version_rows(legacy_copy / db.default_file, db.name) == [f"{db.name}_0002"]
    with sqlite3.connect(raw) as connection:
        backfilled = {row[0] for row in connection.execute(
            "SELECT source_ref FROM raw_messages WHERE text_length = length(text)"
        )}
    assert writer.ids(before=started) <= backfilled  # rows committed before the run went through the rebuild


def test_a_writer_loses_nothing_when_the_upgrade_fails_in_processing(legacy_copy, projects, tmp_path):
    assert run_cli("init").exit_code == 0
    add_revision(projects, "ingestion", 2, ADD_COLUMN.format(table="sources"))
    add_revision(projects, "raw", 2, REBUILD_RAW)
    add_revision(projects, "processing", 2, PAUSE_THEN_FAIL)
    raw = legacy_copy / "raw_storage.sqlite"
    before = all_checksums(legacy_copy)

    with live_writer(raw, tmp_path) as writer:
        result = tg_parser_run("db", "upgrade", "--yes", projects=projects, env={"PAUSE_S": "1"})
        writer.wait_for(len(writer.lines()) + 20)
        committed = writer.stop()

    assert result.returncode == 1, result.stderr
    assert "no_such_table" in result.stderr and "Every database was rolled back" in result.stderr
    assert committed <= source_refs(raw), f"{len(committed - source_refs(raw))} committed rows lost"
    assert max(waited for _ref, _at, waited in writer.lines()) >= 0.9, "the writer never waited: no overlap"
    for db in DATABASES:
        assert version_rows(legacy_copy / db.default_file, db.name) == [f"{db.name}_0001"]
    assert all_checksums(legacy_copy) == before
    assert {r for r in source_refs(raw) if r.startswith("writer:")} == committed


def test_a_writer_loses_nothing_through_a_restore(legacy_copy, tmp_path):
    raw = legacy_copy / "raw_storage.sqlite"
    assert run_cli("init").exit_code == 0  # adopts, taking the backup restored below

    with live_writer(raw, tmp_path) as writer:
        began = time.monotonic()
        result = tg_parser_run("db", "restore", "raw", "--yes")
        finished = time.monotonic()
        writer.wait_for(len(writer.lines()) + 20)
        committed = writer.stop()

    assert result.returncode == 0, result.stderr
    safety = re.search(r"backed up to (\S+)", result.stdout).group(1)
    assert writer.ids(before=began), "the writer had committed nothing before the restore"
    assert writer.ids(before=began) <= source_refs(raw) | source_refs(safety)
    assert writer.ids(after=finished) <= source_refs(raw)
    assert committed <= source_refs(raw) | source_refs(safety)  # one continuous lock: no gap between the two
    assert "alembic_version_raw" not in table_names(raw)  # the adoption backup: a 3.0.0 database again
