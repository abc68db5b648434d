"""A stand-in for the collector: inserts raw messages, one per transaction, and logs each after its commit returned.

    python tests/writer.py DATABASE LOG STOP_FILE [PAUSE_SECONDS] [pairs]

Each line of LOG is `<source_ref> <monotonic time the commit returned> <seconds it waited>`;
a line is written only once the commit has returned, so every logged row was committed.
SQLITE_BUSY after the busy timeout is retried, as a collector would. Stops when STOP_FILE exists.
With `pairs`, each transaction also records a raw_conflicts row for its message, so a copy
that is not one snapshot shows as a message without its conflict row (or the reverse).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time

BUSY_TIMEOUT_S = 120
INSERT = (
    "INSERT INTO raw_messages (source_ref, id, message_type, channel_id, date, text, inserted_at)"
    " VALUES (?, ?, 'post', 'writer', '2026-11-28T00:00:00Z', ?, '2026-11-28T00:00:00Z')"
)
PAIR = "INSERT INTO raw_conflicts (source_ref, observed_at, reason) VALUES (?, '2026-11-28T00:00:00Z', 'writer')"


def main() -> None:
    database, log, stop = sys.argv[1:4]
    pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.002
    pairs = sys.argv[5:6] == ["pairs"]
    connection = sqlite3.connect(database, timeout=BUSY_TIMEOUT_S)
    number = 0
    with open(log, "a") as out:
        while not os.path.exists(stop):
            number += 1
            ref = f"writer:{os.getpid()}:{number}"
            started = time.monotonic()
            while True:
                try:
                    connection.execute(INSERT, (ref, str(number), f"message {number} from the writer"))
                    if pairs:
                        connection.execute(PAIR, (ref,))
                    connection.commit()
                    break
                except sqlite3.OperationalError as error:
                    connection.rollback()
                    if "locked" not in str(error) and "busy" not in str(error):
                        raise
            done = time.monotonic()
            out.write(f"{ref} {done:.6f} {done - started:.6f}\n")
            out.flush()
            time.sleep(pause)


if __name__ == "__main__":
    main()
