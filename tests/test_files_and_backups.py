"""One file is one database whatever its path; backups are checked, kept and chosen with care."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3

import pytest

from tests.conftest import (
    LEGACY,
    add_revision,
    content_checksums,
    file_digest,
    run_cli,
    tg_parser_run,
    version_rows,
)
from tg_parser.storage.databases import DATABASES


def digests(data_dir):
    return {p.name: file_digest(p) for p in sorted(data_dir.rglob("*")) if p.is_file()}


def _symlink(data_dir):
    """raw's path is a symlink to ingestion's file."""
    (data_dir / "raw-link.sqlite").symlink_to(data_dir / "ingestion_state.sqlite")
    return "raw", {"RAW_STORAGE_DB_PATH": str(data_dir / "raw-link.sqlite")}


def _hard_link(data_dir):
    """processing's path is a hard link to raw's file."""
    os.link(data_dir / "raw_storage.sqlite", data_dir / "processing-link.sqlite")
    return "processing", {"PROCESSING_STORAGE_DB_PATH": str(data_dir / "processing-link.sqlite")}


def _same_path(data_dir):
    """ingestion's path is raw's path."""
    return "ingestion", {"INGESTION_STATE_DB_PATH": str(data_dir / "raw_storage.sqlite")}


@pytest.mark.parametrize("alias", [_symlink, _hard_link, _same_path], ids=["symlink", "hard-link", "same-path"])
@pytest.mark.parametrize("only_the_alias", [False, True], ids=["all", "only-the-aliased-database"])
def test_two_databases_in_one_file_are_refused_before_anything_changes(legacy_copy, monkeypatch, alias, only_the_alias):
    name, variables = alias(legacy_copy)
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    before = digests(legacy_copy)
    result = run_cli("db", "upgrade", *(("--only", name) if only_the_alias else ()))
    assert result.exit_code == 3, result.output
    assert "is the same file as" in result.output
    assert digests(legacy_copy) == before
    assert not (legacy_copy / "backups").exists()


def test_the_same_file_through_a_bind_mount_is_refused(legacy_copy, mount, tmp_path, monkeypatch):
    other = mount(tmp_path / "elsewhere", bind=legacy_copy)
    monkeypatch.setenv("RAW_STORAGE_DB_PATH", str(other / "ingestion_state.sqlite"))
    before = digests(legacy_copy)
    result = run_cli("db", "upgrade")
    assert result.exit_code == 3 and "is the same file as" in result.output
    assert digests(legacy_copy) == before


def test_a_read_only_folder_is_refused_before_anything_changes(legacy_copy, mount, tmp_path, monkeypatch):
    read_only = mount(tmp_path / "read-only", bind=legacy_copy, read_only=True)
    monkeypatch.setenv("TG_PARSER_DATA_DIR", str(read_only))
    before = digests(legacy_copy)
    result = run_cli("db", "upgrade")
    assert result.exit_code == 3, result.output
    assert "is read-only" in result.output or "(read-only)" in result.output
    assert digests(legacy_copy) == before


def test_a_backup_with_one_byte_changed_is_refused(legacy_copy):
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    (made,) = (legacy_copy / "backups").glob("raw-*.sqlite")
    content = bytearray(made.read_bytes())
    with sqlite3.connect(LEGACY / "raw_storage.sqlite") as connection:
        text = connection.execute("SELECT text FROM raw_messages WHERE length(text) > 20 LIMIT 1").fetchone()[0]
    at = content.find(text.encode()[:20])
    assert at > 0
    content[at + 5] ^= 0x01  # one flipped bit in a message's text: SQLite's own checks pass
    made.write_bytes(bytes(content))
    before = file_digest(legacy_copy / "raw_storage.sqlite")

    result = run_cli("db", "restore", "raw", made.name, "--yes")
    assert result.exit_code == 3, result.output
    assert "does not match the checksum taken with it" in result.output
    assert file_digest(legacy_copy / "raw_storage.sqlite") == before


def test_a_backup_of_another_database_is_refused(legacy_copy, tmp_path):
    assert run_cli("init").exit_code == 0
    assert run_cli("db", "downgrade", "--only", "processing", "base", "--yes").exit_code == 0
    (processing_backup,) = (legacy_copy / "backups").glob("processing-processing_0001-*.sqlite")
    before = file_digest(legacy_copy / "raw_storage.sqlite")

    with_manifest = run_cli("db", "restore", "raw", str(processing_backup), "--yes")
    assert with_manifest.exit_code == 3, with_manifest.output
    assert "is a backup of processing, not raw" in with_manifest.output

    loose = tmp_path / "copied.sqlite"  # the same file without its manifest: its tables give it away
    shutil.copyfile(processing_backup, loose)
    without_manifest = run_cli("db", "restore", "raw", str(loose), "--yes")
    assert without_manifest.exit_code == 3, without_manifest.output
    assert "version table of the processing database" in without_manifest.output
    assert file_digest(legacy_copy / "raw_storage.sqlite") == before


def test_backups_on_another_filesystem_are_taken_and_restored(legacy_copy, mount):
    mount(legacy_copy / "backups", size="16m")
    original = content_checksums(LEGACY / "raw_storage.sqlite")
    upgraded = run_cli("db", "upgrade", "--only", "raw")
    assert upgraded.exit_code == 0, upgraded.output
    assert list((legacy_copy / "backups").glob("raw-unversioned-*.sqlite"))
    restored = run_cli("db", "restore", "raw", "--yes")
    assert restored.exit_code == 0, restored.output
    assert content_checksums(legacy_copy / "raw_storage.sqlite") == original


def test_a_run_that_changes_nothing_takes_no_backup_and_deletes_none(legacy_copy, monkeypatch):
    monkeypatch.setenv("TG_PARSER_BACKUP_KEEP", "2")
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    kept = sorted(p.name for p in (legacy_copy / "backups").iterdir())
    for _ in range(3):
        assert run_cli("db", "upgrade", "raw_0001", "--only", "raw").exit_code == 0
        assert run_cli("db", "downgrade", "raw_0001", "--only", "raw", "--yes").exit_code == 0
        assert run_cli("init").exit_code == 0
    assert sorted(p.name for p in (legacy_copy / "backups").iterdir() if p.name.startswith("raw")) == [
        n for n in kept if n.startswith("raw")
    ]


def test_the_newest_n_backups_are_kept(data_dir, projects, monkeypatch):
    monkeypatch.setenv("TG_PARSER_BACKUP_KEEP", "2")
    assert run_cli("init").exit_code == 0
    add_revision(projects, "raw", 2, "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n")
    taken = []
    for command in (("upgrade",), ("downgrade", "--yes"), ("upgrade",), ("downgrade", "--yes")):
        result = tg_parser_run("db", *command, "--only", "raw", projects=projects)
        assert result.returncode == 0, result.stderr
        taken.append(re.search(r"backed up to (\S+)", result.stdout).group(1))
    left = sorted(str(p) for p in (data_dir / "backups").glob("raw-*.sqlite"))
    assert left == sorted(taken[-2:])
    assert all(os.path.exists(p + ".json") for p in left)
    assert not any(os.path.exists(p + ".json") for p in taken[:-2])


def test_the_default_restore_is_the_newest_migration_backup_never_the_safety_copy(legacy_copy):
    original = content_checksums(LEGACY / "raw_storage.sqlite")
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    (adoption_backup,) = (legacy_copy / "backups").glob("raw-*.sqlite")
    first = run_cli("db", "restore", "raw", "--yes")
    assert first.exit_code == 0 and f"from {adoption_backup.name}" in first.output
    safety = re.search(r"backed up to (\S+)", first.output).group(1)
    assert json.loads(open(safety + ".json").read())["reason"] == "before restore"

    second = run_cli("db", "restore", "raw", "--yes")  # picks the adoption backup again, not the safety copy
    assert second.exit_code == 0 and f"from {adoption_backup.name}" in second.output
    assert content_checksums(legacy_copy / "raw_storage.sqlite") == original
    listing = run_cli("db", "backups", "--only", "raw")
    assert "before restore" in listing.output and "upgrade" in listing.output


def test_stale_partial_files_are_removed_by_the_next_run_of_their_database(legacy_copy):
    backups = legacy_copy / "backups"
    backups.mkdir()
    stale = [backups / ".raw-unversioned-20260101T000000000000Z.sqlite.partial",
             backups / ".raw-unversioned-20260101T000000000000Z.sqlite.partial-journal",
             backups / "raw-unversioned-20260101T000000000000Z.sqlite.json"]
    other = backups / ".processing-unversioned-20260101T000000000000Z.sqlite.partial"
    for path in (*stale, other):
        path.write_bytes(b"x" * 1000)
    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    assert not any(path.exists() for path in stale)
    assert other.exists()  # another database's partial is left to that database's run


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ('def upgrade():\n    op.execute("VACUUM")\n\n\ndef downgrade():\n    pass\n', "VACUUM"),
        ('def upgrade():\n    op.execute("PRAGMA foreign_keys = ON")\n\n\ndef downgrade():\n    pass\n',
         "PRAGMA FOREIGN_KEYS"),
        ('def upgrade():\n    with op.get_context().autocommit_block():\n        op.execute("SELECT 1")\n\n\n'
         'def downgrade():\n    pass\n', "autocommit_block()"),
    ],
    ids=["vacuum", "pragma-foreign-keys", "autocommit-block"],
)
def test_a_revision_that_cannot_run_in_a_transaction_is_refused_before_anything_runs(data_dir, projects, body, what):
    assert run_cli("init").exit_code == 0
    path = add_revision(projects, "raw", 2, '"""Does something outside a transaction: VACUUM in a docstring is fine."""\n' + body)
    before = {db.name: file_digest(data_dir / db.default_file) for db in DATABASES}
    result = tg_parser_run("db", "upgrade", projects=projects)
    assert result.returncode == 3, result.stderr
    assert f"uses {what}, which cannot run inside the run's transaction" in result.stderr
    assert f"{path}_test.py" in result.stderr
    assert {db.name: file_digest(data_dir / db.default_file) for db in DATABASES} == before
    assert version_rows(data_dir / "raw_storage.sqlite", "raw") == ["raw_0001"]


def test_a_backup_carries_a_blake3_checksum_of_its_content(legacy_copy):
    import blake3

    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    (made,) = (legacy_copy / "backups").glob("raw-*.sqlite")
    manifest = json.loads(made.with_name(made.name + ".json").read_text())
    assert manifest["blake3"] == blake3.blake3(made.read_bytes()).hexdigest() and "sha256" not in manifest


@pytest.mark.parametrize("intact", [True, False], ids=["intact", "changed"])
def test_an_earlier_releases_sha256_manifest_is_still_verified(legacy_copy, intact):
    import hashlib

    assert run_cli("db", "upgrade", "--only", "raw").exit_code == 0
    (made,) = (legacy_copy / "backups").glob("raw-*.sqlite")
    sidecar = made.with_name(made.name + ".json")
    facts = json.loads(sidecar.read_text())
    del facts["blake3"]
    facts["sha256"] = hashlib.sha256(made.read_bytes()).hexdigest() if intact else "0" * 64
    sidecar.write_text(json.dumps(facts))
    before = file_digest(legacy_copy / "raw_storage.sqlite")
    result = run_cli("db", "restore", "raw", made.name, "--yes")
    if intact:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 3 and "does not match the checksum taken with it" in result.output
        assert file_digest(legacy_copy / "raw_storage.sqlite") == before
