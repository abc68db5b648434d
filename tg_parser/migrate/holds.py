"""What a run will make other clients wait for, said to the operator before any lock is taken.

Estimates from the plan and the file sizes, at rates measured by this project's benchmarks
(docs/performance.md); the run reports the real holds when it ends.
"""

from __future__ import annotations

from pathlib import Path

from tg_parser.storage.engine import connect_read_only

BACKUP_COPY_BYTES_PER_S = 1.0e9
"""A rollback-journal backup copies the file into the page cache while writers wait."""
BLOCKING_BYTES_PER_S = 100e6
"""A table rebuilt inside the held transaction (Alembic's batch mode)."""
SWAP_S = 0.05
"""An online rebuild's swap: schema changes only..."""
COUNT_ROWS_PER_S = 10e6
"""...and a count of the rows of the old and the new table."""
CLIENT_TIMEOUT_S = 5.0
"""TG_parser's own busy timeout, which its users cannot change."""


def journal_mode(file: Path) -> str:
    with connect_read_only(file) as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0].lower()


def describe(plans, online: dict[str, list[tuple[str, int]]], backing_up: bool) -> list[str]:
    """One line per database the run will lock: who waits, for about how long, and why.

    `online`: per database, the tables rebuilt online with their rows."""
    lines = []
    for plan in plans:
        file = plan.target.sqlite_file
        if file is None:
            lines.append(f"{plan.name}: each statement waits at most 0.2 s for a table's lock, then lets go and"
                         " tries again, so application queries never queue behind it for longer")
            continue
        size = file.stat().st_size if file.exists() else 0
        mode = journal_mode(file) if size else "delete"
        who = "writers" if mode == "wal" else "writers and readers"
        tables = online.get(plan.name, [])
        if tables:
            seconds = SWAP_S * len(tables) + sum(2 * rows / COUNT_ROWS_PER_S for _table, rows in tables)
            hold = f"about {seconds:.2f} s, to swap in {', '.join(t for t, _rows in tables)} (rebuilt online first)"
        else:
            seconds = size / BLOCKING_BYTES_PER_S if plan.steps else SWAP_S
            hold = f"while its revisions run (up to about {seconds:.1f} s if one rebuilds a table as large as the file)"
        line = f"{plan.name}: {who} wait {hold}"
        if backing_up and size and mode != "wal":
            copy = size / BACKUP_COPY_BYTES_PER_S
            seconds = max(seconds, copy)
            line += (f"; writers wait about {copy:.2f} s for the backup's copy"
                     " (rollback-journal mode; in WAL mode they would not: --wal)")
        if seconds >= CLIENT_TIMEOUT_S / 2:
            line += f"; a client with a busy timeout under {seconds:.0f} s may get 'database is locked'"
        lines.append(line)
    return lines
