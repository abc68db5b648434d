"""`tg-parser` with a fault at the commit of one database, for the tests of the final commits.

    COMMIT_FAULT_AT=<file name> COMMIT_FAULT=raise|kill|term python tests/commit_hook.py db upgrade ...

Just before the COMMIT of the connection whose URL contains COMMIT_FAULT_AT: `raise` makes that
commit fail as a disk error would, `kill` SIGKILLs the process, `term` sends it SIGTERM and lets
the commit go on.
"""

import os
import signal
import sys

from sqlalchemy import event
from sqlalchemy.engine import Engine


@event.listens_for(Engine, "commit")
def fault(connection) -> None:
    if os.environ["COMMIT_FAULT_AT"] not in str(connection.engine.url):
        return
    fault = os.environ["COMMIT_FAULT"]
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        raise OSError(5, "disk I/O error (injected at the commit)")


if __name__ == "__main__":
    from tg_parser.cli.main import cli

    cli(sys.argv[1:], prog_name="tg-parser")
