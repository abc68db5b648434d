"""Logging for the `tg-parser` command line only: one voice on the terminal, events where asked.

By default the terminal gets only the human lines (results on standard output; errors, and
warnings of Alembic or Python that the human lines do not say, on standard error), each once,
as Alembic and Django users expect. The structured events go to LOG_FILE when it is set, and to
standard error when asked for (`-v`, `--log-level`, `--log-format json`, or LOG_FORMAT=json
without LOG_FILE).

structlog's `ProcessorFormatter` renders every standard-library record, tg_parser's events
and Alembic's own messages alike, with `ts` (UTC, RFC 3339, milliseconds), `level`, `logger`,
`event` and a `run_id` shared by every line of one invocation. The handlers are attached to
the `tg_parser`, `alembic` and `py.warnings` loggers only while a command runs and removed when it ends, so
the root logger, and any program that runs the CLI in-process, keep their own settings.
Logs never go to standard output.
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
    handlers: list[logging.Handler] = field(default_factory=list)
    json_on_stderr: bool = False
    to_file: bool = False
    saved: list[tuple[logging.Logger, int, bool]] = field(default_factory=list)


state = _State()


def configure(level: str, fmt: str, file: str | None, *, events_on_stderr: bool) -> str:
    """Install the handlers for one command; return its run id."""
    state.run_id = uuid.uuid4().hex[:12]
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[_timestamp, structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           _fields_and_run_id],
    )
    events = ([logging.FileHandler(file)] if file else []) + ([logging.StreamHandler(sys.stderr)]
                                                              if events_on_stderr else [])
    for handler in events:
        handler.setFormatter(formatter)
        handler.addFilter(_without_dialect_announcements)
    state.handlers, state.to_file = list(events), bool(file)
    state.json_on_stderr = fmt == "json" and events_on_stderr
    numeric = logging.getLevelName(level)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        state.saved.append((logger, logger.level, logger.propagate))
        for handler in events:
            logger.addHandler(handler)
        logger.setLevel(numeric)
        logger.propagate = False
    if not events_on_stderr:  # the person still hears Alembic's and Python's warnings, as human lines
        warnings = logging.StreamHandler(sys.stderr)
        warnings.setLevel(logging.WARNING)
        warnings.setFormatter(_HumanWarning())
        warnings.addFilter(_not_said_by_a_human_line)
        state.handlers.append(warnings)
        for name in LOGGERS:
            logging.getLogger(name).addHandler(warnings)
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
        for handler in state.handlers:
            logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    state.saved = []
    if state.handlers:
        logging.captureWarnings(False)
        for handler in state.handlers:
            handler.close()
        state.handlers = []
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


def _not_said_by_a_human_line(record: logging.LogRecord) -> bool:
    """tg_parser's own events are said by its human lines; so is Alembic's warning that a batch
    rebuild omits unnamed CHECKs (the run names each one it would lose, and needs --yes for it)."""
    return not record.name.startswith("tg_parser") and "Unnamed CHECK constraint" not in record.getMessage()


class _HumanWarning(logging.Formatter):
    """`warning: <first line>`; a Python warning's own location and source line left out."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage().strip()
        if record.name == "py.warnings":  # "file:line: Category: message\n  source line"
            text = text.splitlines()[0].split(": ", 2)[-1] if text else text
        word = "error" if record.levelno >= logging.ERROR else "warning"
        return f"{word}: {text.splitlines()[0] if text else text}"


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
