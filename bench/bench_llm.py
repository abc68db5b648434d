"""Benchmark of the async LLM client: a batch of prompts against a local server answering in 50 ms.

    python bench/bench_llm.py [--prompts 1000] [--concurrency 16] [--latency 0.05] [--rate-limited 0.05]

The server runs in another process (its CPU is not the client's) and answers every request after
`--latency` seconds, a share `--rate-limited` of them with a 429 carrying `retry-after-ms` equal
to the latency. Prints the wall time against the ideal (prompts x latency / concurrency; target
<= 1.3 at concurrency 16), the HTTP requests made, the most the server saw in flight, and the
client process's CPU time per prompt.
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
from tg_parser.core.settings import LLMSettings, RetrySettings  # noqa: E402
from tg_parser.llm.openai_compatible import OpenAICompatibleClient  # noqa: E402


def http_response(status: str, body: dict, *headers: str) -> bytes:
    data = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(data)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def serve(latency: float, rate_limited: float, urls, stop) -> None:
    """The server process: a lean asyncio HTTP/1.1 server, so that it is never the bottleneck.

    Answers every request after `latency`; a seeded share of them with a 429 whose `retry-after-ms`
    equals the latency.
    """
    chance = random.Random(42)
    answer = http_response("200 OK", {"model": "llama3", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}]})
    slow_down = http_response("429 Too Many Requests", {"error": {"message": "slow down", "code": None}},
                              f"retry-after-ms: {int(latency * 1000)}")
    seen = {"requests": 0, "in_flight": 0, "max_in_flight": 0, "connections": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                seen["requests"] += 1
                seen["in_flight"] += 1
                seen["max_in_flight"] = max(seen["max_in_flight"], seen["in_flight"])
                await asyncio.sleep(latency)
                seen["in_flight"] -= 1
                writer.write(slow_down if chance.random() < rate_limited else answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        urls.put(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        urls.put((seen["requests"], seen["max_in_flight"], seen["connections"]))

    asyncio.run(main())


async def batch(client: OpenAICompatibleClient, prompts: int) -> list:
    async with client:
        return await asyncio.gather(*(client.complete(f"prompt {i}") for i in range(prompts)))


def run_once(args) -> dict:
    """One batch against a fresh server process; the client's wall and CPU time cover the batch only."""
    context = multiprocessing.get_context("spawn")
    urls, stop = context.Queue(), context.Event()
    server = context.Process(target=serve, args=(args.latency, args.rate_limited, urls, stop), daemon=True)
    server.start()
    llm = LLMSettings(base_url=urls.get(timeout=30), model="llama3", timeout=30, max_concurrency=args.concurrency)
    # Default retry settings, but enough attempts that no prompt of the batch runs out of them.
    client = OpenAICompatibleClient(llm, RetrySettings(max_attempts=10, total_timeout=600))
    cpu, wall = time.process_time(), time.perf_counter()
    replies = asyncio.run(batch(client, args.prompts))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    requests, in_flight, connections = urls.get(timeout=30)
    server.join(timeout=30)
    retried = sum(len(reply.attempts) > 1 for reply in replies)
    return {"wall": wall, "cpu": cpu, "requests": requests, "in_flight": in_flight, "connections": connections,
            "answered": len(replies), "retried": retried}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rate-limited", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    ideal = args.prompts * args.latency / args.concurrency
    runs = []
    for _ in range(args.repeat):
        run = run_once(args)
        runs.append(run)
        print(f"{run['answered']} prompts answered ({run['retried']} after a 429) with {run['requests']} requests"
              f" (at most {run['in_flight']} in flight, {run['connections']} connections):"
              f" {run['wall']:.3f} s, {run['wall'] / ideal:.3f} x ideal, client CPU {run['cpu']:.3f} s")
    wall = statistics.median(run["wall"] for run in runs)
    cpu = statistics.median(run["cpu"] for run in runs)
    print(f"ideal                 {ideal:.3f} s ({args.prompts} x {args.latency:g} s / {args.concurrency})")
    print(f"median wall time      {wall:.3f} s")
    print(f"wall / ideal          {wall / ideal:.3f} (target <= 1.3)")
    print(f"client CPU per prompt {cpu / args.prompts * 1000:.2f} ms (median; the server runs in another process)")


if __name__ == "__main__":
    main()
