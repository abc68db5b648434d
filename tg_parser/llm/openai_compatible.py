"""An OpenAI-compatible provider over plain HTTP (httpx), so the SDK's own retries never multiply ours.

Models named `gpt-5*` go through the Responses API, every other model through Chat
Completions, which any OpenAI-compatible server (Ollama, vLLM) speaks.
"""

from __future__ import annotations

import httpx

from tg_parser.core.settings import LLMSettings, RetrySettings
from tg_parser.llm.base_client import BaseLLMClient
from tg_parser.llm.retry import ProviderError, parse_retry_after

QUOTA_CODES = frozenset({"insufficient_quota", "quota_exceeded", "billing_hard_limit_reached"})


class OpenAICompatibleClient(BaseLLMClient):
    def __init__(self, llm: LLMSettings, retry: RetrySettings | None = None, **injected):
        super().__init__(retry, **injected)
        self.llm = llm
        key = llm.api_key.get_secret_value() if llm.api_key else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=llm.base_url.rstrip("/") + "/", timeout=llm.timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    @property
    def uses_responses_api(self) -> bool:
        return self.llm.model.startswith("gpt-5")

    def _send(self, prompt: str, instructions: str, max_output_tokens: int | None) -> tuple[str, str]:
        if self.uses_responses_api:
            body = {
                "model": self.llm.model,
                "input": prompt,
                "reasoning": {"effort": self.llm.reasoning_effort},
                "text": {"verbosity": self.llm.verbosity},
            }
            if instructions:
                body["instructions"] = instructions
            if max_output_tokens:
                body["max_output_tokens"] = max_output_tokens
            data = self._post("responses", body)
            return _responses_text(data), data.get("model", self.llm.model)
        messages = ([{"role": "system", "content": instructions}] if instructions else []) + [
            {"role": "user", "content": prompt}
        ]
        body = {"model": self.llm.model, "messages": messages}
        if max_output_tokens:
            body["max_tokens"] = max_output_tokens
        data = self._post("chat/completions", body)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ProviderError("reply has no choices[0].message.content", status=502) from None
        return text, data.get("model", self.llm.model)

    def _post(self, path: str, body: dict) -> dict:
        try:
            response = self._http.post(path, json=body)
        except httpx.TimeoutException as error:
            raise ProviderError(f"timed out after {self.llm.timeout:g} s ({type(error).__name__})") from error
        except httpx.TransportError as error:
            raise ProviderError(f"connection failed: {error}") from error
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise ProviderError("reply is not JSON", status=502) from None
        error = _error_body(response)
        code = str(error.get("code") or error.get("type") or "")
        raise ProviderError(
            error.get("message") or response.reason_phrase or "error",
            status=response.status_code,
            retry_after=parse_retry_after(response.headers),
            quota_exhausted=response.status_code == 429 and code in QUOTA_CODES,
        )


def _error_body(response: httpx.Response) -> dict:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {"message": str(error)}


def _responses_text(data: dict) -> str:
    """The reply of the Responses API: the `output_text` parts of the `message` items of `output`."""
    parts = [
        content.get("text", "")
        for item in data.get("output", [])
        if item.get("type") == "message"
        for content in item.get("content", [])
        if content.get("type") == "output_text"
    ]
    if not parts:
        raise ProviderError("reply has no output_text in its output", status=502)
    return "".join(parts)
