"""Judging trajectories: deterministic checks, the rubric LLM judge (or a panel), the acceptance
policy that combines them into a `Judgment`, and calibration of both on corrupted examples."""

from synth.judges.checks import CHECK_NAMES, run_checks, tools_from_trajectory
from synth.judges.policy import JudgePolicy, combine, judge, vote_of
from synth.judges.rubric import LLMVerdict, aggregate, judge_panel, judge_trajectory, render_conversation

__all__ = [
    "CHECK_NAMES",
    "JudgePolicy",
    "LLMVerdict",
    "aggregate",
    "combine",
    "judge",
    "judge_panel",
    "judge_trajectory",
    "render_conversation",
    "run_checks",
    "tools_from_trajectory",
    "vote_of",
]
