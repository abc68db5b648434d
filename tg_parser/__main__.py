"""`python -m tg_parser` is `tg-parser`."""

from tg_parser.cli.main import cli

cli(prog_name="tg-parser")
