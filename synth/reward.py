"""The reward as code: score a rollout of an exported task the way synth judged its own.

An RL trainer (TRL, verl, OpenRLHF) rolls the tasks of `synth export --format rl` out with its
policy and needs a reward for each new rollout. `score_rollout(task, rollout)` gives it: the
task is a line of `tasks.jsonl`, the rollout a dict with `messages` (OpenAI chat messages, the
system prompt and the user's turns included) and, when the trainer has them, `termination`,
`final_state` and `state_log` (a missing termination is inferred from the conversation, a
missing final state is the task's initial state with the state log replayed). The reward is
synth's judgment of it under the policy stored with the task's rollouts: every deterministic
check (`synth.judges.checks`), and the rubric LLM judge when a `judge` client is given. Its
`score` is what the policy scored: the share of checks passed, or the judge's score where the
judge's verdict has a vote (pass the judge model's `calibration` for that). Called on a line of
`rollouts.jsonl`, it returns the score stored for that rollout.

    from synth.reward import score_rollout
    reward = score_rollout(task_line, {"messages": messages})
    reward.score, reward.accepted, reward.checks   # 0.92, False, {"final_reply": False, ...}

`reward_function(tasks_path)` wraps it for TRL's GRPO trainer: `reward_funcs=[...]` called with
conversational completions and the dataset's `task_id` column.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from synth.judges.checks import infer_termination
from synth.judges.policy import JudgePolicy
from synth.judges.policy import judge as judge_with_policy
from synth.llm import LLMClient
from synth.models import Calibration, StepRecord, Task, ToolSpec, Trajectory


class Reward(BaseModel):
    """A rollout's reward: the policy's score, whether it would be accepted (and well formed),
    each check's result, and the reasons it was not accepted."""

    score: float
    accepted: bool
    well_formed: bool
    checks: dict[str, bool]
    reasons: list[str]


def _policy(rollout: Mapping[str, Any], judge: LLMClient | None) -> JudgePolicy:
    """The policy the rollout was judged under (stored with each exported rollout; the default
    policy for a new one), with the LLM judge on only when a client is given."""
    stored = (rollout.get("reward") or {}).get("judge_policy") or {}
    known = {k: v for k, v in stored.items() if k in JudgePolicy.model_fields}
    return JudgePolicy.model_validate({**known, "llm_judge": judge is not None})


def rollout_trajectory(task: Mapping[str, Any], rollout: Mapping[str, Any]) -> tuple[Task, list[ToolSpec], Trajectory]:
    """synth's models of an exported task line and a rollout of it (see the module docstring)."""
    if "task" not in task or "tool_specs" not in task:
        raise ValueError("not a line of an rl export's tasks.jsonl: it has no 'task' and 'tool_specs'")
    spec = Task.model_validate(task["task"])
    tools = [ToolSpec.model_validate(t) for t in task["tool_specs"]]
    messages = list(rollout.get("messages") or [])
    if not messages:
        raise ValueError("the rollout has no messages")
    trajectory = Trajectory(
        task_id=str(task.get("task_id") or spec.id), agent_id=spec.agent_id, domain=spec.domain,
        messages=messages, tools=[t.to_openai() for t in tools],
        steps=[StepRecord.model_validate(s) for s in rollout.get("steps") or []],
        state_log=list(rollout.get("state_log") or []), final_state=dict(rollout.get("final_state") or {}),
        termination=rollout.get("termination") or infer_termination(messages), seed=int(rollout.get("seed") or 0),
    )
    return spec, tools, trajectory


async def score_rollout_async(task: Mapping[str, Any], rollout: Mapping[str, Any], *,
                              judge: LLMClient | None = None, calibration: Calibration | None = None) -> Reward:
    """`score_rollout` in a running event loop."""
    spec, tools, trajectory = rollout_trajectory(task, rollout)
    policy = _policy(rollout, judge)
    judgment = await judge_with_policy(trajectory, spec, tools, judge, random.Random(trajectory.seed), policy,
                                       calibration)
    return Reward(score=judgment.score, accepted=judgment.accepted, well_formed=judgment.well_formed,
                  checks={c.name: c.passed for c in judgment.checks}, reasons=judgment.reasons)


def score_rollout(task: Mapping[str, Any], rollout: Mapping[str, Any], *,
                  judge: LLMClient | None = None, calibration: Calibration | None = None) -> Reward:
    """The reward of `rollout` (a dict with `messages`, optionally `termination`, `final_state`,
    `state_log`, `steps`, `seed`) of the exported `task` (a line of `tasks.jsonl`)."""
    return asyncio.run(score_rollout_async(task, rollout, judge=judge, calibration=calibration))


def reward_function(tasks_path: str | Path) -> Callable[..., list[float]]:
    """A TRL-style reward function over the tasks of an rl export: called with `prompts`,
    conversational `completions` and the dataset's `task_id` column, it scores each prompt +
    completion with `score_rollout` (checks only)."""
    tasks = {}
    with Path(tasks_path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                tasks[record["task_id"]] = record

    def reward(prompts: list[list[dict[str, Any]]], completions: list[list[dict[str, Any]]],
               task_id: list[str], **_: Any) -> list[float]:
        return [score_rollout(tasks[t], {"messages": [*p, *c]}).score
                for p, c, t in zip(prompts, completions, task_id, strict=True)]

    reward.__name__ = "synth_reward"
    return reward
