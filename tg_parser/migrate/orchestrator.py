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
import io
import logging
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.util import CommandError
from sqlalchemy import inspect

from tg_parser.core.events import emit
from tg_parser.migrate import adopt, backup, holds, online, unfinished
from tg_parser.migrate.errors import MigrationFailed, Refused, Unreadable, UsageProblem, describe_error
from tg_parser.migrate.interrupt import Interrupted, raised_as_interrupted
from tg_parser.migrate.plan import DatabasePlan, Step, plan_database
from tg_parser.migrate.target import Target
from tg_parser.migrate.transactions import HeldTransactions
from tg_parser.storage.engine import connect_read_only
from tg_parser.storage.lock import LockTimeout, file_identity, is_contention, retry_while_busy, timed_out

SPACE_MARGIN = 1.1
ATTEMPT_S = 0.2
"""How long one attempt at a run's locks waits before it lets every lock go and tries again."""
log = logging.getLogger(__name__)


@dataclass
class Options:
    backups_dir: Path
    backup_keep: int
    lock_timeout: float
    backup: bool = True
    confirm: Callable[[list[str]], bool] = lambda reasons: False
    """Asked before a destructive step (a downgrade that drops data, a CHECK constraint lost), with the
    reasons; False refuses."""
    progress: Callable[[str, int], backup.Progress] | None = None
    """Makes a progress callback for a long step (its label and total bytes)."""
    waiting: Callable[[Target, float], None] | None = None
    """Told when a database is in use by another process and the run starts waiting for it."""
    configured: Sequence[Target] = ()
    """Every configured database, selected or not: none may share a file with a selected one."""
    warn: Callable[[str], None] = lambda text: None
    """Told what the operator should know but that does not stop the command."""
    notice: Callable[[list[str]], None] = lambda lines: None
    """Told, before any lock is taken, which databases will be held and for about how long."""
    repair: bool = False
    """Rebuild tables that differ from the baseline only in ways a rebuild removes, then adopt (`--repair`)."""
    wal: bool = False
    """Convert each SQLite file the run changes to WAL first (`--wal`: readers never wait, backups are snapshots)."""


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
    backup_held_seconds: float = 0.0
    """How long the backup kept writers from committing (0 in WAL mode)."""
    held_seconds: float = 0.0
    """How long the run held the database's lock (other writers, and in rollback-journal mode readers,
    waited that long at most)."""
    online: list[str] = field(default_factory=list)
    """Tables rebuilt online: only swapped in while the lock was held."""
    blocking: list[str] = field(default_factory=list)
    """Tables of `online.batch_alter_table` rebuilt inside the held transaction after all."""
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
    files = [t.sqlite_file for t in targets if t.sqlite_file is not None]
    with raised_as_interrupted() as signals, _run_locks(files, options.lock_timeout):
        for target in targets:  # what a killed run left, before anything else
            if target.sqlite_file is not None:
                online.clean_leftovers(target.sqlite_file, options.lock_timeout)
                backup.clean_partials(options.backups_dir, target.name)
        asked = revision
        if unfinished.applies(revision, [t.name for t in targets]):
            current = {t.name: t.current() for t in targets}
            asked = unfinished.resume(options.backups_dir, upgrading, revision, current) or revision
        preview = _plan_all(targets, None, upgrading, asked, repair=options.repair)
        confirmed = _confirm(preview, options, upgrading)
        outcomes = {p.name: Outcome(p.name, p.target.location, p.before, p.before, status="unchanged") for p in preview}
        busy = [p for p in preview if p.needs_work]
        if not busy:  # nothing to run: no lock is taken, nothing is held
            if isinstance(asked, dict):
                unfinished.forget(options.backups_dir)
            return [outcomes[t.name] for t in targets]
        _refuse_without_space(busy, options)
        new_files = {p.name for p in busy if p.target.sqlite_file is not None and not p.target.holds_data()}
        run = _Run(outcomes, upgrading, revision, asked, options, report, signals, [p.target for p in preview])
        try:
            for plan in busy:
                run.running = plan.name
                if options.wal:
                    _to_wal(plan.target, options)
                if options.backup:
                    _backup(plan, outcomes[plan.name], options, "upgrade" if upgrading else "downgrade")
            prepared = {plan.name: _prepare(plan, options, upgrading) for plan in busy}
            for plan in busy:
                run.built[plan.name] = _build_indexes(plan, options, upgrading)
            rebuilt = {name: [(item.rebuild.table, item.rows) for item in items.values()] for name, items in prepared.items()}
            options.notice(holds.describe(busy, rebuilt, options.backup))
            run.hold_and_commit([p.target for p in busy], confirmed, prepared)
        except BaseException as error:
            _settle(outcomes, run.transactions, run.working, describe_error(error), new_files)
            _drop_backups_of_unchanged(outcomes)
            for name, indexes in run.built.items():
                if indexes and outcomes[name].status != "committed":
                    online.drop_concurrently(next(p.target.url for p in busy if p.name == name), indexes,
                                             options.lock_timeout)
            if signals.received is not None:
                raise Interrupted(signals.received, list(outcomes.values())) from error
            if isinstance(error, (Refused, UsageProblem, LockTimeout)) or not isinstance(error, Exception):
                raise
            partial = any(o.status == "committed" for o in outcomes.values())
            raise MigrationFailed(run.running, describe_error(error), list(outcomes.values()), partial) from error
        finally:
            _clean_after(busy, outcomes, options, signals)
        _drop_backups_of_unchanged(outcomes)
    if options.backup:
        for outcome in outcomes.values():
            if outcome.backup is not None:
                pruned = backup.prune(options.backups_dir, outcome.name, options.backup_keep)
                if pruned:
                    emit(log, "backups_pruned", database=outcome.name, paths=[str(p) for p in pruned])
    return [outcomes[t.name] for t in targets]


@dataclass
class _Run:
    """The held part of a run: every lock taken together, the revisions, the commits."""

    outcomes: dict[str, Outcome]
    upgrading: bool
    revision: str
    """As the command gave it."""
    asked: str | dict[str, str]
    """What each database goes to: `revision`, or the absolute revisions that finish a cut-off run."""
    options: Options
    report: Callable
    signals: object
    order: list[Target]
    """Every selected database in the run's order (downgrades reversed)."""
    transactions: HeldTransactions | None = None
    working: set[str] = field(default_factory=set)
    running: str = ""
    built: dict[str, list[str]] = field(default_factory=dict)
    """Per database, the indexes built concurrently before the locks (PostgreSQL)."""

    def hold_and_commit(self, targets: list[Target], confirmed: set[str], prepared: dict) -> None:
        """Take every lock (SQLite: BEGIN EXCLUSIVE, so no reader can refuse a commit later), all
        together in short attempts, so that a busy database never keeps the others locked while it
        is waited for; a PostgreSQL statement that waits on a lock past the attempt gives up the
        same way. Retried, with a pause, until TG_PARSER_LOCK_TIMEOUT."""
        asked = time.monotonic()
        deadline = asked + self.options.lock_timeout
        told = False
        while True:
            attempt = max(0.01, min(ATTEMPT_S, deadline - time.monotonic()))
            self.transactions = HeldTransactions(targets, attempt, exclusive=True, quiet=True)
            try:
                with self.transactions:
                    self.transactions.announce(time.monotonic() - asked)
                    self._run_held(confirmed, prepared)
                    return
            except BaseException as error:
                if not is_contention(error) or self.signals.received is not None or self._any_committed():
                    raise
                if time.monotonic() >= deadline:
                    where = getattr(error, "where", "") or ", ".join(t.location for t in targets)
                    raise timed_out(where, self.options.lock_timeout) from None
                if not told:
                    told = True
                    busy = next((t for t in targets if t.location == getattr(error, "where", None)), targets[0])
                    emit(log, "lock_waiting", logging.WARNING, database=busy.name, timeout=self.options.lock_timeout)
                    if self.options.waiting:
                        self.options.waiting(busy, self.options.lock_timeout)
                time.sleep(random.uniform(0.02, 0.1))

    def _any_committed(self) -> bool:
        return any(o.status == "committed" for o in self.outcomes.values())

    def _run_held(self, confirmed: set[str], prepared: dict) -> None:
        transactions, outcomes = self.transactions, self.outcomes
        held = {t.name for t in transactions.targets}
        in_order = [t for t in self.order if t.name in held]
        plans = _plan_all(in_order, transactions, self.upgrading, self.asked, repair=self.options.repair)
        for plan in plans:
            _log_plan(plan)
            transactions.note_revision(plan.name, plan.before)
            outcomes[plan.name].before = outcomes[plan.name].after = plan.before
            if plan.needs_work:
                self.working.add(plan.name)
        unconfirmed = [r for p in plans for r in p.destructive if r not in confirmed]
        if unconfirmed:
            raise Refused(unconfirmed + ["the database changed since the run was confirmed; run it again"])
        planned = {plan.name: plan for plan in plans}
        for target in self.order:
            plan = planned.get(target.name)
            if plan is not None:
                self.running = plan.name
                swaps = online.Swaps(prepared.get(plan.name, {}), self.built.get(plan.name, []))
                _run(plan, transactions.connection(target), outcomes[plan.name], self.upgrading, swaps)
                transactions.note_revision(plan.name, outcomes[plan.name].after)
            self.report(outcomes[target.name])
        self.signals.deferred = True  # from here on a signal must not split the commits
        changing = [plan.name for plan in plans if plan.needs_work]
        note = unfinished.applies(self.revision, changing)
        if note:
            unfinished.record(self.options.backups_dir, self.upgrading, self.revision,
                              {name: (list(outcomes[name].before), list(outcomes[name].after)) for name in changing})

        def committed(name: str) -> None:
            outcomes[name].status = "committed"
            outcomes[name].held_seconds = transactions.of(name).held_seconds

        transactions.commit(committed)
        if note or isinstance(self.asked, dict):
            unfinished.forget(self.options.backups_dir)


@contextmanager
def _run_locks(files: list[Path], timeout: float) -> Iterator[None]:
    with ExitStack() as stack:
        for file in files:
            stack.enter_context(online.run_lock(file, timeout))
        yield


def _prepare(plan: DatabasePlan, options: Options, upgrading: bool) -> dict:
    """Build the new tables of the plan's online rebuilds, before any lock (SQLite files only)."""
    rebuilds = _rebuilds(plan, upgrading)
    return online.prepare(plan.target.sqlite_file, rebuilds, options.lock_timeout) if rebuilds else {}


def _rebuilds(plan: DatabasePlan, upgrading: bool) -> list[online.Rebuild]:
    """The `online.batch_alter_table` rebuilds of the plan's steps, found by rehearsing them on a
    schema-only copy of the database (SQLite files only)."""
    target = plan.target
    if target.sqlite_file is None or not target.holds_data() or not _uses_online(plan):
        return []
    with target.connect() as connection:
        rows = online.schema_rows(connection)

    def rehearse(config, connection) -> None:
        for statement in plan.adoption.statements if plan.adoption else ():
            connection.exec_driver_sql(statement)
        (command.upgrade if upgrading else command.downgrade)(config, plan.revision)

    start = (plan.adoption.baseline,) if plan.adoption else plan.before
    try:
        return online.rehearse(target.db, rows, list(start), rehearse)
    except Exception as error:  # noqa: BLE001 - the run itself meets the same error, inside its transaction
        log.debug("rehearsal of %s failed: %s", target.name, error)
        return []


def _build_indexes(plan: DatabasePlan, options: Options, upgrading: bool) -> list[str]:
    """PostgreSQL: build the steps' `online.create_index` indexes concurrently, before any lock.

    Which ones, Alembic's offline mode tells: the steps are rendered, not run, and each
    create_index call is collected."""
    target = plan.target
    if target.sqlite_file is not None or not upgrading or len(plan.before) > 1 or not _uses_online(plan):
        return []
    collector = online.IndexCollector()
    config = target.config(output=io.StringIO())
    config.attributes[online.ATTRIBUTE] = collector
    command.upgrade(config, f"{plan.before[0]}:{plan.revision}" if plan.before else plan.revision, sql=True)
    return online.build_concurrently(target.name, target.url, collector.indexes, options.lock_timeout)


_ONLINE_IMPORT = re.compile(r"\btg_parser\.migrate\.online\b|\bfrom\s+tg_parser\.migrate\s+import\s+[^\n]*\bonline\b")


def _uses_online(plan: DatabasePlan) -> bool:
    """Whether a step's revision uses tg_parser.migrate.online (only then is the run rehearsed for it)."""
    return any(_ONLINE_IMPORT.search(Path(step.path).read_text()) for step in plan.steps)


def _clean_after(busy: list[DatabasePlan], outcomes: dict[str, Outcome], options: Options, signals) -> None:
    """The old tables of committed swaps, or the new tables of a run rolled back, go (in short transactions)."""
    signals.deferred = False
    try:  # a signal from here on comes after the commits: each database's fate goes with it
        time.sleep(online.LONG_PAUSE_S)  # the clients that waited for the held transactions go first
        for plan in busy:
            if plan.target.sqlite_file is not None:
                try:
                    online.clean_leftovers(plan.target.sqlite_file, options.lock_timeout)
                except Exception as error:  # noqa: BLE001 - leftovers hold no live data; the next command removes them
                    options.warn(f"{plan.name}: could not yet remove the online rebuild's leftover tables"
                                 f" ({describe_error(error)}); the next tg-parser db command removes them")
    except Interrupted as interruption:  # each database's fate still goes with it
        raise Interrupted(interruption.signum, list(outcomes.values())) from None


def _to_wal(target: Target, options: Options) -> None:
    """`PRAGMA journal_mode = WAL`, which lasts: TG_parser 3.x works in both modes."""
    if target.sqlite_file is None or not target.holds_data():
        return
    with closing(sqlite3.connect(target.sqlite_file, isolation_level=None)) as connection:
        mode = retry_while_busy(lambda: connection.execute("PRAGMA journal_mode = WAL").fetchone()[0],
                                connection, target.location, options.lock_timeout)
    if mode.lower() != "wal":
        raise Refused([f"{target.name}: SQLite kept {target.location} in {mode} mode (WAL needs a local filesystem)"])


def _drop_backups_of_unchanged(outcomes: dict[str, Outcome]) -> None:
    """A database the run did not change (it rolled back, the run never got its locks, or another
    run had done the work by then) keeps no backup of this run: it would equal the database."""
    for outcome in outcomes.values():
        if outcome.backup is not None and not outcome.changed:
            outcome.backup.path.unlink(missing_ok=True)
            outcome.backup.manifest.unlink(missing_ok=True)
            outcome.backup = None


def _log_plan(plan: DatabasePlan) -> None:
    emit(log, "database_planned", database=plan.name, current=list(plan.before),
         steps=[step.revision for step in plan.steps],
         adoption=plan.adoption.baseline if plan.adoption else None, destructive=plan.destructive)


def _waiting(options: Options):
    if options.waiting is None:
        return None
    return lambda target: options.waiting(target, options.lock_timeout)


def _settle(
    outcomes: dict[str, Outcome], transactions: HeldTransactions | None, working: set[str], reason: str, new_files: set[str]
) -> None:
    """After a failure: roll back what is not committed and record each database's fate.

    A file this run created stays, empty: an empty SQLite file is an empty database (removing it
    could pull it from under another process that has just opened it)."""
    if transactions is not None:
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
    asked = revision
    for target in targets:
        revision = asked[target.name] if isinstance(asked, dict) else asked
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


def _confirm(plans: list[DatabasePlan], options: Options, upgrading: bool) -> set[str]:
    """Ask about a destructive step before any lock is taken (a prompt must not hold writers)."""
    reasons = [reason for plan in plans for reason in plan.destructive]
    if reasons and not options.confirm(reasons):
        what = "an upgrade that removes a CHECK constraint" if upgrading else "destructive downgrade"
        raise Refused(reasons + [f"{what} not confirmed (pass --yes to confirm)"])
    return set(reasons)


def _refuse_without_space(plans: list[DatabasePlan], options: Options) -> None:
    """Room for SQLite's rollback journal (up to the file's size), for the new tables of online
    rebuilds (up to the file's size again, until the old tables are dropped) and for the backups."""
    needs = []
    for plan in plans:
        file = plan.target.sqlite_file
        if plan.needs_work and file is not None and plan.target.holds_data():
            size = file.stat().st_size
            needs.append((file.parent, size, f"{plan.name} journal"))
            if _uses_online(plan):
                needs.append((file.parent, size, f"{plan.name} online rebuild"))
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


def _backup(plan: DatabasePlan, outcome: Outcome, options: Options, reason: str) -> None:
    """Back up a SQLite file about to change, while its writers go on (`backup.take_online`)."""
    target = plan.target
    if target.sqlite_file is None or not target.holds_data():
        return
    label = "-".join(plan.before) or "unversioned"
    file = target.sqlite_file
    progress = options.progress(f"backing up {target.name}", file.stat().st_size) if options.progress else None
    try:
        outcome.backup, outcome.backup_held_seconds = backup.take_online(
            target.name, label, reason, file, options.backups_dir, timeout=options.lock_timeout, progress=progress)
    except backup.BackupFailed as error:
        raise Refused([f"{target.name}: {error}"]) from error


def _take_backup(target: Target, before: tuple[str, ...], connection, options: Options, reason: str) -> backup.Backup:
    """Back up a SQLite database whose write lock `connection`'s transaction holds."""
    file = target.sqlite_file
    wal = connection.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
    label = "-".join(before) or "unversioned"
    progress = options.progress(f"backing up {target.name}", file.stat().st_size) if options.progress else None
    reader = connect_read_only(file) if wal else None  # in WAL mode readers go on
    try:
        return backup.take(target.name, label, reason, file, options.backups_dir, wal_reader=reader, progress=progress)
    except backup.BackupFailed as error:
        raise Refused([f"{target.name}: {error}"]) from error
    finally:
        if reader is not None:
            reader.close()


def _run(plan: DatabasePlan, connection, outcome: Outcome, upgrading: bool, swaps=None) -> None:
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
        if swaps is not None:
            config.attributes[online.ATTRIBUTE] = swaps
        (command.upgrade if upgrading else command.downgrade)(config, plan.revision)
        if swaps is not None:
            outcome.online, outcome.blocking = list(swaps.done), list(swaps.blocking)
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
    config = target.config(output=out)
    if target.sqlite_file is not None and target.holds_data():  # what online.batch_alter_table renders from
        with target.connect() as connection:
            config.attributes[online.SCHEMA_ATTRIBUTE] = online.schema_rows(connection)
    command.upgrade(config, span, sql=True)


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
    with raised_as_interrupted(), _run_locks([file], options.lock_timeout):
        online.clean_leftovers(file, options.lock_timeout)
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
    plans = _plan_all(ordered, None, upgrading, revision, rehearse=True)
    for plan in plans:
        plan.rebuilds = _rebuilds(plan, upgrading)
    return plans


@_logs_refusals
def stamp(target: Target, revision: str, options: Options, purge: bool = False) -> Outcome:
    """Record `revision` in the version table without running anything (Alembic's stamp), under the
    run's lock, after a backup, and only once confirmed: a wrong stamp skips migrations for good."""
    refuse_unsafe_files([target], options.backups_dir if options.backup else None, options.configured)
    outcome = Outcome(target.name, target.location, ())
    before = _stampable(target)
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
    files = [target.sqlite_file] if target.sqlite_file is not None else []
    with raised_as_interrupted(), _run_locks(files, options.lock_timeout):
        for file in files:
            online.clean_leftovers(file, options.lock_timeout)
        # EXCLUSIVE: a reader holding a read transaction is waited for here, within the lock
        # timeout, instead of making the COMMIT fail at the end.
        try:
            with HeldTransactions([target], options.lock_timeout, _waiting(options), exclusive=True) as held:
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
        except BaseException:
            _drop_backups_of_unchanged({target.name: outcome})
            raise
    outcome.status = "committed"
    return outcome


def _stampable(target: Target) -> tuple[str, ...]:
    """The revisions of a database that can be stamped; refused: a SQLite file that is missing, empty,
    not a database, or not a database of this kind (a stamp would make it look like one)."""
    if target.sqlite_file is None:
        return target.current()
    if not target.holds_data():
        raise Refused([f"{target.name}: {target.location} is {'empty' if target.exists() else 'missing'}, not a"
                       f" {target.name} database; create it with tg-parser init"])
    try:
        before = target.current()
        with target.connect() as connection:
            tables = set(inspect(connection).get_table_names())
    except Unreadable as error:
        raise Refused([f"{target.name}: {error}"]) from error
    problem = target.db.misplaced(tables) or (
        None if tables & (set(target.db.metadata.tables) | {target.db.version_table})
        else f"it holds none of the {target.name} tables")
    if problem:
        raise Refused([f"{target.name}: {target.location} is not the {target.name} database: {problem}"])
    return before
