"""The pipeline's view of the stages: each function adapts one stage module to the run's config.

The stage modules (`synth.tools`, `synth.agents`, `synth.rollout`, `synth.judges`) know nothing of
runs, Ray or DuckDB; the worker calls these adapters, and the driver calls the `store_*` ones.
Every seed comes from the caller (derived from content), so a re-run sends identical requests
and, with the response cache on, replays finished work at no model cost.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synth.agents import AgentResult, ToolsetSampler, store_agent_result, synthesize_agent_and_tasks
from synth.config import Role, RunConfig, SynthConfig
from synth.judges import judge as judge_with_policy
from synth.llm import LLMClient
from synth.models import Agent, Calibration, Judgment, Task, ToolSpec, Trajectory
from synth.rollout import ToolExecutor, bound_tool_specs, run_episode
from synth.settings import AgentSettings
from synth.store import Dataset
from synth.tools.repository import store_tools
from synth.tools.synthesize import SynthesisResult, SynthesisSettings, synthesize_domain

__all__ = [
    "agent_and_tasks",
    "judge",
    "rollout",
    "store_agent_result",
    "store_tool_result",
    "tools_for_domain",
    "toolsets",
]


async def tools_for_domain(domain: Any, llm: LLMClient, cfg: SynthConfig, seed: int) -> SynthesisResult:
    """Synthesise `cfg.run.tools_per_domain` tools for one taxonomy domain."""
    settings = SynthesisSettings(**cfg.tools.model_dump(), per_domain=cfg.run.tools_per_domain, seed=seed,
                                 model=llm.roles[Role.GENERATOR].model)
    return await synthesize_domain(domain, llm, random.Random(seed), settings)


def store_tool_result(dataset: Dataset, run_id: str, result: SynthesisResult) -> int:
    """Store accepted and rejected tools; returns how many were accepted."""
    return store_tools(dataset, run_id, result.tools, result.rejected)["accepted"]


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
    `[agents] toolset_min_tools..toolset_max_tools` tools; a streamed tool stage `extend`s it wave by wave."""
    agents = agents or AgentSettings()
    priors = None
    if settings.steer_coverage and Path(settings.db).is_file():
        from synth.report.coverage import coverage_priors

        priors = coverage_priors(settings.db, exclude_run=run_id)
    return ToolsetSampler(pool, rng, min_size=agents.toolset_min_tools, max_size=agents.toolset_max_tools,
                          prior_uses=priors)


async def agent_and_tasks(toolset: list[ToolSpec], llm: LLMClient, cfg: SynthConfig, seed: int) -> AgentResult:
    return await synthesize_agent_and_tasks(toolset, llm, cfg.agent_settings(), seed)


async def bound_tools(cfg: SynthConfig) -> list[ToolSpec]:
    """The tools `[rollout] mcp_servers` (those with a domain) and `python_tools` bind into the
    run's pool, listed now (`synth.rollout.bound_tool_specs`)."""
    settings = cfg.rollout_settings()
    return await bound_tool_specs(settings.mcp_servers, settings.python_tools)


async def rollout(agent: Agent, tools: list[ToolSpec], task: Task, llm: LLMClient, cfg: SynthConfig,
                  seed: int, executors: dict[str, ToolExecutor] | None = None) -> Trajectory:
    """One episode; tools named in `executors` run for real (MCP / Python), the rest simulated."""
    return await run_episode(agent, tools, task, llm, seed=seed, settings=cfg.rollout_settings(),
                             executors=executors)


async def judge(trajectory: Trajectory, task: Task, tools: list[ToolSpec], llm: LLMClient | None, cfg: SynthConfig,
                seed: int, calibration: Calibration | None = None) -> Judgment:
    """Judge under the `[judge]` policy; `calibration` is the judge model's stored one (loaded by
    the driver), which decides whether the LLM verdict has a vote."""
    return await judge_with_policy(trajectory, task, tools, llm, random.Random(seed), cfg.judge_policy(),
                                   calibration)
