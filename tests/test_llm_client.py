"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1, counting requests."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from tests.conftest import run_cli
from tests.llm_server import (
    Reply,
    ScriptedServer,
    chat_body,
    error,
    message,
    ok,
    output_text,
    reasoning,
    refusal,
    responses_body,
)
from tests.test_retry_policy import FakeTime, settings
from tg_parser.core.settings import LLMSettings, SettingsError, load_llm_settings
from tg_parser.llm.errors import (
    LLMConnectionError,
    LLMHTTPError,
    LLMIncomplete,
    LLMMalformedReply,
    LLMRefused,
    LLMRequestFailed,
    LLMTimeout,
)
from tg_parser.llm.openai_compatible import OpenAICompatibleClient
from tg_parser.llm.records import Usage

MESSAGES = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Say hi"}]


def client_for(server: ScriptedServer, fake: FakeTime | None = None, *, model: str = "gpt-5-mini",
               timeout: float = 5.0, llm: dict | None = None, **retry) -> OpenAICompatibleClient:
    llm_settings = LLMSettings(**{"base_url": server.url, "api_key": "sk-test-key", "model": model,
                                  "reasoning_effort": "minimal", "verbosity": "low", "timeout": timeout, **(llm or {})})
    fake = fake or FakeTime()
    return OpenAICompatibleClient(llm_settings, settings(**retry), sleep=fake.sleep, clock=fake.clock,
                                  random=lambda: 0.0)


def one_call(script: list[Reply], *, prompt: str = "Say hi", options: dict | None = None, **client_options):
    """Run one call against a fresh server; return (reply or the error raised, the server)."""
    with ScriptedServer(script) as server:
        try:
            outcome = client_for(server, **client_options).complete_sync(prompt, **(options or {}))
        except (LLMRequestFailed, ValueError) as failure:
            outcome = failure
    return outcome, server


# --- requests: what each model family is sent -------------------------------------------------


def test_responses_api_for_gpt5_models():
    reply, server = one_call([ok("hello there")], options={"instructions": "Be brief", "max_output_tokens": 50})
    assert reply.text == "hello there" and len(reply.attempts) == 1
    (request,) = server.requests
    assert request["path"] == "/v1/responses"
    assert request["body"] == {
        "model": "gpt-5-mini", "input": "Say hi", "instructions": "Be brief", "max_output_tokens": 50,
        "reasoning": {"effort": "minimal"}, "text": {"verbosity": "low"},
    }
    assert request["headers"]["Authorization"] == "Bearer sk-test-key"


def test_chat_request_body_field_by_field():
    reply, server = one_call([ok("bonjour", model="llama3")], model="llama3", llm={"seed": 7},
                             options={"instructions": "Be brief", "max_output_tokens": 50})
    assert (reply.text, reply.model) == ("bonjour", "llama3")
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"] == {
        "model": "llama3", "messages": MESSAGES, "temperature": 0.0, "seed": 7, "max_completion_tokens": 50,
    }
    assert request["headers"]["Authorization"] == "Bearer sk-test-key"


def test_chat_without_options_sends_only_model_messages_and_temperature():
    _, server = one_call([ok(model="llama3")], model="llama3", llm={"temperature": 0.7})
    assert server.requests[0]["body"] == {
        "model": "llama3", "messages": [{"role": "user", "content": "Say hi"}], "temperature": 0.7,
    }


def test_o_series_get_max_completion_tokens_and_reasoning_effort_never_temperature():
    _, server = one_call([ok(model="o3-mini")], model="o3-mini", llm={"seed": 7, "reasoning_effort": "high"},
                         options={"instructions": "Be brief", "max_output_tokens": 50})
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"] == {
        "model": "o3-mini", "messages": MESSAGES, "reasoning_effort": "high", "max_completion_tokens": 50,
    }


def test_max_tokens_only_for_servers_that_need_it():
    _, server = one_call([ok(model="llama3")], model="llama3", llm={"chat_max_tokens_param": "max_tokens"},
                         options={"max_output_tokens": 50})
    body = server.requests[0]["body"]
    assert body["max_tokens"] == 50 and "max_completion_tokens" not in body


@pytest.mark.parametrize(
    ("model", "path", "has_reasoning", "has_temperature"),
    [
        ("gpt-5-mini", "/v1/responses", True, False),
        ("GPT-5-Mini", "/v1/responses", True, False),
        ("gpt-5.1", "/v1/responses", True, False),
        ("gpt-5-chat-latest", "/v1/chat/completions", False, True),
        ("GPT-5-CHAT-LATEST", "/v1/chat/completions", False, True),
        ("O4-mini", "/v1/chat/completions", True, False),
        ("gpt-4o", "/v1/chat/completions", False, True),
        ("qwen3:8b", "/v1/chat/completions", False, True),
    ],
)
def test_routing_by_model_is_case_insensitive_and_gpt5_chat_gets_no_reasoning(
    model, path, has_reasoning, has_temperature
):
    _, server = one_call([ok(model=model)], model=model)
    (request,) = server.requests
    assert request["path"] == path
    body = request["body"]
    assert ("reasoning" in body or "reasoning_effort" in body) is has_reasoning
    assert ("temperature" in body) is has_temperature


@pytest.mark.parametrize("effort", ["none", "xhigh"])
def test_reasoning_effort_none_and_xhigh_are_accepted_and_sent(monkeypatch, effort):
    monkeypatch.setenv("LLM_REASONING_EFFORT", effort)
    assert load_llm_settings().reasoning_effort == effort
    _, server = one_call([ok()], llm={"reasoning_effort": effort})
    assert server.requests[0]["body"]["reasoning"] == {"effort": effort}


@pytest.mark.parametrize("tokens", [0, -5])
def test_max_output_tokens_below_one_is_refused_before_any_request(tokens):
    outcome, server = one_call([ok()], options={"max_output_tokens": tokens})
    assert isinstance(outcome, ValueError) and "max_output_tokens must be a positive integer" in str(outcome)
    assert server.requests == []


# --- replies: complete, incomplete, refused, malformed -------------------------------------------


def test_the_reply_reports_its_model_and_usage_on_both_apis():
    reply, _ = one_call([ok("hi", model="gpt-5-mini-2025-08-07", usage=(120, 40, 32))])
    assert reply.model == "gpt-5-mini-2025-08-07"
    assert reply.usage == Usage(input_tokens=120, output_tokens=40, reasoning_tokens=32)
    assert reply.attempts[0].usage == reply.usage
    reply, _ = one_call([Reply(body=chat_body("hi", model="llama3.1:8b-instruct", usage=(9, 2, 0)))], model="llama3")
    assert (reply.model, reply.usage) == ("llama3.1:8b-instruct", Usage(9, 2, 0))


def test_responses_incomplete_with_only_reasoning_is_one_request_and_keeps_the_reason():
    body = responses_body([reasoning()], status="incomplete", incomplete_details={"reason": "max_output_tokens"},
                          usage=(30, 64, 64))
    failure, server = one_call([Reply(body=body), ok()], options={"max_output_tokens": 64})
    assert isinstance(failure, LLMIncomplete) and len(server.requests) == 1
    assert (failure.reason, failure.partial_text, failure.usage) == ("max_output_tokens", "", Usage(30, 64, 64))
    assert [(a.status, a.error) for a in failure.attempts] == [(200, "LLMIncomplete")]


def test_responses_incomplete_with_partial_text_is_not_a_success():
    body = responses_body([reasoning(), message(output_text("Once upon a"))], status="incomplete",
                          incomplete_details={"reason": "max_output_tokens"})
    failure, server = one_call([Reply(body=body), ok()])
    assert isinstance(failure, LLMIncomplete) and len(server.requests) == 1
    assert failure.partial_text == "Once upon a" and "Once upon" not in str(failure)


def test_an_incomplete_reply_is_retried_when_the_caller_asks():
    body = responses_body([message(output_text("Once"))], status="incomplete",
                          incomplete_details={"reason": "max_output_tokens"})
    reply, server = one_call([Reply(body=body), ok("whole")], options={"retry_incomplete": True})
    assert reply.text == "whole" and len(server.requests) == 2


def test_responses_refusal_is_one_request_with_the_refusal_text():
    failure, server = one_call([Reply(body=responses_body([message(refusal("I can't help with that."))])), ok()])
    assert isinstance(failure, LLMRefused) and len(server.requests) == 1
    assert failure.refusal == "I can't help with that." and failure.status == 200


@pytest.mark.parametrize(
    ("body", "error_type", "reason", "partial"),
    [
        (chat_body("The cut te", finish_reason="length"), LLMIncomplete, "max_output_tokens", "The cut te"),
        (chat_body(None, finish_reason="content_filter"), LLMIncomplete, "content_filter", ""),
        (chat_body(None, refusal="I can't help with that."), LLMRefused, None, None),
    ],
)
def test_chat_finish_reasons_and_refusals_are_one_request_and_never_an_answer(body, error_type, reason, partial):
    failure, server = one_call([Reply(body=body), ok()], model="llama3")
    assert type(failure) is error_type and len(server.requests) == 1
    if reason:
        assert (failure.reason, failure.partial_text) == (reason, partial)
    else:
        assert failure.refusal == "I can't help with that."


@pytest.mark.parametrize(
    ("model", "reply", "detail"),
    [
        ("gpt-5-mini", Reply(raw=b"<html>upstream says hi</html>"), "the body is not JSON"),
        ("gpt-5-mini", Reply(body={"model": "gpt-5-mini", "status": "completed", "output": None}),
         "`output` is not a list"),
        ("gpt-5-mini", Reply(body=[1, 2]), "the body is an array, not an object"),
        ("gpt-5-mini", Reply(body=responses_body([reasoning()])), "no `output_text`"),
        ("gpt-5-mini", Reply(body=responses_body(["text"])), "`output` is not a list of items"),
        ("llama3", Reply(raw=b"not json"), "the body is not JSON"),
        ("llama3", Reply(body={"choices": None}), "`choices` is not a non-empty list"),
        ("llama3", Reply(body={"choices": [{"message": "hi"}]}), "`choices[0].message` is not an object"),
        ("llama3", Reply(body=chat_body(None)), "content` is null"),
        ("llama3", Reply(body="just a string"), "the body is a string"),
    ],
)
def test_a_200_we_cannot_read_is_malformed_after_one_request(model, reply, detail):
    failure, server = one_call([reply, ok()], model=model)
    assert isinstance(failure, LLMMalformedReply) and len(server.requests) == 1
    assert failure.status == 200 and detail in str(failure)
    assert [(a.status, a.error) for a in failure.attempts] == [(200, "LLMMalformedReply")]


# --- HTTP errors and transport failures -------------------------------------------------------


def test_429_with_retry_after_2_then_200_waits_at_least_2_seconds():
    fake = FakeTime()
    reply, server = one_call([error(429, "slow down", retry_after="2"), ok()], fake=fake, backoff_base=0.1)
    assert len(server.requests) == 2 and len(reply.attempts) == 2
    assert fake.sleeps == [2.0] and reply.attempts[0].delay_reason == "retry-after"


def test_retry_after_ms_is_waited_as_asked():
    fake = FakeTime()
    reply, server = one_call([error(429, "slow down", retry_after_ms="50", retry_after="9"), ok()], fake=fake)
    assert len(server.requests) == 2 and fake.sleeps == [0.05]


def test_503_503_200():
    fake = FakeTime()
    reply, server = one_call([error(503), error(503), ok()], fake=fake)
    assert len(server.requests) == 3
    assert [(a.status, a.error, a.delay) for a in reply.attempts] == [
        (503, "LLMHTTPError", 1.0), (503, "LLMHTTPError", 2.0), (200, None, None),
    ]
    assert fake.sleeps == [1.0, 2.0]


def test_409_is_retried():
    reply, server = one_call([error(409, "conflict"), ok("done")])
    assert reply.text == "done" and len(server.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_sent_once(status):
    fake = FakeTime()
    failure, server = one_call([error(status, "no"), ok()], fake=fake)
    assert len(server.requests) == 1 and fake.sleeps == []
    assert isinstance(failure, LLMHTTPError) and failure.status == status
    assert str(failure) == f"HTTP {status}: no; not retryable"


def test_x_should_retry_true_retries_a_400():
    reply, server = one_call([error(400, "try again", x_should_retry="true"), ok("done")])
    assert reply.text == "done" and len(server.requests) == 2


def test_x_should_retry_false_stops_a_500():
    failure, server = one_call([error(500, "do not", x_should_retry="false"), ok()])
    assert isinstance(failure, LLMHTTPError) and failure.status == 500 and len(server.requests) == 1


def test_quota_exhausted_429_is_not_retried():
    failure, server = one_call([error(429, "You exceeded your current quota", code="insufficient_quota"), ok()])
    assert len(server.requests) == 1 and failure.quota_exhausted


def test_a_slow_reply_times_out_and_the_retry_succeeds():
    late = Reply(delay=1.5, body=chat_body("late"))
    reply, server = one_call([late, ok("on time")], model="llama3", timeout=0.3)
    assert reply.text == "on time" and len(server.requests) == 2
    assert reply.attempts[0].error == "LLMTimeout" and reply.attempts[0].status is None


def test_a_connection_reset_mid_body_is_retried():
    cut = Reply(body=responses_body([message(output_text("a long answer " * 50))]), reset_after=40)
    reply, server = one_call([cut, ok("whole")])
    assert reply.text == "whole" and len(server.requests) == 2
    first = reply.attempts[0]
    assert first.status is None and first.error in {"ReadError", "RemoteProtocolError"}


def test_a_connection_refused_is_retried_then_reported():
    with ScriptedServer([]) as server:
        url = server.url
    fake = FakeTime()
    client = OpenAICompatibleClient(LLMSettings(base_url=url, model="m"), settings(max_attempts=2),
                                    sleep=fake.sleep, clock=fake.clock, random=lambda: 0.0)
    with pytest.raises(LLMConnectionError) as failure:
        client.complete_sync("x")
    assert [a.error for a in failure.value.attempts] == ["ConnectError", "ConnectError"]


def test_a_timeout_names_the_limit_that_cut_it():
    failure, _ = one_call([Reply(delay=1, body=chat_body("late"))], model="llama3", timeout=0.2, max_attempts=1)
    assert isinstance(failure, LLMTimeout) and "within 0.2 s (LLM_TIMEOUT)" in str(failure)


# --- tg-parser llm ping ----------------------------------------------------------------------


def ping_env(monkeypatch, server, base_url: str | None = None):
    monkeypatch.setenv("LLM_BASE_URL", base_url or server.url)
    monkeypatch.setenv("LLM_API_KEY", "sk-never-printed")
    monkeypatch.setenv("LLM_MODEL", "gpt-5-nano")
    monkeypatch.setenv("RETRY_BACKOFF_BASE", "0.1")


def test_llm_ping_prints_reply_model_attempts_tokens_and_time(monkeypatch):
    with ScriptedServer([ok("pong", model="gpt-5-nano-2025-08-07", usage=(20, 16, 8))]) as server:
        ping_env(monkeypatch, server)
        result = run_cli("llm", "ping")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "pong"
    assert "model: gpt-5-nano-2025-08-07  attempts: 1  time:" in result.stdout
    assert "tokens: 20 in, 16 out (8 reasoning)" in result.stdout
    assert "sk-never-printed" not in result.output


def test_userinfo_in_the_base_url_is_refused_and_the_password_shown_nowhere(monkeypatch, caplog):
    """httpx would send Basic auth instead of the key, and log the password in its INFO request line."""
    with ScriptedServer([ok("pong")]) as server:
        ping_env(monkeypatch, server, server.url.replace("http://", "http://proxy-user:s3cret-pass@"))
        with caplog.at_level(logging.DEBUG):  # a host program logging everything
            result = run_cli("llm", "ping")
            with pytest.raises(SettingsError) as refused:
                load_llm_settings()
            with pytest.raises(ValidationError) as invalid:
                LLMSettings(base_url="http://proxy-user:s3cret-pass@127.0.0.1:1")
    assert result.exit_code == 2 and server.requests == []
    assert result.output.strip() == (
        "error: invalid setting: LLM_BASE_URL: must not hold a user name or password (user:password@host);"
        " put the key in LLM_API_KEY"
    )
    assert "LLM_BASE_URL" in str(refused.value)
    for text in (result.output, str(refused.value), str(invalid.value), caplog.text):
        assert "s3cret-pass" not in text


def test_llm_ping_explains_a_401(monkeypatch):
    with ScriptedServer([error(401, "Incorrect API key provided", retry_after="3600")]) as server:
        ping_env(monkeypatch, server)
        result = run_cli("llm", "ping")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: authentication failed (401): check LLM_API_KEY (OpenAI Responses API at {server.url})"
    )
    assert len(server.requests) == 1


def test_llm_ping_says_rate_limited_only_for_a_429(monkeypatch):
    with ScriptedServer([error(429, "busy", retry_after="3600")]) as server:
        ping_env(monkeypatch, server)
        result = run_cli("llm", "ping")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: rate limited: the server asked to wait 3600 s, more than RETRY_SERVER_WAIT_MAX (120 s)"
        f" (OpenAI Responses API at {server.url})"
    )
    with ScriptedServer([error(503, "maintenance", retry_after="3600")]) as server:
        ping_env(monkeypatch, server)
        result = run_cli("llm", "ping")
    assert result.exit_code == 1 and "rate limited" not in result.output
    assert result.output.strip() == (
        "error: server unavailable (HTTP 503): the server asked to wait 3600 s, more than RETRY_SERVER_WAIT_MAX (120 s)"
        f" (OpenAI Responses API at {server.url})"
    )


def test_llm_ping_reports_a_malformed_reply_in_one_line(monkeypatch):
    with ScriptedServer([Reply(body={"output": None}), ok()]) as server:
        ping_env(monkeypatch, server)
        result = run_cli("llm", "ping")
    assert result.exit_code == 1 and len(server.requests) == 1
    assert result.output.strip() == (
        "error: request failed after 1 attempt(s): malformed reply (HTTP 200): `output` is not a list of items;"
        f" not retryable (OpenAI Responses API at {server.url})"
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RETRY_MAX_ATTEMPTS", "0", "RETRY_MAX_ATTEMPTS: must be a number from 1 to 10 (got '0')"),
        ("RETRY_JITTER", "2", "RETRY_JITTER: must be a number from 0 to 1 (got '2')"),
        ("LLM_VERBOSITY", "loud", "LLM_VERBOSITY: Input should be 'low', 'medium' or 'high'"),
        ("LLM_TIMEOUT", "0", "LLM_TIMEOUT: must be greater than 0 and at most 600 (got '0')"),
        ("LLM_MAX_CONCURRENCY", "0", "LLM_MAX_CONCURRENCY: must be a number from 1 to 256 (got '0')"),
        ("LLM_TEMPERATURE", "3", "LLM_TEMPERATURE: must be a number from 0 to 2 (got '3')"),
        ("LLM_REASONING_EFFORT", "max",
         "LLM_REASONING_EFFORT: Input should be 'none', 'minimal', 'low', 'medium', 'high' or 'xhigh'"),
        ("LLM_CHAT_MAX_TOKENS_PARAM", "tokens",
         "LLM_CHAT_MAX_TOKENS_PARAM: Input should be 'max_completion_tokens' or 'max_tokens'"),
    ],
)
def test_a_bad_retry_or_llm_setting_stops_any_command(monkeypatch, data_dir, variable, value, message):
    monkeypatch.setenv(variable, value)
    result = run_cli("db", "current")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: invalid setting: {message}"
    assert not data_dir.exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://user:pa#ss@127.0.0.1:1/v1", "must not hold a user name or password"),
        ("http://user:pa/ss@127.0.0.1:1/v1", "must not hold a user name or password"),
        ("http://127.0.0.1:1/v1?key=pa55-SECRET", "must not hold a query or fragment"),
        ("http://127.0.0.1:99999/v1", "has a port that is not a number from 0 to 65535"),
        ("http://", "must be an http:// or https:// URL with a host"),
        ("ftp://127.0.0.1/v1", "must be an http:// or https:// URL with a host"),
    ],
)
def test_a_base_url_that_could_carry_a_secret_or_cannot_work_is_refused(monkeypatch, data_dir, url, message):
    monkeypatch.setenv("LLM_BASE_URL", url)
    result = run_cli("llm", "ping")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: invalid setting: LLM_BASE_URL: {message}")
    assert len(result.output.strip().splitlines()) == 1
    for secret in ("pa#ss", "pa/ss", "pa55-SECRET", "99999"):
        assert secret not in result.output


def test_a_bad_llm_setting_in_code_names_the_variable():
    with pytest.raises(SettingsError, match="LLM_TIMEOUT: must be greater than 0 and at most 600"):
        load_llm_settings(timeout=0)
