"""Drives the three Alembic projects in the fixed order through Alembic's own command API."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from alembic import command
from alembic.util import CommandError

from tg_parser.migrate.target import Target, Unreadable


class MigrationFailed(RuntimeError):
    """A database failed to migrate; `name` says which."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name


class Refused(RuntimeError):
    """A check made before any change failed, so nothing was changed."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


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

    @property
    def changed(self) -> bool:
        return bool(self.steps)


def upgrade(targets: Sequence[Target], revision: str = "head", report: Callable = lambda o: None):
    """Upgrade each target in order; `report` is called after each database."""
    current = preflight(targets)
    return [_run(t, current[t.name], command.upgrade, revision, report) for t in targets]


def downgrade(targets: Sequence[Target], revision: str = "-1", report: Callable = lambda o: None):
    """Downgrade each target, in the reverse of the upgrade order."""
    current = preflight(targets)
    return [_run(t, current[t.name], command.downgrade, revision, report) for t in reversed(targets)]


def preflight(targets: Sequence[Target]) -> dict[str, tuple[str, ...]]:
    """Read every selected database before touching any; refuse if one cannot be migrated safely."""
    problems: list[str] = []
    current: dict[str, tuple[str, ...]] = {}
    seen: dict[object, str] = {}
    for target in targets:
        where = target.sqlite_file.resolve() if target.sqlite_file else str(target.url)
        if where in seen:
            problems.append(f"{target.name}: same database as {seen[where]} ({target.location})")
        seen[where] = target.name
        try:
            current[target.name] = target.current()
        except Unreadable as error:
            problems.append(f"{target.name}: {error}")
            continue
        known = {script.revision for script in target.script.walk_revisions()}
        unknown = [revision for revision in current[target.name] if revision not in known]
        if unknown:
            problems.append(
                f"{target.name}: database is newer than this tg-parser (revision {', '.join(unknown)})"
            )
    if problems:
        raise Refused(problems)
    return current


def _run(target: Target, before: tuple[str, ...], alembic_command, revision: str, report) -> Outcome:
    outcome = Outcome(target.name, target.location, before=before)
    if _nothing_to_do(target, outcome.before, alembic_command, revision):
        outcome.after = outcome.before
        report(outcome)
        return outcome

    clock = [time.perf_counter()]

    def record(ctx, step, heads, run_args):
        now = time.perf_counter()
        script = (step.up_revisions or (None,))[0]
        outcome.steps.append(
            Step(step.up_revision_id, script.doc if script else "", now - clock[0], step.is_upgrade)
        )
        clock[0] = now

    try:
        with target.connect() as connection:
            config = target.config(connection)
            config.attributes["on_version_apply"] = record
            alembic_command(config, revision)
    except CommandError as error:
        raise MigrationFailed(target.name, str(error)) from error
    except Exception as error:  # the driver's or a revision's own error: name the database
        raise MigrationFailed(target.name, f"{type(error).__name__}: {error}") from error
    outcome.after = target.current()
    report(outcome)
    return outcome


def _nothing_to_do(target: Target, current: tuple[str, ...], alembic_command, revision: str) -> bool:
    """Skip Alembic (and never create a file) when the database is already where it is asked to be."""
    if alembic_command is command.upgrade:
        return revision in ("head", "heads") and set(current) == set(target.heads())
    return not current


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
