"""Backups of SQLite databases, taken before a change and put back when a run fails.

A database in rollback-journal mode (what TG_parser creates) is copied byte for byte
while SQLite's own RESERVED lock keeps writers out (readers go on), so a restore gives
back exactly the original file. A database in WAL mode, whose committed pages may still
sit in the `-wal` file, goes through SQLite's online backup API instead.
The copy is flushed to disk (fsync) and checked: complete (SQLite's page count times page
size is the file size) and readable (its schema opens). `restore` runs the full
`PRAGMA quick_check` on a backup before putting it back.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tg_parser.storage.databases import NAMES

CHUNK = 16 * 1024 * 1024
BUSY_TIMEOUT_S = 30
_NAME = re.compile(rf"^(?P<db>{'|'.join(NAMES)})-(?P<revision>.+)-(?P<stamp>\d{{8}}T\d{{12}}Z)\.sqlite$")

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a file is copied."""


class BackupFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Backup:
    db: str
    revision: str
    taken_at: datetime
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def list_backups(directory: Path, db: str | None = None) -> list[Backup]:
    """Backups in `directory`, newest first."""
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = _NAME.match(path.name)
            if match and (db is None or match["db"] == db):
                taken = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
                found.append(Backup(match["db"], match["revision"], taken, path))
    return sorted(found, key=lambda b: b.taken_at, reverse=True)


def take(db: str, revision: str, source: Path, directory: Path, progress: Progress | None = None) -> Backup:
    directory.mkdir(parents=True, exist_ok=True)
    taken_at = datetime.now(UTC)
    name = f"{db}-{revision}-{taken_at.strftime('%Y%m%dT%H%M%S%fZ')}.sqlite"
    final = directory / name
    partial = directory / f".{name}.partial"
    try:
        connection = sqlite3.connect(source, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            if _journal_mode(connection) == "wal":
                with sqlite3.connect(partial) as destination:
                    connection.backup(destination)
                destination.close()
            else:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    _copy(source, partial, progress)
                finally:
                    connection.execute("ROLLBACK")
        finally:
            connection.close()
        check_complete(partial)
        os.replace(partial, final)
    except (OSError, sqlite3.Error) as error:
        partial.unlink(missing_ok=True)
        raise BackupFailed(f"backup of {source} failed: {error}") from error
    return Backup(db, revision, taken_at, final)


def restore(backup: Path, target: Path, progress: Progress | None = None) -> None:
    """Put `backup` back in place of `target`, under SQLite's exclusive lock."""
    verify(backup)
    connection = sqlite3.connect(target, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        if _journal_mode(connection) == "wal":
            with sqlite3.connect(backup) as source:
                source.backup(connection)
            source.close()
            return
        connection.execute("BEGIN EXCLUSIVE")
        try:
            _copy(backup, target, progress, in_place=True)
        finally:
            connection.execute("ROLLBACK")
    finally:
        connection.close()


def check_complete(path: Path) -> None:
    """Cheap check of a fresh copy: a SQLite file, every page there, its schema readable."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        connection.close()
    if pages * page_size != path.stat().st_size:
        raise BackupFailed(f"{path} is incomplete: {pages} pages of {page_size} bytes, {path.stat().st_size} bytes on disk")


def verify(path: Path) -> None:
    """Full check before a backup is put back: complete, and SQLite's quick_check passes."""
    check_complete(path)
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = connection.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        connection.close()
    if result != "ok":
        raise BackupFailed(f"{path} failed its integrity check: {result}")


def prune(directory: Path, db: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups of `db`; return what was deleted."""
    old = [b.path for b in list_backups(directory, db)[keep:]]
    for path in old:
        path.unlink()
    return old


def free_space(directory: Path) -> int:
    existing = directory
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def _journal_mode(connection: sqlite3.Connection) -> str:
    return connection.execute("PRAGMA journal_mode").fetchone()[0].lower()


def _copy(source: Path, destination: Path, progress: Progress | None, in_place: bool = False) -> None:
    """Copy in the kernel (copy_file_range), in chunks for the progress bar, then fsync.

    After each chunk, POSIX_FADV_DONTNEED starts writing it to disk while the next one is
    copied, so the closing fsync waits only for the last chunk (and the copy does not push
    the live database out of the page cache).
    """
    total = source.stat().st_size
    done = 0
    with open(source, "rb") as reader, open(destination, "r+b" if in_place else "wb") as writer:
        while done < total:
            copied = os.copy_file_range(reader.fileno(), writer.fileno(), min(CHUNK, total - done))
            if copied == 0:
                raise OSError(f"{source} shrank while being copied")
            os.posix_fadvise(writer.fileno(), done, copied, os.POSIX_FADV_DONTNEED)
            done += copied
            if progress:
                progress(done, total)
        writer.truncate(total)
        os.fsync(writer.fileno())
