"""The one retry policy every LLM call goes through.

What to retry, how long to wait and when to give up, following what openai-python,
anthropic-sdk-python, tenacity, urllib3 and botocore agree on:
- retry connection errors, timeouts, 408, 429 and 5xx; never other 4xx, nor a 429 that says
  the quota is exhausted (it cannot succeed on retry);
- wait `min(backoff_max, backoff_base * 2**(n-1))` before retry n, jittered inside that cap;
- never earlier than the server's `Retry-After`; give up at once if it asks for more than
  `server_wait_max`;
- give up before a sleep that would cross `total_timeout`.
Sleep, clock and random source are injected, so tests are exact and instant.
"""

from __future__ import annotations

import logging
import random as random_module
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tg_parser.core.settings import RetrySettings

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 429})


class ProviderError(Exception):
    """One failed attempt, as the provider saw it: an HTTP status, or none for a transport error."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        quota_exhausted: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.quota_exhausted = quota_exhausted

    @property
    def retryable(self) -> bool:
        if self.status is None:
            return True  # connection error or timeout
        if self.quota_exhausted:
            return False
        return self.status in RETRYABLE_STATUS or 500 <= self.status <= 599


@dataclass(frozen=True)
class Attempt:
    number: int
    outcome: str
    """`HTTP 503: ...` or the transport error."""
    delay: float | None
    """Seconds slept after it (None for the last one)."""


class LLMRequestFailed(Exception):
    """The call failed for good; `attempts` records every try so the pipeline can store it."""

    def __init__(self, message: str, attempts: list[Attempt], last: ProviderError, asked_delay: float | None = None):
        super().__init__(message)
        self.attempts = attempts
        self.last = last
        self.asked_delay = asked_delay


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            milliseconds = float(lowered["retry-after-ms"])
        except ValueError:
            milliseconds = -1
        if milliseconds >= 0:
            return milliseconds / 1000
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
        return seconds if seconds >= 0 else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(retry: RetrySettings, retry_number: int, random: Callable[[], float]) -> float:
    """Delay before retry `retry_number` (1-based): the capped exponential, jittered downwards inside the cap."""
    cap = min(retry.backoff_max, retry.backoff_base * 2 ** (retry_number - 1))
    return cap * (1 - retry.jitter * random())


def run_with_retry(
    call: Callable[[], T],
    retry: RetrySettings,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    random: Callable[[], float] = random_module.random,
) -> tuple[T, list[Attempt]]:
    """Run `call` until it succeeds or the policy gives up; return its result and the failed attempts."""
    started = clock()
    attempts: list[Attempt] = []
    for number in range(1, retry.max_attempts + 1):
        try:
            return call(), attempts
        except ProviderError as error:
            outcome = f"HTTP {error.status}: {error.reason}" if error.status else error.reason
            give_up = _why_give_up(error, number, retry)
            delay = None
            if give_up is None:
                delay = max(backoff_delay(retry, number, random), error.retry_after or 0.0)
                if clock() - started + delay > retry.total_timeout:
                    give_up = (
                        f"giving up: waiting {delay:.1f} s more would pass RETRY_TOTAL_TIMEOUT"
                        f" ({retry.total_timeout:g} s)"
                    )
            if give_up is not None:
                attempts.append(Attempt(number, outcome, None))
                asked = error.retry_after if error.retry_after and error.retry_after > retry.server_wait_max else None
                raise LLMRequestFailed(f"{outcome}; {give_up}", attempts, error, asked) from error
            attempts.append(Attempt(number, outcome, delay))
            log.warning(
                "LLM request failed (attempt %d of %d): %s; retrying in %.2f s",
                number, retry.max_attempts, outcome, delay,
            )
            sleep(delay)
    raise AssertionError("unreachable: the last attempt either returns or raises")


def _why_give_up(error: ProviderError, number: int, retry: RetrySettings) -> str | None:
    if not error.retryable:
        return "not retryable"
    if error.retry_after is not None and error.retry_after > retry.server_wait_max:
        return (
            f"the server asked to wait {error.retry_after:g} s, more than RETRY_SERVER_WAIT_MAX"
            f" ({retry.server_wait_max:g} s)"
        )
    if number >= retry.max_attempts:
        return f"gave up after {number} attempt(s) (RETRY_MAX_ATTEMPTS={retry.max_attempts})"
    return None
