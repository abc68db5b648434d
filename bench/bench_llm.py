"""Benchmark of the async LLM clients, per provider protocol, against each provider's official async SDK.

    python bench/bench_llm.py [--prompts 1000] [--concurrency 16] [--latency 0.05] [--rate-limited 0.05]
                              [--repeat 5] [--providers openai,anthropic,gemini,ollama]

For each provider, a local server in another process (its CPU is not the client's) speaks that
provider's protocol and answers every request after `--latency` seconds; a seeded share
`--rate-limited` of them is refused with the provider's own delay hint, equal to the latency:
- openai: 429 with `retry-after-ms`; anthropic: 429 with `retry-after-ms` (which its SDK honours);
- gemini: 429 `RESOURCE_EXHAUSTED` with `RetryInfo.retryDelay` in the body;
- ollama: 503 "server busy", which carries no hint: both sides back off from 0.1 s.
Then the same batch runs through our client (LLM_MAX_CONCURRENCY = concurrency) and through the
provider's official async SDK under an asyncio.Semaphore(concurrency), with its own retries
(google-genai's retry options start at the latency; ollama's package has none, so a loop around
it retries a 503 the way ours does). Prints, per provider and side, the median wall time against
the ideal (prompts x latency / concurrency; target <= 1.3 for ours) and the client CPU per prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tg_parser.core.settings import PROVIDER_MODELS, LLMSettings, RetrySettings  # noqa: E402
from tg_parser.llm.providers import make_client  # noqa: E402

PROVIDERS = ("openai", "anthropic", "gemini", "ollama")


def http_response(status: str, body: object, *headers: str) -> bytes:
    data = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(data)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def answers(provider: str, latency: float) -> tuple[bytes, bytes]:
    """(the success, the refusal with the provider's delay hint) as raw HTTP responses."""
    ms = int(latency * 1000)
    if provider == "anthropic":
        return (http_response("200 OK", {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "ok"}], "usage": {"input_tokens": 5, "output_tokens": 1}}),
            http_response("429 Too Many Requests", {"type": "error", "error": {
                "type": "rate_limit_error", "message": "slow down"}}, f"retry-after-ms: {ms}"))
    if provider == "gemini":
        return (http_response("200 OK", {
            "candidates": [{"content": {"parts": [{"text": "ok"}], "role": "model"}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}, "modelVersion": "gemini"}),
            http_response("429 Too Many Requests", {"error": {
                "code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED", "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{latency:g}s"}]}}))
    if provider == "ollama":
        return (http_response("200 OK", {
            "model": "llama3.2", "created_at": "2026-12-01T00:00:00Z", "message": {"role": "assistant", "content": "ok"},
            "done": True, "done_reason": "stop", "prompt_eval_count": 5, "eval_count": 1}),
            http_response("503 Service Unavailable", {"error": "server busy, please try again."}))
    return (http_response("200 OK", {"model": "llama3", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}]}),
        http_response("429 Too Many Requests", {"error": {"message": "slow down", "code": None}},
                      f"retry-after-ms: {ms}"))


def serve(provider: str, latency: float, rate_limited: float, urls, stop) -> None:
    """The server process: a lean asyncio HTTP/1.1 server, so that it is never the bottleneck."""
    chance = random.Random(42)
    answer, slow_down = answers(provider, latency)
    seen = {"requests": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                seen["requests"] += 1
                await asyncio.sleep(latency)
                writer.write(slow_down if chance.random() < rate_limited else answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()  # the client closed, or the batch is over

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        urls.put(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        urls.put(seen["requests"])

    asyncio.run(main())


async def ours(provider: str, root: str, prompts: int, concurrency: int) -> None:
    base = f"{root}/v1" if provider == "openai" else root
    model = "llama3" if provider == "openai" else PROVIDER_MODELS[provider]  # openai: a Chat Completions model
    llm = LLMSettings(provider=provider, base_url=base, model=model, api_key="sk-bench", timeout=30,
                      max_concurrency=concurrency)
    async with make_client(llm, RetrySettings(max_attempts=10, total_timeout=600, backoff_base=0.1)) as client:
        await asyncio.gather(*(client.complete(f"prompt {i}") for i in range(prompts)))


async def sdk(provider: str, root: str, prompts: int, concurrency: int) -> None:
    """The official async SDK with its own retries, `concurrency` calls at a time."""
    slots = asyncio.Semaphore(concurrency)
    if provider == "openai":
        import openai

        client = openai.AsyncOpenAI(api_key="sk-bench", base_url=f"{root}/v1", max_retries=10)

        async def one(i: int) -> None:
            await client.chat.completions.create(model="llama3", messages=[{"role": "user", "content": f"prompt {i}"}])
    elif provider == "anthropic":
        import anthropic

        client = anthropic.AsyncAnthropic(api_key="sk-bench", base_url=root, max_retries=10)

        async def one(i: int) -> None:
            await client.messages.create(model="claude-haiku-4-5", max_tokens=64,
                                         messages=[{"role": "user", "content": f"prompt {i}"}])
    elif provider == "gemini":
        from google import genai
        from google.genai import types

        retry = types.HttpRetryOptions(attempts=10, initial_delay=0.05, max_delay=5)
        client = genai.Client(api_key="sk-bench", http_options=types.HttpOptions(base_url=root, retry_options=retry))

        async def one(i: int) -> None:
            await client.aio.models.generate_content(model="gemini-2.5-flash", contents=f"prompt {i}")
    else:
        import ollama

        client = ollama.AsyncClient(host=root)

        async def one(i: int) -> None:
            for attempt in range(10):
                try:
                    await client.chat(model="llama3.2", messages=[{"role": "user", "content": f"prompt {i}"}])
                    return
                except ollama.ResponseError as error:
                    if error.status_code != 503:
                        raise
                    await asyncio.sleep(min(60.0, 0.1 * 2**attempt))

    async def bounded(i: int) -> None:
        async with slots:
            await one(i)

    try:
        await asyncio.gather(*(bounded(i) for i in range(prompts)))
    finally:
        await (client.aio.aclose() if provider == "gemini" else client.close())


def run_once(side, provider: str, args) -> dict:
    """One batch against a fresh server process; the client's wall and CPU time cover the batch only."""
    context = multiprocessing.get_context("spawn")
    urls, stop = context.Queue(), context.Event()
    server = context.Process(target=serve, args=(provider, args.latency, args.rate_limited, urls, stop), daemon=True)
    server.start()
    root = urls.get(timeout=30)
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(side(provider, root, args.prompts, args.concurrency))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    requests = urls.get(timeout=30)
    server.join(timeout=30)
    return {"wall": wall, "cpu": cpu, "requests": requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rate-limited", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    args = parser.parse_args()
    providers = args.providers.split(",")
    unknown = set(providers) - set(PROVIDERS)
    if unknown:
        parser.error(f"unknown provider(s) {', '.join(sorted(unknown))}; allowed: {', '.join(PROVIDERS)}")

    ideal = args.prompts * args.latency / args.concurrency
    print(f"ideal {ideal:.3f} s ({args.prompts} prompts x {args.latency:g} s / {args.concurrency});"
          f" {args.rate_limited:.0%} rate-limited; median of {args.repeat}")
    print(f"{'provider':<10} {'side':<5} {'wall s':>7} {'x ideal':>8} {'requests':>9} {'CPU ms/prompt':>14}")
    for provider in providers:
        sides = {"ours": (ours, []), "SDK": (sdk, [])}
        for _ in range(args.repeat):  # alternated, so that drift hits both alike
            for side, runs in sides.values():
                runs.append(run_once(side, provider, args))
        for name, (_, runs) in sides.items():
            wall = statistics.median(r["wall"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            requests = statistics.median(r["requests"] for r in runs)
            print(f"{provider:<10} {name:<5} {wall:>7.3f} {wall / ideal:>8.3f} {requests:>9.0f}"
                  f" {cpu / args.prompts * 1000:>14.2f}", flush=True)
    print("target: ours <= 1.3 x ideal for every provider")


if __name__ == "__main__":
    main()
