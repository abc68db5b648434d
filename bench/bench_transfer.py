"""Benchmark of `tg-parser db transfer` against a bare COPY of the same rows into the same schema.

    TG_PARSER_TEST_POSTGRES_URL=postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres \\
        python bench/bench_transfer.py [--messages 1000000] [--repeat 3]

Both sides are timed end to end, as processes, into a fresh database each time, alternately,
each after a checkpoint and a sync:
- `tg-parser db transfer --only raw`: brings the target to head, copies, verifies counts and
  checksums on both sides, commits;
- `psql -c "\\copy raw_messages FROM file (FORMAT csv)"` into a database already at head
  (indexes included), fed the same rows from a CSV file prepared beforehand (neither the dump
  nor the schema is timed).
Prints the medians, their ratio in rows/s (target >= 0.85) and the transfer's peak memory
(max RSS), which should not grow with --messages.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_migrations import TG_PARSER, environment, make_raw_database  # noqa: E402

SERVER = os.environ.get("TG_PARSER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres")


def timed_process(command: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak memory (MB) of one process, which must succeed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:4]} failed: {process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    psql = shutil.which("psql") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))), None)
    if psql is None:
        raise SystemExit("psql not found: install PostgreSQL's client")
    admin = create_engine(SERVER, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def settle() -> None:
        """Each timed run starts with nothing left to write from the one before: a checkpoint, then sync."""
        with admin.connect() as connection:
            connection.exec_driver_sql("CHECKPOINT")
        os.sync()

    def fresh_database():
        name = f"tg_parser_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        return make_url(SERVER).set(database=name)

    with tempfile.TemporaryDirectory(prefix="tg-parser-bench-") as folder:
        work = Path(folder)
        raw = work / "raw_storage.sqlite"
        make_raw_database(raw, args.messages)
        env = environment(work / "data", RAW_STORAGE_DB_PATH=str(raw))
        subprocess.run([*TG_PARSER, "db", "upgrade", "--only", "raw", "--no-backup"], env=env, check=True,
                       capture_output=True)
        with sqlite3.connect(raw) as connection:
            rows = connection.execute("SELECT count(*) FROM raw_messages").fetchone()[0]
        dump = work / "raw_messages.csv"
        with sqlite3.connect(raw) as source, open(dump, "w", newline="") as out:
            csv.writer(out).writerows(source.execute("SELECT * FROM raw_messages"))
        size_mb = raw.stat().st_size / 1e6
        transfers, copies, peaks = [], [], []
        try:
            for _ in range(args.repeat):
                target = fresh_database().render_as_string(hide_password=False)
                settle()
                seconds, peak = timed_process([*TG_PARSER, "db", "transfer", "--only", "raw", "--to", target], env)
                transfers.append(seconds)
                peaks.append(peak)

                at_head = fresh_database()
                subprocess.run([*TG_PARSER, "db", "upgrade", "--only", "raw"], check=True, capture_output=True,
                               env={**env, "RAW_STORAGE_DB_URL": at_head.render_as_string(hide_password=False)})
                plain = at_head.set(drivername="postgresql").render_as_string(hide_password=False)
                settle()
                copies.append(timed_process([psql, "-q", "-v", "ON_ERROR_STOP=1", plain, "-c",
                                             f"\\copy raw_messages FROM '{dump}' (FORMAT csv)"], env)[0])
        finally:
            with admin.connect() as connection:
                for name in made:
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()

    transfer, copy = statistics.median(transfers), statistics.median(copies)
    print(f"raw messages:               {rows:,} ({size_mb:,.0f} MB SQLite file), medians of {args.repeat}")
    print(f"tg-parser db transfer:      {transfer:8.2f} s  {rows / transfer:10,.0f} rows/s"
          f"  (upgrade, copy, verify; runs: {', '.join(f'{s:.2f}' for s in transfers)})")
    print(f"psql \\copy (csv):           {copy:8.2f} s  {rows / copy:10,.0f} rows/s"
          f"  (runs: {', '.join(f'{s:.2f}' for s in copies)})")
    print(f"ratio transfer / COPY:      {copy / transfer:8.2f}  (target >= 0.85)")
    print(f"transfer peak memory (RSS): {max(peaks):8.0f} MB")


if __name__ == "__main__":
    main()
