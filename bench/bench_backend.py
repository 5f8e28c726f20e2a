"""Decoding speed of llama-server builds: one stream, and N parallel streams on N slots.

    python bench/bench_backend.py                         # the installed (portable) build
    python bench/bench_backend.py --binary A --binary B   # compare builds on the same model

Each build is started on the packaged SmolLM2 model (or --model), warmed up with one request, then
asked for `--requests` free-text completions of `--tokens` tokens, first one at a time, then
`--parallel` at a time. Prints completion tokens/s measured at the client (tokens / wall time) and
the server's own `timings.predicted_per_second` (mean per request). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx

from synth.config import BackendConfig
from synth.llm.local import LocalBackend

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a hash table works, step by step.",
    "Describe a day in the life of a city bus driver.",
    "List the steps to plan a week-long hiking trip.",
]


async def _complete(client: httpx.AsyncClient, url: str, prompt: str, tokens: int, seed: int) -> tuple[int, float]:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0.8,
            "seed": seed, "cache_prompt": False}
    response = await client.post(url, json=body, timeout=600)
    response.raise_for_status()
    data = response.json()
    return int(data["usage"]["completion_tokens"]), float(data.get("timings", {}).get("predicted_per_second", 0.0))


async def _load(base_url: str, concurrency: int, requests: int, tokens: int) -> dict[str, float]:
    url = f"{base_url}/chat/completions"
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient() as client:
        await _complete(client, url, "Hello", 8, 0)  # warm-up

        async def one(i: int) -> tuple[int, float]:
            async with gate:
                return await _complete(client, url, PROMPTS[i % len(PROMPTS)], tokens, i + 1)

        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - started
    total = sum(n for n, _ in results)
    return {"completion_tokens": total, "wall_s": round(wall, 2), "tokens_per_s": round(total / wall, 1),
            "server_tokens_per_s_per_request": round(statistics.mean(r for _, r in results), 1)}


def bench_build(binary: str | None, model: str | None, parallel: int, requests: int, tokens: int,
                log_dir: Path) -> dict[str, object]:
    config = BackendConfig(binary=binary, model_path=model, parallel=parallel, ctx_per_slot=1024)
    backend = LocalBackend(config, log_file=log_dir / f"bench-{abs(hash(binary or 'installed'))}.log")
    with backend:
        single = asyncio.run(_load(backend.base_url, 1, max(2, requests // 2), tokens))
        multi = asyncio.run(_load(backend.base_url, parallel, requests, tokens))
    return {"binary": str(backend.binary), "single_stream": single, f"{parallel}_slots": multi}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", action="append", help="llama-server to measure (repeatable; default: installed)")
    parser.add_argument("--model", help="GGUF (default: the packaged SmolLM2-135M-Instruct)")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--log-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    for binary in args.binary or [None]:
        print(json.dumps(bench_build(binary, args.model, args.parallel, args.requests, args.tokens, args.log_dir)))


if __name__ == "__main__":
    main()
