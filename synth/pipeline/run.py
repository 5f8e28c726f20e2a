"""`execute_run`: what `synth run` and `pipelines/synthesize.py` both call.

It resolves the domains, gets model endpoints (starting the embedded backend only when a role
has none, and restarting it on the same port if it dies mid-run), starts or joins Ray (a local
one by default, no dashboard; an existing cluster with `ray_address`; none with `use_ray=False`),
and drives the pipeline with a live progress display.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb
from rich.console import Console

from synth.config import Role, SynthConfig
from synth.judges.policy import judge_name, vote_of
from synth.llm.local import LocalBackend, shared_cores_warning
from synth.llm.session import agent_tool_mode, episodes_in_flight, model_endpoints
from synth.pipeline.driver import PipelineDriver, RunSummary
from synth.pipeline.progress import Progress, ProgressDisplay
from synth.pipeline.worker import LocalWorkers, RayWorkers
from synth.stats import run_rejections
from synth.store import Dataset, latest_calibration


def resolve_domains(names: Sequence[str], categories: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Any]:
    from synth.domains import load_taxonomy

    if not names and not categories:
        raise ValueError("no domains given: pass --domains a,b (or all) or --categories c,d "
                         "(see `synth domains list`)")
    return load_taxonomy().select(names, categories, exclude)


async def _supervise(backend: LocalBackend, console: Console, every_s: float = 2.0) -> None:
    """Restart the embedded backend on its port if it exits; in-flight calls retry meanwhile."""
    while True:
        await asyncio.sleep(every_s)
        if not backend.is_running():
            console.print("[yellow]embedded backend exited; restarting it[/]")
            with contextlib.suppress(Exception):
                await asyncio.to_thread(backend.restart)


_LOOPBACK = ("localhost", "::1", "0.0.0.0")


def loopback_problem(base_urls: list[str], driver_ip: str, node_ips: list[str]) -> str | None:
    """Why the run cannot go on this cluster, or None: a model server on this machine's loopback
    (the embedded backend's `127.0.0.1`, or a `--base-url http://localhost:...`) is unreachable from
    Ray workers on other machines, whose every call would fail (or, worse, reach a different
    server on their own loopback)."""
    remote = sorted({ip for ip in node_ips if ip != driver_ip and not ip.startswith("127.")})  # 127.x: this machine
    local = sorted({u for u in base_urls
                    if (urlparse(u).hostname or "") in _LOOPBACK or (urlparse(u).hostname or "").startswith("127.")})
    if not (remote and local):
        return None
    return (f"model server(s) {', '.join(local)} listen on this machine's loopback, which the Ray node(s) "
            f"{', '.join(remote)} on other machines cannot reach: pass --base-url with an address every node "
            "can reach (a server started with a non-loopback host), or run without --ray-address")


def _check_reachable(cfg: SynthConfig) -> None:
    import ray

    nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
    urls = [u for rc in cfg.roles().values() for u in rc.base_urls]
    problem = loopback_problem(urls, ray.util.get_node_ip_address(), nodes)
    if problem:
        raise ValueError(problem)


def _init_ray(address: str | None) -> bool:
    """Start or join Ray; False when this process was already connected (its caller's Ray)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 configure_logging=False)
    return True


def _stop_ray() -> None:
    """`ray.shutdown()` without its one-second wait on the autoscaler monitor.

    Ray (2.60, `Node.kill_all_processes`) stops the processes it started one at a time, each with
    SIGTERM and up to a second's wait, the GCS before the monitor. The monitor exits through Ray's
    own atexit hook (a 0.5 s sleep, then a disconnect from the GCS already gone) and outlasts the
    second, so every run waited a second for its SIGKILL (py-spy on a monitor after SIGTERM). A
    run that started its own Ray has no autoscaler worth a graceful stop, so the monitor is
    killed first. Where Ray keeps its processes is private, hence the guarded lookups: without
    them this is plain `ray.shutdown()`.
    """
    import ray

    node: Any = getattr(ray._private.worker, "_global_node", None)  # None as well where Ray moved it
    monitors = getattr(node, "all_processes", {}).get("monitor", [])
    for info in monitors:
        if info.process.poll() is None:
            info.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                info.process.wait(timeout=1.0)
    ray.shutdown()


async def _drive(cfg: SynthConfig, domains: list[Any], dataset: Dataset, backend: LocalBackend | None,
                 use_ray: bool, show_progress: bool, console: Console) -> RunSummary:
    settings = cfg.run
    # The judge model's stored calibration decides whether its verdict has a vote (stages never
    # read the store, so it is loaded here and handed to the workers).
    policy = cfg.judge_policy()
    judge_model = judge_name(policy, cfg.llm.role(Role.JUDGE).model)
    calibration = latest_calibration(dataset.path, judge_model)
    vote, why = vote_of(policy, judge_model, calibration)
    if vote != "decisive" and cfg.agents.no_tool_share > 0:
        console.print(f"note: the llm judge's vote is {vote} ({why}), so no_tool tasks (\\[agents] no_tool_share = "
                      f"{cfg.agents.no_tool_share}) are judged but never accepted; 0 spends no model time on them",
                      highlight=False)
    workers: RayWorkers | LocalWorkers
    if use_ray:
        workers = RayWorkers(cfg, settings.workers, settings.worker_concurrency, calibration)
        await workers.start()
        console.print(f"{len(workers.nodes)} worker actor(s) on {len(set(workers.nodes))} of "
                      f"{workers.cluster_nodes} Ray node(s)", highlight=False)
    else:
        workers = LocalWorkers(cfg, calibration)
    progress = Progress(target=settings.trajectories)
    driver = PipelineDriver(cfg, domains, settings.trajectories, dataset, workers, progress)
    driver.on_failure = lambda line: console.print(f"[yellow]warning:[/] {line}", highlight=False)
    supervisor = asyncio.create_task(_supervise(backend, console)) if backend is not None else None
    try:
        async with ProgressDisplay(progress, console, enabled=show_progress):
            return await driver.run()
    finally:
        if supervisor is not None:
            supervisor.cancel()
        await workers.close()


def _say_why_rejected(console: Console, db: Path, run_id: str) -> None:
    """One line on why the run's rejected trajectories were rejected: a run that ends "accepted: 0"
    (the embedded 135M model's usual result) should say why without a second command."""
    try:
        judged, rejected, reasons = run_rejections(db, run_id)
    except (duckdb.Error, OSError) as exc:  # everything is stored by now: a summary line fails no run
        console.print(f"[yellow]warning:[/] could not count the run's rejections in {db}: {exc}", highlight=False)
        return
    if rejected:
        console.print(f"rejected {rejected} of {judged} judged trajectories; most often: "
                      + ", ".join(f"{reason} {n}" for reason, n in reasons)
                      + f" (`synth stats --db {db}` says more)", highlight=False, soft_wrap=True)


def execute_run(cfg: SynthConfig, *, ray_address: str | None = None, use_ray: bool = True,
                show_progress: bool = True, console: Console | None = None,
                on_stored: Callable[[], None] | None = None) -> RunSummary:
    """Run the pipeline to its end and return its summary. `on_stored` is called once the run
    has stopped and everything it made is in the dataset, before Ray and the embedded backend
    stop (work that reads the dataset, like `synth run`'s dedup, overlaps their 1-2 s shutdown);
    not when the run raises."""
    console = console or Console(stderr=True)

    def stored(summary: RunSummary) -> RunSummary:
        dataset.flush()
        if on_stored is not None:
            on_stored()
        _say_why_rejected(console, dataset.path, summary.run_id)
        return summary

    domains = resolve_domains(cfg.run.domains, cfg.run.categories, cfg.run.exclude)
    dataset = Dataset(cfg.run.db, flush_every=None)  # the driver flushes every second, off its loop
    try:
        with model_endpoints(cfg) as (live, backend):
            crowded = shared_cores_warning(backend) if backend is not None else None
            if crowded:
                console.print(f"[yellow]warning:[/] {crowded}", highlight=False)
            in_flight, why = episodes_in_flight(live)
            mode, mode_why = agent_tool_mode(live)
            live = live.model_copy(update={"run": live.run.model_copy(update={"in_flight": in_flight})})
            if mode_why != "configured":  # "auto", resolved once here for every worker
                live = live.model_copy(update={"rollout": live.rollout.model_copy(update={"tool_mode": mode})})
            console.print(f"episodes in flight: {in_flight} ({why}); agent tool calls: {mode} ({mode_why})",
                          highlight=False)
            if not use_ray:
                return stored(asyncio.run(_drive(live, domains, dataset, backend, use_ray, show_progress, console)))
            # stdout carries only the run's JSON summary: Ray prints its raylet messages ("Task ...
            # failed, will be retried") on sys.stdout, also while it shuts down, so the Ray part of
            # the run, shutdown included, writes stdout to stderr.
            with contextlib.redirect_stdout(sys.stderr):
                started_ray = _init_ray(ray_address)
                try:
                    _check_reachable(live)
                    return stored(asyncio.run(_drive(live, domains, dataset, backend, use_ray, show_progress,
                                                     console)))
                finally:
                    if started_ray:
                        _stop_ray()
    finally:
        dataset.flush()
