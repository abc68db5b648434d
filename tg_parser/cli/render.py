"""What `tg-parser` prints (a table for people, JSON for machines) and which exit code it returns.

The heavier modules (orchestrator, backups, checks) are imported by the functions that need
them, so a quick command such as `tg-parser db current` loads only what it uses.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

import click

from tg_parser.cli import logs
from tg_parser.migrate.errors import (
    MigrationFailed,
    Refused,
    Unreadable,
    UsageProblem,
    describe_error,
)
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
            logs.human(f"refused: {problem}")
        logs.human("Nothing was changed.")
        sys.exit(EXIT_REFUSED)
    except UsageProblem as problem:
        logs.human(f"error: {problem}")
        logs.human("Nothing was changed.")
        sys.exit(EXIT_USAGE)
    except LockTimeout as error:
        logs.human(f"error: {error}")
        logs.human("Nothing was changed.")
        sys.exit(EXIT_FAILED)
    except Unreadable as error:
        logs.human(f"error: {error}")
        sys.exit(EXIT_FAILED)
    except Interrupted as interruption:
        committed = [o.name for o in interruption.outcomes if o.status == "committed"]
        name = signal.Signals(interruption.signum).name
        if committed:
            logs.human(f"interrupted by {name} after {', '.join(committed)} committed; the rest was rolled back")
        else:
            logs.human(f"interrupted by {name}: every change was rolled back")
        _fates(interruption.outcomes)
        sys.exit(interruption.exit_code)
    except MigrationFailed as failure:
        logs.human(f"error: {failure}")
        _fates(failure.outcomes)
        if failure.partial:
            logs.human("The final commits were cut off: run the same command again to finish.")
            sys.exit(EXIT_PARTIAL)
        logs.human("Every database was rolled back: no data was changed.")
        sys.exit(EXIT_FAILED)
    except Exception as error:  # a driver's or Alembic's error: one line, not a traceback
        logs.human(f"error: {describe_error(error)}")
        sys.exit(EXIT_FAILED)


def _fates(outcomes) -> None:
    for outcome in outcomes:
        logs.human(f"  {outcome.name:<{NAME_WIDTH}} {outcome.status}  ({_revisions(outcome.after)})")


def waiting(target: Target, timeout: float) -> None:
    logs.human(
        f"{target.name:<{NAME_WIDTH}} in use by another process; waiting up to {timeout:g} s (TG_PARSER_LOCK_TIMEOUT)",
        logging.WARNING,
    )


def holds(lines: list[str]) -> None:
    """Before the run takes its locks: which databases it will hold, about how long, and who waits."""
    for line in lines:
        click.echo(f"holds   {line}")


def confirm(reasons: list[str], yes: bool, question: str) -> bool:
    """--yes confirms; at a terminal, ask; otherwise refuse (the caller says why)."""
    if not yes and not sys.stdin.isatty():
        return False
    for reason in reasons:
        logs.human(f"warning: {reason}", logging.WARNING)
    return yes or click.confirm(question, default=False, err=True)  # only at a terminal


def progress(label: str, total: int):
    """A progress bar on stderr for long copies; silent for small files and when stderr carries JSON."""
    if total < PROGRESS_MIN_BYTES or logs.state.json_on_stderr:
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
    held = ", ".join(f"{o.name} {o.held_seconds:.2f} s" for o in changed)
    backup_hold = max((o.backup_held_seconds for o in changed if o.backup), default=0.0)
    parts = [f"{reverted} revision(s) reverted" if reverted else f"{applied} revision(s) applied"]
    parts += [f"{adopted} database(s) adopted"] if adopted else []
    rebuilt = sum(len(o.rebuilt) for o in changed)
    parts += [f"{rebuilt} table(s) rebuilt"] if rebuilt else []
    parts += [f"{backups} backup(s) taken"] if backups else []
    click.echo(f"Committed {', '.join(o.name for o in changed)}: {', '.join(parts)}, in {time.perf_counter() - started:.2f} s.")
    click.echo(f"Held {held}: the longest a writer (in rollback-journal mode, a reader too) waited for the run.")
    if backup_hold:
        click.echo(f"The backups kept writers from committing for at most {backup_hold:.2f} s.")


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
    for table in outcome.online:
        click.echo(f"  rebuilt {table} online (built beside it while clients ran; only swapped in under the lock)")
    for table in outcome.blocking:
        click.echo(f"  rebuilt {table} inside the held transaction (it could not be prepared online)")
    for step in outcome.steps:
        verb = "applied " if step.upgrade else "reverted"
        click.echo(f"  {verb} {step.revision}  {step.description}  ({step.seconds:.2f} s)")
    if outcome.steps or outcome.adoption:
        click.echo(f"  at {_revisions(outcome.after)} once committed")
    else:
        click.echo(f"  unchanged at {_revisions(outcome.after)}")


def row_progress(label: str, total: int):
    """A progress bar of rows for one table; None for small tables and when stderr carries JSON."""
    if total < 50_000 or logs.state.json_on_stderr:
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
        logs.human(f"MISMATCH in {len(bad)} table(s): {tables}. Rolled back: the target is as it was.")
    else:
        click.echo(f"Transferred {total:,} rows in {len(reports)} tables; every count and checksum matches.")


def upgrade_sql(target: Target, revision: str, repair: bool = False) -> None:
    from tg_parser.migrate.orchestrator import upgrade_sql as write_upgrade_sql

    write_upgrade_sql(target, revision, sys.stdout, repair)


def print_json(entries: list[dict], **extra) -> None:
    """Every `--json` output has one shape: an object whose `databases` list holds one entry per
    database, each with the keys of `Status.as_json` plus the command's own."""
    click.echo(json.dumps({**extra, "databases": entries}, indent=2, default=str))


def statuses(targets: list[Target]):
    from tg_parser.migrate.status import status

    return [status(t) for t in targets]


def exit_if_unreadable(found) -> None:
    """Every database has been shown; one that could not be read still makes the command fail:
    3 for one that is not a database, 1 for one another process kept locked (as a lock timeout)."""
    from tg_parser.migrate.status import BUSY, UNREADABLE

    if any(s.state == UNREADABLE for s in found):
        sys.exit(EXIT_REFUSED)
    if any(s.state == BUSY for s in found):
        sys.exit(EXIT_FAILED)


def current(targets: list[Target], as_json: bool) -> None:
    from tg_parser.migrate.status import describe

    found = statuses(targets)
    if as_json:
        print_json([s.as_json() for s in found])
    else:
        for s in found:
            click.echo(f"{s.name:<{NAME_WIDTH}} {describe(s):<28} {s.location}")
    exit_if_unreadable(found)


def history(targets: list[Target], as_json: bool, verbose: bool) -> None:
    from tg_parser.migrate.status import describe

    found = statuses(targets)
    entries = []
    for target, state in zip(targets, found):
        revisions = [
            {
                "revision": script.revision,
                "down_revision": script.down_revision,
                "description": script.doc,
                "path": script.path,
                "head": script.revision in state.heads,
                "current": script.revision in state.current,
            }
            for script in target.script.walk_revisions()
        ]
        entries.append({**state.as_json(), "revisions": revisions})
    if as_json:
        print_json(entries)
    else:
        for entry, target, state in zip(entries, targets, found):
            click.echo(f"{entry['name']:<{NAME_WIDTH}} {entry['location']}")
            if state.problem:
                click.echo(f"  {describe(state)}")
            for rev in entry["revisions"]:
                marks = [m for m in ("head", "current") if rev[m]]
                suffix = f" ({', '.join(marks)})" if marks else ""
                click.echo(f"  {rev['revision']}{suffix}  {rev['description']}")
                if verbose:
                    script = target.script.get_revision(rev["revision"])
                    click.echo(f"      revises {rev['down_revision'] or '(base)'}; file {rev['path']}")
                    for line in (script.longdoc or "").splitlines()[1:]:
                        click.echo(f"      {line}".rstrip())
    exit_if_unreadable(found)


def plan(plans: list, as_json: bool) -> None:
    """What a run would do to each database; nothing has been touched."""
    if as_json:
        found = {s.name: s for s in statuses([p.target for p in plans])}
        print_json([
            {**found[p.name].as_json(),
             "adoption": {"baseline": p.adoption.baseline, "creates": list(p.adoption.missing_tables)} if p.adoption else None,
             "steps": [{"revision": s.revision, "description": s.description, "upgrade": s.upgrade, "path": s.path,
                        "destructive": s.destructive} for s in p.steps],
             "rebuilds": [{"table": r.table, "online": r.online, "why_blocking": r.why_blocking or None}
                          for r in p.rebuilds]}
            for p in plans
        ])
        return
    for p in plans:
        click.echo(f"{p.name:<{NAME_WIDTH}} {p.target.location}")
        if p.adoption:
            created = f" (creating {', '.join(p.adoption.missing_tables)})" if p.adoption.missing_tables else ""
            click.echo(f"  would adopt a pre-Alembic database as {p.adoption.baseline}{created}")
        if not p.steps:
            click.echo(f"  nothing to run (at {_revisions(p.before)})")
        for step in p.steps:
            click.echo(f"  would {'apply ' if step.upgrade else 'revert'} {step.revision}  {step.description}")
            for reason in step.destructive:
                click.echo(f"      DESTRUCTIVE: {reason}")
        for rebuild in p.rebuilds:
            where = "online: built beside it while clients run, swapped in under the lock" if rebuild.online else (
                f"inside the held transaction, blocking: {rebuild.why_blocking}")
            click.echo(f"  rebuilds {rebuild.table} {where}")
    from tg_parser.migrate import holds as hold_estimates

    busy = [p for p in plans if p.needs_work]
    rows = {p.name: [(r.table, _rows(p, r.table)) for r in p.rebuilds if r.online] for p in busy}
    for line in hold_estimates.describe(busy, rows, backing_up=True):
        click.echo(f"holds   {line}")
    click.echo("Nothing was changed.")


def _rows(plan, table: str) -> int:
    with plan.target.connect() as connection:
        return connection.exec_driver_sql(f'SELECT count(*) FROM "{table}"').scalar()


def heads(targets: list[Target], as_json: bool) -> None:
    found = statuses(targets)
    if as_json:
        print_json([s.as_json() for s in found])
    else:
        for s in found:
            click.echo(f"{s.name:<{NAME_WIDTH}} {', '.join(s.heads)}")


def check(results: list, as_json: bool) -> None:
    if as_json:
        print_json([r.as_json() for r in results], ok=all(r.ok for r in results))
        return
    for result in results:
        verdict = "ok" if result.ok else "FAILED"
        click.echo(f"{result.status.name:<{NAME_WIDTH}} {verdict:<7} {result.status.location}")
        for problem in result.problems:
            click.echo(f"  {problem}")
    failed = sum(not r.ok for r in results)
    click.echo("All checks passed." if not failed else f"{failed} database(s) failed the check.")


def backups(directory: Path, targets: list[Target], as_json: bool) -> None:
    from tg_parser.migrate import backup

    found = backup.list_backups(directory)
    if as_json:
        print_json([
            {**s.as_json(), "backups": [
                {"file": b.path.name, "path": str(b.path), "revision": b.revision, "taken_at": b.taken_at.isoformat(),
                 "bytes": b.size, "reason": b.reason, "checksum": b.checksum}
                for b in found if b.db == s.name
            ]}
            for s in statuses(targets)
        ])
        return
    names = {t.name for t in targets}
    shown = [b for b in found if b.db in names]
    if not shown:
        click.echo(f"No backups in {directory}.")
        return
    for b in shown:
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
