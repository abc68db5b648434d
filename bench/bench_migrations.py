"""Benchmark of `tg-parser init`/`db` against the obvious alternatives, run side by side.

    python bench/bench_migrations.py [--messages 1000000] [--repeat 7]

Prints four ratios (lower is better) with their targets:
1. `tg-parser init` (three databases) / three plain `alembic -c ... upgrade head` processes;
2. no-op `tg-parser db current` (three databases) / one plain `alembic -c ... current`;
3. backup of a large raw database / `cp` of the same file;
4. adoption of a 3.0.0 raw database with --messages rows / one with 10 rows (`--no-backup`).
Every timing is the median of --repeat runs; the alternatives are interleaved with ours.
"""

from __future__ import annotations

import argparse
import os
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

from clients import make_raw_database  # noqa: E402

from tg_parser.migrate import backup  # noqa: E402
from tg_parser.storage.databases import DATABASES  # noqa: E402

TG_PARSER = [sys.executable, "-m", "tg_parser"]
ALEMBIC = [sys.executable, "-m", "alembic"]


def timed(command: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def environment(data_dir: Path, **extra: str) -> dict:
    """Both sides get the same environment, with bytecode caching on as in an installed package."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_DB_PATH", "_DB_URL")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    return {**env, "TG_PARSER_DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING", **extra}


def bench_init(work: Path, repeat: int) -> tuple[float, float]:
    ours, theirs = [], []
    for i in range(repeat):
        ours_dir, theirs_dir = work / f"init-ours-{i}", work / f"init-alembic-{i}"
        ours.append(timed([*TG_PARSER, "init"], environment(ours_dir), work))
        theirs.append(
            sum(
                timed([*ALEMBIC, "-c", str(db.alembic_ini), "upgrade", "head"], environment(theirs_dir), work)
                for db in DATABASES
            )
        )
    return statistics.median(ours), statistics.median(theirs)


def bench_current(work: Path, repeat: int) -> tuple[float, float]:
    data_dir = work / "current"
    subprocess.run([*TG_PARSER, "init"], env=environment(data_dir), cwd=work, check=True, capture_output=True)
    raw_ini = str(DATABASES[1].alembic_ini)
    ours, theirs = [], []
    timed([*ALEMBIC, "-c", raw_ini, "current"], environment(data_dir), work)  # warm-up: writes bytecode
    for _ in range(repeat):
        ours.append(timed([*TG_PARSER, "db", "current"], environment(data_dir), work))
        theirs.append(timed([*ALEMBIC, "-c", raw_ini, "current"], environment(data_dir), work))
    return statistics.median(ours), statistics.median(theirs)


def bench_backup(work: Path, raw: Path, repeat: int) -> tuple[float, float, float]:
    """Our backup (copy, fsync, check) against `cp`, and against `cp` followed by `sync`.

    Each run starts with nothing left to write back (os.sync, untimed), so no side pays
    for the other's dirty pages; one untimed run of each comes first.
    """
    ours, cp, cp_sync = [], [], []
    copy = work / "cp-copy.sqlite"
    backup.take("raw", "warm-up", "upgrade", raw, work / "backups").path.unlink()  # untimed: a file just written
    subprocess.run(["cp", str(raw), str(copy)], check=True)  # copies slowly at first, for both sides
    copy.unlink()
    for _ in range(repeat):
        os.sync()
        started = time.perf_counter()
        made = backup.take("raw", "bench", "upgrade", raw, work / "backups")
        ours.append(time.perf_counter() - started)
        made.path.unlink()
        os.sync()
        cp.append(timed(["cp", str(raw), str(copy)], dict(os.environ), work))
        copy.unlink()
        os.sync()
        cp_sync.append(timed(["sh", "-c", f"cp '{raw}' '{copy}' && sync '{copy}'"], dict(os.environ), work))
        copy.unlink()
    return statistics.median(ours), statistics.median(cp), statistics.median(cp_sync)


def bench_adoption(work: Path, large: Path, small: Path, repeat: int) -> tuple[float, float]:
    def adopt(path: Path) -> float:
        env = environment(work / "unused", RAW_STORAGE_DB_PATH=str(path))
        seconds = timed([*TG_PARSER, "db", "upgrade", "--only", "raw", "--no-backup"], env, work)
        with sqlite3.connect(path) as connection:  # back to unversioned for the next run
            connection.execute("DROP TABLE alembic_version_raw")
        return seconds

    ours, theirs = [], []
    for _ in range(repeat):
        ours.append(adopt(large))
        theirs.append(adopt(small))
    return statistics.median(ours), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tg-parser-bench-") as folder:
        work = Path(folder)
        results = []
        ours, theirs = bench_init(work, args.repeat)
        results.append(("init (3 dbs) / 3 x alembic upgrade head", ours, theirs, 0.5))
        ours, theirs = bench_current(work, args.repeat * 2)
        results.append(("db current (3 dbs) / 1 x alembic current", ours, theirs, 1.0))

        large, small = work / "raw-large.sqlite", work / "raw-small.sqlite"
        started = time.perf_counter()
        make_raw_database(large, args.messages)
        make_raw_database(small, 10)
        size_mb = large.stat().st_size / 1e6
        print(f"built a raw database of {args.messages:,} messages ({size_mb:,.0f} MB) in {time.perf_counter() - started:.0f} s")
        ours, cp, cp_sync = bench_backup(work, large, max(5, args.repeat // 2))
        results.append((f"backup of {size_mb:,.0f} MB / cp", ours, cp, 1.5))
        results.append((f"backup of {size_mb:,.0f} MB / (cp + sync)", ours, cp_sync, 1.1))
        ours, theirs = bench_adoption(work, large, small, args.repeat)
        results.append((f"adopt {args.messages:,} messages / 10 messages", ours, theirs, 1.2))

    print(f"{'measure':<46} {'ours s':>8} {'alt s':>8} {'ratio':>6} {'target':>7}")
    for label, ours, theirs, target in results:
        ratio = ours / theirs
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{label:<46} {ours:8.3f} {theirs:8.3f} {ratio:6.2f} {'<= ' + str(target):>7} {verdict}")


if __name__ == "__main__":
    main()
