"""What `tg-parser` prints (a table for people, JSON for machines) and which exit code it returns.

The heavier modules (orchestrator, backups, checks) are imported by the functions that need
them, so a quick command such as `tg-parser db current` loads only what it uses.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import click

from tg_parser.migrate.errors import MigrationFailed, Refused, Unreadable, UsageProblem
from tg_parser.migrate.interrupt import Interrupted
from tg_parser.migrate.target import Target
from tg_parser.storage.lock import LockTimeout

NAME_WIDTH = 10
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_PARTIAL = 4
PROGRESS_MIN_BYTES = 64 * 1024 * 1024


def guarded(action):
    """Run `action`, turning the orchestrator's refusals and failures into messages and exit codes."""
    try:
        return action()
    except Refused as refusal:
        for problem in refusal.problems:
            click.echo(f"refused: {problem}", err=True)
        click.echo("Nothing was changed.", err=True)
        sys.exit(EXIT_REFUSED)
    except UsageProblem as problem:
        click.echo(f"error: {problem}", err=True)
        click.echo("Nothing was changed.", err=True)
        sys.exit(EXIT_USAGE)
    except LockTimeout as error:
        click.echo(f"error: {error}", err=True)
        click.echo("Nothing was changed.", err=True)
        sys.exit(EXIT_FAILED)
    except Unreadable as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_FAILED)
    except Interrupted as interruption:
        click.echo(f"interrupted by {signal.Signals(interruption.signum).name}: every change was rolled back", err=True)
        _fates(interruption.outcomes)
        sys.exit(interruption.exit_code)
    except MigrationFailed as failure:
        click.echo(f"error: {failure}", err=True)
        _fates(failure.outcomes)
        if failure.partial:
            click.echo("The final commits were cut off: run the same command again to finish.", err=True)
            sys.exit(EXIT_PARTIAL)
        click.echo("Every database was rolled back: nothing was changed.", err=True)
        sys.exit(EXIT_FAILED)
    except Exception as error:  # Alembic's CommandError and the like: one line, not a traceback
        click.echo(f"error: {type(error).__name__}: {error}", err=True)
        sys.exit(EXIT_FAILED)


def _fates(outcomes) -> None:
    for outcome in outcomes:
        click.echo(f"  {outcome.name:<{NAME_WIDTH}} {outcome.status}  ({_revisions(outcome.after)})", err=True)


def waiting(target: Target, timeout: float) -> None:
    click.echo(
        f"{target.name:<{NAME_WIDTH}} in use by another process; waiting up to {timeout:g} s (TG_PARSER_LOCK_TIMEOUT)",
        err=True,
    )


def confirm(reasons: list[str], yes: bool, question: str) -> bool:
    """--yes confirms; at a terminal, ask; otherwise refuse (the caller says why)."""
    if not yes and not sys.stdin.isatty():
        return False
    for reason in reasons:
        click.echo(f"warning: {reason}", err=True)
    return yes or click.confirm(question, default=False, err=True)


def progress(label: str, total: int):
    """A progress bar on stderr for long copies; silent for small files."""
    if total < PROGRESS_MIN_BYTES:
        return None
    bar = click.progressbar(length=total, label=label, file=sys.stderr)
    state = {"done": 0}

    def update(done: int, _total: int) -> None:
        bar.update(done - state["done"])
        state["done"] = done
        if done >= total:
            bar.render_finish()

    return update


def _revisions(revisions) -> str:
    return ", ".join(revisions) if revisions else "(none)"


def run_migration(function, targets: list[Target], revision: str, options) -> None:
    started = time.perf_counter()
    outcomes = guarded(lambda: function(targets, revision, options, report=outcome))
    changed = [o for o in outcomes if o.changed]
    if not changed:
        click.echo("Nothing to do: every database is already where it was asked to be.")
        return
    applied = sum(step.upgrade for o in changed for step in o.steps)
    reverted = sum(not step.upgrade for o in changed for step in o.steps)
    adopted = sum(o.adoption is not None for o in changed)
    backups = sum(o.backup is not None for o in changed)
    held = max(o.held_seconds for o in changed)
    parts = [f"{reverted} revision(s) reverted" if reverted else f"{applied} revision(s) applied"]
    parts += [f"{adopted} database(s) adopted"] if adopted else []
    rebuilt = sum(len(o.rebuilt) for o in changed)
    parts += [f"{rebuilt} table(s) rebuilt"] if rebuilt else []
    parts += [f"{backups} backup(s) taken"] if backups else []
    click.echo(f"Committed {', '.join(o.name for o in changed)}: {', '.join(parts)}, in {time.perf_counter() - started:.2f} s.")
    click.echo(f"Writers to these databases waited at most {held:.2f} s.")


def outcome(outcome) -> None:
    """One database's part of the run, printed when its revisions have run (the commit comes after all)."""
    click.echo(f"{outcome.name:<{NAME_WIDTH}} {outcome.location}")
    if outcome.backup:
        click.echo(f"  backed up to {outcome.backup.path}")
    for table, rows in outcome.rebuilt.items():
        click.echo(f"  rebuilt {table} into the baseline's form ({rows} rows; count and checksum verified)")
    if outcome.adoption:
        created = ", ".join(outcome.adoption.missing_tables)
        click.echo(
            f"  adopted {outcome.adoption.origin} as {outcome.adoption.baseline}"
            + (f" (created {created})" if created else "")
        )
    for step in outcome.steps:
        verb = "applied " if step.upgrade else "reverted"
        click.echo(f"  {verb} {step.revision}  {step.description}  ({step.seconds:.2f} s)")
    if outcome.steps or outcome.adoption:
        click.echo(f"  at {_revisions(outcome.after)} once committed")
    else:
        click.echo(f"  unchanged at {_revisions(outcome.after)}")


def row_progress(label: str, total: int):
    """A progress bar of rows for one table; None for small tables."""
    if total < 50_000:
        return None
    bar = click.progressbar(length=total, label=label, file=sys.stderr)

    def advance(rows: int) -> None:
        bar.update(rows)
        if bar.pos >= total:
            bar.render_finish()

    return advance


def transfer(reports: list) -> None:
    click.echo(f"{'database':<{NAME_WIDTH}} {'table':<22} {'source rows':>12} {'target rows':>12}  checksum  {'rows/s':>9}")
    for r in reports:
        verdict = "equal" if r.source_checksum == r.target_checksum else "DIFFERS"
        rate = r.source_rows / r.seconds if r.seconds else 0
        click.echo(
            f"{r.database:<{NAME_WIDTH}} {r.table:<22} {r.source_rows:>12,} {r.target_rows:>12,}  {verdict:<8}  {rate:>9,.0f}"
        )
    bad = [r for r in reports if not r.ok]
    total = sum(r.source_rows for r in reports)
    if bad:
        tables = ", ".join(f"{r.database}.{r.table}" for r in bad)
        click.echo(f"MISMATCH in {len(bad)} table(s): {tables}. Rolled back: the target is as it was.", err=True)
    else:
        click.echo(f"Transferred {total:,} rows in {len(reports)} tables; every count and checksum matches.")


def upgrade_sql(target: Target, revision: str, repair: bool = False) -> None:
    from tg_parser.migrate.orchestrator import upgrade_sql as write_upgrade_sql

    write_upgrade_sql(target, revision, sys.stdout, repair)


def _state(target: Target) -> dict:
    exists = target.exists()
    current = guarded(target.current) if exists else ()
    heads = target.heads()
    return {
        "name": target.name,
        "location": target.location,
        "exists": exists,
        "current": list(current),
        "heads": list(heads),
        "at_head": exists and set(current) == set(heads),
        "release": target.db.earlier_release(current),
    }


def current(targets: list[Target], as_json: bool) -> None:
    states = [_state(t) for t in targets]
    if as_json:
        click.echo(json.dumps(states, indent=2))
        return
    for s in states:
        if not s["exists"]:
            text = "(no file yet)"
        else:
            text = _revisions(s["current"]) + (" (head)" if s["at_head"] else " (behind head)")
            if s["release"]:
                text = f"{_revisions(s['current'])} ({s['release']} revision, adopted by the next upgrade)"
        click.echo(f"{s['name']:<{NAME_WIDTH}} {text:<28} {s['location']}")


def history(targets: list[Target], as_json: bool) -> None:
    data = []
    for target in targets:
        state = _state(target)
        revisions = [
            {
                "revision": script.revision,
                "down_revision": script.down_revision,
                "description": script.doc,
                "head": script.revision in state["heads"],
                "current": script.revision in state["current"],
            }
            for script in target.script.walk_revisions()
        ]
        data.append({"name": target.name, "location": target.location, "revisions": revisions})
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for entry in data:
        click.echo(f"{entry['name']:<{NAME_WIDTH}} {entry['location']}")
        for rev in entry["revisions"]:
            marks = [m for m in ("head", "current") if rev[m]]
            suffix = f" ({', '.join(marks)})" if marks else ""
            click.echo(f"  {rev['revision']}{suffix}  {rev['description']}")


def check(results: list, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": all(r.ok for r in results),
                    "databases": [{**vars(r), "ok": r.ok} for r in results],
                },
                indent=2,
            )
        )
        return
    for result in results:
        verdict = "ok" if result.ok else "FAILED"
        click.echo(f"{result.name:<{NAME_WIDTH}} {verdict:<7} {result.location}")
        for problem in result.problems:
            click.echo(f"  {problem}")
    failed = sum(not r.ok for r in results)
    click.echo("All checks passed." if not failed else f"{failed} database(s) failed the check.")


def backups(directory: Path, names: list[str]) -> None:
    from tg_parser.migrate import backup

    found = [b for b in backup.list_backups(directory) if b.db in names]
    if not found:
        click.echo(f"No backups in {directory}.")
        return
    for b in found:
        taken = b.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        reason = b.reason or "(no manifest)"
        click.echo(
            f"{b.db:<{NAME_WIDTH}} {b.revision:<18} {taken}  {human_size(b.size):>9}  {reason:<15} {b.path.name}"
        )


def human_size(size: float) -> str:
    """512 B, 45.1 KB, 1.2 GB: readable at every scale."""
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
