"""Google Gemini's `generateContent`, over plain HTTP, with the request google-genai sends.

The key goes in `x-goog-api-key`, never in the URL (`?key=`), where every request log would show
it. The path is google-genai's default API version (`v1`). Errors are Google's RPC shape, on
their own or wrapped in a list; a 429's `RetryInfo.retryDelay` is waited as asked, but a 429 of a
per-day quota (`QuotaFailure` with a `...PerDay...` quota id) is never retried: it resets
tomorrow, not in seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from tg_parser.llm.base_client import (
    BaseLLMClient,
    LLMRequest,
    ProviderReply,
    error_member,
    http_error,
)
from tg_parser.llm.errors import (
    LLMHTTPError,
    LLMIncomplete,
    LLMMalformedReply,
    LLMRefused,
)
from tg_parser.llm.records import Usage
from tg_parser.llm.replies import body_object, named
from tg_parser.llm.schemas import gemini_schema

API_VERSION = "v1"
REFUSED = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"})
"""Finish reasons that mean the content was blocked: asking again does not change that."""


class GeminiClient(BaseLLMClient):
    api = "generate_content"
    api_name = "Gemini generateContent API"

    async def _send(self, request: LLMRequest) -> ProviderReply:
        model = self.llm.model if self.llm.model.startswith(("models/", "tunedModels/")) else f"models/{self.llm.model}"
        status, data = await self._post(f"{API_VERSION}/{model}:generateContent", self._body(request), request)
        return read_generate_content(data, status, self.llm.model)

    def _body(self, request: LLMRequest) -> dict:
        config: dict = {"temperature": self.llm.temperature if request.temperature is None else request.temperature}
        if request.max_output_tokens is not None:
            config["maxOutputTokens"] = request.max_output_tokens
        if self.llm.seed is not None:
            config["seed"] = self.llm.seed
        if request.output_type is not None or request.json_mode:
            config["responseMimeType"] = "application/json"
        if request.output_type is not None:
            config["responseSchema"] = gemini_schema(request.output_type)
        body: dict = {"contents": [{"parts": [{"text": request.prompt}], "role": "user"}]}
        if request.instructions:
            body["systemInstruction"] = {"parts": [{"text": request.instructions}], "role": "user"}
        body["generationConfig"] = config
        return body

    def _headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._key} if self._key else {}

    def _http_error(self, response: httpx.Response, secrets: tuple[str, ...]) -> LLMHTTPError:
        error = error_member(response)
        details = read_google_error(error)
        return http_error(
            response, str(error.get("message") or ""), secrets, retry_after=details.retry_delay,
            quota_exhausted=response.status_code == 429 and details.per_day_quota,
        )


@dataclass(frozen=True)
class GoogleErrorDetails:
    retry_delay: float | None = None
    """Seconds `RetryInfo.retryDelay` asks to wait."""
    per_day_quota: bool = False
    """A `QuotaFailure` names a per-day quota: retrying today cannot succeed."""


def read_google_error(error: dict) -> GoogleErrorDetails:
    """The retry hints among an error's `details` (google.rpc.RetryInfo, google.rpc.QuotaFailure)."""
    delay, per_day = None, False
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.RetryInfo"):
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(detail.get("retryDelay", "")))
            delay = float(match.group(1)) if match else None
        elif kind.endswith("google.rpc.QuotaFailure"):
            violations = detail.get("violations")
            per_day = per_day or any(
                "perday" in str(v.get("quotaId", "")).lower() for v in violations or [] if isinstance(v, dict)
            )
    return GoogleErrorDetails(delay, per_day)


def read_generate_content(data: object, status: int, asked_model: str) -> ProviderReply:
    """The first candidate's text parts (thoughts left out), by its `finishReason`."""
    body = body_object(data, status)
    usage = _usage(body.get("usageMetadata"))
    feedback = body.get("promptFeedback")
    blocked = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if blocked:
        raise LLMRefused(f"the prompt was blocked ({named(blocked)})", usage=usage, status=status)
    candidates = body.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        raise LLMMalformedReply("`candidates` is not a non-empty list", status=status, usage=usage)
    candidate = candidates[0]
    finish = candidate.get("finishReason") or "STOP"
    if finish in REFUSED:
        raise LLMRefused(f"the reply was blocked ({finish!r})", usage=usage, status=status)
    content = candidate.get("content") or {}
    parts = content.get("parts") if isinstance(content, dict) else None
    if parts is None and finish == "MAX_TOKENS":
        parts = []  # cut short before any text (thinking used the budget)
    if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
        raise LLMMalformedReply("`candidates[0].content.parts` is not a list of parts", status=status, usage=usage)
    texts = [part["text"] for part in parts if "text" in part and not part.get("thought")]
    if not all(isinstance(text, str) for text in texts):
        raise LLMMalformedReply("a text part has no text", status=status, usage=usage)
    if finish == "MAX_TOKENS":
        raise LLMIncomplete("max_output_tokens", "".join(texts), usage=usage, status=status)
    if finish != "STOP":
        raise LLMMalformedReply(f"`finishReason` is {named(finish)}", status=status, usage=usage)
    if not texts:
        raise LLMMalformedReply("no text part in `candidates[0].content`", status=status, usage=usage)
    version = body.get("modelVersion")
    return ProviderReply("".join(texts), version if isinstance(version, str) and version else asked_model, usage,
                         status)


def _usage(raw: object) -> Usage | None:
    """Gemini counts thinking apart from the reply; here it is part of the output, as for every provider."""
    if not isinstance(raw, dict) or not isinstance(raw.get("promptTokenCount"), int):
        return None
    candidates, thoughts = raw.get("candidatesTokenCount", 0), raw.get("thoughtsTokenCount", 0)
    if not isinstance(candidates, int) or not isinstance(thoughts, int):
        return None
    return Usage(raw["promptTokenCount"], candidates + thoughts, thoughts)
