"""The one ordered definition of TG_parser's three databases.

Upgrades run in this order, downgrades in reverse. Everything else that needs the
list of databases (settings, the Alembic helper, the CLI) reads it from here.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sqlalchemy import MetaData

PACKAGED_PROJECTS = Path(__file__).resolve().parent.parent / "migrations"
"""Where a wheel installs the three Alembic projects: `tg_parser/migrations/<name>/`."""


@dataclass(frozen=True)
class Database:
    name: str
    """The name used on the command line (`--only raw`) and in version-table names."""
    default_file: str
    """File name inside the data dir when no path or URL is configured."""
    setting_stem: str
    """Prefix of the 3.0.0 settings: `<STEM>_DB_PATH` and `<STEM>_DB_URL`."""
    release_3_1_revision: str
    """The revision TG_parser 3.1's own Alembic history stamped into this database's version table.

    3.1 named its version tables like ours but its revisions differ: its README told users to
    stamp their 3.0.0 databases, so such a database has 3.0.0's schema and this revision.
    """

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name}"

    @property
    def order(self) -> int:
        """Position in the fixed upgrade order."""
        return NAMES.index(self.name)

    @property
    def project(self) -> str:
        """The Alembic project's folder (and import) name."""
        return f"migrations_{self.name}"

    @cached_property
    def metadata(self) -> MetaData:
        return importlib.import_module(f"tg_parser.storage.schema.{self.name}").metadata

    @cached_property
    def migrations_dir(self) -> Path:
        """The project folder: `migrations_<name>/` found on the import path, else the copy in the package.

        A source checkout (an editable install, or a working folder at the repository's top) has
        the repository on the import path; so do copies put first on PYTHONPATH. A wheel carries
        the projects inside the package instead, so it installs no top-level names of its own.
        """
        spec = importlib.util.find_spec(self.project)
        if spec is not None and spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations))).resolve()
        packaged = PACKAGED_PROJECTS / self.name
        if not packaged.is_dir():
            raise RuntimeError(f"the Alembic project of {self.name} is neither {self.project}/ nor {packaged}")
        return packaged

    @property
    def is_source_checkout(self) -> bool:
        """Whether the project is a source folder to write revisions into, not the copy inside an installed package.

        A revision written inside the package would become a head that the next `init` applies,
        and the next install would remove it.
        """
        return not self.migrations_dir.is_relative_to(PACKAGED_PROJECTS)

    @property
    def alembic_ini(self) -> Path:
        return self.migrations_dir / "alembic.ini"

    @cached_property
    def foreign_tables(self) -> frozenset[str]:
        """Tables that belong to the other two databases (with their version tables).

        The three may share one server database: these are never this database's drift.
        """
        return frozenset(
            name
            for other in DATABASES
            if other is not self
            for name in (*other.metadata.tables, other.version_table)
        )

    def earlier_release(self, revisions: tuple[str, ...]) -> str | None:
        """The earlier release whose own revision the version table holds (the next upgrade adopts it)."""
        return RELEASE_3_1 if tuple(revisions) == (self.release_3_1_revision,) else None

    def is_nullable_primary_key(self, table: str, column: str) -> bool:
        """A primary-key column the 3.0.0 schema left nullable (as SQLite allows for TEXT keys).

        Server databases make every primary-key column NOT NULL, so there a nullability
        difference on such a column is expected, not drift.
        """
        model = self.metadata.tables.get(table)
        return model is not None and column in model.primary_key.columns and model.c[column].nullable

    def misplaced(self, tables: set[str]) -> str | None:
        """Why a SQLite file holding `tables` is not this database's file, or None when it may be.

        A file of its own never holds another database's tables or version table (a swapped
        or mistyped path would otherwise get this database's schema created beside them).
        """
        for other in DATABASES:
            if other is not self and other.version_table in tables:
                return f"it holds the version table of the {other.name} database"
        foreign = sorted(tables & self.foreign_tables)
        if foreign:
            return f"it holds tables of another database ({', '.join(foreign)})"
        return None

    def include_name(self, name: str | None, type_: str, _parent_names=None) -> bool:
        """Alembic's `include_name` hook: autogenerate never sees another database's tables."""
        return type_ != "table" or not (name in self.foreign_tables or name.startswith("sqlite_"))


RELEASE_3_1 = "TG_parser 3.1"

DATABASES: tuple[Database, ...] = (
    Database("ingestion", "ingestion_state.sqlite", "INGESTION_STATE", release_3_1_revision="89f91e768b9b"),
    Database("raw", "raw_storage.sqlite", "RAW_STORAGE", release_3_1_revision="5c658f04eff0"),
    Database("processing", "processing_storage.sqlite", "PROCESSING_STORAGE", release_3_1_revision="f40d85317f03"),
)
NAMES: tuple[str, ...] = tuple(db.name for db in DATABASES)


def get_database(name: str) -> Database:
    for db in DATABASES:
        if db.name == name:
            return db
    raise KeyError(f"unknown database {name!r}; valid names: {', '.join(NAMES)}")


def select(names: tuple[str, ...] | list[str] = ()) -> list[Database]:
    """The named databases (all when none are named) in the fixed upgrade order."""
    wanted = set(names) or set(NAMES)
    for name in wanted:
        get_database(name)
    return [db for db in DATABASES if db.name in wanted]
