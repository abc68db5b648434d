"""TG_parser storage foundation: settings, schema as code and migrations of its three databases."""

import logging

__version__ = "3.1.0a1"

# A library logs through `logging` and prints nothing until its host configures logging
# (otherwise Python's last-resort handler would put bare event names on standard error).
logging.getLogger(__name__).addHandler(logging.NullHandler())
