"""The structured events tg_parser logs: one registry of names and fields, and `emit`.

Library code logs through the standard `logging` module only, so a program that imports
tg_parser keeps full control of its own logging; the event's fields travel in the record
(`record.event_fields`) and the CLI's formatter (tg_parser.cli.logs) renders them as one
JSON object or one text line. Fields never hold keys, passwords (locations are masked),
prompts or replies: lengths and token counts only.
"""

from __future__ import annotations

import logging

EVENTS: dict[str, tuple[str, ...]] = {
    "command_started": ("command", "databases"),
    "command_finished": ("command", "databases", "exit_code", "seconds"),
    "lock_waiting": ("database", "timeout"),
    "lock_acquired": ("database", "waited_seconds"),
    "database_planned": ("database", "current", "steps", "adoption", "destructive"),
    "run_refused": ("reasons",),
    "backup_taken": ("database", "path", "bytes", "seconds", "blake3"),
    "revision_applied": ("database", "from_revision", "to_revision", "seconds"),
    "revision_reverted": ("database", "from_revision", "to_revision", "seconds"),
    "index_built": ("database", "table", "index", "seconds"),
    "database_committed": ("database", "revision", "held_seconds"),
    "database_rolled_back": ("database", "revision", "reason"),
    "restore_finished": ("database", "backup", "safety_backup", "seconds"),
    "backups_pruned": ("database", "paths"),
    "table_transferred": ("database", "table", "rows", "checksum", "equal"),
    "llm_attempt": (
        "api", "model", "attempt", "status", "error", "latency", "input_tokens", "output_tokens",
        "reasoning_tokens", "delay", "delay_reason",
    ),
    "llm_call_finished": ("api", "model", "outcome", "attempts", "seconds", "input_tokens", "output_tokens"),
    "cli_message": ("text",),
}
"""Every event name with the fields it always carries (in JSON logs, besides ts, level, logger, run_id)."""


def emit(logger: logging.Logger, event: str, level: int = logging.INFO, **fields) -> None:
    """Log `event` with its fields; the fields must be exactly the registered ones."""
    expected = EVENTS[event]
    if set(fields) != set(expected):
        raise ValueError(f"event {event} takes {expected}, got {tuple(fields)}")
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"event_fields": fields})
