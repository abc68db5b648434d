"""The application's side of an online upgrade: clients with TG_parser's fixed 5 s busy timeout.

    python tests/clients.py write-raw|read-raw|write-ingestion DATABASE LOG STOP_FILE

Each runs in a loop until STOP_FILE exists, one operation at a time, like TG_parser 3.x's own
repositories (Python's sqlite3, 5 s busy timeout, never retried here: a failure is a failure).
Every operation is one line of LOG, written once it has returned:
`<op> <ok|error> <monotonic time it returned> <seconds it took> <key or error text>`.
A write's line is written only after its commit returned, so every `ok` key was committed.

- write-raw: one raw_messages row per transaction;
- read-raw: a lookup by key, then a range of one channel by date, each its own read;
- write-ingestion: one source_attempts row per transaction (a database the run does not change),
  with `synchronous = OFF`, so that its waits are waits for locks, not for a disk that the run's
  backup and copy keep busy.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LEGACY_RAW = Path(__file__).resolve().parent / "fixtures" / "legacy-v3.0.0" / "raw_storage.sqlite"
BUSY_TIMEOUT_S = 5.0
PAUSE_S = 0.01
RAW_INSERT = (
    "INSERT INTO raw_messages (source_ref, id, message_type, channel_id, date, text, inserted_at)"
    " VALUES (?, ?, 'post', 'writer', '2026-11-28T00:00:00Z', ?, '2026-11-28T00:00:00Z')"
)
ATTEMPT_INSERT = "INSERT INTO source_attempts (source_id, attempt_at, success) VALUES (?, '2026-11-28T00:00:00Z', 1)"


ONLINE_REBUILD = '''
def upgrade():
    from tg_parser.migrate import online

    with online.batch_alter_table("raw_messages", recreate="always", backfill={"text_len": "length(text)"}) as batch:
        batch.add_column(sa.Column("text_len", sa.Integer()))
        batch.create_index("ix_text_len", ["text_len"])
    if os.environ.get("PAUSE_AFTER_SWAP"):
        time.sleep(float(os.environ["PAUSE_AFTER_SWAP"]))


def downgrade():
    from tg_parser.migrate import online

    with online.batch_alter_table("raw_messages", recreate="always") as batch:
        batch.drop_index("ix_text_len")
        batch.drop_column("text_len")
'''
"""The body of a test revision (see conftest.add_revision) that rebuilds raw_messages online, with a
backfilled column and a new index; PAUSE_AFTER_SWAP holds the run's transaction after the swap."""


def make_raw_database(path: Path, messages: int) -> None:
    """A 3.0.0 raw database (the fixture's schema and rows) plus `messages` synthetic messages."""
    shutil.copyfile(LEGACY_RAW, path)
    os.chmod(path, 0o644)
    payload = json.dumps({"views": 1234, "forwards": 5, "entities": [{"type": "url", "offset": 0}] * 6, "pad": "x" * 200})
    text = "Message text with some words in it, repeated to a realistic length. " * 3

    def rows():
        for i in range(messages):
            yield (
                f"tg:-100{i % 50}:post:{i}", str(i), "post", f"-100{i % 50}", f"2025-01-01T00:00:{i % 60:02d}+00:00",
                text, None, None, "en", payload, 0, len(payload), "2025-01-02T00:00:00+00:00",
            )

    with sqlite3.connect(path) as connection:
        connection.executemany("INSERT INTO raw_messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows())
    connection.close()


def main() -> None:
    mode, database, log, stop = sys.argv[1:5]
    connection = sqlite3.connect(database, timeout=BUSY_TIMEOUT_S)
    if mode == "write-ingestion":
        connection.execute("PRAGMA synchronous = OFF")
    number = 0
    with open(log, "a") as out:
        while not os.path.exists(stop):
            number += 1
            key = f"{mode}:{os.getpid()}:{number}"
            started = time.monotonic()
            try:
                if mode == "write-raw":
                    connection.execute(RAW_INSERT, (key, str(number), f"message {number} from the writer"))
                    connection.commit()
                elif mode == "write-ingestion":
                    connection.execute(ATTEMPT_INSERT, (key,))
                    connection.commit()
                else:
                    connection.execute("SELECT * FROM raw_messages WHERE source_ref = ?", (f"tg:-1001:post:{number}",)).fetchall()
                    connection.execute(
                        "SELECT source_ref FROM raw_messages WHERE channel_id = ? AND date >= ? ORDER BY date LIMIT 20",
                        (f"-100{number % 50}", "2025-01-01T00:00:30+00:00"),
                    ).fetchall()
                outcome, detail = "ok", key
            except sqlite3.Error as error:
                connection.rollback()
                outcome, detail = "error", " ".join(str(error).split())
            done = time.monotonic()
            out.write(f"{mode} {outcome} {done:.6f} {done - started:.6f} {detail}\n")
            out.flush()
            time.sleep(PAUSE_S)


@dataclass
class Log:
    """What one client logged."""

    ok: list[tuple[float, float, str]]
    errors: list[tuple[float, str]]

    @classmethod
    def read(cls, path: Path) -> Log:
        ok, errors = [], []
        for line in path.read_text().splitlines():
            _mode, outcome, at, seconds, detail = line.split(" ", 4)
            if outcome == "ok":
                ok.append((float(at), float(seconds), detail))
            else:
                errors.append((float(at), detail))
        return cls(ok, errors)

    @property
    def longest_wait(self) -> float:
        return max((seconds for _at, seconds, _key in self.ok), default=0.0)

    @property
    def keys(self) -> set[str]:
        return {key for _at, _seconds, key in self.ok}


@contextmanager
def running(folder: Path, **clients: tuple[str, Path]) -> Iterator[dict[str, Log]]:
    """Start each client (`name=(mode, database)`), wait until each has logged a few operations, and
    on leaving stop them and fill the dict with their logs."""
    stop = folder / "clients.stop"
    stop.unlink(missing_ok=True)
    processes = {}
    for name, (mode, database) in clients.items():
        log = folder / f"{name}.log"
        log.unlink(missing_ok=True)
        processes[name] = (subprocess.Popen([sys.executable, __file__, mode, str(database), str(log), str(stop)]), log)
    logs: dict[str, Log] = {}
    try:
        deadline = time.monotonic() + 30
        for _process, log in processes.values():
            while not log.exists() or len(log.read_text().splitlines()) < 5:
                assert time.monotonic() < deadline, f"{log} stays empty"
                time.sleep(0.02)
        yield logs
    finally:
        time.sleep(0.3)
        stop.touch()
        for name, (process, log) in processes.items():
            process.wait(timeout=30)
            logs[name] = Log.read(log)


if __name__ == "__main__":
    main()
