"""Backups of SQLite databases: the operator's safety net, never the undo path of a run.

A backup is taken while the caller holds the database's write lock, so it is exactly the
state about to change. A rollback-journal database (what TG_parser creates) is copied byte
for byte; a WAL database, whose committed pages may still sit in its `-wal` file, goes
through SQLite's online backup API. Either way the copy is hashed (SHA-256) and flushed to
disk, and a manifest beside it (`<backup>.json`) records which database it belongs to, why
it was taken and its checksum.

`restore` puts a backup back through SQLite's own page writes (the online backup API into
the live database): those writes are journaled, so a crash or a full disk at any moment
leaves the database either exactly as it was or exactly the backup.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import blake3

from tg_parser.core.events import emit
from tg_parser.migrate.errors import Refused
from tg_parser.storage.databases import NAMES, Database
from tg_parser.storage.lock import LockTimeout, retry_while_busy, timed_out
from tg_parser.storage.engine import connect_read_only

CHUNK = 8 * 1024 * 1024
RESTORE_STEP_BYTES = 4 * 1024 * 1024
PROGRESS_POLL_S = 0.1
_NAME = re.compile(rf"^(?P<db>{'|'.join(NAMES)})-(?P<revision>.+)-(?P<stamp>\d{{8}}T\d{{12}}Z)\.sqlite$")
BEFORE_RESTORE = "before restore"

log = logging.getLogger(__name__)

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
    reason: str | None = None
    """upgrade, downgrade or "before restore"; None for a backup without a manifest."""
    checksum: str | None = None
    """`blake3:<hex>`, or `sha256:<hex>` for a backup taken by an earlier release."""

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def manifest(self) -> Path:
        return manifest_of(self.path)


def manifest_of(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def list_backups(directory: Path, db: str | None = None) -> list[Backup]:
    """Backups in `directory`, newest first."""
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = _NAME.match(path.name)
            if match and (db is None or match["db"] == db):
                taken = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
                facts = _listed_manifest(path)
                found.append(
                    Backup(match["db"], match["revision"], taken, path, facts.get("reason"), _checksum_of(facts))
                )
    return sorted(found, key=lambda b: b.taken_at, reverse=True)


def default_for_restore(directory: Path, db: str) -> Backup | None:
    """The newest backup taken before an upgrade or downgrade (never a before-restore safety copy)."""
    return next((b for b in list_backups(directory, db) if b.reason != BEFORE_RESTORE), None)


def _read_manifest(path: Path) -> dict:
    """The manifest beside a backup; {} when there is none; raises BackupFailed when it is damaged."""
    manifest = manifest_of(path)
    if not manifest.exists():
        return {}
    try:
        facts = json.loads(manifest.read_text())
    except (OSError, ValueError) as error:
        raise BackupFailed(f"its manifest {manifest.name} cannot be read ({error})") from None
    if not isinstance(facts, dict) or not any(
        isinstance(facts.get(kind), str) and len(facts[kind]) == 64 for kind in CHECKSUMS
    ):
        raise BackupFailed(f"its manifest {manifest.name} holds no checksum (BLAKE3, or SHA-256 from earlier backups)")
    return facts


def _checksum_of(facts: dict) -> str | None:
    kind = next((kind for kind in CHECKSUMS if isinstance(facts.get(kind), str)), None)
    return f"{kind}:{facts[kind]}" if kind else None


def _listed_manifest(path: Path) -> dict:
    try:
        return _read_manifest(path)
    except BackupFailed:
        return {"reason": "(damaged manifest)"}


def take(
    db: str,
    revision: str,
    reason: str,
    source: Path,
    directory: Path,
    *,
    wal_reader: sqlite3.Connection | None = None,
    progress: Progress | None = None,
) -> Backup:
    """Back up `source`, whose write lock the caller holds (so nothing changes while it is copied).

    A WAL database is copied through `wal_reader` (a connection that can read it), since its
    committed pages may sit in the `-wal` file; any other is copied byte for byte.
    """
    def copy(partial: Path) -> str:
        if wal_reader is not None:
            _backup_api_copy(wal_reader, partial)
            return _blake3(partial)
        return _copy_in_child(source, partial, progress)

    return _take(db, revision, reason, source, directory, copy)


def take_online(
    db: str, revision: str, reason: str, source: Path, directory: Path, *, timeout: float,
    progress: Progress | None = None,
) -> tuple[Backup, float]:
    """Back up `source` while writers go on, as one consistent state; return it and how long
    writers were held (their longest possible wait).

    WAL: one step of the online backup API inside a read transaction, a snapshot that writers do
    not wait for. Rollback journal: a read transaction (which keeps writers from committing) only
    while the kernel copies the file into the page cache; the copy is then hashed and flushed
    to disk after it has ended."""
    reader = connect_read_only(source, isolation_level=None, timeout=timeout)
    held = [0.0]
    try:
        wal = reader.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"

        def copy(partial: Path) -> str:
            if wal:
                _backup_api_copy(reader, partial)
                return _blake3(partial)
            retry_while_busy(lambda: reader.execute("BEGIN"), reader, str(source), timeout)
            try:
                reader.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the shared lock
                started = time.perf_counter()
                _copy_in_child(source, partial, progress, durable=False)
                held[0] = time.perf_counter() - started
            finally:
                reader.execute("COMMIT")
            digest = _blake3(partial)
            with open(partial, "rb+") as file:
                os.fsync(file.fileno())
            return digest

        return _take(db, revision, reason, source, directory, copy), held[0]
    finally:
        reader.close()


def _take(db: str, revision: str, reason: str, source: Path, directory: Path, copy: Callable[[Path], str]) -> Backup:
    """Copy `source` with `copy(partial)` (which returns the copy's BLAKE3), check it, and put it in place
    with its manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    taken_at = datetime.now(UTC)
    name = f"{db}-{revision}-{taken_at.strftime('%Y%m%dT%H%M%S%fZ')}.sqlite"
    final = directory / name
    partial = directory / f".{name}.partial"
    try:
        digest = copy(partial)
        check_complete(partial)
        _write_json(
            manifest_of(final),
            {"database": db, "revision": revision, "reason": reason, "taken_at": taken_at.isoformat(),
             "bytes": partial.stat().st_size, "blake3": digest, "source": str(source)},
        )
        os.replace(partial, final)
        _fsync_folder(directory)
    except BaseException as error:
        for leftover in (partial, manifest_of(final)):
            leftover.unlink(missing_ok=True)
        if isinstance(error, (OSError, sqlite3.Error, BackupFailed)):
            raise BackupFailed(f"backup of {source} failed: {_plain(error)}") from error
        raise
    emit(log, "backup_taken", database=db, path=str(final), bytes=final.stat().st_size,
         seconds=round(time.perf_counter() - started, 3), blake3=digest)
    return Backup(db, revision, taken_at, final, reason, f"blake3:{digest}")


def clean_partials(directory: Path, db: str) -> list[Path]:
    """Remove what killed or failed backups of `db` left behind (call it holding `db`'s lock)."""
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(f".{db}-*.partial*")]
    stale += [p for p in directory.glob(f"{db}-*.sqlite.json") if not p.with_name(p.name[:-5]).exists()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_complete(path: Path) -> None:
    """Cheap check of a fresh copy: a SQLite file, every page there, its schema readable."""
    connection = connect_read_only(path)
    try:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:  # pages missing: SQLite itself finds the file malformed
        raise BackupFailed(f"{path} is incomplete: {error}") from None
    finally:
        connection.close()
    if pages * page_size != path.stat().st_size:
        raise BackupFailed(f"{path} is incomplete: {pages} pages of {page_size} bytes, {path.stat().st_size} bytes on disk")


def verify(path: Path, db: Database) -> str | None:
    """Refuse a file that is not a sound backup of `db`: wrong checksum, another database's, or damaged.

    A backup with a manifest must match its checksum (a damaged manifest is refused); a file
    without one must pass SQLite's full integrity check, and the warning returned says that its
    content could not be checked against a checksum. Either way its tables must be `db`'s.
    """
    try:
        facts = _read_manifest(path)
        check_complete(path)
        if facts.get("database") not in (None, db.name):
            raise BackupFailed(f"its manifest says it is a backup of {facts['database']}, not {db.name}")
        if facts:
            kind = next(kind for kind in CHECKSUMS if isinstance(facts.get(kind), str) and len(facts[kind]) == 64)
            if CHECKSUMS[kind](path) != facts[kind]:
                raise BackupFailed("its content does not match the checksum taken with it (the file changed)")
        else:
            result = _query(path, "PRAGMA integrity_check")[0][0]
            if result != "ok":
                raise BackupFailed(f"it fails SQLite's integrity check: {result}")
        _belongs_to(path, db)
    except (BackupFailed, sqlite3.Error) as error:
        raise Refused([f"{path} is not a usable backup of {db.name}: {_plain(error)}"]) from error
    if not facts:
        return (f"{path} has no manifest, so its content cannot be checked against a checksum"
                " (it passed SQLite's integrity check and holds the right tables)")
    return None


def _belongs_to(path: Path, db: Database) -> None:
    tables = {row[0] for row in _query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    reason = db.misplaced(tables)
    if reason:
        raise BackupFailed(reason)
    if not tables & (set(db.metadata.tables) | {db.version_table}):
        raise BackupFailed(f"it holds none of the {db.name} tables" + ("" if tables else " (it is empty)"))


@dataclass(frozen=True)
class Restored:
    safety: Backup | None
    """The copy of the database taken just before, under the same lock."""
    damaged: Path | None = None
    """Where a live file too damaged for SQLite to open was moved aside (no safety copy then)."""


def restore(
    chosen: Path,
    live: Path,
    *,
    timeout: float,
    safety: Callable[[sqlite3.Connection, bool], Backup | None] | None = None,
    progress: Progress | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Restored:
    """Put `chosen` back into `live` through SQLite's journaled page writes.

    The live database is locked exclusively (SQLite's EXCLUSIVE locking mode keeps the lock
    between transactions) before anything else, and stays locked until the restore is
    committed. `safety(connection, wal)` is called under that lock, before any page changes,
    so no writer can commit between the safety copy and the restore. A live file SQLite cannot
    open at all (not a database, or its schema unreadable) cannot be locked or read: it is moved
    aside, whole, and the backup put in its place.
    """
    destination = sqlite3.connect(live, isolation_level=None, timeout=timeout)
    try:
        try:
            wal = destination.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
            _lock_exclusively(destination, live, timeout, on_wait, wal)
            destination.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except LockTimeout as error:
            if wal:  # every connection to a WAL database holds a shared lock for as long as it is open
                raise LockTimeout(f"{error}; {live} is in WAL mode: restore it with the collector stopped") from None
            raise
        except sqlite3.DatabaseError as error:
            if "locked" in str(error):
                raise timed_out(str(live), timeout) from None
            if not _damaged(error):
                raise
            destination.close()
            return Restored(None, _replace_damaged(chosen, live))
        saved = safety(destination, wal) if safety else None
        source = connect_read_only(chosen)
        try:
            page_size = source.execute("PRAGMA page_size").fetchone()[0]
            total = chosen.stat().st_size

            def step(_status: int, remaining: int, pages: int) -> None:
                if progress:
                    progress((pages - remaining) * page_size, total)

            source.backup(destination, pages=max(1, RESTORE_STEP_BYTES // page_size), progress=step)
        finally:
            source.close()
    finally:
        destination.close()
    return Restored(saved)


def _damaged(error: sqlite3.DatabaseError) -> bool:
    return any(sign in str(error) for sign in ("file is not a database", "malformed"))


def _replace_damaged(chosen: Path, live: Path) -> Path:
    """Move the damaged file (and its journal files) aside, then put a copy of `chosen` in its place
    with one rename: a crash leaves the damaged file aside and either no file or the whole backup."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    kept = live.with_name(f"{live.name}.damaged-{stamp}")
    partial = live.with_name(f".{live.name}.restore.partial")
    _copy_hashed(chosen, partial)
    for suffix in ("", "-journal", "-wal", "-shm"):
        companion = live.with_name(live.name + suffix)
        if companion.exists():
            os.replace(companion, kept.with_name(kept.name + suffix))
    os.replace(partial, live)
    _fsync_folder(live.parent)
    return kept


def _lock_exclusively(connection: sqlite3.Connection, live: Path, timeout: float, on_wait, wal: bool) -> None:
    """Take the EXCLUSIVE lock and keep it after COMMIT (EXCLUSIVE locking mode), waiting up to `timeout`.

    Rollback journal: the locking mode changes only once the lock is held, since in that mode a
    failed attempt keeps its shared lock, and a writer waiting to commit would wait for us while
    we wait for it. WAL: BEGIN EXCLUSIVE alone holds only WAL's write lock, which a commit gives
    up; only EXCLUSIVE locking mode, asked first, keeps every other connection out, and SQLite
    grants it once no other connection has the file open. The wait is taken in short steps, so
    Ctrl-C and SIGTERM act at once."""
    if wal:
        connection.execute("PRAGMA locking_mode = EXCLUSIVE")
    retry_while_busy(lambda: connection.execute("BEGIN EXCLUSIVE"), connection, str(live), timeout, on_wait)
    if not wal:
        connection.execute("PRAGMA locking_mode = EXCLUSIVE")
    connection.execute("COMMIT")


def prune(directory: Path, db: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups of `db` (and their manifests); return what was deleted."""
    old = [b.path for b in list_backups(directory, db)[keep:]]
    for path in old:
        path.unlink()
        manifest_of(path).unlink(missing_ok=True)
    return old


def free_space(directory: Path) -> int:
    return shutil.disk_usage(existing_folder(directory)).free


def existing_folder(path: Path) -> Path:
    """`path` or its nearest existing parent: where a file about to be created will live."""
    while not path.exists():
        path = path.parent
    return path


def _query(path: Path, sql: str) -> list[tuple]:
    connection = connect_read_only(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def _backup_api_copy(reader: sqlite3.Connection, destination: Path) -> None:
    writer = sqlite3.connect(destination)
    try:
        reader.backup(writer)
        writer.execute("PRAGMA journal_mode = DELETE")
    finally:
        writer.close()
    with open(destination, "rb") as file:
        os.fsync(file.fileno())


def _copy_in_child(source: Path, destination: Path, progress: Progress | None, durable: bool = True) -> str:
    """Copy the live file in a child process, because closing any descriptor of a file drops every
    POSIX lock this process holds on it, SQLite's write lock included (the caller holds it, and
    must keep holding it). Locks are per process: the child's open and close cannot touch them."""
    reader, writer = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: copy, report, and leave without ever running the parent's code
        code = 1
        try:
            for number in (signal.SIGINT, signal.SIGTERM):
                signal.signal(number, signal.SIG_DFL)
            os.close(reader)
            try:
                message = "ok " + _copy_hashed(source, destination, parent, durable)
                code = 0
            except BaseException as error:  # noqa: BLE001 - everything must reach the parent as text
                message = f"error {_plain(error)}"
            try:
                os.write(writer, message.encode())
            except OSError:
                pass  # the parent is gone
        finally:
            os._exit(code)
    os.close(writer)
    total = source.stat().st_size
    pause = 0.001  # a small copy must not wait a whole poll: in rollback-journal mode writers wait for it
    try:
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if progress:
                progress(min(_size(destination), total), total)
            time.sleep(pause)
            pause = min(PROGRESS_POLL_S, pause * 2)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        with os.fdopen(reader, "rb") as pipe:
            answer = pipe.read().decode()
    if not answer.startswith("ok "):
        raise BackupFailed(answer.removeprefix("error ") or "the copying process died")
    if progress:
        progress(total, total)
    return answer[3:]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _copy_hashed(source: Path, destination: Path, parent: int | None = None, durable: bool = True) -> str:
    """Copy `source` and hash it at once, on two cores: the copy runs in the kernel
    (copy_file_range, or plain reads and writes where it is refused, as across filesystems) while a
    thread hashes the same bytes, which nothing can change while the caller holds the write lock.
    POSIX_FADV_DONTNEED after each chunk starts writing it to disk, so the closing fsync waits only
    for the tail. `parent`: stop once the process that asked for the copy has gone. Not `durable`:
    only the copy, into the page cache, neither hashed nor flushed (the caller does both later)."""
    total = source.stat().st_size
    hashed: dict = {}

    def hash_source() -> None:
        try:
            hashed["blake3"] = _blake3(source)
        except OSError as error:
            hashed["error"] = error

    hasher = threading.Thread(target=hash_source if durable else lambda: None)
    hasher.start()
    try:
        done = 0
        kernel = True
        with open(source, "rb") as reader, open(destination, "wb") as writer:
            while done < total:
                if parent is not None and os.getppid() != parent:
                    raise BackupFailed("the process that asked for this copy has gone")
                count = min(CHUNK, total - done)
                if kernel:
                    try:
                        copied = os.copy_file_range(reader.fileno(), writer.fileno(), count)
                    except OSError as error:
                        if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                            raise
                        kernel = False
                        continue
                else:
                    copied = writer.write(reader.read(count))
                    writer.flush()
                if copied == 0:
                    break
                if durable:
                    os.posix_fadvise(writer.fileno(), done, copied, os.POSIX_FADV_DONTNEED)
                done += copied
            if durable:
                os.fsync(writer.fileno())
    finally:
        hasher.join()
    if "error" in hashed:
        raise hashed["error"]
    if done != total:
        raise BackupFailed(f"{source} changed size while being copied ({total} → {done} bytes)")
    return hashed.get("blake3", "")


def _blake3(path: Path) -> str:
    """BLAKE3, as strong as SHA-256 against a changed file and several times faster, so the checksum
    no longer bounds a backup. One thread, in chunks: BLAKE3's thread pool would not survive the
    fork of `_copy_in_child`, and the copy already runs beside it in the kernel."""
    hasher = blake3.blake3()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _sha256(path: Path) -> str:
    """The checksum of backups taken by earlier releases, still verified before their restore."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


CHECKSUMS = {"blake3": _blake3, "sha256": _sha256}
"""What a manifest may hold, newest first."""


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w") as file:
        json.dump(data, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def _fsync_folder(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _plain(error: Exception) -> str:
    """An OSError as its message and the file, without Python's `[Errno 28]` noise."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror} ({error.filename})" if error.filename else error.strerror
    return str(error)
