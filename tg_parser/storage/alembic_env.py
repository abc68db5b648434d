"""The body of every project's `env.py`: each one calls `run(<its database name>)`.

The database comes from, in order: a connection or an Engine (or, for `--sql`, a URL)
passed in `config.attributes` (how `tg-parser` and pytest-alembic call Alembic),
`-x url=...`, then Settings.

`tg-parser` passes a connection whose transaction it already holds; Alembic then neither
begins nor commits, and the run commits every database together. Given an Engine (as
pytest-alembic passes), or run by the `alembic` command, the whole command is one transaction
that begins with the database's write lock (`tg_parser.storage.lock`), so a failure anywhere
leaves the database as it was. An Engine of SQLite should come from
`tg_parser.storage.engine.make_engine(url, write_lock=True)`: a plain one lets the driver run
DDL outside the transaction.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from alembic.autogenerate.rewriter import Rewriter
from alembic.operations import ops
from sqlalchemy.engine import Connection, Engine, make_url

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

    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run_online(given, options)
        return
    timeout = load_settings().lock_timeout
    if isinstance(given, Engine):
        _run_locked(given, db, options, timeout)
        return
    engine = make_engine(_url(db), write_lock=True, busy_timeout=timeout)
    try:
        _run_locked(engine, db, options, timeout)
    finally:
        engine.dispose()


def _run_locked(engine: Engine, db: Database, options: dict, timeout: float) -> None:
    """One transaction that begins with the database's write lock, committed when every revision ran."""
    with engine.connect() as connection:
        where = engine.url.render_as_string(hide_password=True)
        transaction = begin_locked(connection, db.version_table, where, timeout)
        _run_online(connection, options)
        transaction.commit()


def _run_online(connection: Connection, options: dict) -> None:
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


def _revision_directives(db: Database, keep_empty: bool):
    """Autogenerate's hook: drop known noise, and (when asked) write nothing when nothing changed."""
    rewriter = without_primary_key_nullability(db)

    def process(context, revision, directives) -> None:
        rewriter(context, revision, directives)
        if not keep_empty and directives and directives[0].upgrade_ops.is_empty():
            directives[:] = []

    return process


def without_primary_key_nullability(db: Database) -> Rewriter:
    """The project's autogenerate rewriter (`process_revision_directives`).

    On a server database, every primary-key column is NOT NULL, so autogenerate proposes making
    the ones the 3.0.0 schema left nullable nullable again: that noise is dropped, and with it
    each table's container it leaves empty, so an up-to-date database gives an empty revision.
    """
    writer = Rewriter()

    @writer.rewrites(ops.ModifyTableOps)
    def drop_noise(context, revision, table_ops):
        if context.dialect.name != "sqlite":
            for op in table_ops.ops:
                if isinstance(op, ops.AlterColumnOp) and db.is_nullable_primary_key(op.table_name, op.column_name):
                    op.modify_nullable = None
            table_ops.ops = [op for op in table_ops.ops if not isinstance(op, ops.AlterColumnOp) or op.has_changes()]
        return table_ops if table_ops.ops else []

    return writer


def _url(db: Database):
    if "url" in context.config.attributes:
        return context.config.attributes["url"]
    url = context.get_x_argument(as_dictionary=True).get("url")
    return make_url(url) if url else load_settings().url(db)
