"""Benchmark of an online rebuild of raw_messages, against the same revision run blocking by plain Alembic.

    python bench/bench_upgrade.py [--messages 1000000] [--repeat 1]

The revision (tests/clients.py ONLINE_REBUILD) rebuilds raw_messages with
`online.batch_alter_table(recreate="always")`, a backfilled column and a new index. Plain
`alembic upgrade head` runs it as one blocking transaction (Alembic's batch mode plus the
backfill): the obvious alternative. `tg-parser db upgrade --only raw` runs it online.

In each journal mode (rollback journal, as TG_parser 3.x creates its files, and WAL):
1. online ÷ blocking: both without clients, on fresh copies, interleaved (medians of --repeat),
   tg-parser without its backup (Alembic takes none), and once more with it;
2. the clients of tests/clients.py (a writer into raw_messages and a reader of it, 5 s busy
   timeout, the application's own) running throughout a whole `tg-parser db upgrade`, backup
   included: their longest single wait and their failed operations; then the same clients
   throughout the blocking run, for comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from clients import ONLINE_REBUILD, make_raw_database, running  # noqa: E402

from tg_parser.storage.databases import get_database  # noqa: E402

HEADER = '''"""Rebuild raw_messages online, with a backfilled text_len and its index."""
import os
import time

import sqlalchemy as sa
from alembic import op

revision = "raw_0002"
down_revision = "raw_0001"
branch_labels = None
depends_on = None
'''


def projects_with_rebuild(work: Path) -> Path:
    root = work / "projects"
    shutil.copytree(get_database("raw").migrations_dir, root / "migrations_raw",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "migrations_raw" / "versions" / "raw_0002_online.py").write_text(HEADER + ONLINE_REBUILD)
    return root


def environment(projects: Path | None, raw: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_DB_PATH", "_DB_URL"))}
    env = {**env, "RAW_STORAGE_DB_PATH": str(raw), "TG_PARSER_DATA_DIR": str(raw.parent / "data"), "LOG_LEVEL": "WARNING"}
    if projects is not None:
        env["PYTHONPATH"] = str(projects)
    return env


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def online(projects: Path, raw: Path, backup: bool = False) -> float:
    extra = [] if backup else ["--no-backup"]
    return timed([sys.executable, "-m", "tg_parser", "db", "upgrade", "--only", "raw", *extra], environment(projects, raw))


def blocking(projects: Path, raw: Path) -> float:
    ini = projects / "migrations_raw" / "alembic.ini"
    return timed([sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"], environment(projects, raw))


def fresh_copy(adopted: Path, work: Path, mode: str) -> Path:
    folder = work / "run"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    copy = folder / "raw_storage.sqlite"
    shutil.copyfile(adopted, copy)
    with sqlite3.connect(copy) as connection:
        connection.execute(f"PRAGMA journal_mode = {mode}")
    connection.close()
    os.sync()
    return copy


def with_clients(adopted: Path, work: Path, mode: str, run) -> tuple[float, dict]:
    raw = fresh_copy(adopted, work, mode)
    with running(work, writer=("write-raw", raw), reader=("read-raw", raw)) as logs:
        seconds = run(raw)
    return seconds, logs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tg-parser-bench-upgrade-", dir=os.environ.get("BENCH_DIR")) as folder:
        work = Path(folder)
        projects = projects_with_rebuild(work)
        adopted = work / "adopted.sqlite"
        make_raw_database(adopted, args.messages)
        timed([sys.executable, "-m", "tg_parser", "db", "upgrade", "raw_0001", "--only", "raw", "--no-backup"],
              environment(projects, adopted))
        print(f"raw database: {args.messages:,} messages, {adopted.stat().st_size / 1e6:,.0f} MB")
        for mode in ("delete", "wal"):
            ours, ours_backup, theirs = [], [], []
            for _ in range(args.repeat):
                ours.append(online(projects, fresh_copy(adopted, work, mode)))
                theirs.append(blocking(projects, fresh_copy(adopted, work, mode)))
                ours_backup.append(online(projects, fresh_copy(adopted, work, mode), backup=True))
            base = statistics.median(theirs)
            ratio = statistics.median(ours) / base
            print(f"\njournal mode {mode}")
            print(f"  blocking: plain alembic upgrade head           {base:7.2f} s")
            print(f"  online: tg-parser db upgrade --no-backup       {statistics.median(ours):7.2f} s"
                  f"  ratio {ratio:.2f} (target <= 2.0) {'ok' if ratio <= 2.0 else 'MISSED'}")
            print(f"  online: tg-parser db upgrade, with its backup  {statistics.median(ours_backup):7.2f} s"
                  f"  ratio {statistics.median(ours_backup) / base:.2f}")
            for label, run in (("online, with its backup", lambda raw: online(projects, raw, backup=True)),
                               ("blocking", lambda raw: blocking(projects, raw))):
                seconds, logs = with_clients(adopted, work, mode, run)
                writer, reader = logs["writer"], logs["reader"]
                failed = len(writer.errors) + len(reader.errors)
                print(f"  clients through the {label} run ({seconds:.1f} s): longest write wait {writer.longest_wait:.3f} s,"
                      f" longest read wait {reader.longest_wait:.3f} s, {len(writer.ok)} writes, {len(reader.ok)} reads,"
                      f" {failed} failed")


if __name__ == "__main__":
    main()
