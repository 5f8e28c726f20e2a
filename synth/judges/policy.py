"""The acceptance policy: which deterministic checks must pass and whether (and how) the rubric
LLM judge must agree, combined into one stored `Judgment`.

A trajectory is accepted when every required check passes and, with `llm_judge` on and
`llm_judge_required` (the default), the judge (panel) passes it. The judgment keeps every check
result, the failed checks, the judge's per-criterion verdicts and the reasons (failed checks
first, then the judge's), so a rejected trajectory explains itself in the dataset.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from synth.config import Role
from synth.judges.checks import CHECK_NAMES, DEFAULT_MAX_TURNS, run_checks
from synth.judges.rubric import Aggregation, LLMVerdict, judge_trajectory
from synth.llm import LLMClient
from synth.models import Judgment, Task, ToolSpec, Trajectory


class JudgePolicy(BaseModel):
    """How judges combine into accept/reject. Loadable from a `[judge]` TOML table."""

    model_config = ConfigDict(extra="forbid")

    required_checks: list[str] | Literal["all"] = "all"
    llm_judge: bool = True
    # False makes the LLM verdict advisory: it is still asked for and stored (score, criteria,
    # reasons) so it can be filtered on later, but only the required checks decide acceptance.
    # For judge models too small to be trusted (see `synth judge calibrate`).
    llm_judge_required: bool = True
    samples: int = Field(1, ge=1, le=16)
    aggregation: Aggregation = "majority"
    min_score: float = Field(0.5, ge=0.0, le=1.0)  # threshold of the `mean` aggregation
    max_turns: int = Field(DEFAULT_MAX_TURNS, ge=1)
    # Skip the (costly) LLM judge when a required check already rejects the trajectory.
    judge_rejected: bool = False

    @field_validator("required_checks")
    @classmethod
    def _known_checks(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list):
            unknown = sorted(set(value) - set(CHECK_NAMES))
            if unknown:
                raise ValueError(f"unknown check(s) {unknown}; known: {', '.join(CHECK_NAMES)}")
        return value

    def required(self) -> list[str]:
        return list(CHECK_NAMES) if self.required_checks == "all" else list(self.required_checks)

    def describe(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def combine(
    trajectory: Trajectory, task: Task, checks: list[Any], verdict: LLMVerdict | None,
    policy: JudgePolicy, judge_info: dict[str, Any],
) -> Judgment:
    """The Judgment for given check results and (optional) LLM verdict under `policy`."""
    required = set(policy.required())
    failed_required = [c for c in checks if not c.passed and c.name in required]
    reasons = [f"check {c.name}: {c.detail}" for c in checks if not c.passed]
    accepted = not failed_required
    if verdict is not None:
        reasons += verdict.reasons
        if policy.llm_judge_required:
            accepted = accepted and verdict.passed
        elif not verdict.passed:
            reasons.append("llm judge verdict is advisory (judge.llm_judge_required = false)")
        score = verdict.score
    else:
        score = sum(c.passed for c in checks) / len(checks) if checks else 0.0
        if policy.llm_judge:
            reasons.append("llm judge skipped: a required check failed")
    return Judgment(
        trajectory_id=trajectory.id, task_id=trajectory.task_id, accepted=accepted, score=round(score, 4),
        checks=checks, criteria=verdict.criteria if verdict else [], reasons=reasons, judge=judge_info,
    )


async def judge(
    trajectory: Trajectory,
    task: Task,
    tools: list[ToolSpec],
    llm: LLMClient | None,
    rng: random.Random,
    policy: JudgePolicy,
) -> Judgment:
    """Judge one trajectory: deterministic checks, then (per policy) the rubric LLM judge."""
    checks = run_checks(trajectory, task, tools, max_turns=policy.max_turns)
    required = set(policy.required())
    checks_ok = all(c.passed for c in checks if c.name in required)
    verdict = None
    model = None
    if policy.llm_judge:
        if llm is None:
            raise ValueError("the judge policy has llm_judge on but no model client was given")
        model = llm.roles[Role.JUDGE].model
        if checks_ok or policy.judge_rejected:
            verdict = await judge_trajectory(trajectory, task, llm, rng, policy.samples,
                                             aggregation=policy.aggregation, threshold=policy.min_score)
    info = {"policy": policy.describe(), "model": model}
    return combine(trajectory, task, checks, verdict, policy, info)
