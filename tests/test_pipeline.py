"""`synth run`: the streaming pipeline end to end, resume, Ctrl-C, Ray job submission.

The fast tier drives the pipeline in-process (`--no-ray`) against the scripted fake server,
whose default replies satisfy each request's JSON schema. The Ray tier runs real actors and a
real `ray start --head` + `ray job submit`. The real-model run is in test_pipeline_backend.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psutil
import pytest
from rich.console import Console

from synth.config import load_config
from synth.llm.local import free_port
from synth.pipeline.run import execute_run, loopback_problem
from tests.conftest import broken_task_drafts

REPO = Path(__file__).resolve().parents[1]
DOMAINS = "weather,order_management"


def run_config(base_url: str, tmp_path: Path, trajectories: int, **run: object) -> object:
    return load_config(None, {
        "llm": {"base_urls": [base_url], "max_retries": 20},
        "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
        "run": {"domains": DOMAINS, "db": str(tmp_path / "synth.duckdb"), "trajectories": trajectories,
                "tools_per_domain": 4, **run},
    }, environ={})


def counts(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
               for t in ("tools", "agents", "tasks", "trajectories", "judgments", "llm_calls")}
        for t in ("trajectories", "judgments"):
            dup = con.execute(f"SELECT count(*) - count(DISTINCT id) FROM {t}").fetchall()[0][0]
            assert dup == 0, f"duplicate ids in {t}"
        return out
    finally:
        con.close()


def test_in_process_run_reaches_target_and_is_idempotent(fake_server, tmp_path: Path):
    server = fake_server(rate_429=0.05, seed=3)
    cfg = run_config(server.base_url, tmp_path, 6)
    said = io.StringIO()
    console = Console(file=said, width=400)
    summary = execute_run(cfg, use_ray=False, show_progress=False, console=console)  # type: ignore[arg-type]
    assert summary.status == "finished"
    # no calibration stored: the run says that its no_tool tasks cannot be accepted
    assert "no_tool tasks ([agents] no_tool_share = 0.15) are judged but never accepted" in said.getvalue()
    assert summary.judged == 6
    # and it ends saying why it rejected what it rejected, counted from the stored judgments
    rejected = 6 - summary.accepted
    assert rejected and f"rejected {rejected} of 6 judged trajectories; most often: " in said.getvalue()
    first = counts(tmp_path / "synth.duckdb")
    assert first["trajectories"] == 6 and first["judgments"] == 6
    assert first["tools"] >= 4 and first["agents"] >= 1 and first["llm_calls"] > 0
    con = duckdb.connect(str(tmp_path / "synth.duckdb"), read_only=True)
    usage = json.loads(con.execute("SELECT usage FROM runs").fetchall()[0][0])
    con.close()
    assert usage["agent"]["calls"] > 0 and usage["generator"]["completion_tokens"] > 0

    requests_before = server.requests
    again = execute_run(cfg, use_ray=False, show_progress=False)  # type: ignore[arg-type]
    assert again.judged == 6 and again.new_trajectories == 0
    assert counts(tmp_path / "synth.duckdb")["trajectories"] == 6
    assert server.requests == requests_before  # nothing redone, not even a cached replay


def test_raising_the_target_continues_the_same_run(fake_server, tmp_path: Path):
    server = fake_server()
    execute_run(run_config(server.base_url, tmp_path, 3), use_ray=False, show_progress=False)  # type: ignore[arg-type]
    more = execute_run(run_config(server.base_url, tmp_path, 5), use_ray=False, show_progress=False)  # type: ignore[arg-type]
    assert more.judged == 5 and more.new_trajectories == 2
    con = duckdb.connect(str(tmp_path / "synth.duckdb"), read_only=True)
    assert con.execute("SELECT count(DISTINCT run_id) FROM trajectories").fetchall()[0][0] == 1
    con.close()


def test_run_identity_ignores_throughput_knobs_but_not_content_settings(tmp_path: Path):
    """Changing concurrency, endpoints or the target resumes the same run; a new seed or model is a
    new run."""
    from synth.pipeline.driver import run_identity

    def ident(**over: object) -> str:
        run = {"trajectories": 5, "in_flight": 8, "workers": 2, "seed": 0, **over.pop("run", {})}  # type: ignore[dict-item]
        cfg = load_config(None, {"run": run, "llm": {"base_urls": ["http://a:1/v1"], **over}}, environ={})
        return run_identity(cfg, ["weather"])

    base = ident()
    assert ident(run={"trajectories": 50, "in_flight": 32, "workers": 4}) == base
    assert ident(base_urls=["http://b:2/v1"], max_concurrency=64, timeout_s=5.0, max_retries=1) == base
    assert ident(run={"seed": 1}) != base
    assert ident(model="other-model") != base


def test_unknown_domain_is_a_clear_error(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "run", "--domains", "wether", "--db", str(tmp_path / "x.duckdb"),
         "--base-url", "http://127.0.0.1:9/v1", "--no-ray", "-q"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "wether" in proc.stderr and "weather" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "run", "--categories", "financ", "--db", str(tmp_path / "x.duckdb"),
         "--base-url", "http://127.0.0.1:9/v1", "--no-ray", "-q"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2 and "unknown category 'financ'; did you mean: finance" in proc.stderr


def _synth_run(base_url: str, tmp_path: Path, n: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "synth", "run", "--domains", DOMAINS, "--trajectories", str(n),
         "--db", str(tmp_path / "synth.duckdb"), "--base-url", base_url, "-q", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "SYNTH_CACHE__DIR": str(tmp_path / "cache"), "SYNTH_RUN__TOOLS_PER_DOMAIN": "4"},
    )


def _accepted_so_far(db: Path) -> int:
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error:
        return 0
    try:
        return con.execute("SELECT count(*) FROM judgments").fetchall()[0][0]
    except duckdb.Error:
        return 0
    finally:
        con.close()


# Trajectories of the killed run: five waves of 8 in flight, so the kill lands mid-run.
N_KILLED = 40


@pytest.mark.slow
def test_sigkill_driver_then_rerun_resumes_without_duplicates(fake_server, tmp_path: Path):
    """Kill -9 the driver after the first judged trajectory; the same command finishes the run."""
    from synth.llm.fake_server import stall

    # Slow replies so the run is still going when we kill it, and several waves of episodes: the
    # driver flushes once a second, and 12 episodes at 8 in flight were judged in two waves less than
    # a second apart, so the first flush the poll could see already held all 12 (CI, 2026-12-07).
    server = fake_server(script=[stall(0.1)] * 6000)  # every reply slow: still running at the kill
    proc = _synth_run(server.base_url, tmp_path, N_KILLED, "--no-ray")
    db = tmp_path / "synth.duckdb"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _accepted_so_far(db) < 1 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    partial = counts(db)
    assert 1 <= partial["judgments"] < N_KILLED

    again = _synth_run(server.base_url, tmp_path, N_KILLED, "--no-ray")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["judged"] == N_KILLED
    final = counts(db)
    assert final["trajectories"] == N_KILLED and final["judgments"] == N_KILLED


@pytest.mark.slow
def test_sigint_stops_cleanly_with_work_stored(fake_server, tmp_path: Path):
    from synth.llm.fake_server import stall

    server = fake_server(script=[stall(0.1)] * 3000)  # every reply slow: still running at the kill
    proc = _synth_run(server.base_url, tmp_path, 50, "--no-ray")
    db = tmp_path / "synth.duckdb"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _accepted_so_far(db) < 1 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode in (1, 130), err[-2000:]
    assert "Traceback" not in err
    con = duckdb.connect(str(db), read_only=True)
    status = con.execute("SELECT status FROM runs").fetchall()[0][0]
    judged = con.execute("SELECT count(*) FROM judgments").fetchall()[0][0]
    con.close()
    assert status == "interrupted"
    assert judged >= 1


@pytest.mark.slow
def test_ray_actors_run_the_pipeline(fake_server, tmp_path: Path):
    server = fake_server()
    proc = _synth_run(server.base_url, tmp_path, 4)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["judged"] == 4
    assert counts(tmp_path / "synth.duckdb")["judgments"] == 4


@pytest.mark.slow
def test_stopping_ray_leaves_none_of_its_processes(tmp_path: Path):
    """`_stop_ray` SIGKILLs the autoscaler monitor (which outlasts Ray's graceful second) before
    `ray.shutdown()` stops the rest: the monitor is gone by the time Ray's shutdown starts, and
    afterwards no process Ray started is left. In a child process, so this test's Ray does not
    leak into others."""
    code = (
        "import json, ray\n"
        "from synth.pipeline.run import _init_ray, _stop_ray\n"
        "_init_ray(None)\n"
        "node = ray._private.worker._global_node\n"
        "procs = {kind: [i.process for i in infos] for kind, infos in node.all_processes.items()}\n"
        "seen = {}\n"
        "real_shutdown = ray.shutdown\n"
        "def spy(**kwargs):\n"
        "    seen['monitor'] = [p.poll() for p in procs['monitor']]\n"
        "    real_shutdown(**kwargs)\n"
        "ray.shutdown = spy\n"
        "_stop_ray()\n"
        "print(json.dumps({'initialized': ray.is_initialized(), 'monitor_at_shutdown': seen.get('monitor'),\n"
        "                  'exits': {k: [p.poll() for p in ps] for k, ps in procs.items()}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["initialized"] is False
    assert report["monitor_at_shutdown"] == [-signal.SIGKILL]
    assert report["exits"]["monitor"] == [-signal.SIGKILL]
    assert "raylet" in report["exits"] and "gcs_server" in report["exits"]
    assert all(code is not None for codes in report["exits"].values() for code in codes), report


@pytest.mark.slow
def test_a_worker_actor_killed_mid_run_is_restarted_and_nothing_is_lost_or_duplicated(fake_server, tmp_path: Path):
    """SIGKILL one `StageWorker` actor process while episodes are in flight: Ray restarts the actor
    and retries its calls (stage calls are idempotent: content ids, response cache), so the run
    still ends with exactly the target judged and no id stored twice."""
    from synth.llm.fake_server import stall

    server = fake_server(script=[stall(0.05)] * 3000)  # slow replies: the run is mid-way at the kill
    proc = _synth_run(server.base_url, tmp_path, 10)
    driver = psutil.Process(proc.pid)

    def actors() -> list[psutil.Process]:
        found = []
        for child in driver.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "StageWorker" in " ".join(child.cmdline()):
                    found.append(child)
        return found

    deadline = time.monotonic() + 180
    while server.served < 40 or not actors():  # tools made, episodes under way
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run did not get under way"
        time.sleep(0.2)
    victim = actors()[0]
    victim.kill()
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out)["judged"] == 10  # stdout is the summary alone: Ray's retry notices go to stderr
    stored = counts(tmp_path / "synth.duckdb")  # asserts no duplicate ids
    assert stored["trajectories"] == 10 and stored["judgments"] == 10
    assert not victim.is_running()


@dataclass
class RayHead:
    dashboard: str  # for `ray job submit --address`
    gcs: str  # for `ray start --address` and `synth run --ray-address`
    env: dict[str, str]
    temp_dir: Path


@pytest.fixture
def ray_head(tmp_path: Path):
    """A real local Ray head with token authentication (the token in a private file).

    Started with `--block` in its own session and stopped by killing that session and the
    processes that name its private temp dir: `ray stop --force` would also stop every other
    Ray cluster on the machine (a CI run going on beside this one, a user's own cluster).
    """
    if shutil.which("ray") is None:
        pytest.skip("ray CLI not installed")
    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(32))
    # Ray's socket paths live under --temp-dir and must stay under the 107-byte Unix limit.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    # The job's `python` is the first on the head's PATH: make it this interpreter's.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    port, dash = free_port(), free_port()
    log = (tmp_path / "ray-head.log").open("w")
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dash}", "--num-cpus=2",
         "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_started(head, tmp_path / "ray-head.log", "ray head")
        yield RayHead(f"http://127.0.0.1:{dash}", f"127.0.0.1:{port}", env, temp_dir)
    finally:
        _stop_own_ray_head(head, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_started(proc: subprocess.Popen[bytes], log: Path, what: str, timeout_s: float = 120) -> None:
    """Wait until `ray start --block` writes that its runtime started; fail with its log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what} did not start within {timeout_s:.0f} s"
        time.sleep(0.5)


def _stop_own_ray_head(head: subprocess.Popen[bytes], temp_dir: Path) -> None:
    """SIGTERM the `ray start --block` session (it stops what it started), then SIGKILL whatever
    is left that belongs to this head: its process group, and processes naming its temp dir."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(10)
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(temp_dir) in arg for arg in proc.info.get("cmdline") or []):
                proc.kill()


@pytest.mark.slow
def test_ray_job_submit_runs_the_pipeline(ray_head, fake_server, tmp_path: Path):
    address, env = ray_head.dashboard, ray_head.env
    server = fake_server()
    db = tmp_path / "job.duckdb"
    # "Ray runtime started" comes before the head's job agent has registered: until it has, Ray
    # refuses the submission (HTTP 500 "No available agent to submit job, please try again later",
    # seen once in a clean-clone CI), and no job exists, so submitting again is what Ray asks.
    deadline = time.monotonic() + 60
    while True:
        proc = subprocess.run(
            ["ray", "job", "submit", "--address", address, "--working-dir", str(REPO),
             "--runtime-env-json", json.dumps({"env_vars": {
                 "SYNTH_CACHE__DIR": str(tmp_path / "cache"), "SYNTH_RUN__TOOLS_PER_DOMAIN": "4"}}), "--",
             "python", "pipelines/synthesize.py", "--config", "synth.toml", "--domains", DOMAINS,
             "--trajectories", "3", "--db", str(db), "--base-url", server.base_url, "-q"],
            env=env, capture_output=True, text=True, timeout=600,
        )
        if "No available agent to submit job" not in proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert counts(db)["judgments"] == 3


def test_a_generator_that_never_yields_a_valid_task_stops_the_run_with_a_reason(fake_server, tmp_path: Path):
    """Every task draft the fake model writes is not JSON, so every task is rejected:
    the run stops after MAX_BARREN_AGENTS agents and says why, instead of looping through every
    toolset the repository could form."""
    from synth.config import DEFAULT_IN_FLIGHT, agent_syntheses_at_once
    from synth.pipeline.driver import MAX_BARREN_AGENTS

    server = fake_server()
    server.responder = broken_task_drafts(server)
    cfg = run_config(server.base_url, tmp_path, 3)
    out = io.StringIO()
    summary = execute_run(cfg, use_ray=False, show_progress=False,  # type: ignore[arg-type]
                          console=Console(file=out, width=400))
    assert summary.status == "incomplete" and summary.judged == 0
    assert f"{MAX_BARREN_AGENTS} agents in a row yielded no usable task" in out.getvalue()
    con = duckdb.connect(str(tmp_path / "synth.duckdb"), read_only=True)
    rejected = con.execute("SELECT count(*) FROM tasks WHERE status = 'rejected'").fetchall()[0][0]
    agents = con.execute("SELECT count(*) FROM agents").fetchall()[0][0]
    con.close()
    # the other syntheses already in flight when it trips are stored too
    assert rejected > 0 and agents <= MAX_BARREN_AGENTS + agent_syntheses_at_once(cfg.run, DEFAULT_IN_FLIGHT) - 1


def test_a_loopback_server_with_ray_nodes_on_other_machines_is_refused():
    """Workers on other machines cannot reach this machine's 127.0.0.1: the run says so instead of
    failing every call; nodes on this machine (one address) are fine."""
    local = ["http://127.0.0.1:8080/v1"]
    assert loopback_problem(local, "10.0.0.1", ["10.0.0.1", "10.0.0.1"]) is None
    assert loopback_problem(local, "10.0.0.1", ["127.0.0.1"]) is None  # a node that names this machine by loopback
    assert loopback_problem(["http://10.0.0.1:8080/v1"], "10.0.0.1", ["10.0.0.1", "10.0.0.2"]) is None
    problem = loopback_problem(local, "10.0.0.1", ["10.0.0.1", "10.0.0.2"])
    assert problem is not None and "10.0.0.2" in problem and "127.0.0.1:8080" in problem and "--base-url" in problem
    assert loopback_problem(["http://localhost:9/v1"], "10.0.0.1", ["10.0.0.3"]) is not None


@pytest.mark.slow
def test_workers_run_on_two_ray_nodes(ray_head, fake_server, tmp_path: Path):
    """A second Ray node on this machine (`ray start --address`, its own resources) stands in for a
    cluster: the worker actors spread over both nodes, reach the loopback model server (one
    machine), and the run completes with every trajectory judged once."""
    log = (tmp_path / "ray-node2.log").open("w")
    node = subprocess.Popen(
        ["ray", "start", f"--address={ray_head.gcs}", "--block", "--num-cpus=1", "--resources", '{"second": 1}',
         "--disable-usage-stats"],
        env=ray_head.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_started(node, tmp_path / "ray-node2.log", "the second ray node")
        deadline = time.monotonic() + 120
        while True:  # the cluster counts both nodes as active before the run asks it where to place actors
            status = subprocess.run(["ray", "status", f"--address={ray_head.gcs}"], env=ray_head.env,
                                    capture_output=True, text=True, timeout=60).stdout
            # both nodes active, and their CPUs (2 + 1) in the cluster's resource view, which is what
            # the actor scheduler reads: a node it does not see yet gets no actor
            if len(re.findall(r"^\s*1 node_", status, re.M)) >= 2 and "/3.0 CPU" in status:
                break
            assert time.monotonic() < deadline, f"the cluster does not show two active nodes:\n{status}"
            time.sleep(1)
        server = fake_server()
        proc = subprocess.run(
            [sys.executable, "-m", "synth", "run", "--domains", DOMAINS, "--trajectories", "4",
             "--db", str(tmp_path / "synth.duckdb"), "--base-url", server.base_url, "-q",
             "--ray-address", ray_head.gcs],
            capture_output=True, text=True, cwd=tmp_path, timeout=400,
            env={**{k: v for k, v in ray_head.env.items() if k != "SYNTH_CACHE__DIR"},
                 "SYNTH_RUN__TOOLS_PER_DOMAIN": "4", "SYNTH_RUN__WORKERS": "2"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "2 worker actor(s) on 2 of 2 Ray node(s)" in proc.stderr
        assert json.loads(proc.stdout.strip().splitlines()[-1])["judged"] == 4
        stored = counts(tmp_path / "synth.duckdb")
        assert stored["trajectories"] == 4 and stored["judgments"] == 4
        assert (tmp_path / "cache").is_dir()  # beside the database, an absolute path every node shares
    finally:
        _stop_own_ray_head(node, ray_head.temp_dir)
        log.close()


async def test_a_dead_actor_is_dropped_and_its_call_goes_to_another():
    """An actor that died for good (its node went away) is left out from then on, and the call it
    was given runs on a live one; with none left, the error says so."""
    from ray.exceptions import ActorDiedError

    from synth.pipeline.worker import RayWorkers

    class Method:
        def __init__(self, dead: bool, name: str) -> None:
            self.dead, self.name = dead, name

        async def remote(self, *args: object) -> str:
            if self.dead:
                raise ActorDiedError()
            return f"{self.name}{args}"

    class Actor:
        def __init__(self, dead: bool, name: str) -> None:
            self.rollout_and_judge = Method(dead, name)

    pool = RayWorkers.__new__(RayWorkers)
    pool.actors, pool.in_flight, pool.dead = [Actor(True, "a"), Actor(False, "b")], [0, 1], set()
    assert await pool.call("rollout_and_judge", 7) == "b(7,)"
    assert pool.dead == {0} and pool.in_flight == [0, 1]
    pool.actors[1] = Actor(True, "b")
    with pytest.raises(RuntimeError, match="every worker actor has died"):
        await pool.call("rollout_and_judge", 8)


def test_ray_workers_send_an_agents_episodes_to_one_actor() -> None:
    """`RayWorkers.call_for`: the episodes of one agent go to the actor that ran its last one (its
    client computed the agent's prompt opening once), unless that actor is two calls busier than
    the least busy; other calls go to the least busy. Fake actors stand in for Ray's handles."""
    import collections

    from synth.pipeline.worker import RayWorkers

    class _Method:
        def __init__(self, log: list[int], index: int) -> None:
            self.log, self.index = log, index

        def remote(self, *args: Any) -> Any:
            self.log.append(self.index)
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            fut.set_result(self.index)
            return fut

    class _Actor:
        def __init__(self, log: list[int], index: int) -> None:
            self.work = _Method(log, index)

    log: list[int] = []
    pool = object.__new__(RayWorkers)
    pool.actors = [_Actor(log, i) for i in range(3)]
    pool.in_flight, pool.dead, pool.homes = [0, 0, 0], set(), collections.OrderedDict()

    async def go() -> None:
        await pool.call_for("agent-a", "work")
        home = log[-1]
        for _ in range(4):
            await pool.call_for("agent-a", "work")
        assert log[-4:] == [home] * 4
        pool.in_flight[home] = 2  # two busier than the others: the agent moves
        await pool.call_for("agent-a", "work")
        assert log[-1] != home and pool.homes["agent-a"] == log[-1]
        pool.dead.add(log[-1])
        await pool.call_for("agent-a", "work")
        assert log[-1] not in pool.dead

    asyncio.run(go())


def test_progress_lines_in_a_log_are_never_wrapped():
    """A run whose stderr is a file (CI, `ray job submit` logs) prints one progress line per
    report, whole, though rich assumes 80 columns there."""
    from synth.pipeline.progress import Progress, ProgressDisplay

    async def report() -> str:
        log = io.StringIO()
        progress = Progress(target=10)
        async with ProgressDisplay(progress, Console(file=log, width=80), interval_s=0.01):
            await asyncio.sleep(0.05)
        return log.getvalue()

    lines = asyncio.run(report()).splitlines()
    assert lines and all(line.startswith("[") and "judgments 0/0/0" in line for line in lines), lines


def test_a_rejection_summary_that_cannot_be_read_fails_no_run(tmp_path: Path):
    """The closing "rejected N of M" line reads the dataset once everything is stored; if that read
    fails (a damaged file, a lock held too long) the run says so and still ends as it would."""
    from synth.pipeline.run import _say_why_rejected

    damaged = tmp_path / "damaged.duckdb"
    damaged.write_bytes(b"not a duckdb file" * 100)
    said = io.StringIO()
    _say_why_rejected(Console(file=said, width=400), damaged, "run_x")
    assert "could not count the run's rejections" in said.getvalue()
