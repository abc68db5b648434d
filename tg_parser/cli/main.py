"""`tg-parser`: the command line. Parses options, calls the orchestrator, renders, maps exit codes."""

from __future__ import annotations

import sys

import click

from tg_parser import __version__
from tg_parser.cli import render
from tg_parser.cli.db import db, options, repair_option, selected_targets
from tg_parser.cli.llm import llm
from tg_parser.core.settings import SettingsError, load_llm_settings, load_retry_settings, load_settings


class TgParserGroup(click.Group):
    """Turns a bad setting into one line and exit code 2, whichever command hit it."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)


@click.group(cls=TgParserGroup)
@click.version_option(__version__, prog_name="tg-parser")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """TG_parser: collect Telegram channels, process them with LLMs, build a topic knowledge base."""
    ctx.obj = load_settings()
    load_retry_settings()  # a bad value in any setting stops every command, naming the variable
    load_llm_settings()


@cli.command()
@click.option("--no-backup", is_flag=True, help="Do not back up existing SQLite files first.")
@repair_option
@click.pass_obj
def init(settings, no_backup: bool, repair: bool) -> None:
    """Create all three databases, or adopt and upgrade existing ones, to the newest schema."""
    from tg_parser.migrate.orchestrator import upgrade

    targets = selected_targets(settings, ())
    render.run_migration(upgrade, targets, "head", options(settings, no_backup=no_backup, repair=repair))


cli.add_command(db)
cli.add_command(llm)
