"""The LLM base client: async calls through one retry policy, under a real deadline, a bounded number at a time.

Processing runs on asyncio, so `complete` is async and never blocks the loop; `complete_sync`
serves code without a loop (the CLI), and `generate` is TG_parser 3.0.0's port, so its processing
code runs on these clients unchanged. A provider subclass makes one request in `_send` (through
`_post`) and reads its provider's errors in `_http_error`; everything around it lives here, so
every provider gets the same guarantees:
- at most LLM_MAX_CONCURRENCY requests in flight per client (a slot is held per attempt, not
  during the sleeps between them, so one rate-limited call never holds up the others);
- each attempt is bounded as a whole by `min(LLM_TIMEOUT, time left)`: a server that stalls or
  trickles its body cannot stretch it, and no attempt starts once RETRY_TOTAL_TIMEOUT is used up.
  That budget covers attempts and sleeps; time spent waiting for a slot is neither, so a retry
  queued behind a large batch is not failed for the batch's sake;
- every attempt is recorded (tg_parser.llm.records.Attempt) and each retry logged at WARNING;
- what a server echoes back is redacted (tg_parser.llm.redact) before any message holds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random as random_module
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from tg_parser.core.events import emit
from tg_parser.core.settings import LLMSettings, RetrySettings, load_retry_settings
from tg_parser.llm.errors import (
    LLMConnectionError,
    LLMHTTPError,
    LLMIncomplete,
    LLMMalformedReply,
    LLMRequestFailed,
    LLMTimeout,
    LLMValidationFailed,
)
from tg_parser.llm.records import Attempt, LLMReply, Usage
from tg_parser.llm.redact import excerpt, redact
from tg_parser.llm.retry import decide, parse_retry_after

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)


class _RedactedHTTPLog(logging.Filter):
    """httpx's INFO request line and httpcore's DEBUG lines carry what a server sent (its reason
    phrase, its headers), which may echo a key: a host program that logs them sees them redacted."""

    keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.keys), ()
        return True


_HTTP_LOG = _RedactedHTTPLog()
for _name in ("httpx", "httpcore.http11", "httpcore.connection"):
    logging.getLogger(_name).addFilter(_HTTP_LOG)


@dataclass(frozen=True)
class LLMRequest:
    prompt: str
    instructions: str
    max_output_tokens: int | None
    output_type: type[BaseModel] | None
    temperature: float | None = None
    """This call's temperature; None means LLM_TEMPERATURE."""
    json_mode: bool = False
    """Any JSON object, without a schema (3.0.0's `response_format={"type": "json_object"}`)."""


@dataclass(frozen=True)
class ProviderReply:
    """A complete reply, as a provider's `_send` read it."""

    text: str
    model: str
    usage: Usage | None
    status: int = 200


class BaseLLMClient(ABC):
    """Subclasses make one request in `_send` and raise an `LLMRequestFailed` subclass when it fails."""

    api_name: str
    """The API requests go to, as `tg-parser llm ping` names it."""

    def __init__(
        self,
        llm: LLMSettings,
        retry: RetrySettings | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random_module.random,
    ):
        self.llm = llm
        self.retry = retry if retry is not None else load_retry_settings()
        self._sleep, self._clock, self._random = sleep, clock, random
        self._slots: asyncio.Semaphore | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    @abstractmethod
    def api(self) -> str:
        """The provider API requests go to, for the attempt records (`chat`, `messages`, ...)."""

    @abstractmethod
    async def _send(self, request: LLMRequest) -> ProviderReply:
        """Make one request and classify its reply."""

    def _headers(self) -> dict[str, str]:
        """The provider's own headers: its auth (never the key in the URL, where logs would show it)."""
        return {}

    def _http_error(self, response: httpx.Response, secrets: tuple[str, ...]) -> LLMHTTPError:
        """An error status, read by the provider's rules; here `{"error": {"message": ...}}` or
        `{"error": "..."}`, with `retry-after` and `x-should-retry`."""
        return http_error(response, str(error_member(response).get("message") or ""), secrets)

    @property
    def model(self) -> str:
        """The model asked for (3.0.0's clients had this attribute; its pipeline records it)."""
        return self.llm.model

    async def aclose(self) -> None:
        """Release what the client holds; it can be used again afterwards, on any event loop."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._slots = None

    close = aclose
    """3.0.0's name for `aclose`."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def complete(
        self,
        prompt: str,
        *,
        instructions: str = "",
        max_output_tokens: int | None = None,
        output_type: type[T] | None = None,
        temperature: float | None = None,
        json_mode: bool = False,
        retry: Mapping[str, float] | None = None,
        retry_incomplete: bool = False,
    ) -> LLMReply[T]:
        """One completion; raises an `LLMRequestFailed` subclass carrying every attempt.

        `output_type` asks for JSON matching that pydantic model and returns it validated in
        `reply.parsed`; `json_mode` asks for any JSON object. `temperature` overrides LLM_TEMPERATURE
        for this call (models that take none ignore it). `retry` overrides some RetrySettings fields
        for this call only (validated). `retry_incomplete` retries a reply cut short too (each try
        is billed).
        """
        if max_output_tokens is not None and max_output_tokens < 1:
            raise ValueError(f"max_output_tokens must be a positive integer or None (got {max_output_tokens!r})")
        if temperature is not None and not 0 <= temperature <= 2:
            raise ValueError(f"temperature must be a number from 0 to 2 or None (got {temperature!r})")
        settings = self._retry_for(retry)
        request = LLMRequest(prompt, instructions, max_output_tokens, output_type, temperature, json_mode)
        attempts: list[Attempt] = []
        started = self._clock()
        spent = 0.0  # in attempts and sleeps, what RETRY_TOTAL_TIMEOUT bounds; waiting for a slot is neither
        while True:
            number = len(attempts) + 1
            async with self._slot():
                sent = self._clock()
                try:
                    reply, parsed = await self._attempt(request, min(self.llm.timeout, settings.total_timeout - spent))
                except LLMRequestFailed as failure:
                    error = failure
                else:
                    attempts.append(self._record(number, reply.status, None, self._clock() - sent, reply.usage))
                    _log_attempt(attempts[-1], logging.INFO)
                    _log_call(attempts, "complete", self._clock() - started)
                    return LLMReply(
                        reply.text, reply.model, reply.usage, tuple(attempts), self._clock() - started, parsed
                    )
            latency = self._clock() - sent
            spent += latency
            record = self._record(number, error.status, error.error_class, latency, error.usage)
            decision = decide(
                error,
                number,
                settings,
                retryable=error.retryable or (retry_incomplete and isinstance(error, LLMIncomplete)),
                time_left=settings.total_timeout - spent,
                random=self._random,
            )
            if decision.give_up is not None:
                attempts.append(record)
                _log_attempt(record, logging.WARNING)
                _log_call(attempts, type(error).__name__, self._clock() - started)
                error.attempts, error.gave_up = tuple(attempts), decision.give_up
                if decision.asked_delay is not None:
                    error.asked_delay = decision.asked_delay
                raise error
            attempts.append(replace(record, delay=decision.delay, delay_reason=decision.delay_reason))
            _log_attempt(attempts[-1], logging.WARNING)
            slept_from = self._clock()
            await self._sleep(decision.delay)
            spent += self._clock() - slept_from
            if spent >= settings.total_timeout:  # a sleep may overrun; no attempt starts past the deadline
                _log_call(attempts, type(error).__name__, self._clock() - started)
                error.attempts = tuple(attempts)
                error.gave_up = f"RETRY_TOTAL_TIMEOUT ({settings.total_timeout:g} s) used up before another attempt"
                raise error

    def complete_sync(self, prompt: str, **options) -> LLMReply:
        """`complete` for code without an event loop (the CLI): runs on a new loop, then closes connections."""

        async def call() -> LLMReply:
            try:
                return await self.complete(prompt, **options)
            finally:
                await self.aclose()

        return asyncio.run(call())

    async def generate(
        self,
        prompt: str,
        system_prompt: str | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        response_format: dict | type[BaseModel] | None = None,
    ) -> str:
        """TG_parser 3.0.0's `LLMClient.generate`: the reply's text, or an `LLMRequestFailed` subclass.

        `response_format` is 3.0.0's `{"type": "json_object"}` (any JSON object), `{"type": "text"}`,
        or a pydantic model (JSON matching it, validated).
        """
        output_type = None
        if isinstance(response_format, type) and issubclass(response_format, BaseModel):
            output_type = response_format
        elif response_format is not None and response_format not in ({"type": "json_object"}, {"type": "text"}):
            raise ValueError(
                f"response_format must be {{'type': 'json_object'}}, {{'type': 'text'}}, a pydantic model or None"
                f" (got {response_format!r})"
            )
        json_mode = response_format == {"type": "json_object"}
        reply = await self.complete(
            prompt, instructions=system_prompt or "", max_output_tokens=max_tokens, output_type=output_type,
            temperature=temperature, json_mode=json_mode,
        )
        return reply.text

    @staticmethod
    def compute_prompt_id(system_prompt: str | None, user_prompt_template: str) -> str:
        """3.0.0's prompt id, computed the same way, so documents processed before and after match."""
        combined = f"{system_prompt or ''}\n---\n{user_prompt_template}"
        return f"sha256:{hashlib.sha256(combined.encode('utf-8')).hexdigest()[:16]}"

    async def _post(self, path: str, body: dict, request: LLMRequest) -> tuple[int, object]:
        """One POST of a JSON body; an error status or a body that is not JSON raise, redacted."""
        try:
            response = await self._client().post(path, json=body)
        except httpx.RequestError as error:  # refused, reset (also mid-body), protocol errors
            detail = excerpt(str(error), self._secrets(request))  # a protocol error may quote what the server sent
            raise LLMConnectionError(f"connection failed: {type(error).__name__}: {detail}") from error
        if not response.is_success:
            raise self._http_error(response, self._secrets(request))
        try:
            return response.status_code, response.json()
        except ValueError:
            raise LLMMalformedReply("the body is not JSON", status=response.status_code) from None

    @property
    def _key(self) -> str:
        """LLM_API_KEY, or "" when there is none."""
        return self.llm.api_key.get_secret_value() if self.llm.api_key else ""

    def _secrets(self, request: LLMRequest) -> tuple[str, ...]:
        return self._key, request.prompt, request.instructions

    def _client(self) -> httpx.AsyncClient:
        """Made on first use, so it belongs to the event loop that uses it; closed by `aclose`."""
        if self._http is None:
            if self._key:
                _HTTP_LOG.keys.add(self._key)
            self._http = httpx.AsyncClient(
                base_url=self.llm.base_url.rstrip("/") + "/",
                headers=self._headers(),
                timeout=None,  # the base client bounds each whole request; httpx would bound each read
                limits=httpx.Limits(
                    max_connections=self.llm.max_concurrency, max_keepalive_connections=self.llm.max_concurrency
                ),
            )
        return self._http

    async def _attempt(self, request: LLMRequest, timeout: float) -> tuple[ProviderReply, BaseModel | None]:
        try:
            async with asyncio.timeout(timeout):
                reply = await self._send(request)
        except TimeoutError:
            limit = "LLM_TIMEOUT" if timeout >= self.llm.timeout else "what was left of RETRY_TOTAL_TIMEOUT"
            raise LLMTimeout(f"no complete reply within {timeout:.3g} s ({limit})") from None
        if request.output_type is None:
            return reply, None
        try:
            return reply, request.output_type.model_validate_json(reply.text)
        except ValidationError as invalid:
            raise LLMValidationFailed(request.output_type.__name__, reply.text, invalid, usage=reply.usage) from None

    def _slot(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.llm.max_concurrency)
        return self._slots

    def _record(
        self, number: int, status: int | None, error: str | None, latency: float, usage: Usage | None
    ) -> Attempt:
        return Attempt(number, self.api, self.llm.model, status, error, latency, usage)

    def _retry_for(self, override: Mapping[str, float] | None) -> RetrySettings:
        if not override:
            return self.retry
        unknown = set(override) - set(RetrySettings.model_fields)
        if unknown:
            raise ValueError(
                f"unknown retry setting(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(RetrySettings.model_fields)}"
            )
        return load_retry_settings(**{**self.retry.model_dump(), **override})


def _log_attempt(attempt: Attempt, level: int) -> None:
    """One `llm_attempt` event per HTTP request: what happened and what comes next, never any text."""
    usage = attempt.usage
    emit(
        log, "llm_attempt", level, api=attempt.api, model=attempt.model, attempt=attempt.number,
        status=attempt.status, error=attempt.error, latency=round(attempt.latency, 3),
        input_tokens=usage.input_tokens if usage else None, output_tokens=usage.output_tokens if usage else None,
        reasoning_tokens=usage.reasoning_tokens if usage else None, delay=attempt.delay,
        delay_reason=attempt.delay_reason,
    )


def _log_call(attempts: list[Attempt], outcome: str, seconds: float) -> None:
    last = attempts[-1]
    used = [a.usage for a in attempts if a.usage]
    emit(
        log, "llm_call_finished", logging.INFO if outcome == "complete" else logging.WARNING, api=last.api,
        model=last.model, outcome=outcome, attempts=len(attempts), seconds=round(seconds, 3),
        input_tokens=sum(u.input_tokens for u in used) if used else None,
        output_tokens=sum(u.output_tokens for u in used) if used else None,
    )


def http_error(
    response: httpx.Response,
    message: str,
    secrets: tuple[str, ...],
    *,
    retry_after: float | None = None,
    quota_exhausted: bool = False,
) -> LLMHTTPError:
    """An `LLMHTTPError` with the server's message redacted and cut short, and its retry hints."""
    verdict = response.headers.get("x-should-retry", "").lower()
    return LLMHTTPError(
        excerpt(message or response.reason_phrase or "error", secrets),
        status=response.status_code,
        retry_after=retry_after if retry_after is not None else parse_retry_after(response.headers),
        should_retry={"true": True, "false": False}.get(verdict),
        quota_exhausted=quota_exhausted,
    )


def error_member(response: httpx.Response) -> dict:
    """The `error` member of an error body (an object, or a string as Ollama sends), bare or wrapped in a
    list as Google's servers send it; {} when there is none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error
    return {"message": str(error)} if error else {}
