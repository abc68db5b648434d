"""Drives the three Alembic projects in the fixed order through Alembic's own command API.

It adds only what Alembic lacks: one lock per database, a preflight that reads every
selected database before touching any, adoption of pre-Alembic databases, backups, and
all-or-nothing across the databases of one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.util import CommandError

from tg_parser.migrate import adopt, backup
from tg_parser.migrate.downgrade_guard import destructive_changes
from tg_parser.migrate.errors import MigrationFailed, Refused, Unreadable
from tg_parser.migrate.target import Target
from tg_parser.storage.databases import NAMES
from tg_parser.storage.lock import all_locked

BACKUP_SPACE_MARGIN = 1.1


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


@dataclass
class Step:
    revision: str
    """The revision applied (upgrade) or reverted (downgrade)."""
    description: str
    seconds: float
    upgrade: bool


@dataclass
class Outcome:
    name: str
    location: str
    before: tuple[str, ...]
    after: tuple[str, ...] = ()
    steps: list[Step] = field(default_factory=list)
    adoption: adopt.Adoption | None = None
    backup: backup.Backup | None = None
    status: str = "unchanged"
    """unchanged, migrated, failed, restored, not restored, or not started."""

    @property
    def changed(self) -> bool:
        return bool(self.steps) or self.adoption is not None


@dataclass
class _Plan:
    target: Target
    outcome: Outcome
    existed: bool
    needs_work: bool


def upgrade(targets: Sequence[Target], revision: str, options: Options, report=lambda o: None):
    return _migrate(list(targets), command.upgrade, revision, options, report)


def downgrade(targets: Sequence[Target], revision: str, options: Options, report=lambda o: None):
    return _migrate(list(reversed(targets)), command.downgrade, revision, options, report)


def _migrate(targets: list[Target], alembic_command, revision: str, options: Options, report):
    with all_locked(_lock_order(targets), options.lock_timeout):
        plans = _preflight(targets, alembic_command, revision, options)
        for plan in plans:
            if plan.needs_work and options.backup and plan.existed:
                plan.outcome.backup = _backup(plan, options)
        for index, plan in enumerate(plans):
            try:
                _run(plan, alembic_command, revision)
            except Exception as error:
                _undo(plans[: index + 1], plans[index + 1 :])
                plan.outcome.status = f"failed ({_describe(error)}); " + plan.outcome.status
                raise MigrationFailed(plan.target.name, _describe(error), [p.outcome for p in plans]) from error
            report(plan.outcome)
        if options.backup:
            for plan in plans:
                backup.prune(options.backups_dir, plan.target.name, options.backup_keep)
    return [plan.outcome for plan in plans]


def _lock_order(targets: list[Target]):
    """Always the fixed upgrade order, whatever the direction, so two runs cannot deadlock."""
    return [(t.url, t.db.version_table) for t in sorted(targets, key=lambda t: NAMES.index(t.name))]


def preflight(targets: Sequence[Target]) -> dict[str, tuple[str, ...]]:
    """Read every selected database; refuse if one is unreadable, unknown, or a file shared by two."""
    problems: list[str] = []
    current: dict[str, tuple[str, ...]] = {}
    seen: dict[Path, str] = {}
    for target in targets:
        if target.sqlite_file is not None:  # a server database may hold all three; a file may not
            where = target.sqlite_file.resolve()
            if where in seen:
                problems.append(f"{target.name}: same file as {seen[where]} ({target.location})")
            seen[where] = target.name
        try:
            current[target.name] = target.current()
        except Unreadable as error:
            problems.append(f"{target.name}: {error}")
            continue
        known = {script.revision for script in target.script.walk_revisions()}
        unknown = [rev for rev in current[target.name] if rev not in known]
        if unknown:
            problems.append(f"{target.name}: database is newer than this tg-parser (revision {', '.join(unknown)})")
    if problems:
        raise Refused(problems)
    return current


def _preflight(targets: list[Target], alembic_command, revision: str, options: Options) -> list[_Plan]:
    current = preflight(targets)
    problems: list[str] = []
    destructive: list[str] = []
    plans = []
    for target in targets:
        before = current[target.name]
        outcome = Outcome(target.name, target.location, before, after=before)
        existed = target.exists() and (target.sqlite_file is None or target.sqlite_file.stat().st_size > 0)
        if alembic_command is command.upgrade:
            if not before and existed:
                try:
                    with target.connect() as connection:
                        outcome.adoption = adopt.plan(target, connection)
                except adopt.AdoptionRefused as refusal:
                    problems += [f"{target.name}: {p}" for p in refusal.problems]
            at_head = revision in ("head", "heads") and set(before) == set(target.heads())
            needs_work = outcome.adoption is not None or not at_head
        else:
            needs_work = bool(before)
            if needs_work:
                destructive += destructive_changes(target, before, revision)
        plans.append(_Plan(target, outcome, existed, needs_work))
    if options.backup:
        problems += _space_problems(plans, options)
    if problems:
        raise Refused(problems)
    if destructive and not options.confirm(destructive):
        raise Refused(destructive + ["destructive downgrade not confirmed (pass --yes to confirm)"])
    return plans


def _space_problems(plans: list[_Plan], options: Options) -> list[str]:
    needed = sum(
        p.target.sqlite_file.stat().st_size
        for p in plans
        if p.needs_work and p.existed and p.target.sqlite_file is not None
    )
    free = backup.free_space(options.backups_dir)
    if needed * BACKUP_SPACE_MARGIN > free:
        return [
            f"not enough free disk for the backups in {options.backups_dir}: need {needed * BACKUP_SPACE_MARGIN / 1e6:.1f} MB,"
            f" have {free / 1e6:.1f} MB (free space, or pass --no-backup)"
        ]
    return []


def _backup(plan: _Plan, options: Options) -> backup.Backup | None:
    file = plan.target.sqlite_file
    if file is None:
        return None
    label = "-".join(plan.outcome.before) or "unversioned"
    progress = options.progress(f"backing up {plan.target.name}", file.stat().st_size) if options.progress else None
    try:
        return backup.take(plan.target.name, label, file, options.backups_dir, progress)
    except backup.BackupFailed as error:
        raise Refused([f"{plan.target.name}: {error}"]) from error


def _run(plan: _Plan, alembic_command, revision: str) -> None:
    target, outcome = plan.target, plan.outcome
    if not plan.needs_work:
        return
    if outcome.adoption is not None:
        adopt.apply(target, outcome.adoption)
    clock = [time.perf_counter()]

    def record(ctx, step, heads, run_args):
        now = time.perf_counter()
        script = (step.up_revisions or (None,))[0]
        outcome.steps.append(Step(step.up_revision_id, script.doc if script else "", now - clock[0], step.is_upgrade))
        clock[0] = now

    with target.connect() as connection:
        config = target.config(connection)
        config.attributes["on_version_apply"] = record
        alembic_command(config, revision)
    outcome.after = target.current()
    outcome.status = "migrated" if outcome.changed else "unchanged"


def _undo(attempted: list[_Plan], not_started: list[_Plan]) -> None:
    """Put back every database this run touched, from its backup (or remove a file it created)."""
    for plan in attempted:
        file = plan.target.sqlite_file
        try:
            if plan.outcome.backup is not None:
                backup.restore(plan.outcome.backup.path, file)
                plan.outcome.status = f"restored from {plan.outcome.backup.path.name}"
            elif file is not None and not plan.existed and file.exists():
                file.unlink()
                plan.outcome.status = "removed the file this run created"
            elif plan.needs_work:
                plan.outcome.status = "not restored (no backup was taken)"
            plan.outcome.after = plan.target.current() if file is None or file.exists() else ()
        except Exception as error:  # keep going: every other database still deserves its restore
            where = plan.outcome.backup.path if plan.outcome.backup else "no backup"
            plan.outcome.status = f"RESTORE FAILED ({_describe(error)}); the backup is {where}"
    for plan in not_started:
        plan.outcome.status = "not started"


def _describe(error: Exception) -> str:
    if isinstance(error, CommandError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def validate_revision(targets: Sequence[Target], revision: str) -> None:
    """Refuse, before touching anything, a revision some selected project does not have."""
    if revision in ("head", "heads", "base") or revision[:1] in "+-" or "@" in revision:
        return
    for target in targets:
        try:
            found = target.script.get_revisions(revision)
        except CommandError:
            found = ()
        if not found:
            known = ", ".join(rev.revision for rev in target.script.walk_revisions())
            raise ValueError(
                f"revision {revision!r} is not in the {target.name} project (it has: {known}); "
                f"use --only to pick the database it belongs to"
            )


def upgrade_sql(target: Target, revision: str, out) -> None:
    """Write the SQL an upgrade would run to `out`, touching nothing (Alembic's offline mode)."""
    (before,) = preflight([target]).values()
    if len(before) > 1:
        raise Refused([f"{target.name}: --sql needs a single current revision, found {', '.join(before)}"])
    if before and revision in ("head", "heads") and set(before) == set(target.heads()):
        out.write(f"-- {target.name}: already at head ({before[0]}), nothing to run\n")
        return
    if not before and target.exists():
        with target.connect() as connection:
            try:
                adoption = adopt.plan(target, connection)
            except adopt.AdoptionRefused as refusal:
                raise Refused([f"{target.name}: {p}" for p in refusal.problems]) from refusal
        if adoption is not None:
            created = ", ".join(adoption.missing_tables) or "nothing to create"
            out.write(f"-- {target.name}: adopting a pre-Alembic database ({created})\n")
            out.writelines(f"{statement};\n" for statement in adoption.statements)
            before = (adoption.baseline,)
            out.write(f"-- {target.name}: then stamping {adoption.baseline}\n")
    out.write(f"-- {target.name}: {target.location}\n")
    span = f"{before[0]}:{revision}" if before else revision
    command.upgrade(target.config(output=out), span, sql=True)


def restore(target: Target, chosen: Path, options: Options) -> backup.Backup | None:
    """Put `chosen` back in place of the database, after backing up the database as it is now."""
    file = target.sqlite_file
    if file is None:
        raise Refused([f"{target.name}: restore works on SQLite files; {target.location} is not one"])
    with all_locked([(target.url, target.db.version_table)], options.lock_timeout):
        try:
            backup.verify(chosen)
        except (backup.BackupFailed, backup.sqlite3.Error) as error:
            raise Refused([f"{chosen} is not a usable backup: {error}"]) from error
        safety = None
        if options.backup and file.exists() and file.stat().st_size > 0:
            label = "-".join(target.current()) or "unversioned"
            safety = backup.take(target.name, label, file, options.backups_dir)
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
            file.touch()
        size = chosen.stat().st_size
        backup.restore(chosen, file, options.progress(f"restoring {target.name}", size) if options.progress else None)
        return safety
