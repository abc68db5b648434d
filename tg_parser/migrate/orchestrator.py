"""Drives the three Alembic projects in the fixed order through Alembic's own command API.

It adds only what Alembic lacks. Every selected database is planned first on plain read
connections, so a usage problem or an unsafe database is refused before any lock is taken.
Then each database's transaction is opened holding its write lock (`HeldTransactions`), the
plan is made again under those locks, backups are taken (the exact state about to change),
and every revision of every database runs inside those transactions. They are committed only
when all succeeded; a failure, Ctrl-C or SIGTERM rolls all of them back. Backups are the
operator's safety net for `db restore`, never the undo path.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.util import CommandError

from tg_parser.core.events import emit
from tg_parser.migrate import adopt, backup
from tg_parser.migrate.errors import MigrationFailed, Refused, Unreadable, UsageProblem, describe_error
from tg_parser.migrate.interrupt import Interrupted, raised_as_interrupted
from tg_parser.migrate.plan import DatabasePlan, Step, plan_database
from tg_parser.migrate.target import Target
from tg_parser.migrate.transactions import HeldTransactions
from tg_parser.storage.lock import LockTimeout, file_identity

SPACE_MARGIN = 1.1
log = logging.getLogger(__name__)


@dataclass
class Options:
    backups_dir: Path
    backup_keep: int
    lock_timeout: float
    backup: bool = True
    confirm: Callable[[list[str]], bool] = lambda reasons: False
    """Asked before a destructive downgrade, with the reasons; False refuses."""
    progress: Callable[[str, int], backup.Progress] | None = None
    """Makes a progress callback for a long step (its label and total bytes)."""
    waiting: Callable[[Target, float], None] | None = None
    """Told when a database is in use by another process and the run starts waiting for it."""
    configured: Sequence[Target] = ()
    """Every configured database, selected or not: none may share a file with a selected one."""
    warn: Callable[[str], None] = lambda text: None
    """Told what the operator should know but that does not stop the command."""
    repair: bool = False
    """Rebuild tables that differ from the baseline only in ways a rebuild removes, then adopt (`--repair`)."""


@dataclass
class Outcome:
    name: str
    location: str
    before: tuple[str, ...]
    after: tuple[str, ...] = ()
    steps: list[Step] = field(default_factory=list)
    adoption: adopt.Adoption | None = None
    rebuilt: dict[str, int] = field(default_factory=dict)
    """Each table `--repair` rebuilt, with its row count (verified with the content checksum)."""
    backup: backup.Backup | None = None
    held_seconds: float = 0.0
    """How long the run held the database's write lock (other writers waited that long at most)."""
    status: str = "not started"
    """not started, unchanged, committed, rolled back."""

    @property
    def changed(self) -> bool:
        return self.status == "committed" and (bool(self.steps) or self.adoption is not None)


def upgrade(targets: Sequence[Target], revision: str, options: Options, report=lambda o: None) -> list[Outcome]:
    return _migrate(_in_order(targets), True, revision, options, report)


def downgrade(targets: Sequence[Target], revision: str, options: Options, report=lambda o: None) -> list[Outcome]:
    return _migrate(list(reversed(_in_order(targets))), False, revision, options, report)


def _in_order(targets: Sequence[Target]) -> list[Target]:
    return sorted(targets, key=lambda t: t.db.order)


def _logs_refusals(function):
    """Every refusal of a command that would change something is also a `run_refused` event."""

    @functools.wraps(function)
    def logged(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Refused as refusal:
            emit(log, "run_refused", logging.WARNING, reasons=refusal.problems)
            raise

    return logged


@_logs_refusals
def _migrate(targets: list[Target], upgrading: bool, revision: str, options: Options, report) -> list[Outcome]:
    refuse_unsafe_files(targets, options.backups_dir if options.backup else None, options.configured)
    preview = _plan_all(targets, None, upgrading, revision, repair=options.repair)
    confirmed = set() if upgrading else _confirm(preview, options)
    outcomes = {t.name: Outcome(t.name, t.location, ()) for t in targets}
    new_files = {t.name for t in targets if t.sqlite_file is not None and not t.holds_data()}
    working: set[str] = set()
    running = targets[0].name
    with raised_as_interrupted() as signals:
        transactions = HeldTransactions(targets, options.lock_timeout, _waiting(options))
        try:
            with transactions:
                plans = _plan_all(targets, transactions, upgrading, revision, repair=options.repair)
                for plan in plans:
                    _log_plan(plan)
                    transactions.note_revision(plan.name, plan.before)
                    outcomes[plan.name].before = outcomes[plan.name].after = plan.before
                    outcomes[plan.name].status = "unchanged"
                    if plan.needs_work:
                        working.add(plan.name)
                unconfirmed = [r for p in plans if not upgrading for r in p.destructive if r not in confirmed]
                if unconfirmed:
                    raise Refused(unconfirmed + ["the database changed since the downgrade was confirmed; run it again"])
                if not any(p.needs_work for p in plans):
                    return [outcomes[t.name] for t in targets]
                _refuse_without_space(plans, options)
                for plan in plans:
                    if plan.target.sqlite_file is not None:
                        backup.clean_partials(options.backups_dir, plan.name)
                    if options.backup:
                        _backup(plan, transactions, outcomes[plan.name], options, "upgrade" if upgrading else "downgrade")
                for plan in plans:
                    running = plan.name
                    _run(plan, transactions.connection(plan.target), outcomes[plan.name], revision, upgrading)
                    transactions.note_revision(plan.name, outcomes[plan.name].after)
                    report(outcomes[plan.name])
                signals.deferred = True  # from here on a signal must not split the commits
                for name in transactions.commit():
                    outcomes[name].status = "committed"
                    outcomes[name].held_seconds = transactions.of(name).held_seconds
        except BaseException as error:
            _settle(outcomes, transactions, working, describe_error(error), new_files)
            if signals.received is not None:
                raise Interrupted(signals.received, list(outcomes.values())) from error
            if isinstance(error, (Refused, UsageProblem, LockTimeout)) or not isinstance(error, Exception):
                raise
            partial = any(o.status == "committed" for o in outcomes.values())
            raise MigrationFailed(running, describe_error(error), list(outcomes.values()), partial) from error
    if options.backup:
        for outcome in outcomes.values():
            if outcome.backup is not None:
                pruned = backup.prune(options.backups_dir, outcome.name, options.backup_keep)
                if pruned:
                    emit(log, "backups_pruned", database=outcome.name, paths=[str(p) for p in pruned])
    return [outcomes[t.name] for t in targets]


def _log_plan(plan: DatabasePlan) -> None:
    emit(log, "database_planned", database=plan.name, current=list(plan.before),
         steps=[step.revision for step in plan.steps],
         adoption=plan.adoption.baseline if plan.adoption else None, destructive=plan.destructive)


def _waiting(options: Options):
    if options.waiting is None:
        return None
    return lambda target: options.waiting(target, options.lock_timeout)


def _settle(
    outcomes: dict[str, Outcome], transactions: HeldTransactions, working: set[str], reason: str, new_files: set[str]
) -> None:
    """After a failure: roll back what is not committed and record each database's fate.

    A file this run created stays, empty: an empty SQLite file is an empty database (removing it
    could pull it from under another process that has just opened it)."""
    transactions.rollback(reason)
    for outcome in outcomes.values():
        if outcome.status == "unchanged" and outcome.name in working:
            outcome.status = "rolled back"
            outcome.after = outcome.before
            if outcome.name in new_files:
                outcome.status = "rolled back (its new file stays, empty)"


def refuse_unsafe_files(
    targets: Sequence[Target], backups_dir: Path | None = None, configured: Sequence[Target] = ()
) -> None:
    """Before anything is opened: a selected database sharing its file with another configured one
    (by device and inode: symlinks, hard links and bind mounts included), or a file or folder
    that cannot be written."""
    problems: list[str] = []
    files = [t for t in targets if t.sqlite_file is not None]  # a server database may hold all three
    others = [t for t in configured if t.sqlite_file is not None and t.name not in {f.name for f in files}]
    for index, target in enumerate(files):
        for other in files[:index] + others:
            if other.identity == target.identity:
                problems.append(
                    f"{target.name}: {target.location} is the same file as {other.name}'s ({other.location});"
                    " give each database its own file"
                )
        problems += [f"{target.name}: {p}" for p in _unwritable(target.sqlite_file)]
    if backups_dir is not None:
        folder = backup.existing_folder(backups_dir)
        if not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"cannot write backups into {folder} (read-only); pass --no-backup or fix its permissions")
    if problems:
        raise Refused(problems)


def _unwritable(file: Path) -> list[str]:
    if file.exists() and not os.access(file, os.W_OK):
        return [f"{file} is read-only"]
    folder = backup.existing_folder(file.parent)
    if not os.access(folder, os.W_OK | os.X_OK):
        return [f"cannot write in {folder}, where SQLite keeps the database's journal (read-only)"]
    return []


def _plan_all(
    targets: list[Target],
    transactions: HeldTransactions | None,
    upgrading: bool,
    revision: str,
    rehearse: bool = False,
    repair: bool = False,
):
    """Plan every database, gathering every refusal before raising (usage problems first)."""
    plans, refusals, usage = [], [], []
    for target in targets:
        try:
            if transactions is not None:
                plans.append(plan_database(target, transactions.connection(target), upgrading, revision, rehearse, repair))
            elif not target.exists():
                plans.append(plan_database(target, None, upgrading, revision, rehearse, repair))
            else:
                target.current()  # checks first that a file is a SQLite database at all
                with target.connect() as connection:
                    plans.append(plan_database(target, connection, upgrading, revision, rehearse, repair))
        except Refused as refusal:
            refusals += refusal.problems
        except Unreadable as error:
            refusals.append(f"{target.name}: {error}")
        except UsageProblem as problem:
            usage.append(str(problem))
    if usage:
        raise UsageProblem("; ".join(usage))
    if refusals:
        raise Refused(refusals)
    return plans


def _confirm(plans: list[DatabasePlan], options: Options) -> set[str]:
    """Ask about a destructive downgrade before any lock is taken (a prompt must not hold writers)."""
    reasons = [reason for plan in plans for reason in plan.destructive]
    if reasons and not options.confirm(reasons):
        raise Refused(reasons + ["destructive downgrade not confirmed (pass --yes to confirm)"])
    return set(reasons)


def _refuse_without_space(plans: list[DatabasePlan], options: Options) -> None:
    """Room for SQLite's rollback journal (up to the file's size) and for the backups."""
    needs = []
    for plan in plans:
        file = plan.target.sqlite_file
        if plan.needs_work and file is not None and plan.target.holds_data():
            size = file.stat().st_size
            needs.append((file.parent, size, f"{plan.name} journal"))
            if options.backup:
                needs.append((options.backups_dir, size, f"{plan.name} backup"))
    _refuse_without_room(needs)


def _refuse_without_room(needs: list[tuple[Path, int, str]]) -> None:
    """Refuse when a filesystem lacks room (with a margin) for what it must hold: (folder, bytes, what)."""
    needed: dict[int, tuple[Path, int, list[str]]] = {}
    for folder, size, what in needs:
        folder = backup.existing_folder(folder)
        place, total, whats = needed.get(folder.stat().st_dev, (folder, 0, []))
        needed[folder.stat().st_dev] = (place, total + size, [*whats, f"{what} {size / 1e6:.1f} MB"])
    problems = [
        f"not enough free disk in {place}: need {total * SPACE_MARGIN / 1e6:.1f} MB ({', '.join(whats)}),"
        f" have {backup.free_space(place) / 1e6:.1f} MB"
        for place, total, whats in needed.values()
        if total * SPACE_MARGIN > backup.free_space(place)
    ]
    if problems:
        raise Refused(problems)


def _backup(plan: DatabasePlan, transactions: HeldTransactions, outcome: Outcome, options: Options, reason: str):
    if plan.target.sqlite_file is not None and plan.needs_work and plan.target.holds_data():
        connection = transactions.connection(plan.target)
        outcome.backup = _take_backup(plan.target, plan.before, connection, options, reason)


def _take_backup(target: Target, before: tuple[str, ...], connection, options: Options, reason: str) -> backup.Backup:
    """Back up a SQLite database whose write lock `connection`'s transaction holds."""
    file = target.sqlite_file
    wal = connection.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
    label = "-".join(before) or "unversioned"
    progress = options.progress(f"backing up {target.name}", file.stat().st_size) if options.progress else None
    reader = sqlite3.connect(f"file:{file}?mode=ro", uri=True) if wal else None  # in WAL mode readers go on
    try:
        return backup.take(target.name, label, reason, file, options.backups_dir, wal_reader=reader, progress=progress)
    except backup.BackupFailed as error:
        raise Refused([f"{target.name}: {error}"]) from error
    finally:
        if reader is not None:
            reader.close()


def _run(plan: DatabasePlan, connection, outcome: Outcome, revision: str, upgrading: bool) -> None:
    """Run the planned steps inside the held transaction; anything else than the plan is a failure."""
    if not plan.needs_work:
        return
    target = plan.target
    if plan.adoption is not None:
        outcome.rebuilt = adopt.apply(target, plan.adoption, connection)
        outcome.adoption = plan.adoption
    ran: list[Step] = []
    clock = [time.perf_counter()]

    def record(ctx, step, heads, run_args):
        now = time.perf_counter()
        script = (step.up_revisions or (None,))[0]
        doc = script.doc if script else ""
        ran.append(Step(step.up_revision_id, doc or "", step.is_upgrade, "", seconds=now - clock[0]))
        source, destination = (step.down_revision_ids, step.up_revision_ids) if step.is_upgrade else (
            step.up_revision_ids, step.down_revision_ids)
        emit(log, "revision_applied" if step.is_upgrade else "revision_reverted", database=target.name,
             from_revision=list(source), to_revision=list(destination), seconds=round(now - clock[0], 3))
        clock[0] = now

    if plan.steps:
        config = target.config(connection)
        config.attributes["on_version_apply"] = record
        (command.upgrade if upgrading else command.downgrade)(config, revision)
    outcome.steps = ran
    if [(s.revision, s.upgrade) for s in ran] != [(s.revision, s.upgrade) for s in plan.steps]:
        raise RuntimeError(
            f"Alembic ran {[s.revision for s in ran]}, not the planned {[s.revision for s in plan.steps]}"
        )
    outcome.after = target.current(connection)


def upgrade_sql(target: Target, revision: str, out, repair: bool = False) -> None:
    """Write the SQL an upgrade would run to `out`, touching nothing (Alembic's offline mode).

    A range (`base:head`) is rendered as asked, whatever the database holds."""
    if ":" in revision:
        out.write(f"-- {target.name}: {revision}\n")
        try:
            command.upgrade(target.config(output=out), revision, sql=True)
        except CommandError as error:
            raise UsageProblem(f"{target.name}: cannot render {revision!r}: {error}") from error
        return
    (plan,) = _plan_all([target], None, True, revision, repair=repair)
    before = plan.before
    if len(before) > 1:
        raise Refused([f"{target.name}: --sql needs a single current revision, found {', '.join(before)}"])
    if not plan.needs_work:
        out.write(f"-- {target.name}: already at {', '.join(before) or 'base'}, nothing to run\n")
        return
    if plan.adoption is not None:
        for rebuild in plan.repair.rebuilds if plan.repair else ():
            out.write(f"-- {target.name}: --repair: {rebuild.describe()}; its count and checksum are compared after\n")
            out.writelines(f"{statement};\n" for statement in rebuild.statements())
        created = ", ".join(plan.adoption.missing_tables) or "nothing to create"
        out.write(f"-- {target.name}: adopting {plan.adoption.origin} ({created})\n")
        out.writelines(f"{statement};\n" for statement in plan.adoption.statements)
        before = (plan.adoption.baseline,)
        replacing = f", replacing {', '.join(plan.adoption.replaced)}" if plan.adoption.replaced else ""
        out.write(f"-- {target.name}: then stamping {plan.adoption.baseline}{replacing}\n")
    out.write(f"-- {target.name}: {target.location}\n")
    span = f"{before[0]}:{revision}" if before else revision
    command.upgrade(target.config(output=out), span, sql=True)


@_logs_refusals
def restore(target: Target, chosen: Path, options: Options) -> backup.Restored:
    """Put `chosen` back into the database through SQLite's journaled page writes.

    The database as it is now is copied first (unless `options.backup` is off), under the same
    continuous write lock as the restore, so no row committed by a writer falls between them.
    """
    file = target.sqlite_file
    if file is None:
        raise Refused([f"{target.name}: restore works on SQLite files; {target.location} is not one"])
    refuse_unsafe_files([target], options.backups_dir if options.backup else None, options.configured)
    if file_identity(file) == file_identity(chosen):
        raise Refused([f"{target.name}: {chosen} is the database itself"])
    note = backup.verify(chosen, target.db)
    if note:
        options.warn(note)
    _refuse_restore_without_space(target, chosen, options)
    label = "-".join(_current_or_unknown(target)) or "unversioned"

    def safety(connection: sqlite3.Connection, wal: bool) -> backup.Backup | None:
        """Under the restore's lock: what killed backups left behind goes, then the copy is taken."""
        backup.clean_partials(options.backups_dir, target.name)
        if not options.backup or not target.holds_data():
            return None
        reader = connection if wal else None
        return backup.take(target.name, label, backup.BEFORE_RESTORE, file, options.backups_dir, wal_reader=reader)

    size = chosen.stat().st_size
    progress = options.progress(f"restoring {target.name}", size) if options.progress else None
    waiting = (lambda: options.waiting(target, options.lock_timeout)) if options.waiting else None
    started = time.perf_counter()
    with raised_as_interrupted():
        try:
            restored = backup.restore(
                chosen, file, timeout=options.lock_timeout, safety=safety, progress=progress, on_wait=waiting
            )
            saved = restored.safety.path if restored.safety else restored.damaged
            emit(log, "restore_finished", database=target.name, backup=str(chosen),
                 safety_backup=str(saved) if saved else None, seconds=round(time.perf_counter() - started, 3))
            return restored
        except backup.BackupFailed as error:
            raise Refused([f"{target.name}: the safety copy failed, nothing was restored: {error}"]) from error
        except sqlite3.Error as error:
            message = f"restore failed, {target.location} is unchanged: {describe_error(error)}"
            raise MigrationFailed(target.name, message, []) from error


def _current_or_unknown(target: Target) -> tuple[str, ...]:
    """The revision that names the safety copy; a damaged file (restored all the same) has none."""
    try:
        return target.current()
    except Unreadable:
        return ("unreadable",)


def _refuse_restore_without_space(target: Target, chosen: Path, options: Options) -> None:
    live = target.sqlite_file.stat().st_size if target.holds_data() else 0
    growth = max(0, chosen.stat().st_size - live)
    needs = [(target.sqlite_file.parent, live + growth, f"{target.name} journal and growth")]
    if options.backup:
        needs.append((options.backups_dir, live, f"{target.name} safety copy"))
    _refuse_without_room(needs)


def validate_revision(targets: Sequence[Target], revision: str) -> None:
    """Refuse, before touching anything, a revision (or either end of a range) some selected project lacks."""
    if ":" in revision:
        for end in revision.split(":"):
            if end:
                validate_revision(targets, end)
        return
    if revision in ("head", "heads", "base") or revision[:1] in "+-" or "@" in revision:
        return
    for target in targets:
        if not target.has_revision(revision):
            known = ", ".join(rev.revision for rev in target.script.walk_revisions())
            raise ValueError(
                f"revision {revision!r} is not in the {target.name} project (it has: {known}); "
                f"use --only to pick the database it belongs to"
            )


def plan(targets: Sequence[Target], revision: str, upgrading: bool, configured: Sequence[Target] = ()):
    """What `upgrade` or `downgrade` would do to each database, read without taking any lock."""
    ordered = _in_order(targets) if upgrading else list(reversed(_in_order(targets)))
    refuse_unsafe_files(ordered, None, configured)
    return _plan_all(ordered, None, upgrading, revision, rehearse=True)


@_logs_refusals
def stamp(target: Target, revision: str, options: Options, purge: bool = False) -> Outcome:
    """Record `revision` in the version table without running anything (Alembic's stamp), under the
    run's lock, after a backup, and only once confirmed: a wrong stamp skips migrations for good."""
    refuse_unsafe_files([target], options.backups_dir if options.backup else None, options.configured)
    outcome = Outcome(target.name, target.location, ())
    before = target.current()
    unknown = target.unknown_revisions(before)
    if unknown and not purge:
        raise Refused([f"{target.name}: database is newer than this tg-parser (unknown revision"
                       f" {', '.join(unknown)}); pass --purge to replace its version table's rows"])
    reason = (
        f"{target.name}: records {revision} as applied without running anything"
        f" (now at {', '.join(before) or 'no revision'}); skipped revisions will never run"
    )
    if not options.confirm([reason]):
        raise Refused([reason, "stamp not confirmed (pass --yes to confirm)"])
    with raised_as_interrupted(), HeldTransactions([target], options.lock_timeout, _waiting(options)) as held:
        connection = held.connection(target)
        outcome.before = target.current(connection)
        if target.sqlite_file is not None:
            backup.clean_partials(options.backups_dir, target.name)
            if options.backup and target.holds_data():
                outcome.backup = _take_backup(target, outcome.before, connection, options, "stamp")
        try:
            command.stamp(target.config(connection), revision, purge=purge)
        except CommandError as error:
            raise UsageProblem(f"{target.name}: cannot stamp {revision!r}: {error}") from error
        outcome.after = target.current(connection)
        held.commit()
    outcome.status = "committed"
    return outcome
