"""Alembic environment of the `ingestion` database; the shared logic lives in tg_parser."""

from tg_parser.storage.alembic_env import run

run("ingestion")
