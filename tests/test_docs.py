"""The docs tell the truth: every setting and command documented, the quickstart runs, figures have commands."""

from __future__ import annotations

import re
import shlex

import click
import pytest

from tests.conftest import REPO, run_cli
from tg_parser.cli.main import cli
from tg_parser.core.settings import LLMSettings, LogSettings, RetrySettings, Settings


def environment_variables() -> list[str]:
    names = []
    for model in (Settings, RetrySettings, LLMSettings, LogSettings):
        prefix = model.model_config.get("env_prefix", "")
        for name, field in model.model_fields.items():
            alias = field.validation_alias if isinstance(field.validation_alias, str) else None
            names.append(alias or (prefix + name).upper())
    return names


def commands(group: click.Group = cli, prefix: str = "tg-parser") -> list[str]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        found += commands(command, path) if isinstance(command, click.Group) else [path]
    return found


def test_the_settings_list_is_complete():
    variables = environment_variables()
    assert "RETRY_SERVER_WAIT_MAX" in variables and "RAW_STORAGE_DB_URL" in variables
    assert len(variables) == 3 + 6 + 6 + 11 + 3


@pytest.mark.parametrize("document", [".env.example", "docs/configuration.md"])
def test_every_setting_is_documented(document):
    text = (REPO / document).read_text()
    missing = [v for v in environment_variables() if not re.search(rf"\b{v}\b", text)]
    assert missing == [], f"{document} does not mention {missing}"


def test_env_example_shows_every_default():
    text = (REPO / ".env.example").read_text()
    for model in (RetrySettings, LLMSettings, LogSettings):
        for name, field in model.model_fields.items():
            variable = (model.model_config["env_prefix"] + name).upper()
            if field.default is not None:
                assert re.search(rf"^{variable}={re.escape(str(field.default))}$", text, re.M), variable


def test_every_command_is_in_the_operations_guide():
    text = (REPO / "docs" / "operations.md").read_text()
    found = commands()
    assert "tg-parser db transfer" in found and "tg-parser llm ping" in found
    missing = [c for c in found if c not in text]
    assert missing == [], f"docs/operations.md does not mention {missing}"


def quickstart() -> list[str]:
    """The README's two quickstart commands: the first installs and creates the databases, the second tests."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [line for line in block.strip().splitlines() if line.strip()]
    assert len(lines) == 2, "the quickstart is exactly two commands"
    return lines


def test_each_quickstart_command_makes_and_uses_its_own_virtual_environment():
    for line in quickstart():
        steps = [step.strip() for step in line.split("&&")]
        assert steps[0] == "python3 -m venv .venv", line  # Debian and Ubuntu have no `python` command
        assert all(step.startswith(".venv/bin/") for step in steps[1:]), line  # PEP 668: never the system pip


@pytest.mark.parametrize("ci", [".ci/run", ".github/workflows/ci.yml"])
def test_ci_runs_the_readme_test_command(ci):
    assert quickstart()[1] in (REPO / ci).read_text()


def test_the_quickstart_tg_parser_commands_succeed(data_dir):
    steps = [step.strip().removeprefix(".venv/bin/") for step in quickstart()[0].split("&&")]
    steps = [step for step in steps if step.startswith("tg-parser")]
    assert steps == ["tg-parser init", "tg-parser db current"]
    for step in steps:
        result = run_cli(*shlex.split(step)[1:])
        assert result.exit_code == 0, result.output
    assert len(list(data_dir.glob("*.sqlite"))) == 3


def test_every_figure_in_current_state_names_its_command():
    text = (REPO / "docs" / "notes" / "current-state.md").read_text()
    section = text.split("## Measured figures", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")][1:]
    assert rows, "no figures found"
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert re.search(r"\d", cells[1]), row
        assert cells[-1].startswith("`python bench/"), f"figure without a command: {row}"
        script = cells[-1].strip("`").split()[1]
        assert (REPO / script).is_file(), f"{script} does not exist"
