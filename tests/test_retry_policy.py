"""The retry policy: delays, limits, deadlines, Retry-After and classification, on a fake clock.

The client-level tests here use a provider that makes no HTTP request (`FakeProvider`), so the
policy's arithmetic is checked exactly and instantly; tests/test_llm_client.py checks the same
behaviour end to end against a real HTTP server.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tg_parser.core.settings import LLMSettings, RetrySettings, SettingsError
from tg_parser.llm.base_client import BaseLLMClient, ProviderReply
from tg_parser.llm.errors import (
    LLMConnectionError,
    LLMHTTPError,
    LLMIncomplete,
    LLMMalformedReply,
    LLMRefused,
    LLMRequestFailed,
)
from tg_parser.llm.retry import backoff_delay, decide, parse_retry_after


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def settings(**values) -> RetrySettings:
    return RetrySettings(**{"max_attempts": 3, "backoff_base": 1.0, "backoff_max": 60.0, "jitter": 0.3,
                            "total_timeout": 300.0, "server_wait_max": 120.0, **values})


class FakeProvider(BaseLLMClient):
    """Plays a list of outcomes (an error to raise, or reply text), each taking `seconds` of fake time."""

    api = "chat"

    def __init__(self, outcomes, fake: FakeTime, retry: RetrySettings | None = None, seconds: float = 0.0,
                 random=lambda: 0.0, timeout: float = 60.0):
        super().__init__(LLMSettings(model="m", timeout=timeout), retry or settings(),
                         sleep=fake.sleep, clock=fake.clock, random=random)
        self.outcomes, self.fake, self.seconds, self.sent = list(outcomes), fake, seconds, 0

    async def _send(self, request):
        self.sent += 1
        self.fake.now += self.seconds
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return ProviderReply(outcome, "m-reported", None)


def run(client: BaseLLMClient, prompt: str = "x", **options):
    return asyncio.run(client.complete(prompt, **options))


def http(status: int, **options) -> LLMHTTPError:
    return LLMHTTPError("error", status=status, **options)


retry_settings = st.builds(
    lambda base, extra, jitter, attempts: settings(
        backoff_base=base, backoff_max=min(300.0, max(1.0, base + extra)), jitter=jitter, max_attempts=attempts
    ),
    st.floats(0.1, 60), st.floats(0, 300), st.floats(0, 1), st.integers(1, 10),
)


@given(retry_settings, st.integers(1, 20), st.floats(0, 1, exclude_max=True))
def test_backoff_delay_is_within_zero_and_backoff_max_and_its_cap(retry, n, r):
    delay = backoff_delay(retry, n, lambda: r)
    cap = min(retry.backoff_max, retry.backoff_base * 2 ** (n - 1))
    assert 0 <= delay <= cap <= retry.backoff_max
    assert delay >= cap * (1 - retry.jitter)


def test_jitter_spreads_the_delays_inside_the_cap():
    """With a real random source the delays differ from each other and from the cap, and stay in bounds."""
    retry = settings(max_attempts=10, backoff_base=1.0, backoff_max=4.0, jitter=0.5, total_timeout=3600)
    fake = FakeTime()
    client = FakeProvider([http(503)] * 9 + ["done"], fake, retry, random=random.Random(7).random)
    run(client)
    caps = [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(cap * 0.5 <= slept <= cap for slept, cap in zip(fake.sleeps, caps, strict=True))
    assert len(set(fake.sleeps[2:])) == 7, "equal caps, yet each delay is its own"
    assert all(slept < cap for slept, cap in zip(fake.sleeps, caps, strict=True))
    other = FakeTime()
    run(FakeProvider([http(503)] * 9 + ["done"], other, retry, random=random.Random(8).random))
    assert other.sleeps != fake.sleeps


@given(retry_settings, st.floats(0, 120), st.floats(0, 1, exclude_max=True))
def test_delay_is_the_servers_retry_after_else_the_backoff(retry, asked, r):
    retry = retry.model_copy(update={"max_attempts": max(2, retry.max_attempts), "total_timeout": 3600})
    decision = decide(http(429, retry_after=asked), 1, retry, retryable=True, time_left=3600, random=lambda: r)
    if asked > 0:
        assert (decision.delay, decision.delay_reason) == (asked, "retry-after")
    else:
        assert (decision.delay, decision.delay_reason) == (backoff_delay(retry, 1, lambda: r), "backoff")


def test_a_short_retry_after_is_not_padded_with_backoff():
    retry = settings(jitter=0, backoff_base=1.0)
    short = decide(http(429, retry_after=0.05), 1, retry, retryable=True, time_left=300, random=lambda: 0)
    none = decide(http(503), 1, retry, retryable=True, time_left=300, random=lambda: 0)
    assert (short.delay, short.delay_reason) == (0.05, "retry-after")
    assert (none.delay, none.delay_reason) == (1.0, "backoff")


@given(retry_settings)
def test_attempts_never_exceed_max_attempts(retry):
    fake = FakeTime()
    retry = retry.model_copy(update={"total_timeout": 3600})
    client = FakeProvider([http(503)] * 10, fake, retry, random=lambda: 0.5)
    with pytest.raises(LLMHTTPError) as failure:
        run(client)
    assert client.sent == retry.max_attempts
    assert [a.number for a in failure.value.attempts] == list(range(1, retry.max_attempts + 1))
    assert failure.value.attempts[-1].delay is None


@given(st.floats(1, 100), st.floats(0.1, 10), st.floats(0, 5))
def test_no_sleep_crosses_the_deadline(total_timeout, base, call_seconds):
    fake = FakeTime()
    retry = settings(max_attempts=10, backoff_base=base, backoff_max=max(base, 30), total_timeout=total_timeout)
    client = FakeProvider([LLMConnectionError("down")] * 10, fake, retry, seconds=call_seconds)
    with pytest.raises(LLMConnectionError):
        run(client)
    assert sum(fake.sleeps) + call_seconds * len(fake.sleeps) <= total_timeout


def test_no_attempt_starts_after_the_deadline():
    """The first attempt used 0.75 s of a 1 s deadline and the sleep the rest: no second attempt."""
    fake = FakeTime()
    retry = settings(total_timeout=1, backoff_base=0.25, backoff_max=1, jitter=0)
    client = FakeProvider([http(503), "late"], fake, retry, seconds=0.75)
    with pytest.raises(LLMHTTPError) as failure:
        run(client)
    assert client.sent == 1 and fake.sleeps == [0.25]
    assert "RETRY_TOTAL_TIMEOUT (1 s) used up before another attempt" in str(failure.value)
    assert [a.delay for a in failure.value.attempts] == [0.25]


def test_retry_after_beyond_the_maximum_gives_up_at_once_with_the_asked_delay():
    fake = FakeTime()
    client = FakeProvider([http(429, retry_after=3600), "never"], fake)
    with pytest.raises(LLMHTTPError) as failure:
        run(client)
    assert client.sent == 1 and fake.sleeps == []
    assert failure.value.asked_delay == 3600
    assert "asked to wait 3600 s, more than RETRY_SERVER_WAIT_MAX (120 s)" in str(failure.value)


def test_a_long_retry_after_on_an_error_never_retried_is_not_an_asked_delay():
    fake = FakeTime()
    with pytest.raises(LLMHTTPError) as failure:
        run(FakeProvider([http(401, retry_after=3600)], fake))
    assert failure.value.asked_delay is None and "not retryable" in str(failure.value)


NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"Retry-After": "Thu, 01 Jan 2026 12:00:10 GMT"}, 10.0),
        ({"Retry-After": "Thu, 01 Jan 2026 11:00:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, None),
        ({"retry-after-ms": "x", "retry-after": "4"}, 4.0),
        ({}, None),
    ],
)
def test_retry_after_parsing(headers, expected):
    assert parse_retry_after(headers, now=NOW) == expected


@pytest.mark.parametrize(
    ("status", "options", "retryable"),
    [
        (408, {}, True), (409, {}, True), (429, {}, True), (500, {}, True), (502, {}, True),
        (503, {}, True), (504, {}, True), (529, {}, True),
        (400, {}, False), (401, {}, False), (403, {}, False), (404, {}, False), (422, {}, False),
        (429, {"quota_exhausted": True}, False),
        (400, {"should_retry": True}, True), (500, {"should_retry": False}, False),
        (429, {"quota_exhausted": True, "should_retry": True}, True),
    ],
)
def test_http_classification(status, options, retryable):
    assert http(status, **options).retryable is retryable


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (LLMConnectionError("reset"), True),
        (LLMIncomplete("max_output_tokens", "partial"), False),
        (LLMRefused("no"), False),
        (LLMMalformedReply("not JSON", status=200), False),
    ],
)
def test_finished_generations_are_not_retried(error, retryable):
    assert error.retryable is retryable


def test_an_incomplete_reply_is_retried_only_when_the_caller_asks():
    fake = FakeTime()
    client = FakeProvider([LLMIncomplete("max_output_tokens", "Once upon"), "whole"], fake)
    with pytest.raises(LLMIncomplete):
        run(client)
    assert client.sent == 1
    client = FakeProvider([LLMIncomplete("max_output_tokens", "Once upon"), "whole"], fake)
    assert run(client, retry_incomplete=True).text == "whole" and client.sent == 2


def test_each_attempt_is_one_event_failures_at_warning_without_prompt_or_key(caplog):
    fake = FakeTime()
    client = FakeProvider([http(503), LLMConnectionError("reset"), "done"], fake)
    with caplog.at_level(logging.INFO, logger="tg_parser.llm.base_client"):
        reply = run(client, "SECRET PROMPT TEXT", instructions="sk-hidden-instructions")
    assert len(reply.attempts) == 3 and reply.text == "done" and reply.model == "m-reported"
    events = [(r.getMessage(), r.levelno, r.event_fields) for r in caplog.records]
    assert [(name, level) for name, level, _ in events] == [
        ("llm_attempt", logging.WARNING), ("llm_attempt", logging.WARNING), ("llm_attempt", logging.INFO),
        ("llm_call_finished", logging.INFO),
    ]
    first, second, third, finished = (fields for _, _, fields in events)
    assert (first["attempt"], first["api"], first["model"], first["status"], first["error"]) == (
        1, "chat", "m", 503, "LLMHTTPError")
    assert (first["delay"], first["delay_reason"]) == (1.0, "backoff")
    assert (second["error"], second["delay"]) == ("LLMConnectionError", 2.0)
    assert (third["error"], third["delay"]) == (None, None)
    assert (finished["outcome"], finished["attempts"]) == ("complete", 3)
    assert not any("SECRET" in repr(e) or "sk-hidden" in repr(e) for e in events)
    assert fake.sleeps == [1.0, 2.0]


def test_attempt_records_carry_what_a_log_line_needs():
    fake = FakeTime()
    client = FakeProvider([http(429, retry_after=2.5), http(503), "done"], fake, seconds=0.25)
    reply = run(client)
    first, second, third = reply.attempts
    assert (first.number, first.api, first.model, first.status, first.error) == (1, "chat", "m", 429, "LLMHTTPError")
    assert (first.latency, first.delay, first.delay_reason) == (0.25, 2.5, "retry-after")
    assert (second.status, second.delay, second.delay_reason) == (503, 2.0, "backoff")
    assert (third.status, third.error, third.delay, third.delay_reason) == (200, None, None, None)
    assert reply.seconds == pytest.approx(0.25 * 3 + 2.5 + 2.0)


def test_per_call_override_is_validated():
    fake = FakeTime()
    client = FakeProvider([http(503)] * 5, fake)
    with pytest.raises(SettingsError, match="RETRY_MAX_ATTEMPTS: must be a number from 1 to 10"):
        run(client, retry={"max_attempts": 0})
    with pytest.raises(ValueError, match="unknown retry setting"):
        run(client, retry={"attempts": 2})
    with pytest.raises(LLMRequestFailed) as failure:
        run(client, retry={"max_attempts": 5})
    assert len(failure.value.attempts) == 5


def test_settings_reject_base_above_max_and_name_the_variables(monkeypatch):
    from tg_parser.core.settings import load_retry_settings

    monkeypatch.setenv("RETRY_BACKOFF_BASE", "30")
    monkeypatch.setenv("RETRY_BACKOFF_MAX", "10")
    with pytest.raises(SettingsError, match="RETRY_BACKOFF_BASE .* must not exceed RETRY_BACKOFF_MAX"):
        load_retry_settings()
