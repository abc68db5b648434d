"""TG_parser 3.0.0's LLM port on our clients, strict schemas, Chat content parts, and redaction."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.llm_server import Reply, ScriptedServer, chat_body, error, ok
from tests.test_llm_client import client_for as openai_client
from tests.test_llm_client import one_call
from tests.test_llm_providers import PROTOCOLS, client_for
from tests.test_retry_policy import FakeTime
from tg_parser.llm.errors import (
    LLMHTTPError,
    LLMIncomplete,
    LLMMalformedReply,
    LLMRefused,
    LLMRequestFailed,
)
from tg_parser.llm.redact import EXCERPT_CHARS, excerpt
from tg_parser.llm.schemas import UnsupportedSchema, gemini_schema, strict_schema

each = pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.provider)


def generate(protocol, script, **arguments):
    """3.0.0's processing code: `await llm_client.generate(prompt=..., system_prompt=..., ...)`, then `close()`."""
    with ScriptedServer(script) as server:
        client = client_for(protocol, server, FakeTime())

        async def process():
            try:
                return await client.generate(prompt="Summarise: hello", **arguments)
            finally:
                await client.close()

        try:
            outcome = asyncio.run(process())
        except LLMRequestFailed as failure:
            outcome = failure
    return outcome, server, client


@each
def test_generate_returns_the_text_as_3_0_0s_port_does(protocol):
    text, server, client = generate(protocol, [ok('{"text_clean": "hello"}')], system_prompt="You clean text.",
                                    temperature=0.0, max_tokens=512, response_format={"type": "json_object"})
    assert text == '{"text_clean": "hello"}' and len(server.requests) == 1
    assert client.model == protocol.model  # 3.0.0's pipeline records `llm_client.model` as the model id
    body = json.dumps(server.requests[0]["body"])
    assert "You clean text." in body and "512" in body


@each
def test_generate_raises_the_same_error_classes_as_complete(protocol):
    failure, server, _ = generate(protocol, [protocol.client_error(401), ok()])
    assert type(failure) is LLMHTTPError and failure.status == 401 and len(server.requests) == 1
    failure, _, _ = generate(protocol, [protocol.incomplete])
    assert type(failure) is LLMIncomplete
    failure, _, _ = generate(protocol, [protocol.malformed])
    assert type(failure) is LLMMalformedReply


@pytest.mark.parametrize(
    ("provider", "where", "expected"),
    [
        ("openai", ("text", "format"), {"type": "json_object"}),
        ("gemini", ("generationConfig", "responseMimeType"), "application/json"),
        ("ollama", ("format",), "json"),
    ],
)
def test_json_mode_uses_each_providers_switch(provider, where, expected):
    protocol = next(p for p in PROTOCOLS if p.provider == provider)
    _, server, _ = generate(protocol, [ok("{}")], response_format={"type": "json_object"})
    value = server.requests[0]["body"]
    for key in where:
        value = value[key]
    assert value == expected


def test_json_mode_on_anthropic_is_3_0_0s_instruction():
    protocol = next(p for p in PROTOCOLS if p.provider == "anthropic")
    _, server, _ = generate(protocol, [ok("{}")], response_format={"type": "json_object"})
    assert server.requests[0]["body"]["messages"][0]["content"] == "Summarise: hello\n\nRespond with valid JSON only."


def test_generate_refuses_an_unknown_response_format_before_any_request():
    with ScriptedServer([ok()]) as server:
        client = client_for(PROTOCOLS[0], server)
        with pytest.raises(ValueError, match="response_format must be"):
            asyncio.run(client.generate("x", response_format={"type": "xml"}))
    assert server.requests == []


def test_the_prompt_id_is_3_0_0s():
    """Stored with every processed document: the same prompts must keep the same id across the switch."""
    client = client_for(PROTOCOLS[0], ScriptedServer([]))
    assert client.compute_prompt_id("system", "Text: {text}") == (
        "sha256:" + hashlib.sha256(b"system\n---\nText: {text}").hexdigest()[:16])
    assert client.compute_prompt_id(None, "t") == client.compute_prompt_id("", "t")


# --- strict schemas ----------------------------------------------------------------------------


class Loose(BaseModel):
    """An ordinary model: defaults, no extra="forbid", a nested optional model."""

    title: str
    tags: list[str] = Field(default_factory=list)
    score: float = 0.5
    child: Loose | None = None


def test_an_ordinary_model_is_made_strict_as_the_sdk_does():
    schema = strict_schema(Loose)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["title", "tags", "score", "child"]
    assert '"default":' not in json.dumps(schema)
    with ScriptedServer([ok('{"title": "t", "tags": [], "score": 1, "child": null}', model="llama3")]) as server:
        reply = openai_client(server, model="llama3").complete_sync("x", output_type=Loose)
    sent = server.requests[0]["body"]["response_format"]["json_schema"]
    assert sent["strict"] is True and sent["schema"] == schema
    assert reply.parsed == Loose(title="t", score=1)


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (type("Open", (BaseModel,), {"__annotations__": {"a": int}, "model_config": ConfigDict(extra="allow")}),
         "Open"),
        (type("Counts", (BaseModel,), {"__annotations__": {"by_word": dict[str, int]}}), "Counts.by_word"),
    ],
)
def test_a_model_that_cannot_be_strict_is_refused_naming_the_field_before_any_request(model, field):
    with pytest.raises(UnsupportedSchema, match=rf"^{field} accepts properties it does not name"):
        strict_schema(model)
    with ScriptedServer([ok("{}")]) as server, pytest.raises(UnsupportedSchema):
        openai_client(server).complete_sync("x", output_type=model)
    assert server.requests == []
    with pytest.raises(UnsupportedSchema, match=rf"^{field} accepts properties"):
        gemini_schema(model)


# --- Chat content as a list of parts -------------------------------------------------------------


def test_chat_content_as_a_list_of_parts_is_read():
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]
    reply, server = one_call([Reply(body=chat_body(parts))], model="llama3")
    assert reply.text == "Hello, world" and len(server.requests) == 1
    failure, _ = one_call([Reply(body=chat_body([{"type": "refusal", "refusal": "No."}]))], model="llama3")
    assert isinstance(failure, LLMRefused) and failure.refusal == "No."
    failure, _ = one_call([Reply(body=chat_body([{"type": "image_url"}]))], model="llama3")
    assert isinstance(failure, LLMMalformedReply) and "no `text` part" in str(failure)


# --- redaction ---------------------------------------------------------------------------------


PROMPT = "Summarise this private message about the merger of Acme and Globex, due next Tuesday"


@pytest.mark.parametrize(
    "echo",
    [
        "Bearer sk-live-AbCdEf0123456789xyz",
        "x-api-key: sk-ant-api03-AbCdEf0123456789",
        "https://host/v1beta/models/m:generateContent?key=AIzaSyA0123456789abcdefghijklmnop",
        "token 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        f"could not parse prompt: '{PROMPT[:40]}'",
        f"first {PROMPT[10:50]} then again {PROMPT[30:80]}",
        "got: " + PROMPT.replace(" ", "\n  "),  # the words split by other whitespace
        "got: " + PROMPT.replace(" ", "\u00a0"),
        "got: " + PROMPT.replace(" ", "%20"),  # URL-encoded
        "got: " + PROMPT.upper(),
        "got: " + PROMPT.replace(" ", " \x1b[1m"),  # terminal escapes between the words
    ],
)
def test_an_excerpt_holds_no_key_shape_and_no_run_of_the_prompt(echo):
    shown = excerpt(f"upstream error: {echo} (request 42)", ("my-own-key", PROMPT))
    assert "[redacted]" in shown and shown.startswith("upstream error:") and shown.endswith("(request 42)")
    assert not any(PROMPT[i:i + 12] in shown for i in range(len(PROMPT) - 12))
    for secret in ("sk-live", "sk-ant", "AIza", "9f86d0818"):
        assert secret not in shown


def test_a_prompt_holding_the_mask_itself_is_masked_and_masking_ends():
    prompt = "keep every [redacted] marker of this message exactly as it stands"
    shown = excerpt(f"cannot parse: {prompt} / {prompt.upper()}", (prompt,))
    assert "marker of this" not in shown.lower() and shown.startswith("cannot parse:")


def test_an_excerpt_drives_no_terminal():
    shown = excerpt("error \x1b]0;owned\x07 \x1b[2J done \x07\x08")
    assert "\x1b" not in shown and "\x07" not in shown and shown == "error done"


@pytest.mark.parametrize(
    ("protocol", "body"),
    [
        ("openai", {"status": f"odd {PROMPT} sk-test-key", "output": []}),
        ("anthropic", {"content": [], "stop_reason": f"odd {PROMPT}"}),
        ("gemini", {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": f"odd {PROMPT}"}]}),
    ],
)
def test_a_malformed_reply_never_echoes_the_servers_odd_values(protocol, body):
    chosen = next(p for p in PROTOCOLS if p.provider == protocol)
    with ScriptedServer([Reply(body=body)]) as server:
        with pytest.raises(LLMMalformedReply) as failure:
            client_for(chosen, server, FakeTime()).complete_sync(PROMPT)
    assert "an unexpected value" in str(failure.value) and PROMPT[:20] not in str(failure.value)


def test_an_excerpt_is_short_and_one_line():
    shown = excerpt("line one\nline two " + "x " * 500)
    assert "\n" not in shown and len(shown) == EXCERPT_CHARS and shown.endswith("…")


def test_a_server_echo_never_reaches_the_error_message():
    key_echo = error(500, "upstream got Authorization: Bearer sk-test-key and failed")
    prompt_echo = error(400, f"Invalid prompt {PROMPT!r}")
    failure, server = one_call([key_echo, key_echo, prompt_echo], prompt=PROMPT)
    assert isinstance(failure, LLMHTTPError) and failure.status == 400 and len(server.requests) == 3
    assert "sk-test-key" not in str(failure) and PROMPT[:20] not in str(failure)


def test_a_host_program_logging_httpx_sees_no_echoed_key(caplog):
    """httpx logs the status line at INFO, httpcore the headers at DEBUG: both may echo the key."""
    echo = Reply(500, {"X-Echo": "got sk-test-key"}, {"error": {"message": "x"}}, reason="Err sk-test-key")
    with caplog.at_level(logging.DEBUG):
        failure, server = one_call([echo], max_attempts=1)
    assert isinstance(failure, LLMHTTPError) and len(server.requests) == 1
    assert "HTTP Request: POST" in caplog.text and "[redacted]" in caplog.text
    assert "sk-test-key" not in caplog.text
