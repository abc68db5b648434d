"""pytest-alembic's four default tests on each project, on SQLite and on PostgreSQL.

pytest-alembic hands `env.py` an Engine, not a connection in a transaction; its test that the
models match the DDL runs autogenerate with the project's own rewriter passed through, as
`tg-parser db revision --autogenerate` and `db check` do. (Its plugin is disabled, see
pyproject.toml: its test functions are called here.)
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import pytest_alembic
from pytest_alembic import tests as default_tests
from pytest_alembic.plugin.error import AlembicTestFailure
from sqlalchemy.engine import make_url

from tests.conftest import write_locked
from tg_parser.storage.alembic_env import without_primary_key_nullability
from tg_parser.storage.databases import DATABASES, Database
from tg_parser.storage.engine import make_engine

DEFAULT_TESTS = [
    default_tests.test_single_head_revision,
    default_tests.test_upgrade,
    default_tests.test_model_definitions_match_ddl,
    default_tests.test_up_down_consistency,
]


@contextmanager
def alembic_runner(db: Database, url):
    """pytest-alembic's runner on the project, as its `alembic_runner` fixture would be configured."""
    config = pytest_alembic.Config(
        config_options={"file": str(db.alembic_ini), "process_revision_directives": without_primary_key_nullability(db)}
    )
    engine = make_engine(url, write_lock=True)
    try:
        with pytest_alembic.runner(config=config, engine=engine) as runner:
            yield runner
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return make_url(f"sqlite:///{tmp_path / 'pytest-alembic.sqlite'}")


@pytest.mark.parametrize("check", DEFAULT_TESTS, ids=lambda f: f.__name__.removeprefix("test_"))
@pytest.mark.parametrize("db", DATABASES, ids=lambda db: db.name)
def test_default_pytest_alembic_test(db, url, check):
    with alembic_runner(db, url) as runner:
        check(runner)


def test_an_engine_takes_the_write_lock_like_plain_alembic(tmp_path, monkeypatch):
    path = tmp_path / "raw.sqlite"
    path.touch()
    monkeypatch.setenv("TG_PARSER_LOCK_TIMEOUT", "0.5")
    url = make_url(f"sqlite:///{path}")
    with write_locked(path), alembic_runner(DATABASES[1], url) as runner:
        with pytest.raises(AlembicTestFailure, match="in use by another process"):
            default_tests.test_upgrade(runner)
    with alembic_runner(DATABASES[1], url) as runner:
        assert runner.current == "base"
        default_tests.test_upgrade(runner)
        assert runner.current == "raw_0001"
