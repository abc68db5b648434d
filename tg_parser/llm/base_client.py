"""The LLM base client: async calls through one retry policy, under a real deadline, a bounded number at a time.

Processing runs on asyncio, so `complete` is async and never blocks the loop; `complete_sync`
serves code without a loop (the CLI). A provider subclass makes one request in `_send`;
everything around it lives here, so every provider gets the same guarantees:
- at most LLM_MAX_CONCURRENCY requests in flight per client (a slot is held per attempt, not
  during the sleeps between them, so one rate-limited call never holds up the others);
- each attempt is bounded as a whole by `min(LLM_TIMEOUT, time left)`: a server that stalls or
  trickles its body cannot stretch it, and no attempt starts once RETRY_TOTAL_TIMEOUT is used up.
  That budget covers attempts and sleeps; time spent waiting for a slot is neither, so a retry
  queued behind a large batch is not failed for the batch's sake;
- every attempt is recorded (tg_parser.llm.records.Attempt) and each retry logged at WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import random as random_module
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError

from tg_parser.core.settings import LLMSettings, RetrySettings, load_retry_settings
from tg_parser.llm.errors import LLMIncomplete, LLMRequestFailed, LLMTimeout, LLMValidationFailed
from tg_parser.llm.records import Attempt, LLMReply, Usage
from tg_parser.core.events import emit
from tg_parser.llm.retry import decide

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class LLMRequest:
    prompt: str
    instructions: str
    max_output_tokens: int | None
    output_type: type[BaseModel] | None


@dataclass(frozen=True)
class ProviderReply:
    """A complete reply, as a provider's `_send` read it."""

    text: str
    model: str
    usage: Usage | None
    status: int = 200


class BaseLLMClient(ABC):
    """Subclasses make one request in `_send` and raise an `LLMRequestFailed` subclass when it fails."""

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

    @property
    @abstractmethod
    def api(self) -> Literal["responses", "chat"]:
        """The provider API requests go to, for the attempt records."""

    @abstractmethod
    async def _send(self, request: LLMRequest) -> ProviderReply:
        """Make one request and classify its reply."""

    async def aclose(self) -> None:
        """Release what the client holds; it can be used again afterwards, on any event loop."""
        self._slots = None

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
        retry: Mapping[str, float] | None = None,
        retry_incomplete: bool = False,
    ) -> LLMReply[T]:
        """One completion; raises an `LLMRequestFailed` subclass carrying every attempt.

        `output_type` asks for JSON matching that pydantic model and returns it validated in
        `reply.parsed`. `retry` overrides some RetrySettings fields for this call only (validated).
        `retry_incomplete` retries a reply cut short too (each try is billed).
        """
        if max_output_tokens is not None and max_output_tokens < 1:
            raise ValueError(f"max_output_tokens must be a positive integer or None (got {max_output_tokens!r})")
        settings = self._retry_for(retry)
        request = LLMRequest(prompt, instructions, max_output_tokens, output_type)
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
