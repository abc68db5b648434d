"""Our requests equal the official SDKs' (anthropic, google-genai, ollama, openai) for the same inputs.

Both clients talk to the same local server; the path, the JSON body and every header that is
not transport or SDK telemetry (user agent, `x-stainless-*`, `x-goog-api-client`) must be equal.
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import anthropic
import ollama
import openai
import pytest
from google import genai
from google.genai import types
from pydantic import BaseModel, ConfigDict, Field

from tests.llm_server import Reply, ScriptedServer, anthropic_body, ok
from tg_parser.core.settings import LLMSettings
from tg_parser.llm.providers import make_client

KEY = "sk-sdk-compare-0123456789"
TRANSPORT = {"host", "content-length", "connection", "accept-encoding", "user-agent", "x-goog-api-client"}


class Entity(BaseModel):
    name: str = Field(description="as written in the message")
    kind: Literal["person", "place", "organisation"]


class TopicCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    message_ids: list[int] = Field(max_length=20)
    entities: list[Entity]
    lead: Entity | None = None


CASES = {
    "plain": {},
    "system prompt": {"instructions": "Be brief"},
    "max tokens": {"max_output_tokens": 50},
    "temperature": {"temperature": 0.7},
    "structured output": {"output_type": TopicCard},
}


def protocol_headers(headers: dict) -> dict:
    lowered = {key.lower(): value for key, value in headers.items()}
    return {k: v for k, v in lowered.items() if k not in TRANSPORT and not k.startswith("x-stainless")}


def ours(provider: str, base_url: str, model: str, options: dict) -> None:
    llm = LLMSettings(provider=provider, base_url=base_url, api_key=KEY, model=model)
    make_client(llm).complete_sync("Say hi", **options)


def sdk_anthropic(root: str, model: str, options: dict) -> None:
    arguments: dict = {"model": model, "max_tokens": options.get("max_output_tokens", 4096),
                       "messages": [{"role": "user", "content": "Say hi"}]}
    if "instructions" in options:
        arguments["system"] = options["instructions"]
    if "output_type" in options:  # the anthropic SDK has no temperature since API version 2026-10-21
        arguments["tools"] = [{"name": "TopicCard", "input_schema": TopicCard.model_json_schema()}]
        arguments["tool_choice"] = {"type": "tool", "name": "TopicCard"}
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=root, max_retries=0)
    asyncio.run(client.messages.create(**arguments))


def sdk_gemini(root: str, model: str, options: dict) -> None:
    config = types.GenerateContentConfig(
        system_instruction=options.get("instructions"), temperature=options.get("temperature", 0.0),
        max_output_tokens=options.get("max_output_tokens"),
        response_mime_type="application/json" if "output_type" in options else None,
        response_schema=options.get("output_type"),
    )
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=root))
    asyncio.run(client.aio.models.generate_content(model=model, contents="Say hi", config=config))


def sdk_ollama(root: str, model: str, options: dict) -> None:
    messages = [{"role": "system", "content": options["instructions"]}] if "instructions" in options else []
    settings = {"temperature": options.get("temperature", 0.0)}
    if "max_output_tokens" in options:
        settings["num_predict"] = options["max_output_tokens"]
    fmt = options["output_type"].model_json_schema() if "output_type" in options else None
    client = ollama.AsyncClient(host=root)
    asyncio.run(client.chat(model=model, messages=[*messages, {"role": "user", "content": "Say hi"}],
                            options=settings, format=fmt, stream=False))


def sdk_openai_chat(url: str, model: str, options: dict) -> None:
    from openai.lib._pydantic import to_strict_json_schema

    messages = [{"role": "system", "content": options["instructions"]}] if "instructions" in options else []
    arguments: dict = {"model": model, "messages": [*messages, {"role": "user", "content": "Say hi"}],
                       "temperature": options.get("temperature", 0.0)}
    if "max_output_tokens" in options:
        arguments["max_completion_tokens"] = options["max_output_tokens"]
    if "output_type" in options:
        arguments["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "TopicCard", "schema": to_strict_json_schema(TopicCard), "strict": True}}
    client = openai.AsyncOpenAI(api_key=KEY, base_url=url, max_retries=0)
    asyncio.run(client.chat.completions.create(**arguments))


SDKS = {
    "anthropic": ("claude-haiku-4-5", sdk_anthropic),
    "gemini": ("gemini-2.5-flash", sdk_gemini),
    "ollama": ("llama3.2", sdk_ollama),
    "openai": ("gpt-4o", sdk_openai_chat),
}


def reply_for(provider: str, options: dict) -> Reply:
    card = {"title": "t", "message_ids": [1], "entities": [], "lead": None}
    if "output_type" not in options:
        return ok("hi")
    if provider == "anthropic":
        return Reply(body=anthropic_body(
            [{"type": "tool_use", "id": "t1", "name": "TopicCard", "input": card}], stop_reason="tool_use"))
    return ok(json.dumps(card))


@pytest.mark.parametrize("provider", list(SDKS))
@pytest.mark.parametrize("case", list(CASES))
def test_request_equals_the_official_sdks(provider, case):
    model, sdk = SDKS[provider]
    options = CASES[case]
    with ScriptedServer(lambda request: reply_for(provider, options)) as server:
        base = server.url if provider == "openai" else server.root
        ours(provider, base, model, options)
        sdk(base, model, options)
    mine, theirs = server.requests
    assert mine["path"] == theirs["path"]
    assert mine["body"] == theirs["body"]
    assert protocol_headers(mine["headers"]) == protocol_headers(theirs["headers"])


def test_the_comparison_sees_auth_headers():
    """The header filter keeps what matters: each provider's auth header is compared, not dropped."""
    assert protocol_headers({"Authorization": "Bearer k", "x-goog-api-key": "k", "anthropic-version": "v",
                             "User-Agent": "x", "X-Stainless-Lang": "python"}) == {
        "authorization": "Bearer k", "x-goog-api-key": "k", "anthropic-version": "v"}
