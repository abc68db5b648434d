"""An OpenAI-compatible provider over plain HTTP (httpx), so no SDK's own retries multiply ours.

Routing, by model name (case-insensitive):
- `gpt-5*` reasoning models → the Responses API, with `reasoning.effort` and `text.verbosity`;
- `gpt-5-chat*` (not a reasoning model; OpenAI documents Chat Completions parameters for it, without
  `reasoning`) → Chat Completions, like any other model;
- o-series (`o1`, `o3`, `o4-mini`, ...) → Chat Completions with `reasoning_effort`;
- every other model → Chat Completions, which any compatible server (Ollama, vLLM) speaks, with
  `temperature` and `seed`, which reasoning models refuse.
Chat Completions limits the output with `max_completion_tokens` (`max_tokens` is deprecated and
refused for o-series), or `max_tokens` when LLM_CHAT_MAX_TOKENS_PARAM says the server needs it.
"""

from __future__ import annotations

import re
from typing import Literal

import httpx
from pydantic import BaseModel

from tg_parser.core.settings import LLMSettings, RetrySettings
from tg_parser.llm.base_client import (
    BaseLLMClient,
    LLMRequest,
    ProviderReply,
    error_member,
    http_error,
)
from tg_parser.llm.errors import LLMHTTPError
from tg_parser.llm.gemini import read_google_error
from tg_parser.llm.replies import read_chat, read_responses
from tg_parser.llm.schemas import strict_schema

QUOTA_CODES = frozenset({"insufficient_quota", "quota_exceeded", "billing_hard_limit_reached"})
Family = Literal["gpt-5", "o-series", "other"]


def model_family(model: str) -> Family:
    """Which parameters a model takes: OpenAI's reasoning families, or everything else."""
    name = model.lower()
    if name.startswith("gpt-5") and not name.startswith("gpt-5-chat"):
        return "gpt-5"
    if re.match(r"o\d", name):
        return "o-series"
    return "other"


class OpenAICompatibleClient(BaseLLMClient):
    def __init__(self, llm: LLMSettings, retry: RetrySettings | None = None, **injected):
        super().__init__(llm, retry, **injected)
        self.family = model_family(llm.model)

    @property
    def api(self) -> str:
        return "responses" if self.family == "gpt-5" else "chat"

    @property
    def api_name(self) -> str:
        return "OpenAI Responses API" if self.api == "responses" else "OpenAI Chat Completions API"

    async def _send(self, request: LLMRequest) -> ProviderReply:
        if self.api == "responses":
            status, data = await self._post("responses", self._responses_body(request), request)
            return read_responses(data, status, self.llm.model)
        status, data = await self._post("chat/completions", self._chat_body(request), request)
        return read_chat(data, status, self.llm.model)

    def _responses_body(self, request: LLMRequest) -> dict:
        text: dict = {"verbosity": self.llm.verbosity}
        if request.output_type is not None:
            text["format"] = {"type": "json_schema", **_json_schema(request.output_type)}
        elif request.json_mode:
            text["format"] = {"type": "json_object"}
        body = {
            "model": self.llm.model,
            "input": request.prompt,
            "reasoning": {"effort": self.llm.reasoning_effort},
            "text": text,
        }
        if request.instructions:
            body["instructions"] = request.instructions
        if request.max_output_tokens is not None:
            body["max_output_tokens"] = request.max_output_tokens
        return body

    def _chat_body(self, request: LLMRequest) -> dict:
        system = [{"role": "system", "content": request.instructions}] if request.instructions else []
        body: dict = {"model": self.llm.model, "messages": [*system, {"role": "user", "content": request.prompt}]}
        if self.family == "o-series":
            body["reasoning_effort"] = self.llm.reasoning_effort
        else:
            body["temperature"] = self.llm.temperature if request.temperature is None else request.temperature
            if self.llm.seed is not None:
                body["seed"] = self.llm.seed
        if request.max_output_tokens is not None:
            body[self.llm.chat_max_tokens_param] = request.max_output_tokens
        if request.output_type is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": _json_schema(request.output_type)}
        elif request.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", **({"Authorization": f"Bearer {self._key}"} if self._key else {})}

    def _http_error(self, response: httpx.Response, secrets: tuple[str, ...]) -> LLMHTTPError:
        """OpenAI's `{"error": {...}}`; also the list-wrapped, detailed errors of Gemini's compatible endpoint."""
        error = error_member(response)
        code = str(error.get("code") or error.get("type") or "")
        google = read_google_error(error)
        return http_error(
            response, str(error.get("message") or ""), secrets, retry_after=google.retry_delay,
            quota_exhausted=response.status_code == 429 and (code in QUOTA_CODES or google.per_day_quota),
        )


def _json_schema(output_type: type[BaseModel]) -> dict:
    """OpenAI's strict structured output, converted as openai-python converts it (tg_parser.llm.schemas)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", output_type.__name__)[:64]
    return {"name": name, "schema": strict_schema(output_type), "strict": True}
