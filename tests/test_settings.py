"""Settings resolve each database's location once, to an absolute path, and name bad variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from tg_parser.core.settings import SettingsError, load_settings
from tg_parser.storage.databases import get_database

RAW = get_database("raw")


def test_default_data_dir_is_data_under_the_working_folder(monkeypatch, isolated):
    monkeypatch.delenv("TG_PARSER_DATA_DIR")
    settings = load_settings()
    assert settings.sqlite_file(RAW) == isolated / "data" / "raw_storage.sqlite"


def test_relative_data_dir_becomes_absolute(monkeypatch, isolated):
    monkeypatch.setenv("TG_PARSER_DATA_DIR", "rel/dir")
    assert load_settings().sqlite_file(RAW) == isolated / "rel" / "dir" / "raw_storage.sqlite"


def test_path_moves_one_file_and_url_wins_over_path(monkeypatch, tmp_path):
    monkeypatch.setenv("RAW_STORAGE_DB_PATH", str(tmp_path / "a.sqlite"))
    assert load_settings().sqlite_file(RAW) == tmp_path / "a.sqlite"
    assert load_settings().sqlite_file(get_database("ingestion")).name == "ingestion_state.sqlite"
    monkeypatch.setenv("RAW_STORAGE_DB_URL", "sqlite:///b.sqlite")
    assert load_settings().sqlite_file(RAW) == Path.cwd() / "b.sqlite"


def test_dotenv_file_in_the_working_folder_is_read(isolated, monkeypatch):
    monkeypatch.delenv("TG_PARSER_DATA_DIR")
    (isolated / ".env").write_text("TG_PARSER_DATA_DIR=/srv/tg\n")
    assert load_settings().sqlite_file(RAW) == Path("/srv/tg/raw_storage.sqlite")


def test_password_is_masked_in_the_location(monkeypatch):
    monkeypatch.setenv("RAW_STORAGE_DB_URL", "postgresql+psycopg://tg:s%40cret%25x@db.local/tg")
    location = load_settings().location(RAW)
    assert "s@cret" not in location and "s%40cret" not in location and "***" in location


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RAW_STORAGE_DB_URL", "no url here"),
        ("PROCESSING_STORAGE_DB_PATH", "__DIR__"),
        ("TG_PARSER_DATA_DIR", "__FILE__"),
    ],
)
def test_bad_value_names_its_variable(monkeypatch, tmp_path, variable, value):
    (tmp_path / "a_file").write_text("x")
    value = {"__DIR__": str(tmp_path), "__FILE__": str(tmp_path / "a_file")}.get(value, value)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


@pytest.mark.parametrize("variable", ["TG_PARSER_DATA_DIR", "RAW_STORAGE_DB_PATH"])
def test_an_empty_path_setting_is_refused_naming_it(monkeypatch, isolated, variable):
    """Empty, a path is the working folder: `init` would put the databases wherever it runs."""
    from tests.conftest import run_cli

    monkeypatch.setenv(variable, " " if variable.endswith("PATH") else "")
    with pytest.raises(SettingsError, match=f"{variable}: is empty"):
        load_settings()
    result = run_cli("init")
    assert result.exit_code == 2
    assert f"{variable}: is empty" in result.output
    assert list(isolated.iterdir()) == []


def test_the_private_postgres_server_finds_runuser_without_usr_sbin_on_path(monkeypatch):
    from tests.conftest import _as_postgres

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    program = _as_postgres().split()[0]
    assert Path(program).is_absolute() and Path(program).exists(), program
