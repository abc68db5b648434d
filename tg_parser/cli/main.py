"""`tg-parser`: the command line. Parses options, calls the orchestrator, renders, maps exit codes."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from tg_parser import __version__
from tg_parser.cli import logs, render
from tg_parser.cli.db import db, options, repair_option, selected_targets, wal_option, yes_option
from tg_parser.cli.llm import llm
from tg_parser.core.settings import (
    SettingsError,
    load_llm_settings,
    load_log_settings,
    load_retry_settings,
    load_settings,
)
from tg_parser.migrate.interrupt import Interrupted


class TgParserGroup(logs.LoggedGroup):
    """Turns a bad setting into one line and exit code 2, whichever command hit it, and a signal
    that arrives before a command has started changing anything into its own exit code."""

    def main(self, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminated)
        return super().main(*args, **kwargs)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            logs.human(f"error: {error}")
            sys.exit(2)
        except KeyboardInterrupt as interruption:
            signum = getattr(interruption, "signum", signal.SIGINT)
            logs.human(f"interrupted by {signal.Signals(signum).name} before anything was changed")
            sys.exit(128 + signum)


def _terminated(signum, _frame):
    raise Interrupted(signum)


EPILOG = """\b
Settings come from the environment and from .env in the working folder
(every variable: docs/configuration.md).
Exit codes: 0 success or nothing to do; 1 failed, every database rolled back;
2 usage or setting error; 3 refused for safety, nothing changed;
4 final commits cut off, run again; 130/143 interrupted, rolled back."""


@click.group(cls=TgParserGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tg-parser")
@click.option("-v", "--verbose", is_flag=True, help="Log events as text on standard error too.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Overrides LOG_LEVEL (default INFO); events on standard error too.")
@click.option("--log-format", type=click.Choice(["text", "json"], case_sensitive=False),
              help="Overrides LOG_FORMAT (default text); json: events on standard error, one JSON object per line.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, log_level: str | None, log_format: str | None) -> None:
    """TG_parser: collect Telegram channels, process them with LLMs, build a topic knowledge base."""
    ctx.call_on_close(logs.unconfigure)
    logs.quiet("dotenv.main")  # its warnings about .env are said once, below, with the file's path
    overrides = {k: v for k, v in (("level", log_level), ("format", log_format)) if v}
    logging_settings = load_log_settings(**overrides)
    asked_by_option = verbose or log_level is not None or (log_format or "").lower() == "json"
    asked_by_setting = not logging_settings.file and logging_settings.format == "json"
    try:
        logs.configure(logging_settings.level, logging_settings.format, logging_settings.file,
                       events_on_stderr=asked_by_option or asked_by_setting)
    except OSError as error:  # a folder that is missing or not writable
        raise SettingsError(f"invalid setting: LOG_FILE: cannot append to {logging_settings.file} ({error.strerror})") from None
    _warn_about_env_file(Path(".env"))
    ctx.obj = load_settings()
    load_retry_settings()  # a bad value in any setting stops every command, naming the variable
    load_llm_settings()


@cli.command()
@click.option("--no-backup", is_flag=True, help="Do not back up existing SQLite files first.")
@repair_option
@wal_option
@yes_option
@click.pass_obj
def init(settings, no_backup: bool, repair: bool, wal: bool, yes: bool) -> None:
    """Create or upgrade all three databases to head.

    Databases of earlier releases are adopted; everything runs as in `tg-parser db upgrade`.
    """
    from tg_parser.migrate.orchestrator import upgrade

    targets = selected_targets(settings, ())
    run = options(settings, no_backup=no_backup, yes=yes, repair=repair, wal=wal, question="Upgrade anyway?")
    render.run_migration(upgrade, targets, "head", run)


def _warn_about_env_file(path: Path) -> None:
    """Name each line of .env that cannot be parsed, once (each settings class would warn again, unnamed)."""
    if not path.is_file():
        return
    from dotenv.parser import parse_stream

    with path.open() as stream:
        bad = [binding.original.line for binding in parse_stream(stream) if binding.error]
    for line in bad:  # the line itself is not shown: it may hold a secret
        logs.human(f"warning: {path.absolute()} line {line} cannot be parsed and is ignored", logging.WARNING)


cli.add_command(db)
cli.add_command(llm)


def _with_epilog(command: click.Command) -> None:
    """Every command's --help ends with where settings come from and what the exit codes mean."""
    command.epilog = command.epilog or EPILOG
    for sub in getattr(command, "commands", {}).values():
        _with_epilog(sub)


_with_epilog(cli)
