"""The body of every project's `env.py`: each one calls `run(<its database name>)`.

The URL comes from, in order: a connection passed in `config.attributes["connection"]`
(how `tg-parser` calls Alembic), `-x url=...`, then Settings.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import make_url

from tg_parser.core.settings import load_settings
from tg_parser.storage.databases import DATABASES, Database, get_database
from tg_parser.storage.engine import make_engine


def run(name: str) -> None:
    db = get_database(name)
    config = context.config
    if config.cmd_opts is not None and config.config_file_name:
        # Only under the `alembic` command line: inside another program, leave its logging alone.
        fileConfig(config.config_file_name, disable_existing_loggers=False)

    options = dict(
        version_table=db.version_table,
        target_metadata=db.metadata,
        include_name=_only_own_tables(db),
        render_as_batch=True,
        transactional_ddl=True,
        compare_type=True,
        on_version_apply=config.attributes.get("on_version_apply"),
    )
    if context.is_offline_mode():
        context.configure(url=_url(db), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return

    connection = config.attributes.get("connection")
    if connection is not None:
        _run_online(connection, options)
        return
    engine = make_engine(_url(db))
    try:
        with engine.connect() as connection:
            _run_online(connection, options)
    finally:
        engine.dispose()


def _run_online(connection, options: dict) -> None:
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


def _url(db: Database):
    url = context.get_x_argument(as_dictionary=True).get("url")
    return make_url(url) if url else load_settings().url(db)


def _only_own_tables(db: Database):
    """Autogenerate sees this database's tables and unknown ones, never another project's.

    The three projects may share one PostgreSQL database; their tables and version
    tables must not look like drift to each other.
    """
    others = {
        name
        for other in DATABASES
        if other is not db
        for name in (*other.metadata.tables, other.version_table)
    }
    others.add("sqlite_sequence")

    def include_name(name, type_, _parent_names):
        return type_ != "table" or name not in others

    return include_name
