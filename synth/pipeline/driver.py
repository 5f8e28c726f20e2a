"""The streaming driver of `synth run`: domains -> tools -> agents + tasks -> rollouts -> judgments.

Contract:
- Stages are pipelined: an episode starts as soon as its task exists; agent synthesis runs ahead
  of rollouts only as far as the bounded episode queue allows (backpressure), so memory stays
  flat however many trajectories are asked for.
- The driver is the one writer of the DuckDB file; workers return models and their model-call
  records, the driver stores them (flushed in batches, so readers can open the file between).
- Resume: the run id is a hash of what shapes the work (domains, seed, models, stage settings,
  not the target count), every row id is a content hash, and every seed is derived from content.
  Running the same command again counts the judged trajectories the run already has, skips the
  tasks that already have one, and replays earlier agent/task synthesis from the response cache
  at no model cost. It stops at exactly `target` judged trajectories.
- Ctrl-C (or a cancelled run) stops scheduling, lets nothing half-written reach the file, flushes
  what finished and marks the run `interrupted`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from synth.agents.synthesize import main_domain
from synth.agents.toolsets import ToolsetSampler
from synth.config import DEFAULT_IN_FLIGHT, RunConfig, SynthConfig, agent_syntheses_at_once
from synth.domains.taxonomy import is_own_domain
from synth.ids import content_id, derive_seed
from synth.llm.usage import CallRecord
from synth.models import Agent, Judgment, Task, ToolSpec, Trajectory
from synth.pipeline.progress import Progress
from synth.settings import AgentSettings
from synth.store import Dataset, now

if TYPE_CHECKING:  # the stage modules load lazily, in the process that runs them
    from synth.agents import AgentResult
    from synth.tools.synthesize import SynthesisResult


def toolsets(pool: list[ToolSpec], settings: RunConfig, rng: random.Random,
             run_id: str | None = None, agents: AgentSettings | None = None) -> Iterator[list[ToolSpec]]:
    """At most `settings.max_agents` toolsets, in a deterministic order for a given pool and rng
    (resume relies on it: the i-th toolset of a re-run is the i-th of the first run). With
    `settings.steer_coverage`, tools in domains and map cells that other runs' accepted trajectories
    reach often start with a head start of uses (`coverage_priors`, which leaves out `run_id`'s own
    rows so a resumed run draws the same toolsets), so the empty regions are sampled first."""
    sampler = toolset_sampler(pool, settings, rng, run_id, agents)
    for _ in range(settings.max_agents):
        yield sampler.sample()


def toolset_sampler(pool: list[ToolSpec], settings: RunConfig, rng: random.Random,
                    run_id: str | None = None, agents: AgentSettings | None = None) -> ToolsetSampler:
    """The run's `ToolsetSampler` over `pool` (with the steering priors of `toolsets`), toolsets of
    `[agents] toolset_min_tools..toolset_max_tools` tools; a streamed tool stage `extend`s it wave by
    wave. The driver's, not a worker's: the priors are read from the dataset."""
    agents = agents or AgentSettings()
    priors = None
    if settings.steer_coverage and Path(settings.db).is_file():
        from synth.report.coverage import coverage_priors

        priors = coverage_priors(settings.db, exclude_run=run_id)
    return ToolsetSampler(pool, rng, min_size=agents.toolset_min_tools, max_size=agents.toolset_max_tools,
                          prior_uses=priors)


class Workers(Protocol):
    """The stage calls the driver makes (`synth.pipeline.worker.StagePool`)."""

    async def synthesize_tools(self, domain: Any, seed: int) -> tuple[SynthesisResult, list[CallRecord]]: ...

    async def synthesize_agent_and_tasks(self, toolset: list[ToolSpec], seed: int
                                         ) -> tuple[AgentResult, list[CallRecord]]: ...

    async def rollout_and_judge(self, agent: Agent, tools: list[ToolSpec], task: Task, seed: int
                                ) -> tuple[tuple[Trajectory, Judgment], list[CallRecord]]: ...

    async def close(self) -> None: ...


@dataclass
class RunSummary:
    run_id: str
    target: int
    judged: int
    accepted: int
    new_trajectories: int
    status: str

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


MAX_BARREN_AGENTS = 50
# An agent still in synthesis is counted for this share of the episodes agents yield on average
# (`EpisodeSchedule.expected_yield`).
YIELD_HEDGE = 0.5
FLUSH_INTERVAL_S = 1.0

# Settings that change how fast a run goes, or where it sends requests, but not what it makes:
# changing them between invocations resumes the same run instead of starting a new one.
# The selection keys (domains, categories, exclude) are left out too: the selected domain names are
# hashed instead, so `--categories travel` and the same domains named one by one are the same run.
# `steer_coverage` changes which toolsets come next, from what other runs accepted, not what the run
# makes of a toolset: switching it on resumes the same run, and datasets made before it keep their run ids.
_THROUGHPUT_RUN_KEYS = {"db", "trajectories", "domains", "categories", "exclude", "workers", "worker_concurrency",
                        "in_flight", "agent_concurrency", "domain_quota", "token_budget", "steer_coverage"}
# `loop_stop_chars` changes which replies get retried, but a cached reply replays as it was stopped
# or not, so a run resumed with another value stays consistent: like the others, it is left out.
_THROUGHPUT_LLM_KEYS = ("base_urls", "api_key_env", "max_concurrency", "timeout_s", "max_retries", "prefix_warmup",
                        "loop_stop_chars", "token_prompts")
# What `SynthConfig.with_base_url` writes into the role tables the embedded backend serves.
_EMBEDDED_ROLE_KEYS = frozenset({"loop_stop_chars", "token_prompts"})


def run_identity(cfg: SynthConfig, domains: list[str]) -> str:
    """What makes two invocations the same run: domains, seed, models, sampling and stage settings.

    The target count, endpoints, credentials and concurrency knobs are deliberately excluded, so a
    user can raise `--trajectories`, point at another server or widen `in_flight` and still resume.
    """
    shaping = cfg.model_dump(mode="json", exclude={"run": _THROUGHPUT_RUN_KEYS, "backend": True, "cache": True,
                                                   "tools": True, "agents": True, "rollout": True, "judge": True})
    # The stage tables count by what differs from their defaults (as when they were free-form
    # tables, hashed as written), so a new knob with a default changes no existing run's identity.
    for table in ("tools", "agents"):
        changed = getattr(cfg, table).model_dump(mode="json", exclude_defaults=True, exclude={"tasks_per_agent"})
        if changed:
            shaping[table] = changed
    # More rollouts per task extend a run, like a larger target.
    shaping["rollout"] = cfg.rollout.model_dump(mode="json", exclude_defaults=True, exclude={"per_task"})
    shaping["judge"] = cfg.judge.model_dump(mode="json", exclude_defaults=True)
    roles = shaping["llm"].get("roles", {})
    # A role table holding only what the embedded backend's `with_base_url` writes is left out
    # whole; an empty table a user wrote stays, as it always counted.
    for role in [r for r, table in roles.items() if table and set(table) <= _EMBEDDED_ROLE_KEYS]:
        del roles[role]
    for table in [shaping["llm"], *roles.values()]:
        for key in _THROUGHPUT_LLM_KEYS:
            table.pop(key, None)
    return content_id("run", sorted(domains), shaping)


def episode_seed(seed: int, task_id: str, index: int) -> int:
    """The seed of rollout `index` of a task. Rollout 0 keeps the seed runs had before
    `per_task` existed, so their response caches still replay."""
    return derive_seed(seed, "episode", task_id) if index == 0 else derive_seed(seed, "episode", task_id, index)


def _call_rows(run_id: str, records: list[CallRecord]) -> list[dict[str, Any]]:
    return [{"id": r.call_id, "run_id": run_id, **{k: v for k, v in r.as_dict().items() if k != "call_id"}}
            for r in records]


class ToolStream:
    """The run's toolsets while the tool stage may still be making later waves of domains: the
    i-th toolset comes from the sampler holding the first waves, and before drawing more than
    `drawn_before_next` toolsets it waits for the next wave's tools and adds them (one toolset
    per domain of a wave, least-used first, so the new domains' tools are drawn first). So the
    sequence depends on the tools, never on timing, and a resumed run draws the same toolsets."""

    def __init__(self, sampler: ToolsetSampler, later: list[tuple[asyncio.Future[list[ToolSpec] | None], int]],
                 drawn_before_next: int, max_agents: int) -> None:
        self.sampler = sampler
        self.later = later
        self.drawn_before_next = drawn_before_next
        self.max_agents = max_agents
        self.drawn = 0

    async def next(self) -> tuple[int, list[ToolSpec]] | None:
        if self.drawn >= self.max_agents:
            return None
        while self.later and self.drawn >= self.drawn_before_next:
            wave, n_domains = self.later[0]
            # Shielded: a producer cancelled here (the target was reached) must not cancel the wave,
            # which the tool stage still makes and stores.
            tools = await asyncio.shield(wave)
            self.later.pop(0)
            if tools is None:  # the wave was not made: the token budget was spent first
                self.later.clear()
                self.max_agents = self.drawn
                return None
            self.sampler.extend(tools)
            self.drawn_before_next += n_domains
        index = self.drawn
        self.drawn += 1
        return index, self.sampler.sample()


@dataclass(frozen=True)
class Episode:
    """One rollout to run: rollout `index` (of `[rollout] per_task`) of `task` by `agent`."""

    agent: Agent
    toolset: list[ToolSpec]
    task: Task
    index: int = 0


class EpisodeSchedule:
    """The bookkeeping of one streaming pass, shared by the producers (agent synthesis) and the
    consumers (episodes): how many episodes are judged, in progress and queued against what
    remains, when producers may synthesise more, and when the generator is barren.

    Producers synthesise the next agent only while the episodes judged, in progress, queued and
    promised fall short of `remaining` (`need_agent`). Promised: the episodes of agents already
    made but not yet queued (waiting for their turn), and for each agent still in synthesis
    `expected_yield()`, so the tail of a run starts as many agents as its last episodes need, not
    one per producer (whose drafts would be thrown away and would slow the last episodes on the
    same server). Otherwise producers wait until an episode fails, a synthesis yields less than
    promised, or the target is reached (`capacity_changed`), so a late failure is replaced rather
    than left as a gap. Consumers skip queued tasks once `judged + in_progress >= remaining`, so
    the pass stops at exactly the target.

    Agents are synthesised concurrently but queued in toolset order (`wait_turn` / `end_turn`): the
    producer of toolset i queues its episodes only after every toolset before it has queued or
    given up its own. So which tasks a pass runs depends on the toolsets, never on which synthesis
    happened to finish first; a resume that raises `[rollout] per_task` extends the tasks it has
    before it starts new ones, however many producers race.
    """

    def __init__(self, remaining: int, in_flight: int, toolsets: ToolStream,
                 quota: int | None = None, judged_by_domain: Mapping[str, int] | None = None,
                 episodes_asked: int = 2) -> None:
        self.remaining = remaining
        self.in_flight = in_flight
        self.queue: asyncio.Queue[Episode | None] = asyncio.Queue(maxsize=in_flight)
        self.judged = 0
        self.in_progress = 0
        self.done = asyncio.Event()
        self.capacity_changed = asyncio.Event()
        # Agents in a row that produced no usable task (agent rejected, every task rejected, or the
        # call failed): past MAX_BARREN_AGENTS the generator is broken, and looping through every
        # remaining toolset would only burn model time, so the pass stops and says why.
        self.barren = 0
        self.barren_reason: str | None = None
        self._toolsets = toolsets
        self._toolsets_lock = asyncio.Lock()
        # `[run] domain_quota`: episodes judged, in progress or queued per domain, against the quota.
        self.quota = quota
        self.planned: Counter[str] = Counter(judged_by_domain or {})
        # `[run] token_budget` spent: no new work; episodes in progress finish and are stored.
        self.budget_spent = False
        # The toolset whose producer may queue now, the later ones done early, and an event replaced
        # on every change of turn or of `stopped`, so every waiter wakes and looks again.
        self.turn = 0
        self._turns_ended: set[int] = set()
        self._turn_changed = asyncio.Event()
        # What each producer promises (`claim`): None while its agent is in synthesis (counted as
        # `expected_yield()`), then the episodes it made and has not queued yet.
        self.claims: dict[object, int | None] = {}
        self.episodes_asked = episodes_asked  # tasks per agent x rollouts per task
        self.agents_made = 0
        self.episodes_made = 0

    @property
    def stopped(self) -> bool:
        return self.done.is_set() or self.barren >= MAX_BARREN_AGENTS or self.budget_spent

    def domain_full(self, domain: str) -> bool:
        return self.quota is not None and self.planned[domain] >= self.quota

    def plan(self, domain: str) -> bool:
        """Reserve an episode of `domain` against its quota; False when the domain is full."""
        if self.domain_full(domain):
            return False
        self.planned[domain] += 1
        return True

    def spend_budget(self) -> None:
        self.budget_spent = True
        self.capacity_changed.set()
        self._wake_turn_waiters()

    def _wake_turn_waiters(self) -> None:
        self._turn_changed.set()
        self._turn_changed = asyncio.Event()

    async def wait_turn(self, index: int) -> None:
        """Return once toolset `index` may queue its episodes, or the pass has stopped."""
        while self.turn < index and not self.stopped:
            await self._turn_changed.wait()

    def end_turn(self, index: int) -> None:
        """Toolset `index` has queued what it will (or had nothing to queue): let the next go."""
        self._turns_ended.add(index)
        while self.turn in self._turns_ended:
            self._turns_ended.discard(self.turn)
            self.turn += 1
        self._wake_turn_waiters()

    def need_more(self) -> bool:
        """Whether another episode may be queued."""
        return self.judged + self.in_progress + self.queue.qsize() < self.remaining and not self.done.is_set()

    def expected_yield(self) -> float:
        """The episodes an agent still in synthesis is counted for: `YIELD_HEDGE` of the mean
        yield of the agents this pass made (barren ones count 0), `episodes_asked` counting as one
        more agent, so the first few do not swing it to 0 or to all. The hedge keeps a second agent
        going at the tail in case the first yields nothing."""
        return YIELD_HEDGE * (self.episodes_made + self.episodes_asked) / (self.agents_made + 1)

    def need_agent(self) -> bool:
        """Whether a producer should synthesise another agent (see the class docstring)."""
        expected = self.expected_yield()
        promised = sum(expected if left is None else left for left in self.claims.values())
        return self.need_more() and self.judged + self.in_progress + self.queue.qsize() + promised < self.remaining

    async def wait_for_capacity(self, wanted: Callable[[], bool]) -> None:
        """Return once `wanted()` may have become true (an episode failed, a claim shrank), or the
        pass has stopped."""
        self.capacity_changed.clear()
        if not wanted() and not self.stopped:
            await self.capacity_changed.wait()

    def claim(self) -> object:
        """A producer starts an agent: its promise counts from now until `release`."""
        key = object()
        self.claims[key] = None
        return key

    def agent_made(self, key: object, episodes: int, synthesised: bool = True) -> None:
        """The claimed agent was made (or failed) with `episodes` to queue; a toolset skipped
        unsynthesised (its domain at its quota) says nothing of the yield and is not counted."""
        self.claims[key] = episodes
        if synthesised:
            self.agents_made += 1
            self.episodes_made += episodes
        self.capacity_changed.set()  # it may have made fewer than promised

    def episode_queued(self, key: object) -> None:
        """One of the claimed agent's episodes is on the queue now (counted there, not here)."""
        self.claims[key] = max(0, (self.claims[key] or 0) - 1)

    def release(self, key: object) -> None:
        """The producer is done with its claim: queued, skipped or dropped, whatever is left. The
        waiters always look again: a claim released still in synthesis (no toolset left, or
        cancelled) had promised episodes that will not come."""
        self.claims.pop(key, None)
        self.capacity_changed.set()

    async def next_toolset(self) -> tuple[int, list[ToolSpec]] | None:
        async with self._toolsets_lock:
            return await self._toolsets.next()

    def note_agent(self, usable: bool, why: str) -> None:
        self.barren = 0 if usable else self.barren + 1
        if self.barren == MAX_BARREN_AGENTS:
            self.barren_reason = why
            self._wake_turn_waiters()

    def wants_episode(self) -> bool:
        return self.judged + self.in_progress < self.remaining and not self.budget_spent

    def episode_started(self) -> None:
        self.in_progress += 1

    def episode_failed(self, domain: str) -> None:
        self.in_progress -= 1
        self.planned[domain] -= 1
        self.capacity_changed.set()

    def episode_dropped(self, domain: str) -> None:
        """A queued episode not run (the target or the budget was reached first)."""
        self.planned[domain] -= 1

    def episode_judged(self) -> None:
        self.in_progress -= 1
        self.judged += 1
        if self.judged >= self.remaining:
            self.done.set()
            self.capacity_changed.set()
            self._wake_turn_waiters()


class PipelineDriver:
    def __init__(self, cfg: SynthConfig, domains: list[Any], target: int, dataset: Dataset, workers: Workers,
                 progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.domains = domains
        self.target = target
        self.dataset = dataset
        self.workers = workers
        self.run_id = run_identity(cfg, [d.name for d in domains])
        self.progress = progress or Progress(target=target)
        self.settings = cfg.run
        self.agent_model = cfg.llm.role("agent").model
        self.tokens_spent = self._spent_so_far()
        self._schedule: EpisodeSchedule | None = None
        self._wave_task: asyncio.Task[None] | None = None
        self._new_trajectories = 0
        self._last_flush = time.monotonic()
        self._flushing: concurrent.futures.Future[Any] | None = None
        self._flusher: concurrent.futures.ThreadPoolExecutor | None = None
        self.failures: list[str] = []
        self.on_failure: Callable[[str], None] | None = None

    # ---------------------------------------------------------------- storage helpers

    def _store_calls(self, records: list[CallRecord]) -> None:
        self.dataset.add_many("llm_calls", _call_rows(self.run_id, records))
        self.tokens_spent += sum(r.prompt_tokens + r.completion_tokens for r in records if not r.cache_hit)
        if self._over_budget() and self._schedule is not None and not self._schedule.budget_spent:
            self._schedule.spend_budget()
        self.progress.completion_tokens += sum(r.completion_tokens for r in records)

    def _record_run(self, status: str, started_at: Any) -> None:
        self.dataset.upsert("runs", {
            "id": self.run_id, "run_id": self.run_id, "started_at": started_at,
            "finished_at": None if status == "running" else now(), "status": status,
            "domains": [d.name for d in self.domains], "target_trajectories": self.target,
            "config": json.loads(self.cfg.model_dump_json()),
            "usage": None if status == "running" else self._usage_by_role(),
        })

    def _usage_by_role(self) -> dict[str, dict[str, Any]]:
        """Model usage per role over the whole run (every invocation of it), from `llm_calls`."""
        rows = self.dataset.query(
            "SELECT role, count(*), count(*) FILTER (WHERE NOT ok), sum(prompt_tokens), sum(completion_tokens), "
            "sum(retries), count(*) FILTER (WHERE structured_attempts > 1), count(*) FILTER (WHERE cache_hit) "
            "FROM llm_calls WHERE run_id = ? GROUP BY role ORDER BY role", [self.run_id],
        )
        keys = ("calls", "failed", "prompt_tokens", "completion_tokens", "retries", "structured_retries",
                "cache_hits")
        return {row[0]: dict(zip(keys, (int(v or 0) for v in row[1:]), strict=True)) for row in rows}

    # ---------------------------------------------------------------- stage 1: tools

    def _stored_tools(self, domains: list[Any]) -> dict[str, list[ToolSpec]]:
        names = [d.name for d in domains]
        marks = ", ".join("?" for _ in names)
        rows = self.dataset.query(
            f"SELECT name, description, input_schema, output_schema, side_effect, error_modes, domain, "
            f"application, source, provenance FROM tools WHERE status = 'accepted' AND domain IN ({marks}) "
            f"ORDER BY id", names,
        )
        keys = ("name", "description", "input_schema", "output_schema", "side_effect", "error_modes", "domain",
                "application", "source", "provenance")
        by_domain: dict[str, list[ToolSpec]] = {n: [] for n in names}
        for row in rows:
            data = dict(zip(keys, row, strict=True))
            for key in ("input_schema", "output_schema", "error_modes", "provenance"):
                if isinstance(data[key], str):
                    data[key] = json.loads(data[key])
            by_domain[data["domain"]].append(ToolSpec.from_row(data))
        return by_domain

    async def _tools(self) -> ToolStream:
        """Stage 1, streamed: the selected domains in waves of `[run] tool_wave_domains`. The first
        wave's tools (and the bound ones) are made before this returns; the later waves are made in
        the background, in order, and the returned `ToolStream` adds each to the toolset sampler
        once enough toolsets were drawn from the waves before it, so agents and rollouts start as
        soon as the first domains have tools, and the toolsets drawn do not depend on timing."""
        from synth.rollout import bound_tool_specs

        self._import_mcp_files()
        size = self.settings.tool_wave_domains
        waves = [self.domains[i:i + size] for i in range(0, len(self.domains), size)] or [[]]
        pool = await self._wave_tools(waves[0])
        rollout = self.cfg.rollout_settings()  # `[rollout] mcp_servers` (those with a domain), `python_tools`
        bound = await bound_tool_specs(rollout.mcp_servers, rollout.python_tools)
        pool += self._bound_tools(bound, {t.id for t in pool})
        drawn_before_next = len(waves[0])
        while len(pool) < 2 and len(waves) > 1:  # too few tools to start: take the next wave now
            waves.pop(0)
            pool += await self._wave_tools(waves[0])
            drawn_before_next += len(waves[0])
        if len(pool) < 2:
            raise RuntimeError(
                f"only {len(pool)} usable tool(s) for domains {[d.name for d in self.domains]}; "
                "see `synth stats` for the rejection reasons"
            )
        later: list[asyncio.Future[list[ToolSpec] | None]] = [asyncio.get_running_loop().create_future()
                                                       for _ in waves[1:]]
        self._wave_task = asyncio.create_task(self._later_waves(waves[1:], later))
        rng = random.Random(derive_seed(self.settings.seed, "toolsets", self.run_id))
        sampler = toolset_sampler(pool, self.settings, rng, self.run_id, self.cfg.agents)
        return ToolStream(sampler, list(zip(later, (len(w) for w in waves[1:]), strict=True)),
                          drawn_before_next, self.settings.max_agents)

    def _import_mcp_files(self) -> None:
        """Import `[run] mcp_files` into the tools table (content ids: a rerun adds nothing); each
        server is placed in the taxonomy domain it fits, else `mcp/<server>`, and its tools join
        the run when their domain is selected."""
        if not self.settings.mcp_files:
            return
        from synth.domains import load_taxonomy
        from synth.tools.mcp_import import import_servers, read_mcp_file
        from synth.tools.repository import store_tools

        servers = [server for path in self.settings.mcp_files for server in read_mcp_file(Path(path).expanduser())]
        result = import_servers(servers, load_taxonomy())
        store_tools(self.dataset, self.run_id, result.tools, result.rejected)

    async def _later_waves(self, waves: list[list[Any]], results: list[asyncio.Future[list[ToolSpec] | None]]) -> None:
        """Make the later waves in order. Once `[run] token_budget` is spent the rest are not made
        and their results are None, which ends the toolset stream: drawing on without those waves
        would store toolsets that the resumed run, with the waves made, never draws."""
        for domains, result in zip(waves, results, strict=True):
            if self._over_budget():
                for pending in results:
                    if not pending.done():
                        pending.set_result(None)
                return
            try:
                result.set_result(await self._wave_tools(domains))
            except Exception as exc:
                for pending in results:
                    if not pending.done():
                        pending.set_exception(exc)
                raise

    async def _wave_tools(self, domains: list[Any]) -> list[ToolSpec]:
        """The tools of `domains`: the stored ones, and a synthesis (concurrent) for each domain
        with fewer than half of `tools_per_domain`; a synthesis failure fails the run."""
        from synth.tools.repository import store_tools

        by_domain = self._stored_tools(domains)
        wanted = self.settings.tools_per_domain
        missing = [d for d in domains if len(by_domain[d.name]) < max(2, wanted // 2) and not is_own_domain(d.name)]

        async def one(domain: Any) -> None:
            self.progress.begin("tools")
            try:
                result, calls = await self.workers.synthesize_tools(
                    domain, derive_seed(self.settings.seed, "tools", domain.name))
            except Exception:
                self.progress.end("tools", ok=False)
                raise
            self._store_calls(calls)
            stored = store_tools(self.dataset, self.run_id, result.tools, result.rejected)["accepted"]
            by_domain[domain.name] = [t for t in result.tools if t.domain == domain.name] or by_domain[domain.name]
            self.progress.end("tools", count=stored)

        await asyncio.gather(*(one(d) for d in missing))
        self.dataset.flush()
        if missing:
            by_domain = self._stored_tools(domains)
        return [t for d in domains for t in by_domain[d.name]]

    def _bound_tools(self, bound: list[ToolSpec], have: set[str]) -> list[ToolSpec]:
        """Store the tools the config binds (live MCP servers with a domain, Python functions),
        and return those not already in the pool: they join their domain's toolsets whether or
        not the domain was selected, since binding them asked for them."""
        self.dataset.add_many("tools", (t.to_row(self.run_id) for t in bound))
        self.dataset.flush()
        new = [t for t in bound if t.id not in have]
        self.progress.stages["tools"].done += len(new)
        return new

    # ---------------------------------------------------------------- budgets

    def _spent_so_far(self) -> int:
        """Tokens this run's model calls used in earlier invocations (cache replays not counted)."""
        rows = self.dataset.query(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM llm_calls "
            "WHERE run_id = ? AND NOT coalesce(cache_hit, false)", [self.run_id])
        return int(rows[0][0]) if rows else 0

    def _over_budget(self) -> bool:
        budget = self.settings.token_budget
        return budget is not None and self.tokens_spent >= budget

    def _judged_by_domain(self) -> dict[str, int]:
        rows = self.dataset.query(
            "SELECT t.domain, count(*) FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id "
            "WHERE t.run_id = ? GROUP BY 1", [self.run_id])
        return {str(d): int(n) for d, n in rows}

    # ---------------------------------------------------------------- resume state

    def _finished(self) -> tuple[int, int, set[tuple[str, int]]]:
        """(judged, accepted, the (task id, rollout index) pairs judged) of this run so far."""
        rows = self.dataset.query(
            "SELECT t.task_id, coalesce(t.rollout_index, 0), j.accepted FROM trajectories t "
            "JOIN latest_judgments j ON j.trajectory_id = t.id WHERE t.run_id = ?", [self.run_id],
        )
        return len(rows), sum(1 for *_, a in rows if a), {(task_id, index) for task_id, index, _ in rows}

    # ---------------------------------------------------------------- stages 2-4, streamed

    async def run(self) -> RunSummary:
        previous = self.dataset.query("SELECT started_at FROM runs WHERE id = ?", [self.run_id])
        started_at = previous[0][0] if previous else now()  # a resumed run keeps its first start
        self._record_run("running", started_at)
        status = "failed"
        try:
            done, _accepted, finished_tasks = self._finished()
            self.progress.already_done = done
            remaining = self.target - done
            if remaining > 0 and not self._over_budget():
                stream = await self._tools()
                try:
                    if not self._over_budget():
                        await self._stream(stream, remaining, finished_tasks)
                    if self._wave_task is not None and not self._over_budget():
                        await self._wave_task  # the tool repository is a product too: finish it, budget allowing
                finally:
                    if self._wave_task is not None and not self._wave_task.done():
                        self._wave_task.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await self._wave_task
            status = "budget_spent" if self._over_budget() else "finished"
        except asyncio.CancelledError:
            status = "interrupted"
            raise
        finally:
            write_error = self._final_flush()
            if write_error is not None:
                self._note_failure("store", write_error)
                status = "failed"
            judged, accepted, _ = self._finished()
            if status == "budget_spent" and judged >= self.target:
                status = "finished"
            if status == "finished" and judged < self.target:
                status = "incomplete"
            self._record_run(status, started_at)
            self.summary = RunSummary(self.run_id, self.target, judged, accepted, self._new_trajectories, status)
        return self.summary

    async def _stream(self, stream: ToolStream, remaining: int, finished: set[tuple[str, int]]) -> None:
        settings = self.settings
        schedule = EpisodeSchedule(remaining, settings.in_flight or DEFAULT_IN_FLIGHT, stream,
                                   settings.domain_quota, self._judged_by_domain(),
                                   episodes_asked=settings.tasks_per_agent * self.cfg.rollout_settings().per_task)
        self._schedule = schedule
        producers = [asyncio.create_task(self._produce(schedule, finished))
                     for _ in range(agent_syntheses_at_once(settings, schedule.in_flight))]
        consumers = [asyncio.create_task(self._consume(schedule)) for _ in range(schedule.in_flight)]
        try:
            await self._until_done(schedule, producers)
            for _ in consumers:
                await schedule.queue.put(None)
            await asyncio.gather(*consumers)
        finally:
            for task in (*producers, *consumers):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*producers, *consumers, return_exceptions=True)
        if schedule.barren_reason is not None:
            self._note_failure("run", RuntimeError(
                f"{MAX_BARREN_AGENTS} agents in a row yielded no usable task (last: {schedule.barren_reason}); "
                "the generator model is not producing valid agents/tasks: see the reasons in "
                "`synth stats` or the tasks table"))
        elif schedule.budget_spent:
            self._note_failure("run", RuntimeError(
                f"token budget spent ({self.tokens_spent} of {settings.token_budget} tokens) after "
                f"{schedule.judged} of {remaining} trajectories; raise run.token_budget and rerun to resume"))
        elif schedule.judged < remaining:
            full = sorted(d for d in schedule.planned if schedule.domain_full(d))
            why = (f"; domains at their quota of {settings.domain_quota}: {', '.join(full)}" if full else "")
            self._note_failure("run", RuntimeError(
                f"ran out of toolsets/tasks after {schedule.judged} of {remaining} trajectories{why}; "
                "add domains or raise run.max_agents" + (" or run.domain_quota" if full else "")))

    @staticmethod
    async def _until_done(schedule: EpisodeSchedule, producers: list[asyncio.Task[None]]) -> None:
        """Wait for the producers (raising the first error, as `gather` would), and once the target
        is reached cancel those still synthesising: none of their episodes would run, and waiting
        for them held a 12-episode run 11 s past its last trajectory. What they had stored stays."""
        reached = asyncio.ensure_future(schedule.done.wait())
        try:
            pending: set[asyncio.Task[None] | asyncio.Future[Any]] = set(producers)
            while pending and not schedule.done.is_set():
                finished, pending = await asyncio.wait(pending | {reached}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(reached)
                for task in finished - {reached}:
                    task.result()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            reached.cancel()

    async def _produce(self, schedule: EpisodeSchedule, finished: set[tuple[str, int]]) -> None:
        """Synthesise agents (and their tasks) while the schedule wants more work, and queue each
        task's `[rollout] per_task` rollouts, less those an earlier invocation judged, in toolset
        order (`EpisodeSchedule.wait_turn`); a failed agent is logged and skipped."""
        while not schedule.stopped:
            if not schedule.need_agent():
                await schedule.wait_for_capacity(schedule.need_agent)
                continue
            claim = schedule.claim()  # before the first await, so two producers never both see room
            try:
                slot = await schedule.next_toolset()
                if slot is None:
                    return
                index, toolset = slot
                try:
                    # Balanced across domains (`[run] domain_quota`): a full one's toolset is skipped.
                    skipped = schedule.domain_full(main_domain(toolset))
                    episodes = [] if skipped else await self._agent_episodes(schedule, index, toolset, finished)
                    schedule.agent_made(claim, len(episodes), synthesised=not skipped)
                    await schedule.wait_turn(index)
                    await self._queue_episodes(schedule, episodes, claim)
                finally:
                    schedule.end_turn(index)
            finally:
                schedule.release(claim)

    async def _agent_episodes(self, schedule: EpisodeSchedule, index: int, toolset: list[ToolSpec],
                              finished: set[tuple[str, int]]) -> list[Episode]:
        """Synthesise and store the agent and tasks of toolset `index`; return the episodes to run
        (none for a failed or barren agent)."""
        from synth.agents import store_agent_result

        self.progress.begin("agents")
        try:
            result, calls = await self.workers.synthesize_agent_and_tasks(
                toolset, derive_seed(self.settings.seed, "agent", index))
        except Exception as exc:  # a failed agent is logged and skipped, never fatal
            self.progress.end("agents", ok=False)
            self._note_failure("agent", exc)
            schedule.note_agent(False, f"{type(exc).__name__}: {str(exc)[:120]}")
            return []
        self._store_calls(calls)
        store_agent_result(self.dataset, self.run_id, result, flush=False)
        self._flush_due()
        agent = result.agent
        self.progress.end("agents", ok=agent is not None)
        self.progress.stages["tasks"].done += len(result.tasks)
        self.progress.stages["tasks"].failed += len(result.rejected)
        last_reason = result.rejected[-1].reason[:120] if result.rejected else "no tasks"
        schedule.note_agent(bool(agent is not None and result.tasks), last_reason)
        if agent is None:
            return []
        per_task = self.cfg.rollout_settings().per_task
        return [Episode(agent, toolset, task, i) for task in result.tasks for i in range(per_task)
                if (task.id, i) not in finished]

    @staticmethod
    async def _queue_episodes(schedule: EpisodeSchedule, episodes: list[Episode], claim: object) -> None:
        """Queue an agent's episodes one at a time as capacity allows; stop at the first whose
        domain is at its quota (the agent's tasks share its domain)."""
        for episode in episodes:
            while not schedule.need_more() and not schedule.stopped:
                await schedule.wait_for_capacity(schedule.need_more)
            if schedule.stopped or not schedule.plan(episode.task.domain):
                return
            await schedule.queue.put(episode)
            schedule.episode_queued(claim)

    async def _consume(self, schedule: EpisodeSchedule) -> None:
        """Roll out and judge queued tasks until the queue says stop (None); store each episode
        with its judgment; a failed episode is logged and leaves room for another."""
        while True:
            item = await schedule.queue.get()
            if item is None:
                return
            if not schedule.wants_episode():
                schedule.episode_dropped(item.task.domain)
                continue
            schedule.episode_started()
            self.progress.begin("rollouts")
            try:
                (trajectory, judgment), calls = await self.workers.rollout_and_judge(
                    item.agent, item.toolset, item.task, episode_seed(self.settings.seed, item.task.id, item.index))
            except Exception as exc:
                schedule.episode_failed(item.task.domain)
                self.progress.end("rollouts", ok=False)
                self._note_failure("episode", exc)
                continue
            self._store_calls(calls)
            trajectory = trajectory.model_copy(update={"rollout_index": item.index, "agent_model": self.agent_model})
            self._store_episode(trajectory, judgment)
            schedule.episode_judged()
            self.progress.end("rollouts")
            self.progress.stages["judgments"].done += 1
            self.progress.judged += 1
            self.progress.accepted += int(judgment.accepted)

    def _store_episode(self, trajectory: Trajectory, judgment: Judgment) -> None:
        # Trajectory and judgment are added together, so one flush always writes both.
        self.dataset.add("trajectories", trajectory.to_row(self.run_id))
        self.dataset.add("judgments", judgment.to_row(self.run_id))
        self._new_trajectories += 1
        self._flush_due()

    def _flush_due(self) -> None:
        """Flush at most every FLUSH_INTERVAL_S, in a thread, one flush at a time. Opening, writing
        and checkpointing the file costs milliseconds, which per episode capped a fast backend at a
        few episodes/s, and on the loop it stalled every stage call meanwhile (DuckDB releases the
        GIL while it writes). Batching loses at most one interval of results to a SIGKILL, and
        those replay from the response cache."""
        if self._flushing is not None and self._flushing.done():
            flushing, self._flushing = self._flushing, None
            flushing.result()  # a failed write fails the run, as a write on the loop would
        if self._flushing is None and time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            if self._flusher is None:
                self._flusher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-flush")
            self._flushing = self._flusher.submit(self.dataset.flush)
            self._last_flush = time.monotonic()

    def _final_flush(self) -> BaseException | None:
        """Wait for a background flush (it cannot be stopped), then write what is left; returns
        the background flush's error, if it had one, so the run can say so."""
        error = None
        if self._flushing is not None:
            error = self._flushing.exception()
            self._flushing = None
        if self._flusher is not None:
            self._flusher.shutdown()
            self._flusher = None
        self.dataset.flush()
        return error

    def _note_failure(self, what: str, exc: BaseException) -> None:
        self.failures.append(f"{what}: {type(exc).__name__}: {str(exc)[:300]}")
        if self.on_failure is not None:
            self.on_failure(self.failures[-1])
