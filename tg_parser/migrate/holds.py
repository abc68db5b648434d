"""What a run will make other clients wait for, told to the operator before any lock is taken.

The figures are estimates from the plan and the file sizes, at rates measured on this project's
benchmarks (docs/performance.md): the run measures and reports the real holds afterwards.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

BACKUP_COPY_BYTES_PER_S = 1.0e9
"""A rollback-journal backup copies the file into the page cache while writers wait."""
BLOCKING_BYTES_PER_S = 100e6
"""A table rebuilt inside the held transaction, as Alembic's batch mode does it."""
SWAP_S = 0.1
"""An online rebuild's swap: schema changes and two row counts."""
COUNT_ROWS_PER_S = 20e6


def journal_mode(file: Path) -> str:
    with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0].lower()


def describe(plans, prepared: dict, backing_up: bool) -> list[str]:
    """One line per database the run will lock: what it holds, for about how long, and who waits."""
    lines = []
    for plan in plans:
        file = plan.target.sqlite_file
        if file is None:
            lines.append(f"{plan.name}: held while its revisions run; DDL waits at most"
                         " 0.2 s for a lock before it lets go and tries again, so queries never queue behind it")
            continue
        size = file.stat().st_size if file.exists() else 0
        mode = journal_mode(file) if size else "delete"
        who = "writers" if mode == "wal" else "writers and readers"
        rebuilt = list(prepared.get(plan.name, {}).values())
        if rebuilt:
            rows = sum(item.rows for item in rebuilt)
            seconds = SWAP_S * len(rebuilt) + 2 * rows / COUNT_ROWS_PER_S
            tables = ", ".join(item.rebuild.table for item in rebuilt)
            hold = f"about {seconds:.1f} s to swap in {tables}, rebuilt online"
        else:
            hold = f"while its revisions run (a rebuild of the whole file would take about {size / BLOCKING_BYTES_PER_S:.1f} s)"
        line = f"{plan.name}: {who} wait {hold}"
        if backing_up and size and mode != "wal":
            line += (f"; writers wait about {size / BACKUP_COPY_BYTES_PER_S:.1f} s while the backup is copied"
                     " (rollback-journal mode; in WAL mode they would not: tg-parser db upgrade --wal)")
        lines.append(line + "; a client whose busy timeout is shorter than a wait gets 'database is locked'")
    return lines
