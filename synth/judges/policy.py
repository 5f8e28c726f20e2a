"""The acceptance policy: one meaning of "accepted", and when the rubric LLM judge has a vote.

A trajectory is **accepted** only when it is a correct worked example of its task:
- every deterministic check passes (`CHECK_NAMES`, rubric checks included; no configuration can
  make a check optional), which includes that the episode was ended by the user (`turn_limit`);
- and, where the LLM judge has a vote, its verdict passes;
- and, for a `no_tool` task (advice, an explanation), the LLM judge has a vote: no check can tell
  whether such an answer is true, so without a judge that earned its vote it is never accepted
  (it is still stored, `well_formed` when its checks pass, with the reason).

The LLM judge **has a vote** only when a stored calibration of that judge model
(`synth judge calibrate`, passed in as a `Calibration`; this module never reads the store) meets
the floors of the `[judge]` table (`vote_floor_recall`, `vote_floor_precision`, compared with the
judge's macro-averaged recall and precision over the corruption kinds). Otherwise its verdict is
**advisory**: asked for (when `llm_judge` is on), stored with its score, criteria and reasons,
but it neither accepts nor rejects. `judgment.judge["vote"]` says which ("decisive", "advisory",
or "off" without an LLM judge) and `judgment.judge["vote_reason"]` why.

`well_formed` is stored beside `accepted`: the structural checks and `no_fabrication`
(`synth.models.WELL_FORMED_CHECKS`), for users who want structurally valid data from a weak model.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from synth.config import Role
from synth.judges.checks import run_checks
from synth.judges.rubric import LLMVerdict, judge_panel
from synth.llm import LLMClient
from synth.models import WELL_FORMED_CHECKS, Calibration, CheckResult, Judgment, Task, ToolSpec, Trajectory
from synth.settings import JudgePolicy

__all__ = ["JudgePolicy", "Vote", "combine", "judge", "judge_name", "vote_of"]

Vote = Literal["decisive", "advisory", "off"]

# Why a `no_tool` answer needs a judge with a vote: the checks see its form (a sentence, not cut
# off, advice that names something to do, no invented values), not whether what it says is true.
# A CI main job accepted, every check passed, an answer to "explain ... using a tool ... without
# using any tools" that described a made-up service able to "change the weather of a city".
UNCHECKED_ANSWER = "a no_tool answer's content is checked by no rule, only by an llm judge with a vote"


def judge_name(policy: JudgePolicy, judge_model: str) -> str:
    """The name a judge's calibration is stored and looked up under: the judge role's model
    (`judge_model`), or for a panel `panel:` and its members' models."""
    if not policy.panel:
        return judge_model
    return "panel:" + "+".join(str(m.get("model") or judge_model) for m in policy.panel)


def vote_of(policy: JudgePolicy, model: str | None, calibration: Calibration | None) -> tuple[Vote, str]:
    """Whether the LLM verdict of `model` decides under `policy` given its stored calibration."""
    if not policy.llm_judge:
        return "off", "llm judge off (judge.llm_judge = false)"
    if calibration is None or calibration.judge_recall is None or calibration.judge_precision is None:
        return "advisory", f"no calibration stored for model {model}"
    if calibration.judge_model != model:
        return "advisory", f"calibration is for model {calibration.judge_model}, not {model}"
    if calibration.judge_recall < policy.vote_floor_recall:
        return "advisory", f"calibration recall {calibration.judge_recall:.2f} < floor {policy.vote_floor_recall}"
    if calibration.judge_precision < policy.vote_floor_precision:
        return "advisory", (f"calibration precision {calibration.judge_precision:.2f} "
                            f"< floor {policy.vote_floor_precision}")
    return "decisive", (f"calibration recall {calibration.judge_recall:.2f}, "
                        f"precision {calibration.judge_precision:.2f} meet the floors")


def combine(
    trajectory: Trajectory, task: Task, checks: list[CheckResult], verdict: LLMVerdict | None,
    policy: JudgePolicy, judge_info: dict[str, Any], gate_unchecked: bool = True,
) -> Judgment:
    """The Judgment for given check results and (optional) LLM verdict under `policy`.
    `judge_info["vote"]` ("decisive" / "advisory" / "off", default "advisory") says whether the
    verdict counts. `gate_unchecked=False` leaves out the rule that a `no_tool` answer needs a judge
    with a vote: calibration measures what the checks and the judge detect, and that rule follows
    from the calibration rather than being part of it."""
    vote = judge_info.get("vote", "advisory")
    failed = [c for c in checks if not c.passed]
    reasons = [f"check {c.name}: {c.detail}" for c in failed]
    accepted = bool(checks) and not failed
    if not checks:
        reasons.append("no deterministic check was run")
    if trajectory.termination != "user_done" and not any(c.name == "turn_limit" for c in failed):
        accepted = False
        reasons.append(f"episode ended by {trajectory.termination}, not by the user")
    if gate_unchecked and task.kind == "no_tool" and vote != "decisive":
        accepted = False
        reasons.append(f"{UNCHECKED_ANSWER}; the llm judge's vote is {vote} "
                       f"({judge_info.get('vote_reason', 'no vote')})")
    # The score is the reward of what decided: the verdict's score when the verdict has a vote,
    # else the share of checks passed (an advisory verdict's score is kept in `judge`). So a
    # rollout judged without a decisive judge scores the same with no model at all (`synth.reward`).
    score = sum(c.passed for c in checks) / len(checks) if checks else 0.0
    if verdict is not None:
        reasons += verdict.reasons
        judge_info = {**judge_info, "verdict_score": round(verdict.score, 4)}
        if vote == "decisive":
            accepted = accepted and verdict.passed
            score = verdict.score
        elif not verdict.passed:
            reasons.append(f"llm judge verdict is advisory ({judge_info.get('vote_reason', 'no vote')})")
    elif policy.llm_judge and failed:
        reasons.append("llm judge skipped: a check failed")
    by_name = {c.name: c.passed for c in checks}
    well_formed = bool(checks) and all(by_name.get(n, False) for n in WELL_FORMED_CHECKS)
    return Judgment(
        trajectory_id=trajectory.id, task_id=trajectory.task_id, accepted=accepted, well_formed=well_formed,
        score=round(score, 4), checks=checks, criteria=verdict.criteria if verdict else [], reasons=reasons,
        judge=judge_info,
    )


async def judge(
    trajectory: Trajectory,
    task: Task,
    tools: list[ToolSpec],
    llm: LLMClient | None,
    rng: random.Random,
    policy: JudgePolicy,
    calibration: Calibration | None = None,
) -> Judgment:
    """Judge one trajectory: deterministic checks, then (per policy) the rubric LLM judge, whose
    verdict decides only when `calibration` (the stored one of the judge model, loaded by the
    caller) earns it a vote."""
    checks = run_checks(trajectory, task, tools, max_turns=policy.max_turns)
    checks_ok = all(c.passed for c in checks)
    verdict = None
    model = None
    if policy.llm_judge:
        if llm is None:
            raise ValueError("the judge policy has llm_judge on but no model client was given")
        model = judge_name(policy, llm.roles[Role.JUDGE].model)
        if checks_ok or policy.judge_rejected:
            judges = [llm.with_role(Role.JUDGE, member) for member in policy.panel] or [llm]
            verdict = await judge_panel(trajectory, task, judges, rng, samples=policy.samples,
                                        aggregation=policy.aggregation, threshold=policy.min_score,
                                        verdict_format=policy.verdict_format)
    vote, why = vote_of(policy, model, calibration)
    decisive_calibration = calibration.id if calibration is not None and vote == "decisive" else None
    info: dict[str, Any] = {"policy": policy.describe(), "model": model, "vote": vote, "vote_reason": why,
                            "calibration_id": decisive_calibration}
    if verdict is not None:  # how many samples were unreadable, or readable only after a repair
        info |= {"invalid_samples": verdict.invalid_samples, "repaired_samples": verdict.repaired}
    return combine(trajectory, task, checks, verdict, policy, info)
