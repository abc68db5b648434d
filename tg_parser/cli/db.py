"""`tg-parser db ...`: Alembic's commands over the three databases, one `--only` away from one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from alembic import command

from tg_parser.cli import render
from tg_parser.migrate.target import Target
from tg_parser.storage.databases import NAMES, get_database, select

only_option = click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(NAMES),
    help="Act on this database only (repeatable). Default: all three.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
yes_option = click.option("--yes", is_flag=True, help="Confirm without asking.")
no_backup_option = click.option("--no-backup", is_flag=True, help="Do not back up SQLite files first.")


def selected_targets(settings, only) -> list[Target]:
    return [Target.from_settings(db, settings) for db in select(only)]


def options(settings, *, no_backup: bool = False, yes: bool = False):
    from tg_parser.migrate.orchestrator import Options

    return Options(
        backups_dir=settings.backups_dir,
        backup_keep=settings.backup_keep,
        lock_timeout=settings.lock_timeout,
        backup=not no_backup,
        confirm=lambda reasons: render.confirm(reasons, yes, "Downgrade anyway?"),
        progress=render.progress,
        waiting=render.waiting,
        configured=selected_targets(settings, ()),
    )


def _checked(targets: list[Target], revision: str) -> None:
    from tg_parser.migrate import orchestrator

    try:
        orchestrator.validate_revision(targets, revision)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="REVISION") from None


@click.group()
def db() -> None:
    """Inspect and migrate the databases (ingestion, raw, processing)."""


@db.command()
@click.argument("revision", default="head")
@only_option
@no_backup_option
@click.option("--sql", is_flag=True, help="Print each database's SQL instead of running it.")
@click.pass_obj
def upgrade(settings, revision: str, only, no_backup: bool, sql: bool) -> None:
    """Upgrade to REVISION (default: head), in the order ingestion, raw, processing.

    Databases of releases 1.x-3.0.0 (tables but no version table) are adopted first.
    """
    targets = selected_targets(settings, only)
    _checked(targets, revision)
    if sql:
        render.guarded(lambda: [render.upgrade_sql(t, revision) for t in targets])
        return
    from tg_parser.migrate.orchestrator import upgrade

    render.run_migration(upgrade, targets, revision, options(settings, no_backup=no_backup))


@db.command()
@click.argument("revision", default="-1")
@only_option
@no_backup_option
@yes_option
@click.pass_obj
def downgrade(settings, revision: str, only, no_backup: bool, yes: bool) -> None:
    """Downgrade to REVISION (default: one step back), in the order processing, raw, ingestion.

    A downgrade to base, or one that drops a table or column holding data, needs --yes
    or a confirmation at the terminal.
    """
    targets = selected_targets(settings, only)
    _checked(targets, revision)
    from tg_parser.migrate.orchestrator import downgrade

    render.run_migration(downgrade, targets, revision, options(settings, no_backup=no_backup, yes=yes))


@db.command()
@only_option
@json_option
@click.pass_obj
def current(settings, only, as_json: bool) -> None:
    """Show each database's revision and whether it is at head."""
    render.current(selected_targets(settings, only), as_json)


@db.command()
@only_option
@json_option
@click.pass_obj
def history(settings, only, as_json: bool) -> None:
    """List each project's revisions, newest first, marking head and current."""
    render.history(selected_targets(settings, only), as_json)


@db.command()
@only_option
@click.pass_obj
def heads(settings, only) -> None:
    """Show each project's head revision(s)."""
    for target in selected_targets(settings, only):
        click.echo(f"{target.name:<{render.NAME_WIDTH}} {', '.join(target.heads())}")


@db.command()
@only_option
@json_option
@click.pass_obj
def check(settings, only, as_json: bool) -> None:
    """Exit 0 only if every project has one head, every database is at head, and no schema drifted."""
    from tg_parser.migrate.check import check as check_target

    results = [check_target(t) for t in selected_targets(settings, only)]
    render.check(results, as_json)
    sys.exit(0 if all(r.ok for r in results) else render.EXIT_FAILED)


@db.command()
@click.option("--only", "name", required=True, type=click.Choice(NAMES), help="The database to add it to.")
@click.option("-m", "--message", required=True, help="What the revision does.")
@click.option("--autogenerate", is_flag=True, help="Fill it from the difference between the schema code and the database.")
@click.pass_obj
def revision(settings, name: str, message: str, autogenerate: bool) -> None:
    """Write a new revision into one database's Alembic project (in a source checkout only)."""
    database = get_database(name)
    if not database.is_source_checkout:
        raise click.UsageError(
            f"{database.migrations_dir} is inside the installed tg_parser package, where a new revision "
            "would be lost on the next install: write revisions in a source checkout (git clone, pip install -e .)"
        )
    target = Target.from_settings(database, settings)
    rev_id = f"{name}_{len(list(target.script.walk_revisions())) + 1:04d}"

    def write():
        if not autogenerate:
            return command.revision(target.config(), message=message, rev_id=rev_id)
        with target.connect() as connection:
            return command.revision(target.config(connection), message=message, autogenerate=True, rev_id=rev_id)

    script = render.guarded(write)
    click.echo(f"{name:<{render.NAME_WIDTH}} wrote {script.path}")


@db.command()
@only_option
@json_option
def paths(only, as_json: bool) -> None:
    """Print each project's alembic.ini path.

    One per line, for plain Alembic on an installed copy:

    \b
    alembic -c "$(tg-parser db paths --only raw)" upgrade head
    """
    databases = select(only)
    if as_json:
        entries = [
            {"name": d.name, "project": str(d.migrations_dir), "alembic_ini": str(d.alembic_ini)} for d in databases
        ]
        click.echo(json.dumps({"databases": entries}, indent=2))
        return
    for d in databases:
        click.echo(d.alembic_ini)


@db.command()
@click.option("--to", "to_url", required=True, help="PostgreSQL URL to copy into (the three may share it).")
@only_option
@click.option("--allow-existing-rows", is_flag=True, help="Copy even if target tables already hold rows.")
@click.pass_obj
def transfer(settings, to_url: str, only, allow_existing_rows: bool) -> None:
    """Copy every row into PostgreSQL and verify counts and checksums per table.

    The target is brought to head first; the source is only read.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from tg_parser.migrate.orchestrator import upgrade
    from tg_parser.migrate.transfer import transfer as run_transfer

    try:
        url = make_url(to_url)
    except ArgumentError:
        raise click.BadParameter("not a SQLAlchemy URL (e.g. postgresql+psycopg://user:pass@host/db)",
                                 param_hint="--to") from None
    if url.get_backend_name() != "postgresql":
        raise click.BadParameter(f"must be a PostgreSQL URL, not {url.get_backend_name()}", param_hint="--to")
    run_options = options(settings, no_backup=True)
    reports = render.guarded(
        lambda: run_transfer(
            selected_targets(settings, only),
            url,
            upgrade=lambda targets: upgrade(targets, "head", run_options, report=render.outcome),
            lock_timeout=settings.lock_timeout,
            allow_existing_rows=allow_existing_rows,
            progress=render.row_progress,
        )
    )
    render.transfer(reports)
    sys.exit(0 if all(r.ok for r in reports) else render.EXIT_FAILED)


@db.command()
@only_option
@click.pass_obj
def backups(settings, only) -> None:
    """List the backups in <data dir>/backups, newest first."""
    render.backups(settings.backups_dir, [t.name for t in selected_targets(settings, only)])


@db.command()
@click.argument("name", type=click.Choice(NAMES))
@click.argument("backup_name", metavar="[BACKUP]", required=False)
@yes_option
@no_backup_option
@click.pass_obj
def restore(settings, name: str, backup_name: str | None, yes: bool, no_backup: bool) -> None:
    """Put back database NAME from BACKUP (default: its newest backup taken before an upgrade or downgrade).

    The backup is checked first (its checksum, and that it belongs to NAME). The database as
    it is now is copied first, unless --no-backup, under the same write lock as the restore.
    """
    from tg_parser.migrate.orchestrator import restore as restore_database

    target = Target.from_settings(get_database(name), settings)
    chosen = _choose_backup(target, settings.backups_dir, backup_name)
    question = f"Replace {target.location} with {chosen.name}?"
    if not render.confirm([f"{name}: {target.location} will be replaced by {chosen}"], yes, question):
        click.echo("refused: restore not confirmed (pass --yes to confirm). Nothing was changed.", err=True)
        sys.exit(render.EXIT_REFUSED)
    safety = render.guarded(lambda: restore_database(target, chosen, options(settings, no_backup=no_backup)))
    if safety:
        click.echo(f"{name:<{render.NAME_WIDTH}} the replaced database was backed up to {safety.path}")
    click.echo(f"{name:<{render.NAME_WIDTH}} restored {target.location} from {chosen.name}")


def _choose_backup(target: Target, directory: Path, backup_name: str | None) -> Path:
    """The named backup (a file in the backups folder, or a path), or the newest of the database."""
    from tg_parser.migrate import backup

    if backup_name is None:
        newest = backup.default_for_restore(directory, target.name)
        if newest is None:
            raise click.UsageError(f"no backups of {target.name} taken before an upgrade or downgrade in {directory}")
        return newest.path
    for candidate in (directory / backup_name, Path(backup_name)):
        if candidate.is_file():
            return candidate
    names = [b.path.name for b in backup.list_backups(directory, target.name)]
    raise click.BadParameter(
        f"no backup {backup_name!r}; backups of {target.name}: {', '.join(names) or 'none'}",
        param_hint="BACKUP",
    )
