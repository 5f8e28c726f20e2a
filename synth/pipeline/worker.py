"""`StageWorker`: hosts the stage functions and one model client, in-process or as a Ray actor.

Its methods are the pipeline's stage calls, each a stage module's function (`synth.tools`,
`synth.agents`, `synth.rollout`, `synth.judges`, which know nothing of runs, Ray or DuckDB) given
the run's settings. Every seed comes from the caller (derived from content), so a re-run sends
identical requests and, with the response cache on, replays finished work at no model cost.

The same class serves both: `LocalWorkers` calls it directly on the driver's event loop (tests,
benchmarks, `--no-ray`), `RayWorkers` wraps it in `ray.remote` as an async actor, so each actor
runs many items concurrently on its own event loop and a few actors keep a backend's parallel
slots full. Every method takes and returns pydantic models (Ray pickles them) plus the model
calls it made (`CallRecord`s), which the driver writes to `llm_calls`: workers never touch DuckDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from synth.config import Role, SynthConfig
from synth.llm import LLMClient, UsageLog
from synth.llm.usage import CallRecord
from synth.models import Agent, Calibration, Judgment, Task, ToolSpec, Trajectory
from synth.rollout.executors import (
    McpExecutor,
    McpServerBinding,
    PythonExecutor,
    ToolExecutor,
    bind_executors,
    python_tool_spec,
)

# Agents whose worker `RayWorkers.call_for` remembers; the oldest is forgotten.
MAX_HOMES = 4096

if TYPE_CHECKING:  # the stage modules load lazily, in the process that runs them
    from synth.agents import AgentResult
    from synth.tools.synthesize import SynthesisResult


class StageWorker:
    def __init__(self, config: SynthConfig, calibration: Calibration | None = None) -> None:
        self.config = config
        self.calibration = calibration  # the judge model's stored calibration (its vote), or None
        self._llm: LLMClient | None = None
        self._mcp: _LiveMcpServers | None = None
        self._python: dict[str, ToolExecutor] | None = None

    @property
    def llm(self) -> LLMClient:
        # Created on first use, inside the event loop that will run the calls (a Ray actor's).
        if self._llm is None:
            self._llm = LLMClient(self.config, usage=UsageLog())
        return self._llm

    def _calls(self) -> list[CallRecord]:
        records, self.llm.usage.records = self.llm.usage.records, []
        return records

    async def ping(self) -> bool:
        return True

    async def node(self) -> str:
        """The id of the Ray node this actor runs on (so a run can say where its workers are)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    async def synthesize_tools(self, domain: Any, seed: int) -> tuple[SynthesisResult, list[CallRecord]]:
        """`[run] tools_per_domain` tools for one taxonomy domain (`synth.tools.synthesize_domain`)."""
        from synth.tools.synthesize import SynthesisSettings, synthesize_domain

        settings = SynthesisSettings(**self.config.tools.model_dump(), per_domain=self.config.run.tools_per_domain,
                                     seed=seed, model=self.llm.roles[Role.GENERATOR].model)
        result = await synthesize_domain(domain, self.llm, random.Random(seed), settings)
        return result, self._calls()

    async def synthesize_agent_and_tasks(
        self, toolset: list[ToolSpec], seed: int
    ) -> tuple[AgentResult, list[CallRecord]]:
        """An agent for `toolset` and its tasks (`synth.agents.synthesize_agent_and_tasks`)."""
        from synth.agents import synthesize_agent_and_tasks

        result = await synthesize_agent_and_tasks(toolset, self.llm, self.config.agent_settings(), seed)
        return result, self._calls()

    async def rollout_and_judge(
        self, agent: Agent, tools: list[ToolSpec], task: Task, seed: int
    ) -> tuple[tuple[Trajectory, Judgment], list[CallRecord]]:
        """One episode (`synth.rollout.run_episode`; tools bound to MCP servers or Python functions
        run for real, the rest simulated), judged under the `[judge]` policy with the judge model's
        stored calibration, which decides whether its verdict has a vote."""
        from synth.judges import judge
        from synth.rollout import run_episode

        executors = await self._executors()
        trajectory = await run_episode(agent, tools, task, self.llm, seed=seed,
                                       settings=self.config.rollout_settings(), executors=executors)
        judgment = await judge(trajectory, task, tools, self.llm, random.Random(seed), self.config.judge_policy(),
                               self.calibration)
        return (trajectory, judgment), self._calls()

    async def _executors(self) -> dict[str, ToolExecutor]:
        """Real executors for the `[rollout] mcp_servers` and `python_tools` bindings, started on
        first use and kept for the worker's lifetime; tools of the toolset with those names run
        for real (a Python tool wins a name clash with an MCP one)."""
        settings = self.config.rollout_settings()
        if self._python is None:
            registry = {python_tool_spec(b).name: b.load() for b in settings.python_tools}
            self._python = bind_executors(PythonExecutor(registry)) if registry else {}
        if settings.mcp_servers:
            if self._mcp is None:
                self._mcp = _LiveMcpServers(settings.mcp_servers)
            await self._mcp.start()  # concurrent episodes all wait until the servers are up
        return {**(self._mcp.executors if self._mcp is not None else {}), **self._python}

    async def close(self) -> None:
        if self._mcp is not None:
            await self._mcp.close()
        if self._llm is not None:
            await self._llm.aclose()


class _LiveMcpServers:
    """Stdio MCP servers held open by one task of their own: the MCP SDK's transports are anyio
    task groups, which must be exited by the task that entered them, while calls come from many."""

    def __init__(self, bindings: list[McpServerBinding]) -> None:
        self.bindings = bindings
        self.executors: dict[str, ToolExecutor] = {}
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the servers once; every caller returns when they are up (or raises why not)."""
        if self._task is None:
            self._task = asyncio.create_task(self._hold())
        await self._ready.wait()
        if self._error is not None:
            raise RuntimeError(f"cannot start MCP server(s) for the rollout: {self._error}") from self._error

    async def _hold(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            try:
                live = [await stack.enter_async_context(McpExecutor(b)) for b in self.bindings]
            except Exception as exc:
                self._error = exc
                self._ready.set()
                return
            self.executors = bind_executors(*live)
            self._ready.set()
            await self._stop.wait()

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


class StagePool:
    """What the driver calls: the stage methods of `StageWorker`, typed, on whichever worker the
    pool picks (`call`). `LocalWorkers` and `RayWorkers` differ only in `call`."""

    async def call(self, method: str, *args: Any) -> Any:
        raise NotImplementedError

    async def synthesize_tools(self, domain: Any, seed: int) -> tuple[SynthesisResult, list[CallRecord]]:
        result: tuple[SynthesisResult, list[CallRecord]] = await self.call("synthesize_tools", domain, seed)
        return result

    async def synthesize_agent_and_tasks(self, toolset: list[ToolSpec], seed: int
                                         ) -> tuple[AgentResult, list[CallRecord]]:
        result: tuple[AgentResult, list[CallRecord]] = await self.call("synthesize_agent_and_tasks", toolset, seed)
        return result

    async def rollout_and_judge(self, agent: Agent, tools: list[ToolSpec], task: Task, seed: int
                                ) -> tuple[tuple[Trajectory, Judgment], list[CallRecord]]:
        result: tuple[tuple[Trajectory, Judgment], list[CallRecord]] = await self.call_for(
            agent.id, "rollout_and_judge", agent, tools, task, seed)
        return result

    async def call_for(self, affinity: str, method: str, *args: Any) -> Any:
        """`call`, on the worker that had `affinity`'s earlier calls where the pool can: the episodes
        of one agent share its long prompt opening, which a worker's client computes once
        (`synth.llm.prefix`)."""
        return await self.call(method, *args)

    async def close(self) -> None:
        raise NotImplementedError


class LocalWorkers(StagePool):
    """One in-process worker; calls are plain awaits on the driver's loop."""

    def __init__(self, config: SynthConfig, calibration: Calibration | None = None) -> None:
        self.worker = StageWorker(config, calibration)

    async def call(self, method: str, *args: Any) -> Any:
        return await getattr(self.worker, method)(*args)

    async def close(self) -> None:
        await self.worker.close()


class RayWorkers(StagePool):
    """A pool of `StageWorker` async actors; calls go to the actor with the fewest in flight.

    Actors restart after a crash (`max_restarts`) and calls are retried on a restarted actor
    (`max_task_retries`): stage calls are idempotent (content ids, response cache), so a retry
    never duplicates a row.
    """

    def __init__(self, config: SynthConfig, count: int, max_concurrency: int,
                 calibration: Calibration | None = None) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor_cls: Any = ray.remote(StageWorker)
        common = {"max_concurrency": max_concurrency, "max_restarts": 3, "max_task_retries": 3, "num_cpus": 0}
        # Round-robin over the cluster's nodes. Hard affinity: Ray's SPREAD, and soft affinity, are
        # preferences that a busy node's zero-CPU actors do not always get. An actor whose node
        # dies cannot restart elsewhere; `call` then drops it and uses the others.
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
        self.cluster_nodes = len(nodes)
        self.actors: list[Any] = [
            actor_cls.options(**common, scheduling_strategy=NodeAffinitySchedulingStrategy(
                nodes[i % len(nodes)], soft=False) if len(nodes) > 1 else "DEFAULT").remote(config, calibration)
            for i in range(count)]
        self.in_flight = [0] * count
        self.dead: set[int] = set()
        self.nodes: list[str] = []
        self.homes: OrderedDict[str, int] = OrderedDict()  # affinity key -> actor index (`call_for`)

    async def start(self) -> None:
        """Wait until every actor is up; `nodes` then lists the Ray node of each."""
        self.nodes = list(await asyncio.gather(*(a.node.remote() for a in self.actors)))

    async def call(self, method: str, *args: Any) -> Any:
        """Run `method` on the live actor with the fewest calls in flight. An actor that died for
        good (its node is gone, or its restarts are spent) is dropped and the call goes to another:
        stage calls are idempotent. With no actor left, the error is raised."""
        return await self._call(None, method, *args)

    async def call_for(self, affinity: str, method: str, *args: Any) -> Any:
        """`call` on the actor that ran `affinity`'s last call, unless it has died or has two calls
        more in flight than the least busy (then the least busy becomes its home)."""
        return await self._call(affinity, method, *args)

    async def _call(self, affinity: str | None, method: str, *args: Any) -> Any:
        from ray.exceptions import ActorDiedError

        while True:
            live = [i for i in range(len(self.actors)) if i not in self.dead]
            if not live:
                raise RuntimeError("every worker actor has died; see the Ray logs")
            index = min(live, key=self.in_flight.__getitem__)
            home = self.homes.get(affinity) if affinity is not None else None
            if home is not None and home not in self.dead and self.in_flight[home] < self.in_flight[index] + 2:
                index = home
            if affinity is not None:
                self.homes[affinity] = index
                self.homes.move_to_end(affinity)
                if len(self.homes) > MAX_HOMES:
                    self.homes.popitem(last=False)
            self.in_flight[index] += 1
            try:
                return await getattr(self.actors[index], method).remote(*args)
            except ActorDiedError:
                self.dead.add(index)
            finally:
                self.in_flight[index] -= 1

    async def close(self) -> None:
        import ray

        await asyncio.gather(*(a.close.remote() for a in self.actors), return_exceptions=True)
        for actor in self.actors:
            ray.kill(actor)
