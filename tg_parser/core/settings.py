"""Settings from the environment and `.env`: the one place that knows where each database lives.

Both `tg-parser` and a plain `alembic -c ...` read these, so they always touch the same files.
Locations are resolved once, at load, to absolute paths: the same command run from two
folders cannot touch two different files by accident.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PrivateAttr, ValidationError, create_model, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tg_parser.storage.databases import DATABASES, Database


class SettingsError(ValueError):
    """A setting has a bad value; the message names its environment variable."""


class _SettingsBase(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), validation_alias="TG_PARSER_DATA_DIR")
    lock_timeout: float = Field(60.0, ge=0, le=86_400, validation_alias="TG_PARSER_LOCK_TIMEOUT")
    """Seconds to wait for another process migrating the same database."""
    backup_keep: int = Field(5, ge=1, le=1000, validation_alias="TG_PARSER_BACKUP_KEEP")
    """Backups kept per database; older ones are deleted after a successful upgrade."""

    _urls: dict[str, URL] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _resolve_locations(self):
        self.data_dir = self.data_dir.expanduser().absolute()
        if self.data_dir.is_file():
            raise ValueError(f"TG_PARSER_DATA_DIR: {self.data_dir} is a file, not a folder")
        for db in DATABASES:
            self._urls[db.name] = self._resolve(db)
        return self

    def _resolve(self, db: Database) -> URL:
        stem = db.setting_stem.lower()
        url_text: str | None = getattr(self, f"{stem}_db_url")
        path: Path | None = getattr(self, f"{stem}_db_path")
        if url_text:
            try:
                url = make_url(url_text)
            except ArgumentError:
                raise ValueError(
                    f"{db.setting_stem}_DB_URL: not a SQLAlchemy URL "
                    "(expected e.g. sqlite:////abs/file.sqlite or postgresql+psycopg://user@host/db)"
                ) from None
            if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
                url = url.set(database=str(Path(url.database).expanduser().absolute()))
            return url
        file = (path.expanduser() if path else self.data_dir / db.default_file).absolute()
        if file.is_dir():
            raise ValueError(f"{db.setting_stem}_DB_PATH: {file} is a folder, not a file")
        return URL.create("sqlite", database=str(file))

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    def url(self, db: Database) -> URL:
        return self._urls[db.name]

    def sqlite_file(self, db: Database) -> Path | None:
        """The database's file when it is SQLite, else None."""
        url = self.url(db)
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return Path(url.database)

    def location(self, db: Database) -> str:
        """What to show people: the file, or the URL with its password masked."""
        file = self.sqlite_file(db)
        return str(file) if file else self.url(db).render_as_string(hide_password=True)


def _location_fields() -> dict:
    """`<STEM>_DB_PATH` and `<STEM>_DB_URL` for each database, the 3.0.0 setting names."""
    fields: dict = {}
    for db in DATABASES:
        stem = db.setting_stem.lower()
        fields[f"{stem}_db_path"] = (Path | None, None)
        fields[f"{stem}_db_url"] = (str | None, None)
    return fields


Settings = create_model("Settings", __base__=_SettingsBase, **_location_fields())
Settings.__doc__ = "Where the databases live. URL wins over path; path wins over the data dir."


def load_settings(**overrides) -> _SettingsBase:
    """Load settings, turning a validation error into one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(_one_line(error)) from None


def _one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        variable = ".".join(str(part) for part in item["loc"]).upper()
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{variable}: {message}" if variable else message)
    return "invalid setting: " + "; ".join(parts)
