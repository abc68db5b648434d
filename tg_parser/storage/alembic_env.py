"""The body of every project's `env.py`: each one calls `run(<its database name>)`.

The database comes from, in order: a connection (or, for `--sql`, a URL) passed in
`config.attributes` (how `tg-parser` calls Alembic), `-x url=...`, then Settings.

`tg-parser` passes a connection whose transaction it already holds; Alembic then neither
begins nor commits, and the run commits every database together. Run by the `alembic`
command, the whole command is one transaction that begins with the database's write lock
(`tg_parser.storage.lock`), so a failure anywhere leaves the database as it was.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from alembic.autogenerate.rewriter import Rewriter
from alembic.operations import ops
from sqlalchemy.engine import make_url

from tg_parser.core.settings import load_settings
from tg_parser.storage.databases import Database, get_database
from tg_parser.storage.engine import make_engine
from tg_parser.storage.lock import begin_locked


def run(name: str) -> None:
    db = get_database(name)
    config = context.config
    if config.cmd_opts is not None and config.config_file_name:
        # Only under the `alembic` command line: inside another program, leave its logging alone.
        fileConfig(config.config_file_name, disable_existing_loggers=False)

    options = dict(
        version_table=db.version_table,
        target_metadata=db.metadata,
        include_name=db.include_name,
        render_as_batch=True,
        transactional_ddl=True,
        compare_type=True,
        process_revision_directives=_revision_directives(db, config.attributes.get("keep_empty", True)),
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
    url = _url(db)
    timeout = load_settings().lock_timeout
    engine = make_engine(url, write_lock=True, busy_timeout=timeout)
    try:
        with engine.connect() as connection:
            where = url.render_as_string(hide_password=True)
            transaction = begin_locked(connection, db.version_table, where, timeout)
            _run_online(connection, options)
            transaction.commit()
    finally:
        engine.dispose()


def _run_online(connection, options: dict) -> None:
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


def _revision_directives(db: Database, keep_empty: bool):
    """Autogenerate's hook: drop known noise, and (when asked) write nothing when nothing changed."""
    rewriter = _without_primary_key_nullability(db)

    def process(context, revision, directives) -> None:
        rewriter(context, revision, directives)
        if not keep_empty and directives and directives[0].upgrade_ops.is_empty():
            directives[:] = []

    return process


def _without_primary_key_nullability(db: Database) -> Rewriter:
    """Autogenerate on a server database must not propose making a primary key nullable again."""
    writer = Rewriter()

    @writer.rewrites(ops.AlterColumnOp)
    def drop_noise(context, revision, op):
        noise = (
            context.dialect.name != "sqlite"
            and op.modify_nullable is not None
            and db.is_nullable_primary_key(op.table_name, op.column_name)
        )
        return [] if noise else op

    return writer


def _url(db: Database):
    if "url" in context.config.attributes:
        return context.config.attributes["url"]
    url = context.get_x_argument(as_dictionary=True).get("url")
    return make_url(url) if url else load_settings().url(db)
