"""`tg-parser db ...`: Alembic's commands over the three databases, one `--only` away from one."""

from __future__ import annotations

import click

from tg_parser.cli import render
from tg_parser.migrate import orchestrator
from tg_parser.migrate.target import Target
from tg_parser.storage.databases import NAMES, select

only_option = click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(NAMES),
    help="Act on this database only (repeatable). Default: all three.",
)


def selected_targets(settings, only) -> list[Target]:
    return [Target.from_settings(db, settings) for db in select(only)]


def _checked(targets: list[Target], revision: str) -> None:
    try:
        orchestrator.validate_revision(targets, revision)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="REVISION") from None


@click.group()
def db() -> None:
    """Inspect and migrate the databases (ingestion, raw, processing)."""


@db.command()
@click.argument("revision", default="head")
@only_option
@click.pass_obj
def upgrade(settings, revision: str, only) -> None:
    """Upgrade to REVISION (default: head), in the order ingestion, raw, processing."""
    targets = selected_targets(settings, only)
    _checked(targets, revision)
    render.run_migration(orchestrator.upgrade, targets, revision, verb="upgrade")


@db.command()
@click.argument("revision", default="-1")
@only_option
@click.pass_obj
def downgrade(settings, revision: str, only) -> None:
    """Downgrade to REVISION (default: one step back), in the order processing, raw, ingestion."""
    targets = selected_targets(settings, only)
    _checked(targets, revision)
    render.run_migration(orchestrator.downgrade, targets, revision, verb="downgrade")


@db.command()
@only_option
@click.pass_obj
def current(settings, only) -> None:
    """Show each database's revision and whether it is at head."""
    for target in selected_targets(settings, only):
        render.current(target)


@db.command()
@only_option
@click.pass_obj
def history(settings, only) -> None:
    """List each project's revisions, newest first, marking the one each database is at."""
    for target in selected_targets(settings, only):
        render.history(target)
