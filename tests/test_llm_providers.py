"""Each provider's client against a real local server speaking that provider's protocol.

The same acceptance list runs for every provider: replies classified after one request, the
provider's delay hint waited as asked, its overload status retried, client errors and quota
exhaustion never retried, a reset retried, the whole-request deadline held, structured output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pydantic import BaseModel, ConfigDict

from tests.conftest import run_cli
from tests.llm_server import (
    Reply,
    ScriptedServer,
    anthropic_body,
    anthropic_error,
    error,
    gemini_body,
    gemini_error,
    message,
    ok,
    ollama_body,
    ollama_error,
    output_text,
    quota_failure,
    refusal,
    responses_body,
    retry_info,
)
from tests.test_retry_policy import FakeTime, settings
from tg_parser.core.settings import LLMSettings
from tg_parser.llm.errors import (
    LLMHTTPError,
    LLMIncomplete,
    LLMMalformedReply,
    LLMRefused,
    LLMRequestFailed,
    LLMTimeout,
    LLMValidationFailed,
)
from tg_parser.llm.providers import make_client
from tg_parser.llm.records import Usage

KEY = "sk-provider-test-key-0123456789"


class TopicCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    message_ids: list[int]


CARD = {"title": "Elections", "message_ids": [3, 5]}


@dataclass(frozen=True)
class Protocol:
    """What one provider's server says for each case the acceptance list names."""

    provider: str
    model: str
    path: str
    auth: tuple[str, str | None]
    """The auth header and its value (None: no auth header at all)."""
    incomplete: Reply
    refused: Reply | None
    malformed: Reply
    rate_limited: Callable[[float], Reply]
    """A 429 asking to wait that many seconds, in the provider's own way."""
    overloaded: Reply
    client_error: Callable[[int], Reply]
    quota_exhausted: Reply | None
    structured: Reply
    """A reply carrying CARD as the provider returns structured output."""
    invalid_structured: Reply


PROTOCOLS = [
    Protocol(
        "openai", "gpt-5-mini", "/v1/responses", ("Authorization", f"Bearer {KEY}"),
        incomplete=Reply(body=responses_body([message(output_text("Once upon"))], status="incomplete",
                                             incomplete_details={"reason": "max_output_tokens"})),
        refused=Reply(body=responses_body([message(refusal("I can't help with that."))])),
        malformed=Reply(body={"status": "completed", "output": None}),
        rate_limited=lambda s: error(429, "slow down", retry_after=f"{s:g}"),
        overloaded=error(503, "overloaded"),
        client_error=lambda status: error(status, "no"),
        quota_exhausted=error(429, "You exceeded your current quota", code="insufficient_quota"),
        structured=ok(json.dumps(CARD)),
        invalid_structured=ok(json.dumps({"title": "Elections"})),
    ),
    Protocol(
        "anthropic", "claude-haiku-4-5", "/v1/messages", ("Authorization", f"Bearer {KEY}"),
        incomplete=Reply(body=anthropic_body([{"type": "text", "text": "Once upon"}], stop_reason="max_tokens")),
        refused=Reply(body=anthropic_body([], stop_reason="refusal")),
        malformed=Reply(body=anthropic_body("text", stop_reason="end_turn")),
        rate_limited=lambda s: anthropic_error(429, "rate_limit_error", "slow down", retry_after=f"{s:g}"),
        overloaded=anthropic_error(529, "overloaded_error", "Overloaded"),
        client_error=lambda status: anthropic_error(status, "invalid_request_error", "no"),
        quota_exhausted=anthropic_error(429, "rate_limit_error", "usage limit reached", x_should_retry="false"),
        structured=Reply(body=anthropic_body(
            [{"type": "tool_use", "id": "t1", "name": "TopicCard", "input": CARD}], stop_reason="tool_use")),
        invalid_structured=Reply(body=anthropic_body(
            [{"type": "tool_use", "id": "t1", "name": "TopicCard", "input": {"title": 5}}], stop_reason="tool_use")),
    ),
    Protocol(
        "gemini", "gemini-2.5-flash", "/v1/models/gemini-2.5-flash:generateContent", ("x-goog-api-key", KEY),
        incomplete=Reply(body=gemini_body([{"text": "Once upon"}], finish_reason="MAX_TOKENS")),
        refused=Reply(body=gemini_body(None, prompt_feedback={"blockReason": "PROHIBITED_CONTENT"})),
        malformed=Reply(body=gemini_body([{"text": 5}])),
        rate_limited=lambda s: gemini_error(429, "Resource exhausted", "RESOURCE_EXHAUSTED",
                                            [quota_failure("GenerateRequestsPerMinutePerProjectPerModel"),
                                             retry_info(f"{s:g}s")]),
        overloaded=gemini_error(503, "The model is overloaded.", "UNAVAILABLE"),
        client_error=lambda status: gemini_error(status, "no", "INVALID_ARGUMENT"),
        quota_exhausted=gemini_error(429, "You exceeded your current quota", "RESOURCE_EXHAUSTED",
                                     [quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
                                      retry_info("20s")]),
        structured=Reply(body=gemini_body([{"text": json.dumps(CARD)}])),
        invalid_structured=Reply(body=gemini_body([{"text": '{"title": "Elections"}'}])),
    ),
    Protocol(
        "ollama", "llama3.2", "/api/chat", ("Authorization", None),
        incomplete=Reply(body=ollama_body("Once upon", done_reason="length")),
        refused=None,  # Ollama has no refusal signal
        malformed=Reply(body={"model": "llama3.2", "done": True, "message": {"role": "assistant"}}),
        rate_limited=lambda s: ollama_error(429, "too many requests", retry_after=f"{s:g}"),
        overloaded=ollama_error(503, "server busy, please try again.  maximum pending requests exceeded"),
        client_error=lambda status: ollama_error(status, "model 'x' not found"),
        quota_exhausted=None,  # a local server has no quota
        structured=Reply(body=ollama_body(json.dumps(CARD))),
        invalid_structured=Reply(body=ollama_body('{"title": "Elections", "message_ids": "x"}')),
    ),
]
BY_NAME = {p.provider: p for p in PROTOCOLS}


def client_for(protocol: Protocol, server: ScriptedServer, fake: FakeTime | None = None, *, timeout: float = 5.0,
               **retry):
    base = server.url if protocol.provider == "openai" else server.root
    llm = LLMSettings(provider=protocol.provider, base_url=base, api_key=KEY, model=protocol.model, timeout=timeout)
    if fake is None:
        return make_client(llm, settings(**retry))
    return make_client(llm, settings(**retry), sleep=fake.sleep, clock=fake.clock, random=lambda: 0.0)


def call(protocol: Protocol, script: list[Reply], *, fake: FakeTime | None = None, options: dict | None = None,
         **client_options):
    """One call against a fresh server; (reply or the error raised, the server)."""
    with ScriptedServer(script) as server:
        try:
            outcome = client_for(protocol, server, fake or FakeTime(), **client_options).complete_sync(
                "Say hi", **(options or {}))
        except LLMRequestFailed as failure:
            outcome = failure
    return outcome, server


each = pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.provider)


@each
def test_a_complete_reply_after_one_request_with_the_providers_auth_model_and_usage(protocol):
    reply, server = call(protocol, [ok("hello there", model=f"{protocol.model}-001", usage=(12, 9, 0))])
    assert reply.text == "hello there" and reply.model == f"{protocol.model}-001"
    assert reply.usage == Usage(12, 9, 0) and len(server.requests) == 1
    (request,) = server.requests
    assert request["path"] == protocol.path
    header, value = protocol.auth
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers.get(header.lower()) == value
    assert KEY not in request["path"]  # never the key in the URL


@each
def test_an_incomplete_reply_is_one_request_and_keeps_its_partial_text(protocol):
    failure, server = call(protocol, [protocol.incomplete, ok()])
    assert type(failure) is LLMIncomplete and len(server.requests) == 1
    assert (failure.reason, failure.partial_text) == ("max_output_tokens", "Once upon")


@pytest.mark.parametrize("protocol", [p for p in PROTOCOLS if p.refused], ids=lambda p: p.provider)
def test_a_refusal_is_one_request(protocol):
    failure, server = call(protocol, [protocol.refused, ok()])
    assert type(failure) is LLMRefused and len(server.requests) == 1 and failure.status == 200


@pytest.mark.parametrize("reason", ["SAFETY", "PROHIBITED_CONTENT"])
def test_gemini_blocked_candidates_are_refusals(reason):
    failure, server = call(BY_NAME["gemini"], [Reply(body=gemini_body([], finish_reason=reason)), ok()])
    assert type(failure) is LLMRefused and reason in failure.refusal and len(server.requests) == 1


@each
def test_a_malformed_200_is_one_request(protocol):
    failure, server = call(protocol, [protocol.malformed, ok()])
    assert type(failure) is LLMMalformedReply and len(server.requests) == 1 and failure.status == 200


@each
def test_a_429_is_waited_as_the_provider_asks(protocol):
    fake = FakeTime()
    reply, server = call(protocol, [protocol.rate_limited(2.5), ok("done")], fake=fake)
    assert reply.text == "done" and len(server.requests) == 2
    assert fake.sleeps == [2.5] and reply.attempts[0].delay_reason == "retry-after"


@each
def test_the_overload_status_is_retried(protocol):
    reply, server = call(protocol, [protocol.overloaded, protocol.overloaded, ok("done")])
    assert reply.text == "done" and len(server.requests) == 3
    assert [a.status for a in reply.attempts] == [protocol.overloaded.status] * 2 + [200]


@each
@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_never_retried(protocol, status):
    fake = FakeTime()
    failure, server = call(protocol, [protocol.client_error(status), ok()], fake=fake)
    assert type(failure) is LLMHTTPError and failure.status == status
    assert len(server.requests) == 1 and fake.sleeps == []


@pytest.mark.parametrize("protocol", [p for p in PROTOCOLS if p.quota_exhausted], ids=lambda p: p.provider)
def test_a_quota_exhausted_429_is_never_retried(protocol):
    failure, server = call(protocol, [protocol.quota_exhausted, ok()])
    assert type(failure) is LLMHTTPError and failure.status == 429 and len(server.requests) == 1


def test_gemini_list_wrapped_errors_keep_their_message():
    failure, _ = call(BY_NAME["gemini"], [gemini_error(400, "API key not valid", "INVALID_ARGUMENT", wrapped=True)])
    assert str(failure) == "HTTP 400: API key not valid; not retryable"


def test_gemini_openai_compatible_endpoint_errors_are_read_the_same_way():
    """Gemini behind LLM_PROVIDER=openai: list-wrapped bodies, RetryInfo and per-day quotas still count."""
    openai = BY_NAME["openai"]
    failure, server = call(openai, [gemini_error(400, "Bad model", "INVALID_ARGUMENT", wrapped=True)])
    assert str(failure) == "HTTP 400: Bad model; not retryable"
    daily = gemini_error(429, "quota", "RESOURCE_EXHAUSTED", [quota_failure("GenerateRequestsPerDay"),
                                                                retry_info("3s")], wrapped=True)
    failure, server = call(openai, [daily, ok()])
    assert failure.quota_exhausted and len(server.requests) == 1
    fake = FakeTime()
    minute = gemini_error(429, "quota", "RESOURCE_EXHAUSTED", [retry_info("1.5s")], wrapped=True)
    reply, server = call(openai, [minute, ok("done")], fake=fake)
    assert reply.text == "done" and fake.sleeps == [1.5]


@each
def test_a_connection_reset_is_retried(protocol):
    cut = Reply(body=ok("a long answer " * 50).body, reset_after=30)
    reply, server = call(protocol, [cut, ok("whole")])
    assert reply.text == "whole" and len(server.requests) == 2
    assert reply.attempts[0].status is None


def test_ollama_refusing_connections_while_it_starts_is_retried():
    """No server on the port for the first attempt; it is up by the time the backoff is over."""
    with ScriptedServer([]) as gone:
        port = int(gone.root.rsplit(":", 1)[1])
    started: list[ScriptedServer] = []
    fake = FakeTime()

    async def sleep(seconds: float) -> None:
        await fake.sleep(seconds)
        started.append(ScriptedServer([ok("up")], port=port).__enter__())

    llm = LLMSettings(provider="ollama", base_url=f"http://127.0.0.1:{port}", model="llama3.2")
    try:
        reply = make_client(llm, settings(), sleep=sleep, clock=fake.clock, random=lambda: 0.0).complete_sync("x")
    finally:
        for server in started:
            server.__exit__(None, None, None)
    assert reply.text == "up" and [a.error for a in reply.attempts] == ["ConnectError", None]
    assert fake.sleeps == [1.0]


@each
def test_the_whole_request_deadline_holds_across_attempts(protocol):
    """Each attempt stalls past LLM_TIMEOUT; RETRY_TOTAL_TIMEOUT (1 s) ends the call on the real clock."""
    stalled = Reply(delay=0.6, body=ok().body)
    started = time.monotonic()
    with ScriptedServer(lambda request: stalled) as server, pytest.raises(LLMTimeout):
        client_for(protocol, server, timeout=0.4, total_timeout=1, max_attempts=10, backoff_base=0.1).complete_sync("x")
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed < 1.3, elapsed  # two 0.4 s attempts and a 0.1 s backoff; no third fits
    assert len(server.requests) == 2


@each
def test_structured_output_is_parsed_into_the_model(protocol):
    reply, server = call(protocol, [protocol.structured], options={"output_type": TopicCard})
    assert reply.parsed == TopicCard(**CARD)
    body = server.requests[0]["body"]
    sent = json.dumps(body)
    assert "message_ids" in sent  # the model's schema went with the request


@each
def test_a_structured_reply_that_fails_validation_fails_after_one_request(protocol):
    failure, server = call(protocol, [protocol.invalid_structured, protocol.structured],
                           options={"output_type": TopicCard})
    assert type(failure) is LLMValidationFailed and len(server.requests) == 1


def test_anthropic_structured_output_is_a_forced_tool():
    _, server = call(BY_NAME["anthropic"], [BY_NAME["anthropic"].structured], options={"output_type": TopicCard})
    body = server.requests[0]["body"]
    assert body["tool_choice"] == {"type": "tool", "name": "TopicCard"}
    assert body["tools"] == [{"name": "TopicCard", "input_schema": TopicCard.model_json_schema()}]


def test_gemini_structured_output_is_a_response_schema():
    _, server = call(BY_NAME["gemini"], [BY_NAME["gemini"].structured], options={"output_type": TopicCard})
    config = server.requests[0]["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["type"] == "OBJECT"
    assert config["responseSchema"]["required"] == ["title", "message_ids"]


def test_ollama_structured_output_is_the_format_schema_and_the_cap_is_num_predict():
    _, server = call(BY_NAME["ollama"], [BY_NAME["ollama"].structured],
                     options={"output_type": TopicCard, "max_output_tokens": 64})
    body = server.requests[0]["body"]
    assert body["format"] == TopicCard.model_json_schema() and body["stream"] is False
    assert body["options"]["num_predict"] == 64 and "max_completion_tokens" not in json.dumps(body)


# --- tg-parser llm ping -------------------------------------------------------------------------


@each
def test_llm_ping_works_with_each_provider_and_names_the_api(monkeypatch, protocol):
    with ScriptedServer([ok("pong", model=protocol.model)]) as server:
        base = server.url if protocol.provider == "openai" else server.root
        for name, value in {"LLM_PROVIDER": protocol.provider, "LLM_BASE_URL": base, "LLM_API_KEY": KEY,
                            "LLM_MODEL": protocol.model}.items():
            monkeypatch.setenv(name, value)
        result = run_cli("llm", "ping")
    assert result.exit_code == 0, result.output
    api_name = make_client(LLMSettings(provider=protocol.provider, model=protocol.model)).api_name
    assert result.stdout.splitlines()[0] == "pong"
    assert f"({api_name} at {base})" in result.stdout
    assert server.requests[0]["path"] == protocol.path and KEY not in result.output


@pytest.mark.parametrize("value", ["azure", ""])
def test_a_bad_provider_is_exit_2_naming_the_variable(monkeypatch, data_dir, value):
    monkeypatch.setenv("LLM_PROVIDER", value)
    result = run_cli("llm", "ping")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: invalid setting: LLM_PROVIDER: Input should be 'openai', 'anthropic', 'gemini' or 'ollama'"
    )


@pytest.mark.parametrize(
    ("provider", "base_url"),
    [("openai", "https://api.openai.com/v1"), ("anthropic", "https://api.anthropic.com"),
     ("gemini", "https://generativelanguage.googleapis.com"), ("ollama", "http://localhost:11434")],
)
def test_each_provider_has_its_sdks_default_base_url(monkeypatch, provider, base_url):
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    assert LLMSettings(provider=provider).base_url == base_url
    assert LLMSettings(provider=provider.upper()).provider == provider
