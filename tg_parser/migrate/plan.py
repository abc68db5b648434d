"""What a run will do to each database, worked out before anything changes.

One plan per database (its current revision, adoption, the revisions to apply or revert,
what would destroy data, what cannot run in a transaction) serves the refusal checks, the
downgrade confirmation, `--sql` and the run itself, which checks that Alembic ran exactly
the planned steps. The steps come from Alembic's own revision walk
(`ScriptDirectory.iterate_revisions`), so relative and branch revisions mean what they mean
to Alembic.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from tg_parser.migrate import adopt
from tg_parser.migrate.destructive import mark_destructive
from tg_parser.migrate.errors import Refused, Unreadable, UsageProblem
from tg_parser.migrate.repair import Repair
from tg_parser.migrate.target import Target

# SQL that cannot run inside the run's transaction: it fails there, or (PRAGMA) silently does nothing.
_NOT_IN_TRANSACTION = re.compile(
    r"\bVACUUM\b|\bPRAGMA\s+(foreign_keys|journal_mode)\b|\bCONCURRENTLY\b|^\s*(COMMIT|BEGIN|END|ROLLBACK)\b",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass
class Step:
    revision: str
    description: str
    upgrade: bool
    path: str
    destructive: list[str] = field(default_factory=list)
    """Why this step would destroy data held in the database (empty when it would not)."""
    seconds: float | None = None
    """Filled in when the step has run."""


@dataclass
class DatabasePlan:
    target: Target
    before: tuple[str, ...]
    steps: list[Step] = field(default_factory=list)
    adoption: adopt.Adoption | None = None
    rebuilds: list = field(default_factory=list)
    """The steps' `online.batch_alter_table` rebuilds (filled in for `--plan`)."""
    revision: str = "head"
    """The revision asked for this database."""

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def destructive(self) -> list[str]:
        return [reason for step in self.steps for reason in step.destructive]

    @property
    def repair(self) -> Repair | None:
        """The table rebuilds the run does before adopting (`--repair`)."""
        return self.adoption.repair if self.adoption else None

    @property
    def needs_work(self) -> bool:
        return bool(self.steps) or self.adoption is not None


def plan_database(
    target: Target,
    connection: Connection | None,
    upgrade: bool,
    revision: str,
    rehearse_upgrades: bool = False,
    repair: bool = False,
) -> DatabasePlan:
    """Read one database through `connection` and plan the run; raise Refused or UsageProblem.

    Steps are rehearsed on an empty schema first (tg_parser.migrate.destructive): what a downgrade
    destroys, and any CHECK constraint a table rebuild would lose, needs confirming. What an
    upgrade drops is only shown, when asked (`rehearse_upgrades`, for `--plan`). `repair`: rebuild
    tables whose differences from the baseline a rebuild removes (adoption only).
    """
    try:
        before = target.current(connection)
    except Unreadable as error:
        raise Refused([f"{target.name}: {error}"]) from error
    if target.sqlite_file is not None and connection is not None:
        misplaced = target.db.misplaced(set(inspect(connection).get_table_names()))
        if misplaced:
            raise Refused([f"{target.name}: {target.location} is not the {target.name} database: {misplaced}"
                           f" (check {target.db.setting_stem}_DB_PATH and TG_PARSER_DATA_DIR)"])
    release = target.db.earlier_release(before)
    unknown = target.unknown_revisions(before)
    if unknown:
        raise Refused([f"{target.name}: database is newer than this tg-parser (unknown revision {', '.join(unknown)})"])
    if release and not upgrade:
        raise Refused(
            [f"{target.name}: a {release} database (revision {', '.join(before)}): upgrade it first, which adopts it"]
        )
    plan = DatabasePlan(target, before, revision=revision)
    start = before
    if upgrade and (release or not before) and target.holds_data():
        try:
            plan.adoption = adopt.plan(target, connection, before, repair)
        except adopt.AdoptionRefused as refusal:
            raise Refused([f"{target.name}: {p}" for p in refusal.problems]) from refusal
        if plan.adoption is not None:
            start = (plan.adoption.baseline,)
    plan.steps = _steps(target, start, revision, upgrade)
    problems = [p for step in plan.steps for p in _outside_transaction(target, step)]
    if problems:
        raise Refused(problems)
    mark_destructive(target, connection, start, plan.steps, show_upgrade_drops=rehearse_upgrades)
    return plan


def _steps(target: Target, current: tuple[str, ...], revision: str, upgrade: bool) -> list[Step]:
    if not upgrade and not current:
        return []  # already at base: there is nothing to revert
    script = target.script
    try:
        if upgrade:
            scripts = list(reversed(list(script.iterate_revisions(revision, current, implicit_base=True))))
        else:
            scripts = list(script.iterate_revisions(current, revision, select_for_downgrade=True))
    except (RevisionError, CommandError) as error:
        at = ", ".join(current) or "base"
        raise UsageProblem(f"{target.name}: cannot {'upgrade' if upgrade else 'downgrade'} to {revision!r} from {at}: {error}") from error
    return [Step(s.revision, s.doc or "", upgrade, s.path) for s in scripts]


def _outside_transaction(target: Target, step: Step) -> list[str]:
    """Refusals for a revision file that holds something that cannot run inside a transaction."""
    tree = ast.parse(Path(step.path).read_text(), step.path)
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in docstrings:
            continue
        if isinstance(node, ast.Attribute) and node.attr == "autocommit_block":
            found.add("autocommit_block()")
        elif isinstance(node, ast.keyword) and node.arg == "postgresql_concurrently":
            found.add("postgresql_concurrently")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.update(" ".join(m.group(0).split()).upper() for m in _NOT_IN_TRANSACTION.finditer(node.value))
    return [
        f"{target.name}: revision {step.revision} ({step.path}) uses {what}, which cannot run inside the run's"
        " transaction (see docs/writing-migrations.md)"
        for what in sorted(found)
    ]
