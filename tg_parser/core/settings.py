"""Settings from the environment and `.env`: the one place that knows where each database lives.

Both `tg-parser` and a plain `alembic -c ...` read these, so they always touch the same files.
Locations are resolved once, at load, to absolute paths: the same command run from two
folders cannot touch two different files by accident.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tg_parser.storage.databases import DATABASES, Database
from tg_parser.storage.engine import sqlite_file


class SettingsError(ValueError):
    """A setting has a bad value; the message names its environment variable."""


class _SettingsBase(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path("data"), validation_alias="TG_PARSER_DATA_DIR", description="folder of the three default files"
    )
    lock_timeout: float = Field(
        60.0, ge=0, le=86_400, validation_alias="TG_PARSER_LOCK_TIMEOUT",
        description="seconds to wait for another process migrating the same database",
    )
    backup_keep: int = Field(
        5, ge=1, le=1000, validation_alias="TG_PARSER_BACKUP_KEEP",
        description="backups kept per database; older ones are deleted after a successful upgrade",
    )

    _urls: dict[str, URL] = PrivateAttr(default_factory=dict)

    @field_validator("data_dir", *(f"{db.setting_stem.lower()}_db_path" for db in DATABASES), mode="before",
                     check_fields=False)
    @classmethod
    def _not_empty(cls, value):
        """An empty path would be the working folder: the databases would land wherever the command runs."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; give a folder or file path, or unset it for the default")
        return value

    @model_validator(mode="after")
    def _resolve_locations(self):
        self.data_dir = _absolute(self.data_dir)
        _refuse_file_in_the_way("TG_PARSER_DATA_DIR", self.data_dir, want_folder=True)
        for db in DATABASES:
            self._urls[db.name] = self._resolve(db)
        return self

    def _resolve(self, db: Database) -> URL:
        stem = db.setting_stem.lower()
        url_text: str | None = getattr(self, f"{stem}_db_url")
        path: Path | None = getattr(self, f"{stem}_db_path")
        if url_text:
            return checked_url(f"{db.setting_stem}_DB_URL", url_text)
        file = _absolute(path if path else self.data_dir / db.default_file)
        _refuse_file_in_the_way(f"{db.setting_stem}_DB_PATH" if path else "TG_PARSER_DATA_DIR", file)
        return URL.create("sqlite", database=str(file))

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    def url(self, db: Database) -> URL:
        return self._urls[db.name]

    def sqlite_file(self, db: Database) -> Path | None:
        """The database's file when it is SQLite, else None."""
        return sqlite_file(self.url(db))

    def location(self, db: Database) -> str:
        """What to show people: the file, or the URL with its password masked."""
        file = self.sqlite_file(db)
        return str(file) if file else self.url(db).render_as_string(hide_password=True)


ALLOWED_URLS = "sqlite:////absolute/file.sqlite or postgresql+psycopg://user:password@host/database"


def checked_url(variable: str, text: str) -> URL:
    """A URL this tool can open, made absolute; anything else is named in one line, password masked."""
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError(f"{variable}: not a database URL (allowed: {ALLOWED_URLS})") from None
    shown = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
    if backend == "sqlite":
        file = sqlite_file(url)
        if file is None:
            raise ValueError(f"{variable}: {shown} is an in-memory database, gone when the command ends"
                             f" (allowed: {ALLOWED_URLS})")
        file = _absolute(file)
        _refuse_file_in_the_way(variable, file)
        return url.set(database=str(file))
    if backend != "postgresql":
        raise ValueError(f"{variable}: {shown} is a {backend} database; allowed: {ALLOWED_URLS}")
    if url.get_driver_name() not in ("psycopg", "psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    driver = "psycopg2" if url.get_driver_name() == "psycopg2" else "psycopg"
    if importlib.util.find_spec(driver) is None:
        raise ValueError(f"{variable}: the PostgreSQL driver {driver} is not installed"
                         " (python -m pip install 'tg-parser[postgres]')")
    return url


def _absolute(path: Path) -> Path:
    """Absolute, with `..` folded the way SQLite folds it when it opens the file (not by following
    symlinks): two spellings of one path then name, and lock, one database."""
    return Path(os.path.abspath(path.expanduser()))


def _refuse_file_in_the_way(variable: str, path: Path, want_folder: bool = False) -> None:
    """A database path that is a folder, or any path with a file where a folder must be."""
    if not want_folder and path.is_dir():
        raise ValueError(f"{variable}: {path} is a folder, not a database file")
    for parent in (path, *path.parents) if want_folder else path.parents:
        if parent.is_file():
            raise ValueError(f"{variable}: {parent} is a file, not a folder, so {path} cannot exist")


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


class RetrySettings(BaseSettings):
    """How LLM calls are retried (see tg_parser.llm.retry)."""

    model_config = SettingsConfigDict(env_prefix="RETRY_", env_file=".env", extra="ignore")

    max_attempts: int = Field(3, ge=1, le=10, description="total attempts, the first included")
    backoff_base: float = Field(1.0, ge=0.1, le=60, description="seconds before the first retry")
    backoff_max: float = Field(60.0, ge=1, le=300, description="cap on any backoff delay")
    jitter: float = Field(0.3, ge=0, le=1, description="fraction of each delay that is randomised")
    total_timeout: float = Field(300.0, ge=1, le=3600, description="deadline over attempts and sleeps")
    server_wait_max: float = Field(120.0, ge=0, le=3600, description="longest Retry-After accepted")

    @model_validator(mode="after")
    def _base_within_max(self):
        if self.backoff_base > self.backoff_max:
            raise ValueError(
                f"RETRY_BACKOFF_BASE ({self.backoff_base:g}) must not exceed RETRY_BACKOFF_MAX ({self.backoff_max:g})"
            )
        return self


PROVIDER_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "ollama": "http://localhost:11434",
}
"""Each provider's base URL as its official SDK takes it (the SDK adds the API's path to it)."""

PROVIDER_MODELS = {
    "openai": "gpt-5-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
    "ollama": "llama3.2",
}


class LLMSettings(BaseSettings):
    """Which provider, server and model the LLM client talks to, and how hard."""

    model_config = SettingsConfigDict(env_prefix="LLM_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    provider: Literal["openai", "anthropic", "gemini", "ollama"] = Field(
        "openai", description="the API spoken: OpenAI (or any compatible server), Anthropic, Gemini or Ollama"
    )
    base_url: str = Field("", description="the provider's base URL, as its official SDK takes it")
    api_key: SecretStr | None = Field(None, description="sent in the provider's own auth header; never printed")
    model: str = Field("", description="openai: gpt-5* (not gpt-5-chat*) use the Responses API, others Chat")
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] = Field(
        "low", description="reasoning models only (gpt-5*, o-series)"
    )
    verbosity: Literal["low", "medium", "high"] = Field("medium", description="gpt-5* only")
    timeout: float = Field(60.0, gt=0, le=600, description="seconds per attempt, the whole request")
    max_concurrency: int = Field(8, ge=1, le=256, description="requests in flight per client, and connections")
    temperature: float = Field(0.0, ge=0, le=2, description="models that take it (not gpt-5*, o-series, Claude)")
    seed: int | None = Field(None, description="models that take it (not gpt-5*, not o-series)")
    chat_max_tokens_param: Literal["max_completion_tokens", "max_tokens"] = Field(
        "max_completion_tokens", description="the Chat Completions field that limits the output"
    )

    @field_validator("provider", mode="before")
    @classmethod
    def _lower(cls, value):
        return value.lower() if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _a_plain_url(cls, value: str) -> str:
        """No secret may ride in the URL: httpx would turn `user:password@` into Basic auth and print
        it in its request log line, and every output that names the URL would show a `?key=`.
        Messages never repeat the value, which may hold one."""
        value = value.strip()
        if not value:
            return value
        if "@" in value:
            raise ValueError("must not hold a user name or password (user:password@host); put the key in LLM_API_KEY")
        if "?" in value or "#" in value:
            raise ValueError("must not hold a query or fragment (?key=...); put the key in LLM_API_KEY")
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, such as http://localhost:11434")
        try:
            parts.port
        except ValueError:
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        return value

    @model_validator(mode="after")
    def _provider_defaults(self):
        self.base_url = self.base_url or PROVIDER_BASE_URLS[self.provider]
        self.model = self.model or PROVIDER_MODELS[self.provider]
        return self


class LogSettings(BaseSettings):
    """Where the command line's logs go and how they look (logs never go to standard output)."""

    model_config = SettingsConfigDict(env_prefix="LOG_", env_file=".env", extra="ignore")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="the least severe level logged")
    format: Literal["text", "json"] = Field("text", description="text lines, or one JSON object per line")
    file: Path | None = Field(None, description="a file to append the logs to instead of standard error")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value):
        return value.upper() if isinstance(value, str) else value

    @field_validator("format", mode="before")
    @classmethod
    def _lower(cls, value):
        return value.lower() if isinstance(value, str) else value

    @field_validator("file", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        return None if value == "" else value


def load_settings(**overrides) -> _SettingsBase:
    """Load the database settings, turning a validation error into one line naming the variable."""
    return _load(Settings, **overrides)


def load_log_settings(**overrides) -> LogSettings:
    return _load(LogSettings, **overrides)


def load_retry_settings(**overrides) -> RetrySettings:
    return _load(RetrySettings, **overrides)


def load_llm_settings(**overrides) -> LLMSettings:
    return _load(LLMSettings, **overrides)


def _load(model: type[BaseSettings], **overrides):
    try:
        return model(**overrides)
    except ValidationError as error:
        raise SettingsError(_one_line(model, error)) from None


def _one_line(model: type[BaseSettings], error: ValidationError) -> str:
    """`RETRY_MAX_ATTEMPTS: must be between 1 and 10 (got 0)`, one part per bad variable."""
    parts = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        field = next(
            (f for key, f in model.model_fields.items() if name in (key, f.validation_alias)), None
        )
        is_alias = field is not None and field.validation_alias == name
        variable = name if is_alias else (model.model_config.get("env_prefix", "") + name).upper()
        message = item["msg"].removeprefix("Value error, ")
        bounds = _bounds(field) if field else None
        if bounds and item["type"] not in ("missing",):
            message = f"must be {bounds} (got {item.get('input')!r})"
        parts.append(f"{variable}: {message}" if name else message)
    return "invalid setting: " + "; ".join(parts)


def _bounds(field) -> str | None:
    low = high = None
    strict_low = False
    for constraint in field.metadata:
        if getattr(constraint, "ge", None) is not None:
            low = constraint.ge
        if getattr(constraint, "gt", None) is not None:
            low, strict_low = constraint.gt, True
        if getattr(constraint, "le", None) is not None:
            high = constraint.le
    if low is None or high is None:
        return None
    if strict_low:
        return f"greater than {low:g} and at most {high:g}"
    return f"a number from {low:g} to {high:g}"
