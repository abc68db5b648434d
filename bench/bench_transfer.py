"""Benchmark of `tg-parser db transfer` against a bare PostgreSQL COPY of the same rows.

    TG_PARSER_TEST_POSTGRES_URL=postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres \\
        python bench/bench_transfer.py [--messages 1000000]

Prints the transfer's rows/s (end to end: a `tg-parser` process that brings the target to
head, copies, and verifies counts and checksums), the rows/s of `COPY raw_messages FROM STDIN`
fed the same rows from a prepared file, their ratio (target >= 0.5), and the peak memory
(max RSS) of the transfer process.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_migrations import TG_PARSER, environment, make_raw_database  # noqa: E402

SERVER = os.environ.get("TG_PARSER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres")


def scratch_database(admin, name: str):
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return make_url(SERVER).set(database=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    admin = create_engine(SERVER, isolation_level="AUTOCOMMIT")
    names = [f"tg_parser_bench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with tempfile.TemporaryDirectory(prefix="tg-parser-bench-") as folder:
        work = Path(folder)
        raw = work / "raw_storage.sqlite"
        make_raw_database(raw, args.messages)
        env = environment(work / "data", RAW_STORAGE_DB_PATH=str(raw))
        subprocess.run([*TG_PARSER, "db", "upgrade", "--only", "raw", "--no-backup"], env=env, check=True,
                       capture_output=True)
        with sqlite3.connect(raw) as connection:
            rows = connection.execute("SELECT count(*) FROM raw_messages").fetchone()[0]
        size_mb = raw.stat().st_size / 1e6
        try:
            transfer_url, copy_url = (scratch_database(admin, name) for name in names)

            started = time.perf_counter()
            subprocess.run(
                [*TG_PARSER, "db", "transfer", "--only", "raw", "--to", transfer_url.render_as_string(hide_password=False)],
                env=env, check=True, capture_output=True,
            )
            transfer_seconds = time.perf_counter() - started
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

            subprocess.run(
                [*TG_PARSER, "db", "upgrade", "--only", "raw"],
                env={**env, "RAW_STORAGE_DB_URL": copy_url.render_as_string(hide_password=False)},
                check=True, capture_output=True,
            )
            dump = work / "raw_messages.csv"
            with sqlite3.connect(raw) as source, open(dump, "w", newline="") as out:
                csv.writer(out).writerows(source.execute("SELECT * FROM raw_messages"))
            plain = copy_url.set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(plain) as connection, open(dump, "rb") as data:
                started = time.perf_counter()
                with connection.cursor().copy("COPY raw_messages FROM STDIN (FORMAT csv)") as copy:
                    while block := data.read(1 << 20):
                        copy.write(block)
                connection.commit()
                copy_seconds = time.perf_counter() - started
        finally:
            with admin.connect() as connection:
                for name in names:
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()

    transfer_rate, copy_rate = rows / transfer_seconds, rows / copy_seconds
    print(f"raw messages:            {rows:,} ({size_mb:,.0f} MB SQLite file)")
    print(f"tg-parser db transfer:   {transfer_seconds:8.2f} s  {transfer_rate:12,.0f} rows/s  (upgrade, copy, verify)")
    print(f"COPY FROM STDIN (csv):   {copy_seconds:8.2f} s  {copy_rate:12,.0f} rows/s")
    print(f"ratio transfer / COPY:   {transfer_rate / copy_rate:8.2f}  (target >= 0.5)")
    print(f"peak memory (max RSS):   {peak_mb:8.0f} MB")


if __name__ == "__main__":
    main()
