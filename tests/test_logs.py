"""Structured logs: every step as one JSON line with one run id, standard output untouched, no secret anywhere."""

from __future__ import annotations

import fcntl
import json
import logging
import pickle
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import LEGACY, add_revision, tg_parser_run, write_locked
from tests.llm_server import ScriptedServer, error, ok
from tg_parser.core.events import EVENTS
from tg_parser.storage.databases import DATABASES

REPO = Path(__file__).resolve().parent.parent
BASE_KEYS = {"ts", "level", "logger", "event", "run_id"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
API_KEY, URL_PASSWORD, PROMPT, REPLY = "sk-SECRET-KEY-123", "Url-Passw0rd-9", "PROMPT-SECRET-42", "REPLY-SECRET-77"

ADD_COLUMN = '''
def upgrade():
    with op.batch_alter_table("{table}") as batch:
        batch.add_column(sa.Column("note", sa.Text()))


def downgrade():
    with op.batch_alter_table("{table}") as batch:
        batch.drop_column("note")
'''

FAILS = '''
def upgrade():
    op.execute("INSERT INTO no_such_table VALUES (1)")


def downgrade():
    pass
'''


def run_scenario(folder: Path, projects: Path, env: dict) -> list[tuple[str, object]]:
    """Every kind of run, on fresh copies of the 3.0.0 databases in `folder` (always the same path)."""
    if folder.exists():
        shutil.rmtree(folder)
    data = folder / "data"
    data.mkdir(parents=True)
    for db in DATABASES:
        shutil.copyfile(LEGACY / db.default_file, data / db.default_file)
    for db, table in zip(DATABASES, ("sources", "raw_messages", "processed_documents")):
        for old in (projects / db.project / "versions").glob("*_test.py"):
            old.unlink()
    env = {**env, "TG_PARSER_DATA_DIR": str(data), "TG_PARSER_BACKUP_KEEP": "1"}
    runs = []

    def run(label, *args, extra=None):
        runs.append((label, tg_parser_run(*args, projects=projects, env={**env, **(extra or {})}, cwd=folder)))

    run("init", "init")
    for db, table in zip(DATABASES, ("sources", "raw_messages", "processed_documents")):
        add_revision(projects, db.name, 2, ADD_COLUMN.format(table=table))
    run("upgrade", "db", "upgrade")
    run("downgrade", "db", "downgrade", "-1", "--only", "raw", "--yes")
    run("upgrade again", "db", "upgrade", "--only", "raw")
    add_revision(projects, "processing", 3, FAILS)
    run("failing upgrade", "db", "upgrade")
    run("refused downgrade", "db", "downgrade", "base", "--only", "ingestion")
    run("restore", "db", "restore", "raw", "--yes")
    run("unreadable server", "db", "current", extra={
        "RAW_STORAGE_DB_URL": f"postgresql+psycopg://nobody:{URL_PASSWORD}@127.0.0.1:1/tg"})
    with write_locked(data / "raw_storage.sqlite"):
        run("busy", "db", "upgrade", "--only", "raw", extra={"TG_PARSER_LOCK_TIMEOUT": "0.3"})
    llm = {"LLM_API_KEY": API_KEY, "LLM_MODEL": "gpt-5-nano", "RETRY_BACKOFF_BASE": "0.1"}
    # A server that echoes the key in a 500 (retried) and, on another call, the prompt in a 400.
    echoed_key = error(500, f"proxy error; request had Authorization: Bearer {API_KEY} and x-api-key={API_KEY}")
    with ScriptedServer([echoed_key, error(429, retry_after_ms="10"), ok(REPLY)]) as server:
        run("llm ping", "llm", "ping", "--prompt", PROMPT, extra={"LLM_BASE_URL": server.url, **llm})
    with ScriptedServer([error(400, f"Invalid 'input': the prompt {PROMPT!r} is not allowed")]) as server:
        run("llm ping refused", "llm", "ping", "--prompt", PROMPT, extra={"LLM_BASE_URL": server.url, **llm})
    return runs


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    """The scenario played twice, at DEBUG (which holds every INFO event too): JSON logs on standard
    error, and text logs into LOG_FILE. Played once per test session: the first xdist worker to
    get here plays it, the others read what it saw."""
    shared = tmp_path_factory.getbasetemp().parent / "logs-scenario"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = shared / "played.pickle"
        if not saved.exists():
            saved.write_bytes(pickle.dumps(_play(shared)))
        return pickle.loads(saved.read_bytes())


def _play(root: Path) -> dict:
    projects = root / "projects"
    for db in DATABASES:
        shutil.copytree(REPO / db.project, projects / db.project, ignore=shutil.ignore_patterns("__pycache__"))
    log_file = root / "text.log"
    return {
        "json": run_scenario(root / "scenario", projects, {"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG", "LOG_FILE": ""}),
        "text": run_scenario(root / "scenario", projects,
                             {"LOG_FORMAT": "text", "LOG_LEVEL": "DEBUG", "LOG_FILE": str(log_file)}),
        "text log file": log_file.read_text(),
    }


def events_of(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.strip()]


def test_json_logs_cover_every_event_with_its_fields_and_one_run_id(played):
    runs = played["json"]
    seen: dict[str, dict] = {}
    for label, result in runs:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines, label
        parsed = events_of(lines)  # every line of standard error parses as JSON
        assert len({event["run_id"] for event in parsed}) == 1, label
        for event in parsed:
            assert BASE_KEYS <= set(event), (label, event)
            assert TS.match(event["ts"]), event["ts"]
            if event["event"] in EVENTS:
                assert set(event) == BASE_KEYS | set(EVENTS[event["event"]]), (label, event)
                seen.setdefault(event["event"], event)
        assert parsed[0]["event"] == "command_started" and parsed[-1]["event"] == "command_finished", label
        assert parsed[-1]["exit_code"] == result.returncode, label
    expected = set(EVENTS) - {"table_transferred", "index_built"}  # need PostgreSQL: tests of their own
    assert expected - set(seen) == set(), f"never logged: {expected - set(seen)}"
    assert len({events_of(r.stderr.splitlines())[0]["run_id"] for _, r in runs}) == len(runs)  # one per run
    applied = seen["revision_applied"]
    assert applied["from_revision"] and applied["to_revision"] and applied["seconds"] >= 0
    attempts = [(e["status"], e["delay_reason"]) for e in events_of(dict(runs)["llm ping"].stderr.splitlines())
                if e["event"] == "llm_attempt"]
    assert attempts == [(500, "backoff"), (429, "retry-after"), (200, None)]
    assert len(seen["backup_taken"]["blake3"]) == 64 and seen["backup_taken"]["bytes"] > 0


def test_json_logs_carry_alembic_records_with_the_same_run_id(played):
    parsed = events_of(dict(played["json"])["upgrade"].stderr.splitlines())
    alembic = [e for e in parsed if e["logger"].startswith("alembic")]
    assert any(e["event"].startswith("Running upgrade") for e in alembic)
    assert {e["run_id"] for e in alembic} == {parsed[0]["run_id"]}


def normalized(text: str) -> str:
    """Standard output with what differs between two runs anyway (times, timestamps, ports) blanked."""
    text = re.sub(r"\d+\.\d+ s", "N s", text)
    text = re.sub(r"\d{8}T\d{12}Z", "STAMP", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    return re.sub(r"time: \S+", "time: T", text)


def test_standard_output_is_the_same_whatever_the_log_format(played):
    text, as_json = played["text"], played["json"]
    assert [label for label, _ in text] == [label for label, _ in as_json]
    for (label, plain), (_, structured) in zip(text, as_json):
        assert normalized(plain.stdout) == normalized(structured.stdout), label
        assert plain.returncode == structured.returncode, label
        assert "command_started" not in plain.stdout + structured.stdout
    assert "command_started" in played["text log file"] and "run_id=" in played["text log file"]
    assert not any("command_started" in r.stderr for _, r in text)  # with LOG_FILE, standard error is for people


def test_no_secret_in_any_output_at_debug_in_either_format(played):
    logged = played["text log file"]
    assert "command_started" in logged and "llm_attempt" in logged and "backup_taken" in logged
    runs = played["json"] + played["text"]
    everything = logged + "".join(r.stdout + r.stderr for _, r in runs)
    for secret in (API_KEY, URL_PASSWORD, PROMPT):
        assert secret not in everything, secret
    assert REPLY not in logged + "".join(r.stderr for _, r in runs)
    assert "Authorization" not in everything and "Bearer" not in everything
    assert f"{REPLY}\n" in dict(played["json"])["llm ping"].stdout  # the reply is the command's output
    refused = dict(played["text"])["llm ping refused"]  # the server's words are shown, redacted
    assert refused.returncode == 1
    assert "HTTP 400: Invalid 'input': the prompt '[redacted]' is not allowed; not retryable" in refused.stderr


def test_table_transfer_events(legacy_copy, postgres_url, monkeypatch):
    monkeypatch.delenv("LOG_FILE")
    assert tg_parser_run("db", "upgrade").returncode == 0
    result = tg_parser_run("db", "transfer", "--to", postgres_url.render_as_string(hide_password=False),
                           env={"LOG_FORMAT": "json"})
    assert result.returncode == 0, result.stderr
    transferred = [e for e in events_of(result.stderr.splitlines()) if e["event"] == "table_transferred"]
    assert len(transferred) == sum(len(db.metadata.tables) for db in DATABASES)
    assert all(set(e) == BASE_KEYS | set(EVENTS["table_transferred"]) and e["equal"] for e in transferred)
    assert "postgres:postgres@" not in result.stderr


def test_a_host_program_keeps_its_logging(legacy_copy, projects):
    """tg_parser used as a library: the host's root logger keeps its handlers and level, and its lines flow."""
    import asyncio

    from tg_parser.core.settings import LLMSettings, load_retry_settings, load_settings
    from tg_parser.llm.openai_compatible import OpenAICompatibleClient
    from tg_parser.migrate.orchestrator import Options, upgrade
    from tg_parser.migrate.target import Target

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    root = logging.getLogger()
    own = Collect()
    saved_handlers, saved_level = list(root.handlers), root.level
    root.addHandler(own)
    root.setLevel(logging.INFO)
    try:
        handlers, level = list(root.handlers), root.level
        settings = load_settings()
        targets = [Target.from_settings(db, settings) for db in DATABASES]
        upgrade(targets, "head", Options(settings.backups_dir, 5, 5.0))
        with ScriptedServer([ok("pong")]) as server:
            client = OpenAICompatibleClient(LLMSettings(base_url=server.url, model="gpt-5-nano"), load_retry_settings())
            assert asyncio.run(client.complete("hi")).text == "pong"
        logging.getLogger("host.program").info("the host's own line")
        assert root.handlers == handlers and root.level == level
        assert all(isinstance(h, logging.NullHandler) for h in logging.getLogger("tg_parser").handlers)
        assert all(isinstance(h, logging.NullHandler) for h in logging.getLogger("alembic").handlers)
        assert "the host's own line" in own.lines
        assert "revision_applied" not in own.lines  # adoption only: nothing to apply past the baseline
        assert "backup_taken" in own.lines and "llm_attempt" in own.lines  # ours reach the host's handler
    finally:
        root.removeHandler(own)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_the_events_table_in_the_operations_guide_is_the_registry():
    guide = (REPO / "docs" / "operations.md").read_text()
    table = guide.split("### Events", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| `")]
    documented = {name.strip().strip("`"): tuple(f.strip().strip("`") for f in fields.split(",") if f.strip())
                  for name, fields in rows}
    assert documented == EVENTS
