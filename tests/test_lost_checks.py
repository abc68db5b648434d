"""No CHECK constraint lost in silence: a step that would remove one needs --yes, and --plan says so.

Alembic's batch mode recreates a reflected table without its unnamed CHECK constraints and only
warns. 3.0.0's raw_messages has two (message_type, raw_payload_truncated).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

from tests.conftest import add_revision, file_digest, tg_parser_run

REBUILDS_RAW_MESSAGES = '''
def upgrade():
    with op.batch_alter_table("raw_messages", recreate="always") as batch:
        batch.add_column(sa.Column("note", sa.Text))


def downgrade():
    with op.batch_alter_table("raw_messages", recreate="always") as batch:
        batch.drop_column("note")
'''

KEEPS_THEM_ONLINE = '''
def upgrade():
    from tg_parser.migrate import online

    with online.batch_alter_table("raw_messages") as batch:
        batch.add_column(sa.Column("note", sa.Text))


def downgrade():
    pass
'''

ONLINE_UP_BATCH_DOWN = '''
def upgrade():
    from tg_parser.migrate import online

    with online.batch_alter_table("raw_messages") as batch:
        batch.add_column(sa.Column("note", sa.Text))


def downgrade():
    with op.batch_alter_table("raw_messages", recreate="always") as batch:
        batch.drop_column("note")
'''

NAMED_CHECK_TABLE = '''
def upgrade():
    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("n", sa.Integer),
                    sa.CheckConstraint("n > 0", name="ck_notes_n"))
    op.execute("INSERT INTO notes (n) VALUES (1)")


def downgrade():
    op.drop_table("notes")
'''

DROPS_THE_NAMED_CHECK_ITSELF = '''
def upgrade():
    with op.batch_alter_table("notes", recreate="always") as batch:
        batch.drop_constraint("ck_notes_n", type_="check")


def downgrade():
    pass
'''

LOST = ("raw: raw_0002 removes CHECK (message_type IN ('post', 'comment')) from table raw_messages, which holds rows",
        "raw: raw_0002 removes CHECK (raw_payload_truncated IN (0, 1)) from table raw_messages, which holds rows")


def checks_of(path, table: str) -> str:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]


def at_raw_0001(legacy_copy, projects):
    assert tg_parser_run("db", "upgrade", "--only", "raw", "--no-backup").returncode == 0
    return legacy_copy / "raw_storage.sqlite"


def test_an_upgrade_that_loses_unnamed_checks_is_refused_without_yes_and_changes_nothing(legacy_copy, projects):
    raw = at_raw_0001(legacy_copy, projects)
    add_revision(projects, "raw", 2, REBUILDS_RAW_MESSAGES)
    before = file_digest(raw)
    result = tg_parser_run("db", "upgrade", "--only", "raw", projects=projects)
    assert result.returncode == 3, result.stderr
    for reason in LOST:
        assert result.stderr.count(reason) == 1, result.stderr  # each said once
    assert "an upgrade that removes a CHECK constraint not confirmed (pass --yes to confirm)" in result.stderr
    assert "Unnamed CHECK constraint" not in result.stderr  # Alembic's own warning is not said again
    assert file_digest(raw) == before
    assert not list(legacy_copy.glob("backups/raw*"))


def test_the_plan_lists_each_lost_check(legacy_copy, projects):
    at_raw_0001(legacy_copy, projects)
    add_revision(projects, "raw", 2, REBUILDS_RAW_MESSAGES)
    result = tg_parser_run("db", "upgrade", "--only", "raw", "--plan", projects=projects)
    assert result.returncode == 0, result.stderr
    for reason in LOST:
        assert f"      DESTRUCTIVE: {reason}" in result.stdout


def test_with_yes_the_checks_are_dropped_and_the_run_says_so(legacy_copy, projects):
    raw = at_raw_0001(legacy_copy, projects)
    add_revision(projects, "raw", 2, REBUILDS_RAW_MESSAGES)
    assert "CHECK" in checks_of(raw, "raw_messages")
    result = tg_parser_run("db", "upgrade", "--only", "raw", "--yes", projects=projects)
    assert result.returncode == 0, result.stderr
    for reason in LOST:
        assert f"warning: {reason}" in result.stderr
    assert "CHECK" not in checks_of(raw, "raw_messages") and "note" in checks_of(raw, "raw_messages")


def test_a_downgrade_through_a_batch_rebuild_that_loses_them_is_refused_too(legacy_copy, projects):
    raw = at_raw_0001(legacy_copy, projects)
    add_revision(projects, "raw", 2, ONLINE_UP_BATCH_DOWN)
    assert tg_parser_run("db", "upgrade", "--only", "raw", projects=projects).returncode == 0
    before = file_digest(raw)
    result = tg_parser_run("db", "downgrade", "-1", "--only", "raw", projects=projects)
    assert result.returncode == 3, result.stderr
    assert "from table raw_messages, which holds rows" in result.stderr
    assert file_digest(raw) == before


def test_a_rebuild_that_keeps_the_checks_needs_no_confirmation(legacy_copy, projects):
    raw = at_raw_0001(legacy_copy, projects)
    add_revision(projects, "raw", 2, KEEPS_THEM_ONLINE)
    result = tg_parser_run("db", "upgrade", "--only", "raw", projects=projects)
    assert result.returncode == 0, result.stderr
    assert "removes CHECK" not in result.stderr and "message_type IN" in checks_of(raw, "raw_messages")


def test_a_named_check_the_revision_drops_itself_needs_no_confirmation(legacy_copy, projects):
    raw = at_raw_0001(legacy_copy, projects)
    add_revision(projects, "raw", 2, NAMED_CHECK_TABLE)
    add_revision(projects, "raw", 3, DROPS_THE_NAMED_CHECK_ITSELF)
    assert tg_parser_run("db", "upgrade", "raw_0002", "--only", "raw", projects=projects).returncode == 0
    result = tg_parser_run("db", "upgrade", "--only", "raw", projects=projects)
    assert result.returncode == 0, result.stderr
    assert "ck_notes_n" not in checks_of(raw, "notes")
