"""Ctrl-C and SIGTERM (what `timeout`, systemd and docker send) become an exception the run can roll back on.

SQLite runs a long statement in C, where Python cannot raise. A progress handler on each
connection calls back into Python every few thousand steps; the signal handler then runs,
the callback fails, and SQLite interrupts the statement. While the final commits run,
signals are only recorded: stopping between two commits would split the run.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SQLITE_CHECK_EVERY = 50_000
"""SQLite virtual-machine steps between two chances to notice a signal."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; a KeyboardInterrupt, so drivers (psycopg) cancel their query."""

    def __init__(self, signum: int, outcomes: list | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.outcomes = outcomes or []

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class Signals:
    received: int | None = None
    deferred: bool = False


@contextmanager
def raised_as_interrupted() -> Iterator[Signals]:
    """While inside, SIGINT and SIGTERM raise `Interrupted` (or are only recorded while `deferred`)."""
    state = Signals()
    if threading.current_thread() is not threading.main_thread():
        yield state  # signals reach only the main thread; a host program running us elsewhere keeps its own
        return

    def handler(signum, _frame):
        state.received = signum
        if not state.deferred:
            raise Interrupted(signum)

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


def watch_sqlite(driver_connection) -> None:
    """Let a pending signal interrupt a long SQLite statement on this connection."""
    driver_connection.set_progress_handler(lambda: 0, SQLITE_CHECK_EVERY)
