"""Pipeline benchmarks (print figures; assert nothing). Three measurements:

(a) `server`: what the pipeline makes a llama-server do, read from the server: slot occupancy over
    the rollout phase (`/slots` polled every 0.2 s), completion tokens/s against a direct free-text
    load on the same server (as many requests as slots, kept in flight), the server's own counters
    (`/metrics`), the CPU that llama-server, the run (with Ray) and the bench itself spent over the
    run (on a small machine the run's CPU is taken from the server), and per role the prefix-cache
    reuse (prompt tokens the server took from its cache, as it reports them per call) and tokens/s.
    Then the same-work baseline: the run's requests, recorded by a loopback proxy, replayed in the
    run's order at full concurrency on a restarted server (nothing cached); then per role as sent,
    and again without their grammar (same prompts, same reply lengths), which says how much of the
    gap is the grammar.
(b) `throughput`: orchestration overhead with an instant fake backend (a separate process), in
    model calls/s and episodes/s.
(c) `memory`: peak RSS of a 2,000-episode fake-backend run against a 200-episode one (the driver
    process, in-process workers; flat is the target: bounded queues, batched writes), and with
    `--larger N` a third run, which says whether the growth is bounded: DuckDB's checkpoint at each
    flush re-compresses the trailing ~2,000 rows of `trajectories`, so the peak rises in a sawtooth
    with that period, not with the run's size.
(d) `scale`: Kimi's scale with the fake backend: `--domains all` with 60 tools per domain (20,000+
    synthetic tools), the tool stage streamed; distinct accepted tools, tools/s, how long before the
    tool stage ended the first rollout was stored, and peak RSS.

    python bench/bench_pipeline.py throughput [--episodes 300]
    python bench/bench_pipeline.py memory [--small 200 --large 2000 --larger 6000]
    python bench/bench_pipeline.py scale [--trajectories 400 --tools-per-domain 60 --categories c --ray]
    python bench/bench_pipeline.py server [--base-url URL] [--episodes 16] [--parallel 4] [--seconds 60]
                                          [--in-flight 8] [--no-replay] [--keep-db PATH] [--no-ray]
                                          [--record PATH]

Without --base-url, `server` starts the embedded backend itself (`--parallel` slots).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import duckdb
import httpx

from synth.config import EMBEDDED_LOOP_STOP_CHARS, BackendConfig, load_config
from synth.llm.client import StreamedReply
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


def run_pipeline(base_url: str, workdir: Path, episodes: int, *extra: str,
                 in_flight: int | None = None, env_extra: dict[str, str] | None = None) -> tuple[dict, float, int]:
    """`synth run` in a child process; returns (summary, wall seconds, child peak RSS in KiB).
    `in_flight` None: as the run sizes itself (from the server's slots), or `SYNTH_RUN__IN_FLIGHT`."""
    env = {**os.environ, "SYNTH_CACHE__ENABLED": "false", "SYNTH_RUN__TOOLS_PER_DOMAIN": "6",
           **({"SYNTH_RUN__IN_FLIGHT": str(in_flight)} if in_flight is not None else {}), **(env_extra or {})}
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


def _call_count(db: Path) -> tuple[int, float]:
    """(model calls, seconds from the first call's start to the last call's end): the run once
    running, without the process start, Ray's start and the end-of-run dedup."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        n, span = con.execute("SELECT count(*), max(epoch(created_at)) - min(epoch(created_at) - latency_s) "
                              "FROM llm_calls").fetchone()
        return int(n), float(span or 0.0)
    finally:
        con.close()


def bench_throughput(episodes: int, ray: bool) -> None:
    url, server = start_fake()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            extra = () if ray else ("--no-ray",)
            summary, wall, _ = run_pipeline(url, Path(tmp), episodes, *extra, in_flight=16)
            calls, span = _call_count(Path(tmp) / f"bench-{episodes}.duckdb")
    finally:
        server.terminate()
    mode = "ray actors" if ray else "in-process"
    print(f"(b) orchestration, instant fake backend, {mode}: {summary['judged']} episodes, {calls} model calls "
          f"in {wall:.1f} s (incl. startup) -> {calls / wall:,.0f} calls/s, {summary['judged'] / wall:.1f} episodes/s; "
          f"from the first call to the last ({span:.1f} s): {calls / max(span, 1e-9):,.0f} calls/s")


def _sample_rss(wrapper: subprocess.Popen) -> list[tuple[float, float, str]]:
    """(seconds, MiB, command) of the largest descendant of `wrapper`, every 0.1 s until it exits."""
    import psutil

    samples: list[tuple[float, float, str]] = []
    started = time.perf_counter()
    parent = psutil.Process(wrapper.pid)
    while wrapper.poll() is None:
        with contextlib.suppress(psutil.Error):
            sizes = [(c.memory_info().rss, " ".join(c.cmdline()[1:4])) for c in parent.children(recursive=True)]
            if sizes:
                rss, cmd = max(sizes)
                samples.append((time.perf_counter() - started, rss / 2**20, cmd))
        time.sleep(0.1)
    return samples


def _rss_phases(samples: list[tuple[float, float, str]]) -> str:
    """Peak RSS over the first 80% of the wall (the run) and over the rest (its end), and which
    process held the peak."""
    if not samples:
        return "no samples"
    end = samples[-1][0]
    run = [s for s in samples if s[0] < 0.8 * end] or samples
    tail = [s for s in samples if s[0] >= 0.8 * end] or samples
    top = max(samples, key=lambda s: s[1])
    return (f"{max(s[1] for s in run):,.0f} MiB over the first 80% of the wall, {max(s[1] for s in tail):,.0f} MiB "
            f"over the rest; peak at {top[0]:.0f} s of {end:.0f} s in `{top[2]}`")


def bench_memory(small: int, large: int, larger: int | None) -> None:
    url, server = start_fake()
    peaks = {}
    try:
        for n in (small, large, *([larger] if larger else [])):
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
                wrapper = subprocess.Popen(
                    [sys.executable, "-c", code, sys.executable, "-m", "synth", "run", "--domains", DOMAINS,
                     "--trajectories", str(n), "--db", str(Path(tmp) / "m.duckdb"), "--base-url", url, "-q",
                     "--no-ray"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp,
                )
                samples = _sample_rss(wrapper)
                stdout, stderr = wrapper.communicate()
                if wrapper.returncode != 0:
                    sys.exit(f"run of {n} failed:\n{stderr[-3000:]}")
                peaks[n] = int(stdout.strip().splitlines()[-1])
                wall = time.perf_counter() - started
                print(f"(c) {n:>5} episodes: peak RSS {peaks[n] / 1024:,.0f} MiB ({wall:.0f} s); sampled every "
                      f"0.1 s, largest process: {_rss_phases(samples)}")
    finally:
        server.terminate()
    print(f"(c) peak memory ratio {large} vs {small} episodes: {peaks[large] / peaks[small]:.2f} (flat = 1.0)")
    if larger:
        print(f"(c) peak memory ratio {larger} vs {large} episodes: {peaks[larger] / peaks[large]:.2f} (bounded = 1.0)")


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


class SlotPoller:
    """Polls llama-server's `/slots` every `interval` s in a thread: (unix time, busy slots, slots)."""

    def __init__(self, server_root: str, interval: float = 0.2) -> None:
        self.url = f"{server_root}/slots"
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    slots = client.get(self.url).json()
                    busy = sum(1 for s in slots if s.get("is_processing"))
                    self.samples.append((time.time(), busy, len(slots)))
                except (httpx.HTTPError, ValueError):
                    pass
                self._stop.wait(self.interval)

    def __enter__(self) -> SlotPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def occupancy(self, start: float, end: float) -> float:
        window = [(busy, n) for t, busy, n in self.samples if start <= t <= end and n]
        return sum(b for b, _ in window) / sum(n for _, n in window) if window else 0.0

    def idle_split(self, start: float, end: float, requests: list[tuple[float, float]]) -> tuple[float, float]:
        """Where the idle slot-time of [start, end] went, as shares of all slot-time: (starved, lost).
        Starved: fewer requests were out (sent by the client, per `requests`' (start, end) times)
        than the server has slots, so nothing could fill them (the client was busy, or the run had
        less work left than slots: its drain at the end). Lost: enough requests were out, yet a slot
        sat idle (requests in transit, or the server's own scheduling)."""
        starved = lost = total = 0
        for t, busy, n in self.samples:
            if not (start <= t <= end and n):
                continue
            demand = min(n, sum(1 for a, b in requests if a <= t <= b))
            starved += n - max(demand, busy)
            lost += max(0, demand - busy)
            total += n
        return (starved / total, lost / total) if total else (0.0, 0.0)


class CpuAccount:
    """CPU seconds (user + system) spent over a block by: the embedded llama-server (when it is
    ours), every other process under this one (`synth run`, Ray's processes and actors: they are
    not all waited for, so `RUSAGE_CHILDREN` misses most of Ray; each is sampled every 0.5 s and
    counted at its last sample), and this process (the recording proxy, the slot poller)."""

    def __init__(self, backend: LocalBackend | None) -> None:
        self.server_pid = backend.process.pid if backend is not None and backend.process is not None else None
        self.seen: dict[tuple[int, float], float] = {}  # (pid, start time) -> CPU seconds at the last sample
        self.seconds: dict[str, float] = {}
        self._before: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                self.seen[(proc.pid, proc.create_time())] = times.user + times.system

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def _totals(self) -> dict[str, float]:
        self._sample()
        server = sum(v for (pid, _), v in self.seen.items() if pid == self.server_pid)
        others = sum(v for (pid, _), v in self.seen.items() if pid != self.server_pid)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return {"llama-server": server, "synth run and Ray": others,
                "the bench's proxy and poller": me.ru_utime + me.ru_stime}

    def __enter__(self) -> CpuAccount:
        self._before = self._totals()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        after = self._totals()
        self.seconds = {k: v - self._before[k] for k, v in after.items()
                        if self.server_pid is not None or k != "llama-server"}


def server_metrics(server_root: str) -> dict[str, float]:
    """llama-server's Prometheus counters (`--metrics`), name -> value."""
    out: dict[str, float] = {}
    for line in httpx.get(f"{server_root}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name.split("{")[0]] = float(value)
    return out


class RecordingProxy:
    """A loopback proxy in front of the server: forwards every request, and records each chat
    completion's role (synth's `x-synth-role` header), body and completion tokens, so the run's
    own work can be replayed against the same server."""

    def __init__(self, upstream_root: str) -> None:
        self.upstream = upstream_root
        self.port = free_port()
        self.records: list[dict] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        from aiohttp import ClientSession, ClientTimeout, web

        async def forward(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            # Passed on: synth closes a streamed request's connection (llama-server does not keep it).
            headers = {"content-type": "application/json", **({"connection": "close"} if request.headers.get(
                "connection", "").lower() == "close" else {})}
            async with request.app["session"].request(request.method, self.upstream + request.path_qs, data=body,
                                                      headers=headers) as r:
                if r.content_type != "text/event-stream":
                    data = await r.read()
                    if request.path.endswith(_MODEL_PATHS) and r.status == 200:
                        with contextlib.suppress(ValueError, KeyError, TypeError):
                            self._record(request, json.loads(body), json.loads(data))
                    return web.Response(body=data, status=r.status, content_type=r.content_type)
                # Streamed (synth stops a reply that loops by hanging up): passed on as it comes, so
                # the hang-up reaches the server; the reply is recorded as far as it went.
                out = web.StreamResponse(status=r.status, headers={"content-type": "text/event-stream"})
                await out.prepare(request)
                reply = StreamedReply()
                try:
                    async for line in r.content:
                        await out.write(line)
                        with contextlib.suppress(ValueError):
                            reply.add(line)
                except (ConnectionError, RuntimeError):
                    r.close()  # the client hung up: so does the proxy, and the server frees the slot
                finally:
                    if reply.finish_reason is None:  # the client stopped the reply (a loop)
                        reply.stop()
                    if request.path.endswith(_MODEL_PATHS):
                        self._record(request, json.loads(body), reply.completion())
                return out

        async def main() -> None:
            app = web.Application(client_max_size=64 * 2**20)
            app["session"] = ClientSession(timeout=ClientTimeout(total=600))
            app.router.add_route("*", "/{tail:.*}", forward)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await asyncio.Event().wait()

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(main())

    def _record(self, request: Any, body: dict, reply: dict) -> None:
        if "choices" not in reply:  # a whole /completion response (token prompts)
            event = StreamedReply()
            event.add_event(reply)
            reply = event.completion()
        timings = reply.get("timings") or {}
        body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        self.records.append({"role": request.headers.get("x-synth-role", "?"), "body": body,
                             "path": "/completion" if request.path.endswith("/completion") else "/v1/chat/completions",
                             "completion_tokens": reply["usage"]["completion_tokens"],
                             "prompt_tokens": reply["usage"]["prompt_tokens"],
                             "cached_tokens": int(timings.get("cache_n") or 0),
                             "finish_reason": reply["choices"][0].get("finish_reason"),
                             "at": time.time()})

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # a daemon thread: it ends with the benchmark


# The requests that ask the model for a reply: chat completions, and llama-server's /completion
# (what the client sends with token prompts, `synth.llm.token_prompts`).
_MODEL_PATHS = ("/chat/completions", "/completion")


async def _replay(base_url: str, bodies: list[tuple[str, dict]], slots: int) -> tuple[int, float]:
    """(completion tokens, seconds) of `bodies` (each with the path it was sent to) sent with
    `slots` always in flight."""
    queue = list(reversed(bodies))
    tokens = 0
    root = base_url.removesuffix("/v1")

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal tokens
        while queue:
            path, body = queue.pop()
            r = await client.post(root + path, json=body)
            if r.status_code == 500 and body.get("ignore_eos") and "grammar" in r.text:
                # A stopped reply's length forced past the end of its grammar (llama-server: "Unexpected
                # empty grammar stack"): the replay decoded otherwise than the run; it ends where it can.
                r = await client.post(root + path, json={k: v for k, v in body.items() if k != "ignore_eos"})
            r.raise_for_status()
            data = r.json()
            tokens += data["usage"]["completion_tokens"] if "usage" in data else data["tokens_predicted"]

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(loop(client) for _ in range(slots)))
    return tokens, time.perf_counter() - started


def _path(record: dict) -> str:
    return str(record.get("path") or "/v1/chat/completions")


def _limited(record: dict, body: dict) -> dict:
    """`body` decoding exactly the recorded reply's tokens (`ignore_eos`)."""
    limit = "n_predict" if _path(record) == "/completion" else "max_tokens"
    return {**body, limit: max(1, record["completion_tokens"]), "ignore_eos": True}


def _as_run(record: dict) -> tuple[str, dict]:
    """The recorded request as the run's work: a reply the run stopped for looping decodes as many
    tokens as it had then, not on to max_tokens."""
    if record.get("finish_reason") != "repetition":
        return _path(record), record["body"]
    return _path(record), _limited(record, record["body"])


def _print_cut_off(records: list[dict]) -> None:
    """Decoded work that no caller could use: replies cut at max_tokens, and replies stopped for
    looping (`synth.llm.repetition`), per role, against all the role's completion tokens."""
    for role in sorted({r["role"] for r in records}):
        mine = [r for r in records if r["role"] == role]
        total = sum(r["completion_tokens"] for r in mine) or 1
        length = [r["completion_tokens"] for r in mine if r.get("finish_reason") == "length"]
        looped = [r["completion_tokens"] for r in mine if r.get("finish_reason") == "repetition"]
        print(f"(a) {role} replies that could not be used: {len(length)} of {len(mine)} cut at max_tokens "
              f"({sum(length):,} tokens, {sum(length) / total:.0%} of the role's), {len(looped)} stopped looping "
              f"({sum(looped):,} tokens, {sum(looped) / total:.0%})")


def _free_text(record: dict) -> tuple[str, dict]:
    """The same request without its output constraint, decoding as many tokens as the run's reply
    had (`ignore_eos`): what that work costs the server without a grammar."""
    constraints = ("response_format", "tools", "tool_choice", "json_schema", "grammar")
    body = {k: v for k, v in record["body"].items() if k not in constraints}
    return _path(record), _limited(record, body)


def _print_openings(records: list[dict]) -> None:
    """Where the agent's prompt tokens were computed: the first request of each episode (its
    conversation has one user message) against later ones, and how many first requests shared an
    opening (system prompt and tools, `synth.llm.prefix`) with an earlier one."""
    from synth.llm.prefix import opening_key

    def first_turn(body: dict) -> bool:
        if "messages" in body:
            return sum(m.get("role") != "system" for m in body["messages"]) == 1
        return all(isinstance(p, str) for p in body.get("prompt") or [])  # no reply of its own yet

    agent = [r for r in records if r["role"] == "agent"]
    first = [r for r in agent if first_turn(r["body"])]
    later = [r for r in agent if r not in first]
    openings = Counter(opening_key(r["body"]) for r in first if "messages" in r["body"])
    for label, group in (("first requests of an episode", first), ("later requests", later)):
        prompt = sum(r["prompt_tokens"] for r in group)
        cached = sum(min(r["cached_tokens"], r["prompt_tokens"]) for r in group)
        print(f"(a) agent {label}: {len(group)}, {prompt:,} prompt tokens, {cached / prompt if prompt else 0:.0%} "
              f"reused, {prompt - cached:,} computed")
    if openings:  # chat requests only: a token prompt's opening is not told apart from its first turn
        print(f"(a) agent openings: {len(openings)} distinct over {len(first)} first requests "
              f"({sum(n - 1 for n in openings.values())} could reuse a sibling's)")


def bench_server(base_url: str | None, episodes: int, parallel: int, seconds: float, in_flight: int | None,
                 replay: bool = True, keep_db: Path | None = None, use_ray: bool = True,
                 record: Path | None = None) -> None:
    """(a): what the pipeline makes the server do, read from the server itself, against a direct
    free-text load of `parallel` requests always in flight on the same server; the run keeps
    `in_flight` episodes going (by default what the run sizes itself to: 2 per server slot).
    Then the same-work baseline: the run's own requests (recorded by a proxy), replayed in the run's
    order with `parallel` in flight on a restarted server (the embedded one only: nothing cached,
    so the same prompt work), then per role, as sent and without their grammar (same prompts, same
    reply lengths; these find the run's prompts cached, so they price the grammar, not the work)."""
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        backend: LocalBackend | None = None
        if base_url is None:
            backend = LocalBackend(BackendConfig(parallel=parallel, ctx_per_slot=4096),
                                   log_file=Path(tmp) / "llama-server.log")
            backend.start()
            stack.callback(backend.stop)
            base_url = backend.base_url
        root = base_url.removesuffix("/v1")
        proxy = stack.enter_context(RecordingProxy(root))
        with SlotPoller(root) as poller:
            started = time.time()
            direct = asyncio.run(_saturating_load(base_url, parallel, seconds, 256))
            direct_busy = poller.occupancy(started, time.time())
            before = server_metrics(root)
            # Through the proxy the run sees a --base-url server; on the embedded one it would stop
            # looping replies and send earlier replies as tokens (`SynthConfig.with_base_url`), so it
            # does here too (SYNTH_LLM__TOKEN_PROMPTS=false in the environment measures without).
            embedded = {"SYNTH_LLM__LOOP_STOP_CHARS": str(EMBEDDED_LOOP_STOP_CHARS),
                        "SYNTH_LLM__TOKEN_PROMPTS": os.environ.get("SYNTH_LLM__TOKEN_PROMPTS", "true")
                        } if backend is not None else {}
            with CpuAccount(backend) as cpu:
                summary, wall, _ = run_pipeline(proxy.base_url, Path(tmp), episodes,
                                                *(() if use_ray else ("--no-ray",)), in_flight=in_flight,
                                                env_extra=embedded)
            after = server_metrics(root)
        print(f"(a) direct free-text load, {parallel} in flight: {direct:,.1f} completion tokens/s, "
              f"slots busy {direct_busy:.0%}")
        db = Path(tmp) / f"bench-{episodes}.duckdb"
        if keep_db is not None:
            shutil.copyfile(db, keep_db)
        con = duckdb.connect(str(db), read_only=True)
        try:
            # The rollout phase: from the first to the last call of a rollout role (tool and task
            # synthesis before it runs few requests at a time and is not what is measured).
            first, last, rollout_tokens = con.execute(
                "SELECT min(epoch(created_at) - latency_s), max(epoch(created_at)), sum(completion_tokens) "
                "FROM llm_calls WHERE role IN ('user', 'agent', 'environment', 'judge') AND NOT cache_hit"
            ).fetchone()
            # Every role's tokens decoded within the phase: agent and task synthesis for later
            # episodes shares the slots with the rollouts, and is work the run needs as much.
            (tokens,) = con.execute(
                "SELECT sum(completion_tokens) FROM llm_calls WHERE NOT cache_hit "
                "AND epoch(created_at) BETWEEN ? AND ?", [first, last]).fetchone() if first is not None else (0,)
            requests = [(float(a), float(b)) for a, b in con.execute(
                "SELECT epoch(created_at) - latency_s, epoch(created_at) FROM llm_calls WHERE NOT cache_hit"
            ).fetchall()]
            roles = con.execute(
                "SELECT role, count(*), sum(prompt_tokens), sum(cached_prompt_tokens), sum(completion_tokens), "
                "sum(latency_s) FROM llm_calls WHERE NOT cache_hit GROUP BY 1 ORDER BY 1").fetchall()
            # Synthesis that no episode used: agents (and their tasks) made after the run had enough.
            made, used, tasks, run_tasks = con.execute(
                "SELECT (SELECT count(*) FROM agents), (SELECT count(DISTINCT agent_id) FROM trajectories), "
                "(SELECT count(*) FROM tasks WHERE status = 'accepted'), "
                "(SELECT count(DISTINCT task_id) FROM trajectories)").fetchone()
        finally:
            con.close()
        span = (last - first) if first is not None else 0.0
        rate = (tokens or 0) / span if span else 0.0
        # llm_calls.created_at is naive UTC, the poller's clock unix time: both are epoch seconds.
        busy = poller.occupancy(first, last) if first is not None else 0.0
        predicted = after.get("llamacpp:tokens_predicted_total", 0) - before.get("llamacpp:tokens_predicted_total", 0)
        prompt = after.get("llamacpp:prompt_tokens_total", 0) - before.get("llamacpp:prompt_tokens_total", 0)
        rollout_rate = (rollout_tokens or 0) / span if span else 0.0
        print(f"(a) pipeline ({'Ray actors' if use_ray else 'in-process, --no-ray'}), "
              f"{in_flight or 'auto (2 per slot)'} episodes in flight, "
              f"{summary['judged']} judged ({summary['accepted']} accepted under the strict policy) in {wall:.0f} s; "
              f"rollout phase {span:.0f} s: slots busy "
              f"{busy:.0%}, {rate:,.1f} completion tokens/s of every role = {rate / direct:.2f} of the direct load "
              f"({rollout_rate:,.1f} of them by the rollout roles)")
        if first is not None:
            starved, lost = poller.idle_split(first, last, requests)
            fifths = [poller.occupancy(first + k * span / 5, first + (k + 1) * span / 5) for k in range(5)]
            print(f"(a) idle slot-time over the rollout phase: {starved:.0%} starved (fewer requests out than slots), "
                  f"{lost:.0%} lost (enough requests out, a slot idle); slots busy by fifth of the phase: "
                  + ", ".join(f"{f:.0%}" for f in fifths))
        print(f"(a) synthesis: {made} agents made, {used} with an episode run; {tasks} tasks accepted, "
              f"{run_tasks} run")
        print(f"(a) CPU over the run ({os.cpu_count()} cores, {wall:.0f} s): "
              + ", ".join(f"{name} {sec:,.1f} s ({sec / wall:.2f} cores)" for name, sec in cpu.seconds.items())
              + "; the run's own share is taken from a server on the same cores")
        print(f"(a) server counters over the whole run: {predicted:,.0f} tokens predicted, {prompt:,.0f} prompt "
              f"tokens computed ({predicted / wall:,.1f} predicted tokens/s)")
        print("(a) per role: calls, prompt tokens, prefix-cache reuse, completion tokens, completion tokens/s of "
              "model time")
        for role, calls, p_tok, cached, c_tok, latency in roles:
            reuse = (cached or 0) / p_tok if p_tok else 0.0
            per_s = c_tok / latency if latency else 0.0
            print(f"    {role:<12} {calls:>5} {p_tok:>9,} {reuse:>6.0%} {c_tok:>9,} {per_s:>8.1f}")
        total_p = sum(r[2] or 0 for r in roles if r[0] != "generator")
        total_c = sum(r[3] or 0 for r in roles if r[0] != "generator")
        print(f"(a) prefix-cache reuse over the rollout roles: {total_c / total_p if total_p else 0:.0%} of prompt "
              "tokens")
        _print_openings(proxy.records)
        _print_cut_off(proxy.records)
        if record is not None:
            record.write_text("".join(json.dumps(r) + "\n" for r in proxy.records))
        if not replay:
            return
        if backend is not None:
            # The run's own requests in the order it sent them, on a restarted server: its slots and
            # host-memory prompt cache (`--cache-ram`) then hold nothing from the run, so every
            # prefix is computed as often as the run had to compute it (the per-role replays below
            # find the run's prompts cached and say what the grammar costs, not what the work does).
            backend.restart()
            cold_tokens, cold_s = asyncio.run(_replay(base_url, [_as_run(r) for r in proxy.records], parallel))
            cold = cold_tokens / cold_s
            print(f"(a) the run's requests in its order on a restarted server (nothing cached), {parallel} in flight: "
                  f"{cold:,.1f} completion tokens/s ({cold / direct:.2f} of the direct load); the pipeline's "
                  f"rollout phase reached {rate / cold:.2f} of it")
        print(f"(a) same work replayed ({len(proxy.records)} recorded requests, {parallel} in flight), completion "
              "tokens/s per role: as the run sent them | the same prompts and reply lengths without a grammar")
        pipeline_rates = {role: (c_tok / span if span else 0.0) for role, _, _, _, c_tok, _ in roles}
        same_tokens, same_s = 0, 0.0
        for role in sorted({r["role"] for r in proxy.records}):
            records = [r for r in proxy.records if r["role"] == role]
            sent_tokens, sent_s = asyncio.run(_replay(base_url, [_as_run(r) for r in records], parallel))
            free_tokens, free_s = asyncio.run(_replay(base_url, [_free_text(r) for r in records], parallel))
            sent, free = sent_tokens / sent_s, free_tokens / free_s
            same_tokens, same_s = same_tokens + sent_tokens, same_s + sent_s
            print(f"    {role:<12} {len(records):>5} requests: {sent:>7.1f} | {free:>7.1f} tokens/s "
                  f"(grammar costs {1 - sent / free:.0%} of the free rate; the run's own rate over the rollout "
                  f"phase {pipeline_rates.get(role, 0.0):.1f}; {free / direct:.2f} of the direct load without "
                  "a grammar)")
        same = same_tokens / same_s if same_s else 0.0
        print(f"(a) the run's own requests replayed at full concurrency: {same:,.1f} completion tokens/s "
              f"({same / direct:.2f} of the direct load); the pipeline's rollout phase reached {rate / same:.2f} of it")


def bench_scale(trajectories: int, tools_per_domain: int, ray: bool, categories: str | None) -> None:
    """Kimi's scale with the instant fake backend: every domain of the taxonomy (or of
    `categories`), `tools_per_domain` synthetic tools each, the tool stage streamed in waves."""
    url, server = start_fake()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "scale.duckdb"
            select = ["--domains", "", "--categories", categories] if categories else ["--domains", "all"]
            code = ("import resource,subprocess,sys;p=subprocess.run(sys.argv[1:]);"
                    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);sys.exit(p.returncode)")
            env = {**os.environ, "SYNTH_CACHE__ENABLED": "false", "SYNTH_RUN__TOOLS_PER_DOMAIN": str(tools_per_domain),
                   "SYNTH_RUN__MAX_AGENTS": "100000"}
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", code, sys.executable, "-m", "synth", "run", *select,
                 "--trajectories", str(trajectories), "--db", str(db), "--base-url", url, "-q",
                 *(() if ray else ("--no-ray",))],
                capture_output=True, text=True, env=env, cwd=tmp)
            wall = time.perf_counter() - started
            if proc.returncode not in (0, 1):
                sys.exit(f"scale run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            peak_mib = int(proc.stdout.strip().splitlines()[-1]) / 1024
            con = duckdb.connect(str(db), read_only=True)
            try:
                tools, names, domains, first_tool, last_tool = con.execute(
                    "SELECT count(DISTINCT id), count(DISTINCT name), count(DISTINCT domain), min(created_at), "
                    "max(created_at) FROM tools WHERE status = 'accepted' AND source = 'synthetic'").fetchone()
                rejected = con.execute("SELECT count(*) FROM tools WHERE status = 'rejected'").fetchone()[0]
                first_rollout, judged = con.execute("SELECT min(created_at), count(*) FROM trajectories").fetchone()
            finally:
                con.close()
    finally:
        server.terminate()
    stage_s = (last_tool - first_tool).total_seconds()
    lead = (last_tool - first_rollout).total_seconds() if first_rollout else float("nan")
    print(f"(d) scale, instant fake backend, {'ray actors' if ray else 'in-process'}: {domains} domains, "
          f"{tools:,} distinct accepted synthetic tools ({names:,} distinct names, {rejected:,} rejected), "
          f"{judged} trajectories judged; wall {wall:.0f} s, tool stage {stage_s:.0f} s "
          f"({tools / max(stage_s, 1e-9):,.0f} tools/s); first rollout stored {lead:.0f} s before the tool stage "
          f"ended; peak RSS {peak_mib:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--episodes", type=int, default=300)
    t.add_argument("--ray", action="store_true", help="through Ray actors instead of in-process")
    m = sub.add_parser("memory")
    m.add_argument("--small", type=int, default=200)
    m.add_argument("--large", type=int, default=2000)
    m.add_argument("--larger", type=int, help="a third, larger run: is the growth bounded?")
    s = sub.add_parser("server")
    s.add_argument("--base-url")
    s.add_argument("--episodes", type=int, default=16)
    s.add_argument("--parallel", type=int, default=4)
    s.add_argument("--seconds", type=float, default=60)
    s.add_argument("--in-flight", type=int, help="episodes in flight (default: the run sizes it, 2 per slot)")
    s.add_argument("--no-replay", action="store_true", help="skip the same-work replay (as long as the run)")
    s.add_argument("--keep-db", type=Path, help="copy the run's dataset here, to read afterwards")
    s.add_argument("--no-ray", action="store_true", help="the run's stages in its own process, without Ray")
    s.add_argument("--record", type=Path, help="write the run's recorded requests here (JSON lines)")
    k = sub.add_parser("scale")
    k.add_argument("--trajectories", type=int, default=400)
    k.add_argument("--tools-per-domain", type=int, default=60)
    k.add_argument("--categories", help="only these categories (default: every domain)")
    k.add_argument("--ray", action="store_true", help="through Ray actors instead of in-process")
    args = parser.parse_args()
    load_config(None, environ={})  # fail early on a broken ./synth.toml
    if args.which == "throughput":
        bench_throughput(args.episodes, args.ray)
    elif args.which == "memory":
        bench_memory(args.small, args.large, args.larger)
    elif args.which == "scale":
        bench_scale(args.trajectories, args.tools_per_domain, args.ray, args.categories)
    else:
        bench_server(args.base_url, args.episodes, args.parallel, args.seconds, args.in_flight,
                     replay=not args.no_replay, keep_db=args.keep_db, use_ray=not args.no_ray,
                     record=args.record)


if __name__ == "__main__":
    main()
