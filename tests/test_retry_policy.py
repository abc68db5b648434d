"""The retry policy on its own: delays, limits, deadlines, Retry-After and classification."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tg_parser.core.settings import RetrySettings, SettingsError
from tg_parser.llm.base_client import BaseLLMClient
from tg_parser.llm.retry import LLMRequestFailed, ProviderError, backoff_delay, parse_retry_after, run_with_retry


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def settings(**values) -> RetrySettings:
    return RetrySettings(**{"max_attempts": 3, "backoff_base": 1.0, "backoff_max": 60.0, "jitter": 0.3,
                            "total_timeout": 300.0, "server_wait_max": 120.0, **values})


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


@given(retry_settings, st.floats(0, 120), st.floats(0, 1, exclude_max=True))
def test_delay_honours_retry_after_and_stays_in_its_window(retry, asked, r):
    fake = FakeTime()
    calls = iter([ProviderError("busy", status=429, retry_after=asked)])

    def call():
        error = next(calls, None)
        if error:
            raise error
        return "ok"

    retry = retry.model_copy(update={"max_attempts": max(2, retry.max_attempts), "total_timeout": 3600})
    result, attempts = run_with_retry(call, retry, sleep=fake.sleep, clock=fake.clock, random=lambda: r)
    assert result == "ok"
    (slept,) = fake.sleeps
    assert asked <= slept <= max(asked, retry.backoff_max)


@given(retry_settings)
def test_attempts_never_exceed_max_attempts(retry):
    fake = FakeTime()
    calls = []

    def call():
        calls.append(1)
        raise ProviderError("unavailable", status=503)

    retry = retry.model_copy(update={"total_timeout": 3600})
    with pytest.raises(LLMRequestFailed) as failure:
        run_with_retry(call, retry, sleep=fake.sleep, clock=fake.clock, random=lambda: 0.5)
    assert len(calls) == retry.max_attempts
    assert len(failure.value.attempts) == retry.max_attempts
    assert [a.delay is None for a in failure.value.attempts][-1] is True


@given(st.floats(1, 100), st.floats(0.1, 10), st.floats(0, 5))
def test_no_sleep_crosses_the_deadline(total_timeout, base, call_seconds):
    fake = FakeTime()

    def call():
        fake.now += call_seconds
        raise ProviderError("timeout")

    retry = settings(max_attempts=10, backoff_base=base, backoff_max=max(base, 30), total_timeout=total_timeout)
    with pytest.raises(LLMRequestFailed):
        run_with_retry(call, retry, sleep=fake.sleep, clock=fake.clock, random=lambda: 0.0)
    assert sum(fake.sleeps) + call_seconds * (len(fake.sleeps)) <= total_timeout


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
    ("status", "quota", "retryable"),
    [
        (None, False, True), (408, False, True), (429, False, True), (500, False, True), (502, False, True),
        (503, False, True), (504, False, True), (529, False, True),
        (400, False, False), (401, False, False), (403, False, False), (404, False, False), (422, False, False),
        (429, True, False),
    ],
)
def test_classification(status, quota, retryable):
    assert ProviderError("x", status=status, quota_exhausted=quota).retryable is retryable


def test_each_retry_is_logged_at_warning_without_prompt_or_key(caplog):
    class Client(BaseLLMClient):
        calls = 0

        def _send(self, prompt, instructions, max_output_tokens):
            Client.calls += 1
            if Client.calls < 3:
                raise ProviderError("overloaded", status=503)
            return "done", "m"

    fake = FakeTime()
    client = Client(settings(), sleep=fake.sleep, clock=fake.clock, random=lambda: 0.0)
    with caplog.at_level(logging.WARNING, logger="tg_parser.llm.retry"):
        reply = client.complete("SECRET PROMPT TEXT", instructions="sk-hidden-instructions")
    assert reply.attempts == 3 and reply.text == "done"
    messages = [r.getMessage() for r in caplog.records]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert "attempt 1 of 3" in messages[0] and "HTTP 503" in messages[0] and "retrying in 1.00 s" in messages[0]
    assert "attempt 2 of 3" in messages[1] and "retrying in 2.00 s" in messages[1]
    assert not any("SECRET" in m or "sk-hidden" in m for m in messages)
    assert fake.sleeps == [1.0, 2.0]


def test_per_call_override_is_validated():
    class Client(BaseLLMClient):
        def _send(self, prompt, instructions, max_output_tokens):
            raise ProviderError("down", status=503)

    fake = FakeTime()
    client = Client(settings(), sleep=fake.sleep, clock=fake.clock, random=lambda: 0.0)
    with pytest.raises(SettingsError, match="RETRY_MAX_ATTEMPTS: must be a number from 1 to 10"):
        client.complete("x", retry={"max_attempts": 0})
    with pytest.raises(ValueError, match="unknown retry setting"):
        client.complete("x", retry={"attempts": 2})
    with pytest.raises(LLMRequestFailed) as failure:
        client.complete("x", retry={"max_attempts": 5})
    assert len(failure.value.attempts) == 5


def test_settings_reject_base_above_max_and_name_the_variables(monkeypatch):
    from tg_parser.core.settings import load_retry_settings

    monkeypatch.setenv("RETRY_BACKOFF_BASE", "30")
    monkeypatch.setenv("RETRY_BACKOFF_MAX", "10")
    with pytest.raises(SettingsError, match="RETRY_BACKOFF_BASE .* must not exceed RETRY_BACKOFF_MAX"):
        load_retry_settings()
