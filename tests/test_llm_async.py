"""Async calls on wall time: the deadline bounds whole requests, and concurrency is bounded per client."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.llm_server import Reply, ScriptedServer, chat_body, error, ok
from tests.test_retry_policy import settings
from tg_parser.core.settings import LLMSettings
from tg_parser.llm.errors import LLMTimeout
from tg_parser.llm.openai_compatible import OpenAICompatibleClient

SLOW_BODY = chat_body("a reply that arrives one byte at a time " * 5)


def real_time_client(server: ScriptedServer, *, timeout: float, concurrency: int = 8, **retry):
    llm = LLMSettings(base_url=server.url, model="llama3", timeout=timeout, max_concurrency=concurrency)
    return OpenAICompatibleClient(llm, settings(**retry))


def timed_failure(client) -> tuple[float, LLMTimeout]:
    started = time.monotonic()
    with pytest.raises(LLMTimeout) as failure:
        client.complete_sync("x")
    return time.monotonic() - started, failure.value


def test_a_server_answering_after_5_s_is_cut_at_the_total_deadline():
    with ScriptedServer([Reply(delay=5, body=chat_body("late")), ok()]) as server:
        seconds, failure = timed_failure(real_time_client(server, timeout=20, total_timeout=1))
    assert 0.95 <= seconds < 1.5
    assert len(server.requests) == 1
    assert "(what was left of RETRY_TOTAL_TIMEOUT)" in str(failure)


def test_a_trickling_body_is_cut_at_the_total_deadline():
    with ScriptedServer([Reply(trickle=0.2, body=SLOW_BODY), ok()]) as server:
        seconds, failure = timed_failure(real_time_client(server, timeout=20, total_timeout=1))
    assert 0.95 <= seconds < 1.5
    assert len(server.requests) == 1


def test_llm_timeout_bounds_the_whole_request_not_each_read():
    """Each byte comes within 0.2 s, so a per-read timeout of 0.5 s would never fire."""
    script = [Reply(trickle=0.2, body=SLOW_BODY), Reply(trickle=0.2, body=SLOW_BODY)]
    with ScriptedServer(script) as server:
        client = real_time_client(server, timeout=0.5, total_timeout=20, max_attempts=2, backoff_base=0.1, jitter=0)
        seconds, failure = timed_failure(client)
    assert 1.05 <= seconds < 1.6
    assert len(server.requests) == 2
    assert [a.error for a in failure.attempts] == ["LLMTimeout", "LLMTimeout"]
    assert "within 0.5 s (LLM_TIMEOUT)" in str(failure)


def test_50_concurrent_calls_stay_within_max_concurrency_and_a_429_holds_up_no_one():
    arrivals = itertools.count()

    def respond(request: dict) -> Reply:
        if next(arrivals) < 4:  # the first four calls are rate limited for 0.3 s
            return error(429, "slow down", retry_after_ms="300")
        prompt = request["body"]["messages"][-1]["content"]
        return Reply(delay=0.05, body=chat_body(f"answer to {prompt}"))

    async def batch(client):
        async with client:
            return await asyncio.gather(*(client.complete(f"prompt {i}") for i in range(50)))

    with ScriptedServer(respond) as server:
        replies = asyncio.run(batch(real_time_client(server, timeout=5, concurrency=4, backoff_base=0.1)))

    assert [r.text for r in replies] == [f"answer to prompt {i}" for i in range(50)]
    assert server.max_in_flight == 4, "never more than LLM_MAX_CONCURRENCY requests in flight, and no fewer"
    assert len(server.connections) <= 4
    assert len(server.requests) == 54
    retried = [r for r in replies if len(r.attempts) == 2]
    assert len(retried) == 4
    assert all((r.attempts[0].status, r.attempts[0].delay, r.attempts[0].delay_reason) == (429, 0.3, "retry-after")
               for r in retried)
    # While the four rate-limited calls slept, the others kept all four slots busy (about 20 requests
    # in 0.25 s); had a sleeping call kept its slot, nothing at all would have reached the server.
    first_429 = min(r["answered"] for r in server.requests[:4])
    served_meanwhile = [r for r in server.requests if first_429 < r["arrived"] < first_429 + 0.25]
    assert len(served_meanwhile) >= 10


def test_the_sync_wrapper_can_be_called_again():
    with ScriptedServer([ok("one"), ok("two")]) as server:
        client = real_time_client(server, timeout=5)
        assert client.complete_sync("x").text == "one"
        assert client.complete_sync("y").text == "two"
    assert len(server.requests) == 2


def test_waiting_for_a_slot_does_not_count_against_the_deadline():
    """With one slot, a retry waits 1.2 s behind two slow calls: longer than RETRY_TOTAL_TIMEOUT, yet
    the call spent only its attempts and its 0.1 s sleep of that budget, so it is answered."""
    script = [error(429, "slow down", retry_after_ms="100"),
              Reply(delay=0.6, body=chat_body("second")), Reply(delay=0.6, body=chat_body("third")), ok("first")]

    async def three(client):
        async with client:
            return await asyncio.gather(*(client.complete(prompt) for prompt in ("a", "b", "c")))

    with ScriptedServer(script) as server:
        replies = asyncio.run(three(real_time_client(server, timeout=5, concurrency=1, total_timeout=1)))
    assert [r.text for r in replies] == ["first", "second", "third"]
    assert len(replies[0].attempts) == 2 and replies[0].seconds > 1.2
    assert len(server.requests) == 4
