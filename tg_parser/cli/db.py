"""`tg-parser db ...`: Alembic's commands over the three databases, one `--only` away from one."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from alembic import command

from tg_parser.cli import logs, render
from tg_parser.migrate.target import Target
from tg_parser.storage.databases import NAMES, get_database, select

only_option = click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(NAMES),
    help="Act on this database only (repeatable). Default: all three.",
)
one_database = click.option(
    "--only", "only", multiple=True, type=click.Choice(NAMES), help="The database to act on (exactly one)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
yes_option = click.option("--yes", is_flag=True, help="Confirm without asking.")
no_backup_option = click.option("--no-backup", is_flag=True, help="Do not back up SQLite files first.")
plan_option = click.option(
    "--plan", "show_plan", is_flag=True, help="Print what would run, per database, and change nothing."
)
repair_option = click.option(
    "--repair",
    is_flag=True,
    help="Rebuild tables of an earlier release that differ from the baseline only in constraints, indexes or"
    " type spelling into its exact form (rows copied and verified), then adopt them.",
)
wal_option = click.option(
    "--wal", is_flag=True,
    help="Convert each SQLite file the run changes to WAL mode first (it stays; TG_parser 3.x works in both):"
    " readers never wait and the backup holds no writer.",
)
# "-1" is a revision, not an option: let it through as the REVISION argument.
takes_relative_revisions = {"ignore_unknown_options": True}


def selected_targets(settings, only) -> list[Target]:
    return [Target.from_settings(db, settings) for db in select(only)]


def single_target(settings, only) -> Target:
    if len(only) != 1:
        raise click.UsageError(f"give exactly one --only ({', '.join(NAMES)}); got {len(only)}")
    return Target.from_settings(get_database(only[0]), settings)


def options(
    settings, *, no_backup: bool = False, yes: bool = False, repair: bool = False, wal: bool = False,
    question: str = "Downgrade anyway?",
):
    from tg_parser.migrate.orchestrator import Options

    return Options(
        backups_dir=settings.backups_dir,
        backup_keep=settings.backup_keep,
        lock_timeout=settings.lock_timeout,
        backup=not no_backup,
        confirm=lambda reasons: render.confirm(reasons, yes, question),
        progress=render.progress,
        waiting=render.waiting,
        notice=render.holds,
        warn=lambda text: logs.human(f"warning: {text}", logging.WARNING),
        configured=selected_targets(settings, ()),
        repair=repair,
        wal=wal,
    )


def _checked(targets: list[Target], revision: str) -> None:
    from tg_parser.migrate import orchestrator

    try:
        orchestrator.validate_revision(targets, revision)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="REVISION") from None


def _source_checkout(target: Target) -> None:
    """New revisions belong in the source tree, never in an installed package."""
    if not target.db.is_source_checkout:
        raise click.UsageError(
            f"{target.db.migrations_dir} is inside the installed tg_parser package, where a new revision "
            "would be lost on the next install: write revisions in a source checkout (git clone, pip install -e .)"
        )


@click.group(cls=logs.LoggedGroup)
@click.pass_context
def db(ctx: click.Context) -> None:
    """Inspect and migrate the three databases."""
    if ctx.invoked_subcommand in READS_DATABASES and not set(ctx.help_option_names) & set(sys.argv):
        _tidy(ctx.obj)


READS_DATABASES = {"current", "history", "check", "backups", "transfer"}
"""The commands that open the databases without migrating them (those that migrate tidy up themselves)."""


def _tidy(settings) -> None:
    """What a killed online rebuild left (tg_parser.migrate.online) goes before anything reads the
    databases; a database another tg-parser run is working on is left to that run."""
    from tg_parser.migrate import online

    for target in selected_targets(settings, ()):
        if target.sqlite_file is None or not online.has_leftovers(target.sqlite_file):
            continue
        try:
            with online.run_lock(target.sqlite_file, settings.lock_timeout, wait=False) as mine:
                if mine:
                    online.clean_leftovers(target.sqlite_file, settings.lock_timeout)
        except Exception as error:  # noqa: BLE001 - a command that only reads must still run
            logs.human(f"warning: {target.name}: could not remove an online rebuild's leftovers: {error}", logging.WARNING)


@db.command(context_settings=takes_relative_revisions)
@click.argument("revision", default="head")
@only_option
@no_backup_option
@repair_option
@wal_option
@yes_option
@click.option("--sql", is_flag=True, help="Print each database's SQL instead of running it.")
@plan_option
@json_option
@click.pass_obj
def upgrade(
    settings, revision: str, only, no_backup: bool, repair: bool, wal: bool, yes: bool, sql: bool, show_plan: bool,
    as_json: bool,
) -> None:
    """Upgrade to REVISION (default: head).

    Databases run in the order ingestion, raw, processing. Databases of earlier releases
    (1.x-3.0.0 without a version table, or stamped by TG_parser 3.1's own Alembic) are adopted
    first. Every database runs in one transaction, committed only when all succeeded. A step that
    would remove a CHECK constraint of a table holding rows (as Alembic's batch mode does with
    unnamed ones) needs --yes or a confirmation at the terminal.
    """
    targets = selected_targets(settings, only)
    _checked(targets, revision)
    _json_needs_plan(as_json, show_plan)
    if show_plan:
        _print_plan(settings, targets, revision, True, as_json)
    elif sql:
        render.guarded(lambda: [render.upgrade_sql(t, revision, repair) for t in targets])
    else:
        from tg_parser.migrate.orchestrator import upgrade as run_upgrade

        run = options(settings, no_backup=no_backup, yes=yes, repair=repair, wal=wal, question="Upgrade anyway?")
        render.run_migration(run_upgrade, targets, revision, run)


@db.command(context_settings=takes_relative_revisions)
@click.argument("revision", default="-1")
@only_option
@no_backup_option
@yes_option
@plan_option
@json_option
@click.pass_obj
def downgrade(settings, revision: str, only, no_backup: bool, yes: bool, show_plan: bool, as_json: bool) -> None:
    """Downgrade to REVISION (default -1: one step back).

    Databases run in the order processing, raw, ingestion. A downgrade to base, or one that drops a
    table or column holding data or a CHECK constraint of a table holding rows, needs --yes or a
    confirmation at the terminal.
    """
    targets = selected_targets(settings, only)
    _checked(targets, revision)
    _json_needs_plan(as_json, show_plan)
    if show_plan:
        _print_plan(settings, targets, revision, False, as_json)
        return
    from tg_parser.migrate.orchestrator import downgrade as run_downgrade

    render.run_migration(run_downgrade, targets, revision, options(settings, no_backup=no_backup, yes=yes))


def _json_needs_plan(as_json: bool, show_plan: bool) -> None:
    if as_json and not show_plan:
        raise click.UsageError("--json goes with --plan (a run prints its progress for people)")


def _print_plan(settings, targets: list[Target], revision: str, upgrading: bool, as_json: bool) -> None:
    from tg_parser.migrate.orchestrator import plan

    configured = selected_targets(settings, ())
    render.plan(render.guarded(lambda: plan(targets, revision, upgrading, configured)), as_json)


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
@click.option("-v", "--verbose", is_flag=True, help="Also each revision's parent, file and full description.")
@click.pass_obj
def history(settings, only, as_json: bool, verbose: bool) -> None:
    """List each project's revisions, newest first."""
    render.history(selected_targets(settings, only), as_json, verbose)


@db.command()
@only_option
@json_option
@click.pass_obj
def heads(settings, only, as_json: bool) -> None:
    """Show each project's head revision(s)."""
    render.heads(selected_targets(settings, only), as_json)


@db.command()
@click.argument("revision")
@only_option
@click.pass_obj
def show(settings, revision: str, only) -> None:
    """Show one revision: its parent, file and description."""
    targets = [t for t in selected_targets(settings, only) if t.has_revision(revision)]
    if not targets:
        raise click.BadParameter(f"no project has revision {revision!r} (see tg-parser db history)", param_hint="REVISION")
    for target in targets:
        click.echo(f"{target.name:<{render.NAME_WIDTH}} {target.location}")
        render.guarded(lambda: command.show(target.config(), revision))


@db.command()
@only_option
@json_option
@click.pass_obj
def check(settings, only, as_json: bool) -> None:
    """The CI job: one head, at head, no schema drift.

    Exits 0 only if every project has one head, every database is at head, and neither
    autogenerate nor the reflected-schema comparison finds a difference; 1 if one of those
    fails; 3 if a database cannot be checked (unreadable, or newer than this tg-parser).
    """
    from tg_parser.migrate.check import check as check_target

    results = [check_target(t) for t in selected_targets(settings, only)]
    render.check(results, as_json)
    if any(r.refused for r in results):
        sys.exit(render.EXIT_REFUSED)
    sys.exit(0 if all(r.ok for r in results) else render.EXIT_FAILED)


@db.command()
@one_database
@click.option("-m", "--message", required=True, help="What the revision does.")
@click.option("--autogenerate", is_flag=True, help="Fill it from the difference between the schema code and the database.")
@click.option("--empty", is_flag=True, help="With --autogenerate, write the revision even when nothing changed.")
@click.pass_obj
def revision(settings, only, message: str, autogenerate: bool, empty: bool) -> None:
    """Write a new revision into one database's project."""
    from tg_parser.migrate.status import AT_HEAD, describe, status

    target = single_target(settings, only)
    _source_checkout(target)
    rev_id = _next_id(target)
    if not autogenerate:
        script = render.guarded(lambda: command.revision(target.config(), message=message, rev_id=rev_id))
    else:
        found = status(target)
        if found.state != AT_HEAD:
            logs.human(
                f"refused: {target.name} is {describe(found)}; autogenerate compares the schema code with a"
                f" database at head: run tg-parser db upgrade --only {target.name} first. Nothing was written."
            )
            sys.exit(render.EXIT_REFUSED)

        def write():
            with target.connect() as connection:
                config = target.config(connection)
                config.attributes["keep_empty"] = empty
                return command.revision(config, message=message, autogenerate=True, rev_id=rev_id)

        script = render.guarded(write)
        if not script:
            click.echo(f"{target.name:<{render.NAME_WIDTH}} No changes detected: nothing written (--empty writes one anyway).")
            return
    click.echo(f"{target.name:<{render.NAME_WIDTH}} wrote {script.path}")


def _next_id(target: Target) -> str:
    return f"{target.name}_{len(list(target.script.walk_revisions())) + 1:04d}"


@db.command()
@one_database
@click.option("-m", "--message", required=True, help="What the merge joins.")
@click.pass_obj
def merge(settings, only, message: str) -> None:
    """Join a project's heads into one with a merge revision."""
    target = single_target(settings, only)
    _source_checkout(target)
    if len(target.heads()) < 2:
        raise click.UsageError(f"{target.name} has one head ({', '.join(target.heads())}): nothing to merge")
    script = render.guarded(lambda: command.merge(target.config(), "heads", message=message, rev_id=_next_id(target)))
    click.echo(f"{target.name:<{render.NAME_WIDTH}} wrote {script.path} (merges {', '.join(script.down_revision)})")


@db.command()
@click.argument("revision")
@one_database
@click.option("--purge", is_flag=True, help="Delete the version table's rows first (for one that is wrong).")
@yes_option
@no_backup_option
@click.pass_obj
def stamp(settings, revision: str, only, purge: bool, yes: bool, no_backup: bool) -> None:
    """Record REVISION as applied without running it.

    For repairing a version table by hand. The database is locked and backed up first, and
    the stamp needs --yes or a confirmation at the terminal.
    """
    from tg_parser.migrate.orchestrator import stamp as run_stamp

    target = single_target(settings, only)
    _checked([target], revision)
    run = options(settings, no_backup=no_backup, yes=yes, question="Stamp anyway?")
    outcome = render.guarded(lambda: run_stamp(target, revision, run, purge))
    if outcome.backup:
        click.echo(f"{target.name:<{render.NAME_WIDTH}} backed up to {outcome.backup.path}")
    click.echo(
        f"{target.name:<{render.NAME_WIDTH}} stamped {', '.join(outcome.after) or '(no revision)'}"
        f" (was {', '.join(outcome.before) or 'no revision'}); nothing was run"
    )


@db.command()
@only_option
@json_option
@click.pass_obj
def paths(settings, only, as_json: bool) -> None:
    """Print each project's alembic.ini path.

    One per line, for plain Alembic on an installed copy:

    \b
    alembic -c "$(tg-parser db paths --only raw)" upgrade head
    """
    targets = selected_targets(settings, only)
    if as_json:
        render.print_json([
            {**s.as_json(), "project": str(t.db.migrations_dir), "alembic_ini": str(t.db.alembic_ini)}
            for t, s in zip(targets, render.statuses(targets))
        ])
        return
    for target in targets:
        click.echo(target.db.alembic_ini)


@db.command()
@click.option("--to", "to_url", required=True, help="PostgreSQL URL to copy into (the three may share it).")
@only_option
@click.option("--allow-existing-rows", is_flag=True, help="Copy even if target tables already hold rows.")
@click.pass_obj
def transfer(settings, to_url: str, only, allow_existing_rows: bool) -> None:
    """Copy every row into PostgreSQL and verify each table.

    The target is brought to head first; each source is read in one snapshot and only read.
    """
    from tg_parser.core.settings import checked_url
    from tg_parser.migrate.orchestrator import upgrade as run_upgrade
    from tg_parser.migrate.transfer import transfer as run_transfer

    try:
        url = checked_url("--to", to_url)  # as the settings take a URL: the driver named or installed
    except ValueError as problem:
        raise click.BadParameter(str(problem).removeprefix("--to: "), param_hint="--to") from None
    if url.get_backend_name() != "postgresql":
        raise click.BadParameter(f"must be a PostgreSQL URL, not {url.get_backend_name()}", param_hint="--to")
    run_options = options(settings, no_backup=True)
    reports = render.guarded(
        lambda: run_transfer(
            selected_targets(settings, only),
            url,
            upgrade=lambda targets: run_upgrade(targets, "head", run_options, report=render.outcome),
            lock_timeout=settings.lock_timeout,
            allow_existing_rows=allow_existing_rows,
            progress=render.row_progress,
        )
    )
    render.transfer(reports)
    sys.exit(0 if all(r.ok for r in reports) else render.EXIT_FAILED)


@db.command()
@only_option
@json_option
@click.pass_obj
def backups(settings, only, as_json: bool) -> None:
    """List the backups, newest first, with size and reason."""
    render.backups(settings.backups_dir, selected_targets(settings, only), as_json)


@db.command()
@click.argument("name", type=click.Choice(NAMES))
@click.argument("backup_name", metavar="[BACKUP]", required=False)
@yes_option
@no_backup_option
@click.pass_obj
def restore(settings, name: str, backup_name: str | None, yes: bool, no_backup: bool) -> None:
    """Put back database NAME from a checked backup.

    BACKUP defaults to NAME's newest backup taken before an upgrade or downgrade. The backup
    is checked first (its checksum, and that it belongs to NAME). The database as it is now
    is copied first, unless --no-backup, under the same write lock as the restore.
    """
    from tg_parser.migrate.orchestrator import restore as restore_database

    target = Target.from_settings(get_database(name), settings)
    chosen = _choose_backup(target, settings.backups_dir, backup_name)
    question = f"Replace {target.location} with {chosen.name}?"
    if not render.confirm([f"{name}: {target.location} will be replaced by {chosen}"], yes, question):
        logs.human("refused: restore not confirmed (pass --yes to confirm). Nothing was changed.")
        sys.exit(render.EXIT_REFUSED)
    restored = render.guarded(lambda: restore_database(target, chosen, options(settings, no_backup=no_backup)))
    if restored.safety:
        click.echo(f"{name:<{render.NAME_WIDTH}} the replaced database was backed up to {restored.safety.path}")
    if restored.damaged:
        click.echo(f"{name:<{render.NAME_WIDTH}} the damaged file SQLite could not open was moved to {restored.damaged}")
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
