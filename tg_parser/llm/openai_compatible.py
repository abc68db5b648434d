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
from tg_parser.llm.base_client import BaseLLMClient, LLMRequest, ProviderReply
from tg_parser.llm.errors import LLMConnectionError, LLMHTTPError, LLMMalformedReply
from tg_parser.llm.replies import read_chat, read_responses
from tg_parser.llm.retry import parse_retry_after

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
        self._http: httpx.AsyncClient | None = None

    @property
    def api(self) -> Literal["responses", "chat"]:
        return "responses" if self.family == "gpt-5" else "chat"

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await super().aclose()

    async def _send(self, request: LLMRequest) -> ProviderReply:
        if self.api == "responses":
            status, data = await self._post("responses", self._responses_body(request))
            return read_responses(data, status, self.llm.model)
        status, data = await self._post("chat/completions", self._chat_body(request))
        return read_chat(data, status, self.llm.model)

    def _responses_body(self, request: LLMRequest) -> dict:
        text: dict = {"verbosity": self.llm.verbosity}
        if request.output_type is not None:
            text["format"] = {"type": "json_schema", **_json_schema(request.output_type)}
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
            body["temperature"] = self.llm.temperature
            if self.llm.seed is not None:
                body["seed"] = self.llm.seed
        if request.max_output_tokens is not None:
            body[self.llm.chat_max_tokens_param] = request.max_output_tokens
        if request.output_type is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": _json_schema(request.output_type)}
        return body

    async def _post(self, path: str, body: dict) -> tuple[int, object]:
        try:
            response = await self._client().post(path, json=body)
        except httpx.RequestError as error:  # refused, reset (also mid-body), protocol errors
            raise LLMConnectionError(f"connection failed: {type(error).__name__}: {error}") from error
        if not response.is_success:
            raise _http_error(response)
        try:
            return response.status_code, response.json()
        except ValueError:
            raise LLMMalformedReply("the body is not JSON", status=response.status_code) from None

    def _client(self) -> httpx.AsyncClient:
        """Made on first use, so it belongs to the event loop that uses it; closed by `aclose`."""
        if self._http is None:
            key = self.llm.api_key.get_secret_value() if self.llm.api_key else ""
            self._http = httpx.AsyncClient(
                base_url=self.llm.base_url.rstrip("/") + "/",
                headers={"Authorization": f"Bearer {key}"} if key else {},
                timeout=None,  # the base client bounds each whole request; httpx would bound each read
                limits=httpx.Limits(
                    max_connections=self.llm.max_concurrency, max_keepalive_connections=self.llm.max_concurrency
                ),
            )
        return self._http


def _json_schema(output_type: type[BaseModel]) -> dict:
    """OpenAI's strict structured output: the model must forbid extra fields and require every field."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", output_type.__name__)[:64]
    return {"name": name, "schema": output_type.model_json_schema(), "strict": True}


def _http_error(response: httpx.Response) -> LLMHTTPError:
    error = _error_body(response)
    code = str(error.get("code") or error.get("type") or "")
    verdict = response.headers.get("x-should-retry", "").lower()
    return LLMHTTPError(
        str(error.get("message") or response.reason_phrase or "error"),
        status=response.status_code,
        retry_after=parse_retry_after(response.headers),
        should_retry={"true": True, "false": False}.get(verdict),
        quota_exhausted=response.status_code == 429 and code in QUOTA_CODES,
    )


def _error_body(response: httpx.Response) -> dict:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    if error is None:
        return {}
    return error if isinstance(error, dict) else {"message": str(error)}
