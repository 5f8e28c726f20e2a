"""Data for RL: k rollouts per task, pass rates, the pass-rate band of the RL export, preference
pairs of one task, and the reward entry point reproducing each stored score.

The band and reward tests use a hand-built dataset: each of the judges' fixture tasks is rolled
out four times, a chosen number of them the good trajectory and the rest corrupted copies, all
judged by the real policy; so the pass rates are known (0, 0.25, 0.5, 0.75, 1). The pipeline
tests run `synth run` in-process against the scripted fake server.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.config import load_config
from synth.export import export_dataset
from synth.judges.calibrate import CORRUPTIONS, load_fixture_examples
from synth.judges.policy import JudgePolicy, judge
from synth.models import Agent
from synth.pipeline.run import execute_run
from synth.reward import reward_function, score_rollout
from synth.stats import dataset_stats
from synth.store import Dataset, connect_readonly, now

RUN_ID = "run_rl"
# Accepted rollouts of 4 per fixture task, in fixture order (cycled).
ACCEPTED_OF_FOUR = [0, 1, 2, 3, 4]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def _q(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with connect_readonly(db) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def rl_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rl") / "synth.duckdb"
    ds = Dataset(path)
    ds.upsert("runs", {"id": RUN_ID, "run_id": RUN_ID, "started_at": now(), "status": "finished",
                       "domains": ["retail"], "target_trajectories": 0, "config": {}, "usage": {}})
    rng = random.Random(0)
    policy = JudgePolicy(llm_judge=False)
    for n, ex in enumerate(load_fixture_examples()):
        agent = Agent(name=f"agent {n}", domain=ex.task.domain, system_prompt=ex.trajectory.messages[0]["content"],
                      tool_ids=[t.id for t in ex.tools])
        task = ex.task.model_copy(update={"agent_id": agent.id})
        good = ex.trajectory.model_copy(update={"task_id": task.id, "agent_id": agent.id})
        ds.add_many("tools", (t.to_row(RUN_ID) for t in ex.tools))
        ds.add("agents", agent.to_row(RUN_ID))
        ds.add("tasks", task.to_row(RUN_ID))
        bad = [c(ex, rng) for c in CORRUPTIONS.values()]
        bad_trajectories = [b.trajectory.model_copy(update={"task_id": task.id, "agent_id": agent.id})
                            for b in bad if b is not None]
        n_good = ACCEPTED_OF_FOUR[n % len(ACCEPTED_OF_FOUR)]
        for i in range(4):
            source = good if i < n_good else bad_trajectories[i % len(bad_trajectories)]
            rollout = source.model_copy(update={"seed": 1000 + i, "rollout_index": i, "agent_model": "m"})
            judgment = asyncio.run(judge(rollout, task, ex.tools, None, rng, policy))
            # a no_tool answer needs a judge with a vote (`UNCHECKED_ANSWER`): this policy has none
            assert judgment.accepted == (i < n_good and task.kind != "no_tool"), judgment.reasons
            ds.add("trajectories", rollout.to_row(RUN_ID))
            ds.add("judgments", judgment.to_row(RUN_ID))
    ds.flush()
    return path


def test_pass_rates_are_the_share_of_accepted_rollouts(rl_db: Path):
    rates = _q(rl_db, "SELECT k, n_accepted, pass_rate FROM task_pass_rates")
    assert rates and all(k == 4 and rate == n / 4 for k, n, rate in rates)
    assert {rate for *_, rate in rates} == {0.0, 0.25, 0.5, 0.75, 1.0}
    stats = dataset_stats(rl_db)["pass_rates"]
    assert len(stats) == 1 and stats[0]["agent_model"] == "m" and stats[0]["tasks"] == len(rates)
    assert stats[0]["never"] + stats[0]["sometimes"] + stats[0]["always"] == len(rates)
    assert sum(stats[0]["histogram"]) == len(rates) and stats[0]["mean_k"] == 4


def test_rl_export_keeps_the_pass_rate_band_and_pairs_one_task(rl_db: Path, tmp_path: Path):
    out = tmp_path / "rl"
    result = CliRunner().invoke(app, ["export", "--db", str(rl_db), "--format", "rl", "--out", str(out),
                                      "--min-pass-rate", "0.25", "--max-pass-rate", "0.75"])
    assert result.exit_code == 0, result.output
    tasks = _lines(out / "tasks.jsonl")
    in_band = {r[0] for r in _q(rl_db, "SELECT task_id FROM task_pass_rates "
                                       "WHERE pass_rate BETWEEN 0.25 AND 0.75")}
    assert in_band and {t["task_id"] for t in tasks} == in_band
    for t in tasks:
        assert 0.25 <= t["pass_rate"] <= 0.75 and t["n_trajectories"] == 4
        assert t["task"]["goal"] == t["goal"] and t["tool_specs"] and t["agent_models"] == ["m"]
        assert "withheld" in t and "persona" in t and t["prompt"][0]["role"] == "system"

    task_of = dict(_q(rl_db, "SELECT id, task_id FROM trajectories"))
    verdict = dict(_q(rl_db, "SELECT trajectory_id, accepted FROM latest_judgments"))
    pairs = _lines(out / "pairs.jsonl")
    assert pairs
    for p in pairs:
        assert task_of[p["chosen_id"]] == task_of[p["rejected_id"]] == p["task_id"] and p["task_id"] in in_band
        assert verdict[p["chosen_id"]] and not verdict[p["rejected_id"]]

    rollouts = _lines(out / "rollouts.jsonl")
    assert len(rollouts) == 4 * len(tasks)
    assert {r["task_id"] for r in rollouts} == in_band

    bad = CliRunner().invoke(app, ["export", "--db", str(rl_db), "--format", "sft", "--out",
                                   str(tmp_path / "x.jsonl"), "--min-pass-rate", "0.5"])
    assert bad.exit_code == 2 and "--format rl" in bad.output


def test_the_reward_entry_point_returns_the_stored_score(rl_db: Path, tmp_path: Path):
    out = tmp_path / "rl"
    export_dataset(rl_db, "rl", out)
    tasks = {t["task_id"]: t for t in _lines(out / "tasks.jsonl")}
    rollouts = _lines(out / "rollouts.jsonl")
    assert len(rollouts) == 4 * len(tasks)
    for r in rollouts:
        reward = score_rollout(tasks[r["task_id"]], r)
        assert reward.score == r["reward"]["score"]
        assert reward.accepted == r["reward"]["accepted"] and reward.checks == r["reward"]["checks"]
    # A trainer's rollout: messages only, scored through the TRL-style wrapper.
    first = next(r for r in rollouts if r["reward"]["accepted"])
    messages = first["messages"]
    reward = reward_function(out / "tasks.jsonl")
    assert reward([messages[:2]], [messages[2:]], task_id=[first["task_id"]]) == [first["reward"]["score"]]


def _run_config(base_url: str, tmp_path: Path, trajectories: int, per_task: int) -> Any:
    return load_config(None, {
        "llm": {"base_urls": [base_url], "max_retries": 20},
        "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
        "run": {"domains": "weather,order_management", "db": str(tmp_path / "synth.duckdb"),
                "trajectories": trajectories, "tools_per_domain": 4},
        "rollout": {"per_task": per_task},
    }, environ={})


def test_per_task_rollouts_are_stored_once_each_and_resume(fake_server, tmp_path: Path):
    server = fake_server()
    db = tmp_path / "synth.duckdb"
    summary = execute_run(_run_config(server.base_url, tmp_path, 6, 3), use_ray=False, show_progress=False)
    assert summary.judged == 6
    rows = _q(db, "SELECT task_id, list(rollout_index ORDER BY rollout_index), count(DISTINCT seed), "
                  "count(DISTINCT id) FROM trajectories GROUP BY 1")
    assert len(rows) == 2 and all(idx == [0, 1, 2] and seeds == 3 and ids == 3 for _, idx, seeds, ids in rows)
    assert _q(db, "SELECT DISTINCT agent_model FROM trajectories") == [("smollm2-135m-instruct",)]

    again = execute_run(_run_config(server.base_url, tmp_path, 6, 3), use_ray=False, show_progress=False)
    assert again.new_trajectories == 0 and again.run_id == summary.run_id
    # More rollouts per task (and a target to match) extend the same run: one more per task.
    more = execute_run(_run_config(server.base_url, tmp_path, 8, 4), use_ray=False, show_progress=False)
    assert more.run_id == summary.run_id and more.new_trajectories == 2
    assert _q(db, "SELECT task_id, count(*) FROM trajectories GROUP BY 1 HAVING count(*) <> 4") == []
    assert _q(db, "SELECT count(*) - count(DISTINCT (task_id, rollout_index)) FROM trajectories") == [(0,)]

    out = tmp_path / "rl"
    export_dataset(db, "rl", out)
    tasks = {t["task_id"]: t for t in _lines(out / "tasks.jsonl")}
    rollouts = _lines(out / "rollouts.jsonl")
    assert len(rollouts) == 8
    for r in rollouts:
        assert score_rollout(tasks[r["task_id"]], r).score == r["reward"]["score"]
