"""Pipeline benchmarks (print figures; assert nothing). Three measurements:

(a) `saturation`: the pipeline's completion tokens/s on a llama-server divided by a direct
    saturating load (as many concurrent requests as slots, kept full) on the same server with the
    same slots. Target: >= 0.9.
(b) `throughput`: orchestration overhead with an instant fake backend (a separate process), in
    model calls/s and episodes/s.
(c) `memory`: peak RSS of a 2,000-episode fake-backend run against a 200-episode one (the driver
    process, in-process workers; flat is the target: bounded queues, batched writes).

    python bench/bench_pipeline.py throughput [--episodes 300]
    python bench/bench_pipeline.py memory [--small 200 --large 2000]
    python bench/bench_pipeline.py saturation [--base-url URL] [--episodes 16] [--parallel 4]

Without --base-url, `saturation` starts the embedded backend itself (`--parallel` slots).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import duckdb
import httpx

from synth.config import BackendConfig, load_config
from synth.llm.fake_server import FakeOpenAIServer
from synth.llm.local import LocalBackend, free_port

DOMAINS = "weather,order_management"


def _serve_fake(port: int) -> None:
    FakeOpenAIServer(port=port).serve_forever()


def start_fake() -> tuple[str, mp.Process]:
    port = free_port()
    proc = mp.get_context("spawn").Process(target=_serve_fake, args=(port,), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return url, proc


def run_pipeline(base_url: str, workdir: Path, episodes: int, *extra: str) -> tuple[dict, float, int]:
    """`synth run` in a child process; returns (summary, wall seconds, child peak RSS in KiB)."""
    env = {**os.environ, "SYNTH_CACHE__ENABLED": "false", "SYNTH_RUN__TOOLS_PER_DOMAIN": "6",
           "SYNTH_RUN__IN_FLIGHT": os.environ.get("SYNTH_RUN__IN_FLIGHT", "16")}
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "run", "--domains", DOMAINS, "--trajectories", str(episodes),
         "--db", str(workdir / f"bench-{episodes}.duckdb"), "--base-url", base_url, "-q", *extra],
        capture_output=True, text=True, env=env, cwd=workdir,
    )
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        sys.exit(f"synth run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary, wall, peak if peak > before else -1


def _call_count(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM llm_calls").fetchone()[0])
    finally:
        con.close()


def bench_throughput(episodes: int, ray: bool) -> None:
    url, server = start_fake()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            extra = () if ray else ("--no-ray",)
            summary, wall, _ = run_pipeline(url, Path(tmp), episodes, *extra)
            calls = _call_count(Path(tmp) / f"bench-{episodes}.duckdb")
    finally:
        server.terminate()
    mode = "ray actors" if ray else "in-process"
    print(f"(b) orchestration, instant fake backend, {mode}: {summary['judged']} episodes, {calls} model calls "
          f"in {wall:.1f} s (incl. startup) -> {calls / wall:,.0f} calls/s, {summary['judged'] / wall:.1f} episodes/s")


def bench_memory(small: int, large: int) -> None:
    url, server = start_fake()
    peaks = {}
    try:
        for n in (small, large):
            with tempfile.TemporaryDirectory() as tmp:
                # A fresh child each time: ru_maxrss of children is the max over all, so run the
                # small one first and measure each in its own wrapper process.
                code = (
                    "import resource,subprocess,sys;"
                    "p=subprocess.run(sys.argv[1:]);"
                    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);sys.exit(p.returncode)"
                )
                env = {**os.environ, "SYNTH_CACHE__ENABLED": "false", "SYNTH_RUN__TOOLS_PER_DOMAIN": "6"}
                started = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-c", code, sys.executable, "-m", "synth", "run", "--domains", DOMAINS,
                     "--trajectories", str(n), "--db", str(Path(tmp) / "m.duckdb"), "--base-url", url, "-q",
                     "--no-ray"],
                    capture_output=True, text=True, env=env, cwd=tmp,
                )
                if proc.returncode != 0:
                    sys.exit(f"run of {n} failed:\n{proc.stderr[-3000:]}")
                peaks[n] = int(proc.stdout.strip().splitlines()[-1])
                print(f"(c) {n:>5} episodes: peak RSS {peaks[n] / 1024:,.0f} MiB "
                      f"({time.perf_counter() - started:.0f} s)")
    finally:
        server.terminate()
    print(f"(c) peak memory ratio {large} vs {small} episodes: {peaks[large] / peaks[small]:.2f} (flat = 1.0)")


async def _saturating_load(base_url: str, slots: int, seconds: float, max_tokens: int) -> float:
    """Completion tokens/s with `slots` requests always in flight."""
    prompt = "Write a long, detailed story about a lighthouse keeper and a storm."
    tokens = 0
    deadline = time.perf_counter() + seconds

    async def loop(client: httpx.AsyncClient, i: int) -> None:
        nonlocal tokens
        while time.perf_counter() < deadline:
            r = await client.post(f"{base_url}/chat/completions", json={
                "model": "m", "messages": [{"role": "user", "content": f"{prompt} ({i})"}],
                "max_tokens": max_tokens, "temperature": 0.8, "seed": i,
            })
            r.raise_for_status()
            tokens += r.json()["usage"]["completion_tokens"]
            i += slots

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(loop(client, i) for i in range(slots)))
    return tokens / (time.perf_counter() - started)


def bench_saturation(base_url: str | None, episodes: int, parallel: int, seconds: float) -> None:
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        if base_url is None:
            backend = LocalBackend(BackendConfig(parallel=parallel, ctx_per_slot=4096),
                                   log_file=Path(tmp) / "llama-server.log")
            backend.start()
            stack.callback(backend.stop)
            base_url = backend.base_url
        direct = asyncio.run(_saturating_load(base_url, parallel, seconds, 256))
        print(f"(a) direct saturating load, {parallel} slots: {direct:,.1f} completion tokens/s")
        env_in_flight = str(max(2 * parallel, 8))
        os.environ["SYNTH_RUN__IN_FLIGHT"] = env_in_flight
        summary, _wall, _ = run_pipeline(base_url, Path(tmp), episodes)
        db = Path(tmp) / f"bench-{episodes}.duckdb"
        con = duckdb.connect(str(db), read_only=True)
        try:
            # The pipeline's steady-state rate: completion tokens over the span of the rollout
            # stage (tool synthesis at the start runs few requests and is not what is measured).
            row = con.execute(
                "SELECT sum(completion_tokens), max(epoch(created_at)) - min(epoch(created_at) - latency_s) "
                "FROM llm_calls WHERE role IN ('user', 'agent', 'environment', 'judge') AND NOT cache_hit"
            ).fetchone()
        finally:
            con.close()
        tokens, span = row
        rate = (tokens or 0) / span if span else 0.0
        print(f"(a) pipeline ({summary['judged']} episodes, in_flight {env_in_flight}): {rate:,.1f} completion "
              f"tokens/s over the rollout stage -> saturation {rate / direct:.2f} (target >= 0.9)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--episodes", type=int, default=300)
    t.add_argument("--ray", action="store_true", help="through Ray actors instead of in-process")
    m = sub.add_parser("memory")
    m.add_argument("--small", type=int, default=200)
    m.add_argument("--large", type=int, default=2000)
    s = sub.add_parser("saturation")
    s.add_argument("--base-url")
    s.add_argument("--episodes", type=int, default=16)
    s.add_argument("--parallel", type=int, default=4)
    s.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    load_config(None, environ={})  # fail early on a broken ./synth.toml
    if args.which == "throughput":
        bench_throughput(args.episodes, args.ray)
    elif args.which == "memory":
        bench_memory(args.small, args.large)
    else:
        bench_saturation(args.base_url, args.episodes, args.parallel, args.seconds)


if __name__ == "__main__":
    main()
