"""The one retry policy every LLM call goes through: what to retry, how long to wait, when to stop.

Following what openai-python, anthropic-sdk-python, tenacity, urllib3 and botocore agree on:
- retry what can succeed on retry (see `LLMRequestFailed.retryable`): connection errors,
  timeouts, 408, 409, 429 and 5xx, or whatever the server's `x-should-retry` says; never a
  finished generation (incomplete, refused, malformed, invalid) unless the caller asks;
- wait `min(backoff_max, backoff_base * 2**(n-1))` before retry n, jittered inside that cap;
- wait exactly what the server's `Retry-After` asks, when it asks for more than 0 (as OpenAI's
  SDK does); give up at once if it asks for more than `server_wait_max`;
- give up before a sleep that would cross `total_timeout`.
The client applies it (tg_parser.llm.base_client); the random source is injected, so tests are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

from tg_parser.core.settings import RetrySettings
from tg_parser.llm.errors import LLMRequestFailed


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


@dataclass(frozen=True)
class Decision:
    """Retry after `delay` seconds (and why that long), or give up (and why)."""

    delay: float | None = None
    delay_reason: Literal["retry-after", "backoff"] | None = None
    give_up: str | None = None
    asked_delay: float | None = None
    """The server's Retry-After, when giving up because it asked for more than RETRY_SERVER_WAIT_MAX."""


def decide(
    error: LLMRequestFailed,
    number: int,
    retry: RetrySettings,
    *,
    retryable: bool,
    time_left: float,
    random: Callable[[], float],
) -> Decision:
    """What follows attempt `number`, which failed with `error`, with `time_left` before the deadline."""
    if not retryable:
        return Decision(give_up="not retryable")
    asked = error.retry_after
    if asked is not None and asked > retry.server_wait_max:
        limit = f"RETRY_SERVER_WAIT_MAX ({retry.server_wait_max:g} s)"
        return Decision(give_up=f"the server asked to wait {asked:g} s, more than {limit}", asked_delay=asked)
    if number >= retry.max_attempts:
        return Decision(give_up=f"gave up after {number} attempt(s) (RETRY_MAX_ATTEMPTS={retry.max_attempts})")
    if asked:  # the server knows when it will have room; padding its answer only slows a batch down
        delay, reason = asked, "retry-after"
    else:
        delay, reason = backoff_delay(retry, number, random), "backoff"
    if delay > time_left:
        return Decision(
            give_up=f"waiting {delay:.2f} s more would pass RETRY_TOTAL_TIMEOUT ({retry.total_timeout:g} s)"
        )
    return Decision(delay, reason)
