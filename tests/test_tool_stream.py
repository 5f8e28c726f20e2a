"""The streamed tool stage: agents and rollouts start once the first wave of domains has tools,
later waves join the toolset sampler in order, the toolsets drawn do not depend on when a wave
finished, and the run still makes every domain's tools."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import duckdb
import pytest

from synth.agents.toolsets import ToolsetSampler
from synth.config import load_config
from synth.models import ToolSpec
from synth.pipeline.driver import EpisodeSchedule, PipelineDriver, ToolStream
from synth.pipeline.run import execute_run

DOMAINS = ["weather", "order_management", "issue_tracking", "cloud_drive", "stock_trading", "recipes_cooking"]


def _tool(domain: str, i: int) -> ToolSpec:
    return ToolSpec(name=f"{domain}_tool_{i}", description=f"Tool {i} of {domain}",
                    inputSchema={"type": "object", "properties": {}}, domain=domain)


def _draw(delays: list[float]) -> list[list[str]]:
    """Ten toolsets from a stream whose two later waves finish after `delays` seconds."""
    async def main() -> list[list[str]]:
        loop = asyncio.get_running_loop()
        waves = [[_tool(d, i) for i in range(3)] for d in ("alpha", "beta", "gamma")]
        later = [loop.create_future() for _ in waves[1:]]
        for future, wave, delay in zip(later, waves[1:], delays, strict=True):
            loop.call_later(delay, future.set_result, wave)
        stream = ToolStream(ToolsetSampler(waves[0], random.Random(3)), [(f, 1) for f in later], 1, 10)
        out = []
        while (item := await stream.next()) is not None:
            out.append([t.name for t in item[1]])
        return out

    return asyncio.run(main())


def test_toolsets_do_not_depend_on_when_a_wave_arrives() -> None:
    fast, slow = _draw([0.0, 0.0]), _draw([0.05, 0.01])
    assert fast == slow and len(fast) == 10
    # the first toolset comes from the first wave alone; the later waves' unused tools are drawn soon after
    assert all(n.startswith("alpha") for n in fast[0])
    assert {n.split("_")[0] for ts in fast[:4] for n in ts} == {"alpha", "beta", "gamma"}


def test_rollouts_start_before_the_tool_stage_ends_and_every_domain_gets_tools(fake_server: Any,
                                                                                tmp_path: Path) -> None:
    server = fake_server()
    cfg = load_config(None, {
        "llm": {"base_urls": [server.base_url], "max_retries": 20},
        "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
        "run": {"domains": ",".join(DOMAINS), "db": str(tmp_path / "synth.duckdb"), "trajectories": 3,
                "tools_per_domain": 4, "tool_wave_domains": 1, "tasks_per_agent": 1},
    }, environ={})
    summary = execute_run(cfg, use_ray=False, show_progress=False)  # type: ignore[arg-type]
    assert summary.status == "finished" and summary.judged == 3
    con = duckdb.connect(str(tmp_path / "synth.duckdb"), read_only=True)
    domains = {d for (d,) in con.execute("SELECT DISTINCT domain FROM tools WHERE status = 'accepted'").fetchall()}
    first_agent = con.execute("SELECT min(created_at) FROM agents").fetchall()[0][0]
    last_tool = con.execute("SELECT max(created_at) FROM tools").fetchall()[0][0]
    con.close()
    assert domains == set(DOMAINS)  # the tool stage finished every wave, though 3 trajectories were enough
    assert first_agent < last_tool  # agents were made while later waves were still being synthesised


def _queue_order(delays: list[float], stop_after: int | None = None) -> list[int]:
    """The toolset indices queued by one producer per delay (a synthesis taking that long), each
    waiting for its turn; with `stop_after`, the pass stops (target reached) after that many."""
    async def main() -> list[int]:
        stream = ToolStream(ToolsetSampler([_tool("alpha", i) for i in range(3)], random.Random(0)), [], 1, 10)
        schedule = EpisodeSchedule(stop_after or 10, 8, stream)
        queued: list[int] = []

        async def produce(index: int, delay: float) -> None:
            await asyncio.sleep(delay)
            try:
                await schedule.wait_turn(index)
                if not schedule.stopped:
                    queued.append(index)
                if len(queued) == stop_after:
                    schedule.episode_started()
                    schedule.episode_judged()  # the target: wakes the producers waiting for their turn
            finally:
                schedule.end_turn(index)

        await asyncio.wait_for(asyncio.gather(*(produce(i, d) for i, d in enumerate(delays))), 5)
        return queued

    return asyncio.run(main())


def test_agents_synthesised_at_once_queue_their_episodes_in_toolset_order() -> None:
    # the first toolset's synthesis is the slowest: the later ones wait for it, whatever finishes first
    assert _queue_order([0.05, 0.0, 0.02, 0.01]) == [0, 1, 2, 3]
    # a stopped pass releases the producers still waiting for their turn, which queue nothing
    assert _queue_order([0.0, 0.05, 0.01, 0.01], stop_after=1) == [0]


def test_a_wave_not_made_for_the_budget_ends_the_toolset_stream() -> None:
    """A later wave that resolves to None (the token budget was spent before it started) ends the
    stream: no toolset is drawn without it, since the resumed run, with the wave made, would draw
    other ones."""
    async def main() -> list[Any]:
        skipped: asyncio.Future[list[ToolSpec] | None] = asyncio.get_running_loop().create_future()
        skipped.set_result(None)
        stream = ToolStream(ToolsetSampler([_tool("alpha", i) for i in range(3)], random.Random(3)),
                            [(skipped, 1)], 1, 10)
        return [await stream.next() for _ in range(3)]

    first, *rest = asyncio.run(main())
    assert first is not None and first[0] == 0  # the first wave's toolset
    assert rest == [None, None]


def test_later_waves_are_not_made_once_the_budget_is_spent() -> None:
    """`PipelineDriver._later_waves` checks `[run] token_budget` before each wave: the wave that spends
    it is the last one made, and the rest resolve to None."""
    made: list[list[str]] = []
    driver = PipelineDriver.__new__(PipelineDriver)
    driver.settings = load_config(None, {"run": {"token_budget": 100}}, environ={}).run
    driver.tokens_spent = 0

    async def wave_tools(domains: list[str]) -> list[ToolSpec]:
        made.append(domains)
        driver.tokens_spent += 60  # this wave's model calls
        return [_tool(d, 0) for d in domains]

    driver._wave_tools = wave_tools  # type: ignore[method-assign]

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        results: list[asyncio.Future[list[ToolSpec] | None]] = [loop.create_future() for _ in range(4)]
        await driver._later_waves([["beta"], ["gamma"], ["delta"], ["epsilon"]], results)
        return [None if f.result() is None else [t.domain for t in f.result() or []] for f in results]

    assert asyncio.run(main()) == [["beta"], ["gamma"], None, None]
    assert made == [["beta"], ["gamma"]]


def test_the_tail_starts_only_the_agents_its_last_episodes_need(fake_server: Any, tmp_path: Path) -> None:
    """With 4 producers and 1 trajectory to go, the run synthesises the agent it needs, not one per
    producer whose tasks would never run: an agent in synthesis is counted for half the episodes
    an agent is asked for (2 tasks: 1), and once made, for the episodes it made (before, all four
    producers started one)."""
    server = fake_server()
    cfg = load_config(None, {
        "llm": {"base_urls": [server.base_url], "max_retries": 20},
        "cache": {"enabled": False},
        "run": {"domains": "weather", "db": str(tmp_path / "synth.duckdb"), "trajectories": 1,
                "tools_per_domain": 4, "tasks_per_agent": 2, "agent_concurrency": 4, "in_flight": 8},
    }, environ={})
    summary = execute_run(cfg, use_ray=False, show_progress=False)  # type: ignore[arg-type]
    assert summary.status == "finished" and summary.judged == 1
    con = duckdb.connect(str(tmp_path / "synth.duckdb"), read_only=True)
    (agents,) = con.execute("SELECT count(*) FROM agents").fetchone() or (0,)
    con.close()
    assert agents == 1


def test_an_agent_in_synthesis_is_promised_half_the_mean_yield() -> None:
    schedule = EpisodeSchedule(3, 8, ToolStream(ToolsetSampler([_tool("alpha", i) for i in range(3)],
                                                               random.Random(0)), [], 1, 10), episodes_asked=2)
    first = schedule.claim()
    assert schedule.expected_yield() == 1.0 and schedule.need_agent()  # half of 2 asked: 1 promised of 3
    second = schedule.claim()
    third = schedule.claim()
    assert not schedule.need_agent()  # 3 promised
    schedule.agent_made(first, 0)  # a barren agent: the mean (the 2 asked counting as one agent) is 1
    assert schedule.expected_yield() == 0.5 and schedule.need_agent()  # 2 x 0.5 promised
    schedule.agent_made(second, 3)  # made 3, waiting for its turn: they count until queued
    assert not schedule.need_agent()
    mean = schedule.expected_yield()
    schedule.agent_made(third, 0, synthesised=False)  # a toolset skipped (its domain at its quota)
    assert schedule.expected_yield() == mean  # says nothing of the yield
    schedule.episode_queued(second)
    schedule.episode_queued(second)
    assert schedule.claims[second] == 1 and schedule.queue.qsize() == 0  # (queued by hand here)
    schedule.release(second)  # the rest dropped (the pass stopped): room again
    schedule.release(third)
    schedule.release(first)
    assert schedule.need_agent() and not schedule.claims


def test_producers_still_synthesising_when_the_target_is_reached_are_cancelled() -> None:
    """The pass ends with its last trajectory, not after syntheses whose episodes would never run;
    a producer's error before that is still raised."""
    async def main() -> bool:
        schedule = EpisodeSchedule(1, 8, ToolStream(ToolsetSampler([_tool("alpha", i) for i in range(3)],
                                                                   random.Random(0)), [], 1, 10))
        endless = asyncio.create_task(asyncio.Event().wait())  # a synthesis that would never end
        quick = asyncio.create_task(asyncio.sleep(0))
        asyncio.get_running_loop().call_later(0.05, lambda: (schedule.episode_started(), schedule.episode_judged()))
        await asyncio.wait_for(PipelineDriver._until_done(schedule, [endless, quick]), 10)
        return endless.cancelled()

    assert asyncio.run(main())

    async def failing() -> None:
        async def boom() -> None:
            raise RuntimeError("synthesis broke")

        schedule = EpisodeSchedule(1, 8, ToolStream(ToolsetSampler([_tool("alpha", i) for i in range(3)],
                                                                   random.Random(0)), [], 1, 10))
        await PipelineDriver._until_done(schedule, [asyncio.create_task(boom())])

    with pytest.raises(RuntimeError, match="synthesis broke"):
        asyncio.run(failing())


def test_a_producer_that_finds_no_toolset_wakes_those_waiting_on_its_promise() -> None:
    """A producer waits while another's agent in synthesis promises the missing episode; if that
    one ends without an agent (no toolset left), the waiter looks again instead of waiting for
    ever (the pass would hang short of its target instead of ending `incomplete`)."""
    async def main() -> bool:
        schedule = EpisodeSchedule(1, 8, ToolStream(ToolsetSampler([_tool("alpha", i) for i in range(3)],
                                                                   random.Random(0)), [], 1, 10), episodes_asked=2)
        first = schedule.claim()
        assert not schedule.need_agent()  # its promise covers the one episode
        waiting = asyncio.create_task(schedule.wait_for_capacity(schedule.need_agent))
        await asyncio.sleep(0)
        schedule.release(first)  # no toolset: nothing was made
        await asyncio.wait_for(waiting, 5)
        return schedule.need_agent()

    assert asyncio.run(main())
