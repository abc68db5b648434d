"""Benchmark of an upgrade that rebuilds raw_messages, against the same SQL run by a bare sqlite3 script.

    python bench/bench_upgrade.py [--messages 1000000] [--repeat 3]

The test revision adds a column to raw_messages in batch mode (SQLite rebuilds the table)
and backfills it. The SQL it runs is recorded once on a small copy, then replayed by a
plain Python `sqlite3` script in one transaction: the obvious alternative, with none of
tg-parser's locking, planning or backups. Each side runs on a fresh copy of the database,
interleaved; the figures are medians.

Also reported: how long a writer committing one row at a time (tests/writer.py) waits for
its longest commit while the upgrade runs, since the upgrade holds the write lock throughout.
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
sys.path.insert(0, str(REPO / "bench"))

from bench_migrations import LEGACY_RAW, make_raw_database  # noqa: E402

from tg_parser.storage.databases import get_database  # noqa: E402

REBUILD = '''"""Rebuild raw_messages with a text_length column, backfilled."""
import sqlalchemy as sa
from alembic import op

revision = "raw_0002"
down_revision = "raw_0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("raw_messages", recreate="always") as batch:
        batch.add_column(sa.Column("text_length", sa.Integer))
    op.execute("UPDATE raw_messages SET text_length = length(text)")


def downgrade():
    with op.batch_alter_table("raw_messages", recreate="always") as batch:
        batch.drop_column("text_length")
'''

BARE = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
for statement in open(sys.argv[2]).read().split(";\\n-- next\\n"):
    connection.execute(statement)
connection.execute("COMMIT")
"""


def projects_with_rebuild(work: Path) -> Path:
    root = work / "projects"
    shutil.copytree(get_database("raw").migrations_dir, root / "migrations_raw",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "migrations_raw" / "versions" / "raw_0002_rebuild.py").write_text(REBUILD)
    return root


def environment(projects: Path, raw: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_DB_PATH", "_DB_URL"))}
    return {**env, "PYTHONPATH": str(projects), "RAW_STORAGE_DB_PATH": str(raw),
            "TG_PARSER_DATA_DIR": str(raw.parent / "data"), "LOG_LEVEL": "WARNING"}


def tg_parser(*args: str, env: dict) -> float:
    """`tg-parser` run from a neutral folder, so the project copies on PYTHONPATH win over the checkout."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tg_parser", *args], env=env, check=True, cwd=tempfile.gettempdir(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def record_sql(work: Path, projects: Path) -> Path:
    """The statements the revision runs, recorded on a small database through SQLAlchemy's own hook."""
    small = work / "small.sqlite"
    shutil.copyfile(LEGACY_RAW, small)
    env = environment(projects, small)
    tg_parser("db", "upgrade", "raw_0001", "--only", "raw", "--no-backup", env=env)
    recorder = f"""
import sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
statements = []
@event.listens_for(Engine, "before_cursor_execute")
def record(conn, cursor, statement, parameters, context, executemany):
    if not statement.lstrip().upper().startswith(("SELECT", "PRAGMA", "BEGIN", "COMMIT", "ROLLBACK")):
        statements.append((statement, parameters))
from tg_parser.cli.main import cli
try:
    cli(["db", "upgrade", "--only", "raw", "--no-backup"], standalone_mode=False)
finally:
    with open({str(work / 'statements.sql')!r}, "w") as out:
        rendered = []
        for statement, parameters in statements:
            for value in parameters or ():
                statement = statement.replace("?", repr(value), 1)
            rendered.append(statement.strip())
        out.write(";\\n-- next\\n".join(rendered))
"""
    subprocess.run([sys.executable, "-c", recorder], env=env, check=True, cwd=tempfile.gettempdir(),
                   stdout=subprocess.DEVNULL)
    return work / "statements.sql"


def fresh_copy(adopted: Path, work: Path) -> Path:
    copy = work / "run" / "raw_storage.sqlite"
    if copy.parent.exists():
        shutil.rmtree(copy.parent)
    copy.parent.mkdir()
    shutil.copyfile(adopted, copy)
    os.sync()
    return copy


def writer_wait(adopted: Path, work: Path, projects: Path) -> tuple[float, float, int, int]:
    raw = fresh_copy(adopted, work)
    log, stop = work / "writer.log", work / "writer.stop"
    log.unlink(missing_ok=True)
    stop.unlink(missing_ok=True)
    writer = subprocess.Popen([sys.executable, str(REPO / "tests" / "writer.py"), str(raw), str(log), str(stop), "0.01"])
    while not log.exists() or len(log.read_text().splitlines()) < 10:
        time.sleep(0.05)
    seconds = tg_parser("db", "upgrade", "--only", "raw", env=environment(projects, raw))
    time.sleep(1)
    stop.touch()
    writer.wait()
    lines = [line.split() for line in log.read_text().splitlines()]
    with sqlite3.connect(raw) as connection:
        present = {row[0] for row in connection.execute("SELECT source_ref FROM raw_messages WHERE channel_id = 'writer'")}
    lost = len({ref for ref, _at, _wait in lines} - present)
    return max(float(wait) for _ref, _at, wait in lines), seconds, len(lines), lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tg-parser-bench-upgrade-", dir=os.environ.get("BENCH_DIR")) as folder:
        work = Path(folder)
        projects = projects_with_rebuild(work)
        statements = record_sql(work, projects)
        adopted = work / "adopted.sqlite"
        make_raw_database(adopted, args.messages)
        tg_parser("db", "upgrade", "raw_0001", "--only", "raw", "--no-backup", env=environment(projects, adopted))
        size_mb = adopted.stat().st_size / 1e6
        print(f"raw database: {args.messages:,} messages, {size_mb:,.0f} MB")

        ours, ours_no_backup, bare = [], [], []
        for _ in range(args.repeat):
            raw = fresh_copy(adopted, work)
            ours.append(tg_parser("db", "upgrade", "--only", "raw", env=environment(projects, raw)))
            raw = fresh_copy(adopted, work)
            ours_no_backup.append(tg_parser("db", "upgrade", "--only", "raw", "--no-backup", env=environment(projects, raw)))
            raw = fresh_copy(adopted, work)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", BARE, str(raw), str(statements)], check=True)
            bare.append(time.perf_counter() - started)
        longest, upgrade_seconds, commits, lost = writer_wait(adopted, work, projects)

    base = statistics.median(bare)
    print(f"{'measure':<58} {'seconds':>8} {'ratio':>6} {'target':>7}")
    print(f"{'bare sqlite3 script, one transaction (the alternative)':<58} {base:8.2f}")
    for label, runs in (("tg-parser db upgrade --only raw (with its backup)", ours),
                        ("tg-parser db upgrade --only raw --no-backup", ours_no_backup)):
        ratio = statistics.median(runs) / base
        print(f"{label:<58} {statistics.median(runs):8.2f} {ratio:6.2f} {'<= 1.3':>7} {'ok' if ratio <= 1.3 else 'MISSED'}")
    print(f"longest commit wait of a concurrent writer: {longest:.2f} s"
          f" (the upgrade took {upgrade_seconds:.2f} s; the writer committed {commits} rows, {lost} lost)")


if __name__ == "__main__":
    main()
