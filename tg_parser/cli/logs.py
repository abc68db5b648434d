"""Logging for the `tg-parser` command line only: one event per line, as JSON or as text.

structlog's `ProcessorFormatter` renders every standard-library record, tg_parser's events
and Alembic's own messages alike, with `ts` (UTC, RFC 3339, milliseconds), `level`, `logger`,
`event` and a `run_id` shared by every line of one invocation. The handler is attached to
the `tg_parser`, `alembic` and `py.warnings` loggers only while a command runs and removed when it ends, so
the root logger, and any program that runs the CLI in-process, keep their own settings.
Logs go to standard error or LOG_FILE, never to standard output.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import click
import structlog

from tg_parser.core.events import emit
from tg_parser.storage.databases import NAMES

LOGGERS = ("tg_parser", "alembic", "py.warnings")
QUIET = ("sqlalchemy", "httpx", "httpcore")
"""Libraries whose debug output would carry SQL parameters or HTTP details: kept at WARNING."""

log = logging.getLogger("tg_parser.cli")


@dataclass
class _State:
    run_id: str = ""
    handler: logging.Handler | None = None
    json_on_stderr: bool = False
    to_file: bool = False
    saved: list[tuple[logging.Logger, int, bool]] = field(default_factory=list)


state = _State()


def configure(level: str, fmt: str, file: str | None) -> str:
    """Install the handler for one command; return its run id."""
    state.run_id = uuid.uuid4().hex[:12]
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[_timestamp, structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           _fields_and_run_id],
    )
    handler = logging.FileHandler(file) if file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_without_dialect_announcements)
    state.handler, state.to_file = handler, bool(file)
    state.json_on_stderr = fmt == "json" and not file
    numeric = logging.getLevelName(level)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        state.saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(numeric)
        logger.propagate = False
    for name in QUIET:
        quiet(name, max(numeric, logging.WARNING))
    logging.captureWarnings(True)  # Python warnings (Alembic's among them) become log lines too
    return state.run_id


def quiet(name: str, level: int = logging.ERROR) -> None:
    """Raise one library logger's level for this command; `unconfigure` puts it back."""
    logger = logging.getLogger(name)
    state.saved.append((logger, logger.level, logger.propagate))
    logger.setLevel(level)


def unconfigure() -> None:
    """Put every logger back as it was and close the handler."""
    for logger, level, propagate in reversed(state.saved):
        if state.handler is not None:
            logger.removeHandler(state.handler)
        logger.setLevel(level)
        logger.propagate = propagate
    state.saved = []
    if state.handler is not None:
        logging.captureWarnings(False)
        state.handler.close()
        state.handler = None
    state.json_on_stderr = state.to_file = False


class LoggedCommand(click.Command):
    """A command that logs `command_started` and `command_finished` (with its exit code and time)."""

    def invoke(self, ctx: click.Context):
        command = ctx.command_path.split(" ", 1)[-1]
        only = ctx.params.get("only") or ((ctx.params["name"],) if "name" in ctx.params else ())
        databases = list(only) or (list(NAMES) if command.split()[0] in ("db", "init") else [])
        emit(log, "command_started", command=command, databases=databases)
        started, code = time.monotonic(), 1
        try:
            result = super().invoke(ctx)
            code = 0
            return result
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            raise
        except click.ClickException as error:
            code = error.exit_code
            raise
        finally:
            emit(log, "command_finished", command=command, databases=databases, exit_code=code,
                 seconds=round(time.monotonic() - started, 3))


class LoggedGroup(click.Group):
    """A group whose commands (and subgroups) are `LoggedCommand`s."""

    command_class = LoggedCommand


LoggedGroup.group_class = LoggedGroup


def human(text: str, level: int = logging.ERROR) -> None:
    """A line for the person at the terminal: on standard error, or as a `cli_message` event when
    standard error carries JSON logs (so every line there parses); also into LOG_FILE."""
    if not state.json_on_stderr:
        click.echo(text, err=True)
    if state.json_on_stderr or state.to_file:
        emit(log, "cli_message", level, text=text)


def _without_dialect_announcements(record: logging.LogRecord) -> bool:
    """Alembic announces its dialect each time a migration context is made (every read of a
    version table: "Context impl SQLiteImpl.", "Will assume transactional DDL.") and each plugin
    autogenerate loads. Noise, not events."""
    if record.name == "alembic.runtime.plugins":
        return False
    return not (record.name == "alembic.runtime.migration" and record.msg.startswith(("Context impl", "Will assume")))


def _timestamp(_logger, _name, event: dict) -> dict:
    event["ts"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return event


def _fields_and_run_id(_logger, _name, event: dict) -> dict:
    record = event.get("_record")
    fields = getattr(record, "event_fields", None)
    if fields:
        event.update(fields)
    event["run_id"] = state.run_id
    return event
