"""Model-client overhead against an instant fake server (prints figures; asserts nothing).

The fake server runs in a separate process, so the client's process has one core to itself.
Reports: (1) calls/s of `LLMClient.chat` (target: >= 1,000 calls/s on one core), and
(2) its throughput relative to raw aiohttp POSTs at equal concurrency (target: >= 0.9), the
transport it uses; raw httpx (its own pool) for comparison.

    python bench/bench_client.py [--calls 4000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import time

import aiohttp
import httpx

from synth.config import load_config
from synth.llm import LLMClient
from synth.llm.fake_server import FakeOpenAIServer
from synth.llm.local import free_port

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7, "top_p": 0.95,
        "max_tokens": 16}


def _serve(port: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
    FakeOpenAIServer(port=port).serve_forever()


async def _raw_httpx(url: str, calls: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as http:

        async def one() -> None:
            async with sem:
                r = await http.post(url + "/chat/completions", json=BODY)
                r.json()

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        return calls / (time.perf_counter() - start)


async def _raw_aiohttp(url: str, calls: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def one() -> None:
            async with sem, http.post(url + "/chat/completions", json=BODY) as r:
                await r.json()

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        return calls / (time.perf_counter() - start)


async def _client(url: str, calls: int, concurrency: int) -> float:
    cfg = load_config(None, {"llm": {"base_urls": [url], "model": "m", "max_concurrency": concurrency,
                                      "max_tokens": 16}, "cache": {"enabled": False}}, environ={})
    async with LLMClient(cfg) as llm:
        llm.usage.keep_records = False
        messages = [{"role": "user", "content": "hi"}]
        start = time.perf_counter()
        await asyncio.gather(*(llm.chat("agent", messages) for _ in range(calls)))
        return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    port = free_port()
    server = mp.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    asyncio.run(_raw_aiohttp(url, 200, args.concurrency))  # warm-up
    plain = raw = client = 0.0
    for _ in range(args.rounds):
        plain = max(plain, asyncio.run(_raw_httpx(url, args.calls, args.concurrency)))
        raw = max(raw, asyncio.run(_raw_aiohttp(url, args.calls, args.concurrency)))
        client = max(client, asyncio.run(_client(url, args.calls, args.concurrency)))
    server.terminate()
    print(f"calls={args.calls} concurrency={args.concurrency} (client pinned to one core, server on another)")
    print(f"raw httpx (its own pool):  {plain:7.0f} calls/s")
    print(f"raw aiohttp:               {raw:7.0f} calls/s  (the transport LLMClient uses)")
    print(f"LLMClient.chat:            {client:7.0f} calls/s  (target >= 1000)")
    print(f"LLMClient / raw aiohttp:   {client / raw:5.2f}  (target >= 0.90)")
    print(f"LLMClient / raw httpx:     {client / plain:5.2f}")
    print(f"client overhead: {1e6 / client - 1e6 / raw:6.0f} us/call")


if __name__ == "__main__":
    main()
