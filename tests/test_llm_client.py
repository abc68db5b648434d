"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1 playing scripted sequences."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from tests.llm_server import Reply, ScriptedServer, error, ok
from tests.test_retry_policy import FakeTime, settings
from tg_parser.core.settings import LLMSettings
from tg_parser.llm.openai_compatible import OpenAICompatibleClient
from tg_parser.llm.retry import LLMRequestFailed


def client_for(server: ScriptedServer, fake: FakeTime, model: str = "gpt-5-mini", timeout: float = 5.0, **retry):
    llm = LLMSettings(base_url=server.url, api_key="sk-test-key", model=model, reasoning_effort="minimal",
                      verbosity="low", timeout=timeout)
    return OpenAICompatibleClient(llm, settings(**retry), sleep=fake.sleep, clock=fake.clock, random=lambda: 0.0)


def test_responses_api_for_gpt5_models():
    fake = FakeTime()
    with ScriptedServer([ok("hello there")]) as server:
        reply = client_for(server, fake).complete("Say hi", instructions="Be brief", max_output_tokens=50)
    assert reply.text == "hello there" and reply.attempts == 1
    (request,) = server.requests
    assert request["path"] == "/v1/responses"
    assert request["body"] == {
        "model": "gpt-5-mini", "input": "Say hi", "instructions": "Be brief", "max_output_tokens": 50,
        "reasoning": {"effort": "minimal"}, "text": {"verbosity": "low"},
    }
    assert request["headers"]["Authorization"] == "Bearer sk-test-key"


def test_chat_completions_for_other_models():
    fake = FakeTime()
    with ScriptedServer([ok("bonjour", model="llama3")]) as server:
        reply = client_for(server, fake, model="llama3").complete("Say hi", instructions="Be brief")
    assert (reply.text, reply.model) == ("bonjour", "llama3")
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["messages"] == [
        {"role": "system", "content": "Be brief"}, {"role": "user", "content": "Say hi"},
    ]


def test_429_with_retry_after_2_then_200_waits_at_least_2_seconds():
    fake = FakeTime()
    with ScriptedServer([error(429, "slow down", retry_after="2"), ok()]) as server:
        reply = client_for(server, fake, backoff_base=0.1).complete("x")
    assert len(server.requests) == 2 and reply.attempts == 2
    assert fake.sleeps == [2.0]


def test_503_503_200():
    fake = FakeTime()
    with ScriptedServer([error(503), error(503), ok()]) as server:
        reply = client_for(server, fake).complete("x")
    assert len(server.requests) == 3 and reply.attempts == 3
    assert [a.outcome for a in reply.failed_attempts] == ["HTTP 503: error", "HTTP 503: error"]
    assert fake.sleeps == [1.0, 2.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_sent_once(status):
    fake = FakeTime()
    with ScriptedServer([error(status, "no"), ok()]) as server:
        with pytest.raises(LLMRequestFailed) as failure:
            client_for(server, fake).complete("x")
    assert len(server.requests) == 1 and fake.sleeps == []
    assert failure.value.last.status == status
    assert [a.outcome for a in failure.value.attempts] == [f"HTTP {status}: no"]


def test_quota_exhausted_429_is_not_retried():
    fake = FakeTime()
    with ScriptedServer([error(429, "You exceeded your current quota", code="insufficient_quota"), ok()]) as server:
        with pytest.raises(LLMRequestFailed) as failure:
            client_for(server, fake).complete("x")
    assert len(server.requests) == 1
    assert failure.value.last.quota_exhausted


def test_a_read_timeout_then_200():
    fake = FakeTime()
    with ScriptedServer([Reply(delay=1.5, body={"__ok__": "late", "model": "m"}), ok("on time")]) as server:
        reply = client_for(server, fake, timeout=0.3).complete("x")
    assert reply.text == "on time" and reply.attempts == 2
    assert len(server.requests) == 2
    assert "timed out after 0.3 s" in reply.failed_attempts[0].outcome


def test_retry_after_3600_gives_up_at_once_with_the_delay_in_the_error():
    fake = FakeTime()
    with ScriptedServer([error(429, "busy", retry_after="3600"), ok()]) as server:
        with pytest.raises(LLMRequestFailed) as failure:
            client_for(server, fake).complete("x")
    assert len(server.requests) == 1 and fake.sleeps == []
    assert failure.value.asked_delay == 3600
    assert "asked to wait 3600 s, more than RETRY_SERVER_WAIT_MAX (120 s)" in str(failure.value)


def test_a_connection_refused_is_retried_then_reported(monkeypatch):
    fake = FakeTime()
    with ScriptedServer([]) as server:
        url = server.url
    llm = LLMSettings(base_url=url, model="m")
    client = OpenAICompatibleClient(llm, settings(max_attempts=2), sleep=fake.sleep, clock=fake.clock,
                                    random=lambda: 0.0)
    with pytest.raises(LLMRequestFailed) as failure:
        client.complete("x")
    assert len(failure.value.attempts) == 2 and "connection failed" in failure.value.attempts[0].outcome


def ping_env(monkeypatch, server):
    monkeypatch.setenv("LLM_BASE_URL", server.url)
    monkeypatch.setenv("LLM_API_KEY", "sk-never-printed")
    monkeypatch.setenv("LLM_MODEL", "gpt-5-nano")


def test_llm_ping_prints_reply_model_attempts_and_time(monkeypatch):
    with ScriptedServer([ok("pong", model="gpt-5-nano")]) as server:
        ping_env(monkeypatch, server)
        result = run_cli("llm", "ping")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "pong"
    assert "model: gpt-5-nano  attempts: 1  time:" in result.stdout
    assert "sk-never-printed" not in result.output


def test_llm_ping_explains_a_401(monkeypatch):
    with ScriptedServer([error(401, "Incorrect API key provided")]) as server:
        ping_env(monkeypatch, server)
        result = run_cli("llm", "ping")
    assert result.exit_code == 1
    assert result.output.strip() == "error: authentication failed (401): check LLM_API_KEY"
    assert len(server.requests) == 1


def test_llm_ping_explains_a_long_retry_after(monkeypatch):
    with ScriptedServer([error(429, "busy", retry_after="3600")]) as server:
        ping_env(monkeypatch, server)
        result = run_cli("llm", "ping")
    assert result.exit_code == 1
    assert "rate limited: the server asked to wait 3600 s, more than RETRY_SERVER_WAIT_MAX (120 s)" in result.output


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RETRY_MAX_ATTEMPTS", "0", "RETRY_MAX_ATTEMPTS: must be a number from 1 to 10 (got '0')"),
        ("RETRY_JITTER", "2", "RETRY_JITTER: must be a number from 0 to 1 (got '2')"),
        ("LLM_VERBOSITY", "loud", "LLM_VERBOSITY: Input should be 'low', 'medium' or 'high'"),
    ],
)
def test_a_bad_retry_or_llm_setting_stops_any_command(monkeypatch, data_dir, variable, value, message):
    monkeypatch.setenv(variable, value)
    result = run_cli("db", "current")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: invalid setting: {message}"
    assert not data_dir.exists()
