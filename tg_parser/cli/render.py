"""What `tg-parser` prints: one line per database and revision, then a summary."""

from __future__ import annotations

import sys
import time

import click

from tg_parser.migrate.orchestrator import MigrationFailed, Outcome, Refused
from tg_parser.migrate.target import Target, Unreadable

NAME_WIDTH = 10
EXIT_FAILED = 1
EXIT_REFUSED = 3


def _revisions(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) if revisions else "(none)"


def run_migration(function, targets: list[Target], revision: str, *, verb: str) -> None:
    started = time.perf_counter()
    try:
        outcomes = function(targets, revision, report=_outcome)
    except Refused as refusal:
        for problem in refusal.problems:
            click.echo(f"refused: {problem}", err=True)
        click.echo("Nothing was changed.", err=True)
        sys.exit(EXIT_REFUSED)
    except MigrationFailed as error:
        click.echo(f"error: {verb} failed: {error}", err=True)
        sys.exit(EXIT_FAILED)
    applied = sum(len(o.steps) for o in outcomes)
    changed = sum(o.changed for o in outcomes)
    if not applied:
        click.echo(f"Nothing to do: no database needed a{'n' if verb == 'upgrade' else ''} {verb}.")
    else:
        click.echo(
            f"Done: {applied} revision(s) applied to {changed} of {len(outcomes)} database(s) "
            f"in {time.perf_counter() - started:.2f} s."
        )


def _outcome(outcome: Outcome) -> None:
    click.echo(f"{outcome.name:<{NAME_WIDTH}} {outcome.location}")
    for step in outcome.steps:
        verb = "applied " if step.upgrade else "reverted"
        click.echo(f"  {verb} {step.revision}  {step.description}  ({step.seconds:.2f} s)")
    if not outcome.steps:
        click.echo(f"  unchanged at {_revisions(outcome.after)}")
    elif outcome.after != outcome.before:
        click.echo(f"  now at {_revisions(outcome.after)}")


def current(target: Target) -> None:
    if not target.exists():
        state = "(no file yet)"
    else:
        revisions = _read_current(target)
        at_head = set(revisions) == set(target.heads())
        state = _revisions(revisions) + (" (head)" if at_head else " (behind head)")
    click.echo(f"{target.name:<{NAME_WIDTH}} {state:<28} {target.location}")


def history(target: Target) -> None:
    click.echo(f"{target.name:<{NAME_WIDTH}} {target.location}")
    current_revisions = set(_read_current(target))
    heads = set(target.heads())
    for script in target.script.walk_revisions():
        marks = [m for m, on in (("head", script.revision in heads), ("current", script.revision in current_revisions)) if on]
        suffix = f" ({', '.join(marks)})" if marks else ""
        click.echo(f"  {script.revision}{suffix}  {script.doc}")


def _read_current(target: Target) -> tuple[str, ...]:
    try:
        return target.current()
    except Unreadable as error:
        click.echo(f"error: {target.name}: {error}", err=True)
        sys.exit(EXIT_FAILED)
