"""The judges: deterministic checks on the calibration set, the rubric LLM judge against a scripted
fake backend (single, panel, broken output), panel aggregation, and the acceptance policy.

The fake judge "reads" the rendered conversation in the request and fails exactly the
trajectories that contain a fabricated confirmation number or one of the corruption's injected tool
errors, so its precision and recall per corruption kind are known in advance.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from synth.judges import JudgePolicy, LLMVerdict, aggregate, combine, judge, judge_panel, run_checks
from synth.judges.calibrate import (
    CORRUPTIONS,
    Example,
    calibrate,
    format_report,
    labelled_set,
    load_fixture_examples,
)
from synth.judges.checks import CHECK_NAMES
from synth.llm import LLMClient
from synth.models import CheckResult, CriterionVerdict, Rubric, Task, ToolSpec, Trajectory
from tests.conftest import make_config

INJECTED_ERRORS = ("service unavailable", "permission denied", "not found: no such record")

# The check that must catch each structural corruption kind (others may catch it too).
CAUGHT_BY = {
    "wrong_tool": "arguments_valid",
    "missing_required_argument": "arguments_valid",
    "ignored_tool_error": "errors_handled",
    "fabricated_result": "no_fabrication",
    "premature_end": "final_reply",
    "needless_tool_use": "no_needless_tools",
}


def verdict_reply(passed: bool, score: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A responder answering every judge request with the same verdict (criteria sized to the schema)."""

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        n = body["response_format"]["json_schema"]["schema"]["properties"]["criteria"]["minItems"]
        data = {"criteria": [{"passed": passed, "evidence": ""}] * n, "score": score,
                "verdict": "pass" if passed else "fail"}
        return {"role": "assistant", "content": json.dumps(data)}

    return respond


def reading_judge(body: dict[str, Any]) -> dict[str, Any]:
    """Fails conversations with a fabricated confirmation number or an injected tool error."""
    conversation = body["messages"][-1]["content"]
    bad = "CNF-" in conversation or any(e in conversation for e in INJECTED_ERRORS)
    return verdict_reply(not bad, 2 if bad else 9)(body)


@pytest.fixture(scope="module")
def labelled() -> list[Example]:
    return labelled_set(load_fixture_examples(), random.Random(7))


# ---------------------------------------------------------------- deterministic checks


def test_good_fixtures_pass_every_check():
    for ex in load_fixture_examples():
        checks = run_checks(ex.trajectory, ex.task, ex.tools)
        assert [c.name for c in checks] == list(CHECK_NAMES)
        assert all(c.passed for c in checks), (ex.task.goal, [c for c in checks if not c.passed])


async def test_checks_catch_every_structural_corruption(labelled: list[Example]):
    assert {ex.label for ex in labelled} == {"good", *CORRUPTIONS}
    report = await calibrate(labelled, None, random.Random(0))
    assert report.n_good == 6 and report.checks_false_rejects == 0
    assert report.llm_false_rejects is None
    by_kind = {k.kind: k for k in report.kinds}
    assert set(by_kind) == set(CORRUPTIONS)
    for kind, score in by_kind.items():
        assert score.n > 0, kind
        assert score.checks_recall == 1.0, (kind, score)
        assert score.checks_precision == 1.0, (kind, score)
        assert score.caught_by.get(CAUGHT_BY[kind]) == score.n, (kind, score.caught_by)
        assert score.llm_precision is None and score.llm_recall is None
    assert "wrong_tool" in format_report(report)


def _episode(calls: list[tuple[str, dict[str, Any]]], *, final: str = "Done.", answered: bool = True,
             termination: str = "user_done", user_turns: int = 1) -> Trajectory:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "s"}]
    msgs += [{"role": "user", "content": f"turn {i}"} for i in range(user_turns)]
    for i, (name, args) in enumerate(calls):
        msgs.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]})
        if answered:
            msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": json.dumps({"ok": True})})
    msgs.append({"role": "assistant", "content": final})
    return Trajectory(task_id="t", agent_id="a", domain="d", messages=msgs, tools=[], termination=termination)


def _failed(traj: Trajectory, **task: Any) -> set[str]:
    tool = ToolSpec(name="lookup", description="d", domain="d", inputSchema={
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})
    t = Task.model_validate({"agent_id": "a", "domain": "d", "goal": "g", "rubric": Rubric(success_criteria=["c"]),
                             **task})
    return {c.name for c in run_checks(traj, t, [tool], max_turns=3) if not c.passed}


def test_checks_on_hand_made_failures():
    assert _failed(_episode([("lookup", {"q": "x"})])) == set()
    assert _failed(_episode([("lookup", {"q": "x"})] * 3)) == {"no_loops"}
    assert _failed(_episode([("nope", {})])) == {"tools_exist"}
    assert _failed(_episode([("lookup", {"q": 5})])) == {"arguments_valid"}
    assert _failed(_episode([("lookup", {"q": "x"})], answered=False)) == {"calls_answered"}
    assert _failed(_episode([], user_turns=4)) == {"turn_limit"}
    assert _failed(_episode([], termination="max_turns")) == {"turn_limit"}
    assert _failed(_episode([], final="Booked, reference BK-4411.")) == {"no_fabrication"}
    assert _failed(_episode([("lookup", {"q": "x"})]), kind="no_tool") == {"no_needless_tools"}
    expected = {"expected_calls": [{"tool": "lookup", "arguments": {"q": "y"}}]}
    assert _failed(_episode([("lookup", {"q": "x"})]), rubric=Rubric(success_criteria=["c"], **expected)) \
        == {"expected_calls"}


# ---------------------------------------------------------------- the LLM judge


async def test_llm_judge_calibration_reports_precision_recall_per_kind(fake_server, labelled, tmp_path: Path):
    server = fake_server(responder=reading_judge)
    async with LLMClient(make_config(server.base_url)) as llm:
        report = await calibrate(labelled, llm, random.Random(0))
    assert server.served == len(labelled)
    assert report.llm_false_rejects == 0 and report.llm_invalid_outputs == 0
    by_kind = {k.kind: k for k in report.kinds}
    for kind in ("fabricated_result", "ignored_tool_error"):
        assert by_kind[kind].llm_recall == 1.0 and by_kind[kind].llm_precision == 1.0
    for kind in ("wrong_tool", "missing_required_argument", "premature_end", "needless_tool_use"):
        assert by_kind[kind].llm_recall == 0.0
        assert by_kind[kind].llm_precision is None  # nothing flagged, nothing to be precise about
    # the checks' numbers are unchanged by running the judge
    assert all(k.checks_recall == 1.0 for k in report.kinds)
    text = format_report(report)
    assert "llm P" in text and "rejected by LLM judge: 0" in text


async def test_llm_judge_false_rejects_lower_precision(fake_server, labelled):
    server = fake_server(responder=verdict_reply(False, 1))  # a judge that fails everything
    async with LLMClient(make_config(server.base_url)) as llm:
        report = await calibrate(labelled, llm, random.Random(0))
    assert report.llm_false_rejects == report.n_good == 6
    for k in report.kinds:
        assert k.llm_recall == 1.0
        assert k.llm_precision == pytest.approx(k.n / (k.n + 6))


async def test_broken_judge_output_never_passes(fake_server):
    server = fake_server(responder=lambda body: {"role": "assistant", "content": "I think it is fine!"})
    ex = load_fixture_examples()[0]
    async with LLMClient(make_config(server.base_url, structured_retries=1)) as llm:
        verdict = await judge_panel(ex.trajectory, ex.task, [llm], random.Random(0), samples=2)
    assert not verdict.passed and verdict.votes == [] and verdict.invalid_samples == 2
    assert any("no valid judge output" in r for r in verdict.reasons)


async def test_judge_flags_evidence_that_is_not_a_quote(fake_server):
    def respond(body: dict[str, Any]) -> dict[str, Any]:
        n = body["response_format"]["json_schema"]["schema"]["properties"]["criteria"]["minItems"]
        crit = [{"passed": True, "evidence": "TRK-55821"}]
        crit += [{"passed": True, "evidence": "the moon is cheese"}] * (n - 1)
        return {"role": "assistant", "content": json.dumps({"criteria": crit, "score": 8, "verdict": "pass"})}

    server = fake_server(responder=respond)
    ex = load_fixture_examples()[0]  # retail: two criteria
    async with LLMClient(make_config(server.base_url)) as llm:
        verdict = await judge_panel(ex.trajectory, ex.task, [llm], random.Random(0))
    assert verdict.passed and verdict.score == 0.8
    assert [c.evidence for c in verdict.criteria] == ["TRK-55821", "the moon is cheese"]
    notes = [r for r in verdict.reasons if "not a quote" in r]
    assert len(notes) == 1 and "reports the shipping" in notes[0]


# ---------------------------------------------------------------- panel aggregation


def _v(passed: bool, score: float, crit: list[bool] | None = None) -> LLMVerdict:
    criteria = [CriterionVerdict(criterion=f"c{i}", passed=p, evidence=f"e{i}{p}") for i, p in enumerate(crit or [])]
    return LLMVerdict(passed=passed, score=score, criteria=criteria, votes=[passed])


def test_aggregate_majority_unanimous_mean():
    panel = [_v(True, 0.9, [True, False]), _v(True, 0.8, [True, True]), _v(False, 0.1, [False, False])]
    majority = aggregate(panel, "majority", 0.5)
    assert majority.passed and majority.votes == [True, True, False]
    assert majority.score == pytest.approx(0.6)
    assert [c.passed for c in majority.criteria] == [True, False]  # per-criterion majority
    assert majority.criteria[0].evidence == "e0True"
    assert any("criterion failed: c1" in r for r in majority.reasons)
    assert any("2/3 pass" in r for r in majority.reasons)
    assert not aggregate(panel, "unanimous", 0.5).passed
    assert aggregate(panel[:2], "unanimous", 0.5).passed
    assert aggregate(panel, "mean", 0.5).passed
    assert not aggregate(panel, "mean", 0.7).passed
    assert not aggregate(panel[1:], "majority", 0.5).passed  # a tie is not a majority
    empty = aggregate([], "majority", 0.5, errors=["judge output invalid (seed 1): x"])
    assert not empty.passed and empty.invalid_samples == 1 and "no valid judge output" in empty.reasons


async def test_judge_panel_over_two_endpoints(fake_server):
    yes = fake_server(responder=verdict_reply(True, 9))
    no = fake_server(responder=verdict_reply(False, 2))
    ex = load_fixture_examples()[0]
    async with LLMClient(make_config(yes.base_url)) as a, LLMClient(make_config(no.base_url)) as b:
        results = {agg: await judge_panel(ex.trajectory, ex.task, [a, b], random.Random(1), samples=2,
                                          aggregation=agg, threshold=0.5)
                   for agg in ("majority", "unanimous", "mean")}
    assert yes.served == no.served == 6  # 2 samples x 3 aggregations per endpoint
    assert results["majority"].votes == [True, True, False, False]
    assert not results["majority"].passed and not results["unanimous"].passed
    assert results["mean"].passed and results["mean"].score == pytest.approx(0.55)


# ---------------------------------------------------------------- the acceptance policy


def _good() -> Example:
    return load_fixture_examples()[0]


def test_combine_policy():
    ex = _good()
    ok = [CheckResult(name=n, passed=True) for n in CHECK_NAMES]
    bad = [c if c.name != "no_loops" else CheckResult(name="no_loops", passed=False, detail="get_order x3")
           for c in ok]
    policy = JudgePolicy()
    pass_v = LLMVerdict(passed=True, score=0.9, criteria=[CriterionVerdict(criterion="c", passed=True)])
    fail_v = LLMVerdict(passed=False, score=0.2, reasons=["judge verdict: fail (score 0.20)"])

    j = combine(ex.trajectory, ex.task, ok, pass_v, policy, {"model": "m"})
    assert j.accepted and j.score == 0.9 and j.reasons == [] and len(j.criteria) == 1
    j = combine(ex.trajectory, ex.task, ok, fail_v, policy, {})
    assert not j.accepted and j.reasons == ["judge verdict: fail (score 0.20)"]
    j = combine(ex.trajectory, ex.task, bad, None, policy, {})
    assert not j.accepted and j.failed_checks == ["no_loops"]
    assert j.reasons == ["check no_loops: get_order x3", "llm judge skipped: a required check failed"]
    assert j.score == round(10 / 11, 4)
    lax = JudgePolicy(required_checks=["tools_exist", "calls_answered"])
    j = combine(ex.trajectory, ex.task, bad, pass_v, lax, {})
    assert j.accepted and j.reasons == ["check no_loops: get_order x3"]  # recorded, not required
    row = j.to_row("r")
    assert row["failed_checks"] == ["no_loops"] and row["checks"][3]["passed"] is False
    with pytest.raises(ValidationError, match="unknown check"):
        JudgePolicy(required_checks=["no_such_check"])


def test_advisory_llm_verdict_is_stored_but_does_not_decide():
    """`llm_judge_required = false` (the shipped synth.toml's policy for the 135M model): a failing
    verdict is kept with its score and reasons, and the required checks alone decide."""
    ex = _good()
    ok = [CheckResult(name=n, passed=True) for n in CHECK_NAMES]
    fail_v = LLMVerdict(passed=False, score=0.2, reasons=["judge verdict: fail (score 0.20)"])
    advisory = JudgePolicy(llm_judge_required=False)
    j = combine(ex.trajectory, ex.task, ok, fail_v, advisory, {})
    assert j.accepted and j.score == 0.2
    assert j.reasons[0] == "judge verdict: fail (score 0.20)" and "advisory" in j.reasons[-1]
    bad = [c if c.name != "tools_exist" else CheckResult(name="tools_exist", passed=False, detail="x")
           for c in ok]
    assert not combine(ex.trajectory, ex.task, bad, fail_v, advisory, {}).accepted


async def test_judge_runs_checks_then_the_llm(fake_server):
    ex = _good()
    rng = random.Random(0)
    checks_only = await judge(ex.trajectory, ex.task, ex.tools, None, rng, JudgePolicy(llm_judge=False))
    assert checks_only.accepted and checks_only.score == 1.0 and checks_only.criteria == []
    with pytest.raises(ValueError, match="no model client"):
        await judge(ex.trajectory, ex.task, ex.tools, None, rng, JudgePolicy())

    server = fake_server(responder=verdict_reply(False, 3))
    broken = CORRUPTIONS["fabricated_result"](ex, rng)
    assert broken is not None
    async with LLMClient(make_config(server.base_url)) as llm:
        j = await judge(ex.trajectory, ex.task, ex.tools, llm, rng, JudgePolicy(samples=3))
        assert not j.accepted and j.score == 0.3 and server.served == 3
        assert j.judge["model"] == llm.roles["judge"].model and j.judge["policy"]["samples"] == 3
        skipped = await judge(broken.trajectory, ex.task, ex.tools, llm, rng, JudgePolicy())
        assert server.served == 3  # a failed required check spares the judge call
        assert not skipped.accepted and "no_fabrication" in skipped.failed_checks
        judged = await judge(broken.trajectory, ex.task, ex.tools, llm, rng, JudgePolicy(judge_rejected=True))
        assert server.served == 4 and len(judged.criteria) == 2


# ---------------------------------------------------------------- the real model


@pytest.mark.integration
def test_calibrate_cli_with_the_real_model(backend_url: str):
    """SmolLM2-135M as judge: the report must come out complete whatever the model's quality."""
    from typer.testing import CliRunner

    from synth.cli import app

    result = CliRunner().invoke(app, ["judge", "calibrate", "--limit", "2", "--base-url", backend_url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_good"] == 2 and report["checks_false_rejects"] == 0
    assert report["llm_false_rejects"] is not None
    for kind in report["kinds"]:
        if kind["n"]:
            assert kind["checks_recall"] == 1.0
            assert kind["llm_recall"] is not None and 0.0 <= kind["llm_recall"] <= 1.0
