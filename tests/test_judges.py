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

from synth.judges import JudgePolicy, LLMVerdict, aggregate, combine, judge, judge_panel, run_checks, vote_of
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
from synth.models import (
    WELL_FORMED_CHECKS,
    Calibration,
    CheckResult,
    CriterionVerdict,
    Rubric,
    Task,
    ToolSpec,
    Trajectory,
)
from tests.conftest import judge_answer, make_config, verdict_reply

INJECTED_ERRORS = ("service unavailable", "permission denied", "not found: no such record")

# The check that must catch each structural corruption kind (others may catch it too).
CAUGHT_BY = {
    "wrong_tool": "arguments_valid",
    "missing_required_argument": "arguments_valid",
    "ignored_tool_error": "errors_handled",
    "fabricated_result": "no_fabrication",
    "premature_end": "final_reply",
    "needless_tool_use": "no_needless_tools",
    "duplicate_call_ids": "calls_answered",
    "invalid_json_arguments": "arguments_valid",
    "unknown_tool": "tools_exist",
    "out_of_order_answer": "calls_answered",
    "short_fabricated_value": "no_fabrication",
    "success_after_error": "errors_handled",
    "wrong_tool_compatible": "expected_calls",
    "max_turns_ended": "turn_limit",
    "unrequested_write": "no_unrequested_writes",
}


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
    assert report.n_good == len(load_fixture_examples()) and report.checks_false_rejects == 0
    assert report.false_rejects == 0 and report.llm_false_rejects is None and report.vote == "off"
    by_kind = {k.kind: k for k in report.kinds}
    assert set(by_kind) == set(CORRUPTIONS)
    for kind, score in by_kind.items():
        assert score.n > 0, kind
        assert score.checks_recall == 1.0 and score.recall == 1.0, (kind, score)
        assert score.checks_precision == 1.0 and score.precision == 1.0, (kind, score)
        assert score.recall_ci is not None and score.recall_ci[1] == 1.0 and score.recall_ci[0] < 1.0
        assert score.caught_by.get(CAUGHT_BY[kind]) == score.n, (kind, score.caught_by)
        assert score.llm_precision is None and score.llm_recall is None
    assert "wrong_tool" in format_report(report)


def _episode(calls: list[tuple[str, dict[str, Any]]], *, final: str = "All done for you.", answered: bool = True,
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
    # episodes without calls are `no_tool` tasks: a `tool` task where no tool was called fails expected_calls
    assert _failed(_episode([], user_turns=4), kind="no_tool") == {"turn_limit"}
    assert _failed(_episode([], termination="max_turns"), kind="no_tool") == {"turn_limit"}
    assert _failed(_episode([], final="Booked, reference BK-4411."), kind="no_tool") == {"no_fabrication"}
    assert _failed(_episode([])) == {"expected_calls"}
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
    assert "llm P" in text and "by the LLM judge: 0" in text


async def test_llm_judge_false_rejects_lower_precision(fake_server, labelled):
    server = fake_server(responder=verdict_reply(False, 1))  # a judge that fails everything
    async with LLMClient(make_config(server.base_url)) as llm:
        report = await calibrate(labelled, llm, random.Random(0))
    n_good = len(load_fixture_examples())
    assert report.llm_false_rejects == report.n_good == n_good
    for k in report.kinds:
        assert k.llm_recall == 1.0
        assert k.llm_precision == pytest.approx(k.n / (k.n + n_good))
    # rejecting everything: recall 1.0, precision far below the floor, so no vote
    assert report.judge_recall == 1.0 and report.judge_precision is not None and report.judge_precision < 0.8
    assert report.vote == "advisory" and "precision" in report.vote_reason


async def test_a_pass_without_quoted_evidence_or_with_failed_criteria_is_a_fail(fake_server):
    """"pass" counts only when every criterion passed and its evidence quotes the conversation."""
    ex = load_fixture_examples()[0]

    def judge_says(criteria: list[dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def respond(body: dict[str, Any]) -> dict[str, Any]:
            return judge_answer(body, lambda n: {"criteria": (criteria * n)[:n], "score": 9, "verdict": "pass"})
        return respond

    quote = ex.trajectory.messages[-1]["content"][:40]
    for criteria, should_pass in (
        ([{"passed": True, "evidence": quote}], True),
        ([{"passed": True, "evidence": "fantasie"}], False),  # not a quote
        ([{"passed": False, "evidence": quote}], False),       # "pass" with failed criteria
    ):
        server = fake_server(responder=judge_says(criteria))
        async with LLMClient(make_config(server.base_url)) as llm:
            verdict = await judge_panel(ex.trajectory, ex.task, [llm], random.Random(0))
        assert verdict.passed is should_pass, (criteria, verdict.reasons)


async def test_broken_judge_output_never_passes(fake_server):
    server = fake_server(responder=lambda body: {"role": "assistant", "content": "I think it is fine!"})
    ex = load_fixture_examples()[0]
    async with LLMClient(make_config(server.base_url, structured_retries=1)) as llm:
        verdict = await judge_panel(ex.trajectory, ex.task, [llm], random.Random(0), samples=2)
    assert not verdict.passed and verdict.votes == [] and verdict.invalid_samples == 2
    assert any("no valid judge output" in r for r in verdict.reasons)


async def test_judge_flags_evidence_that_is_not_a_quote(fake_server):
    def respond(body: dict[str, Any]) -> dict[str, Any]:
        return judge_answer(body, lambda n: {"criteria": [{"passed": True, "evidence": "TRK-55821"}]
                                             + [{"passed": True, "evidence": "the moon is cheese"}] * (n - 1),
                                             "score": 8, "verdict": "pass"})

    server = fake_server(responder=respond)
    ex = load_fixture_examples()[0]  # retail: two criteria
    async with LLMClient(make_config(server.base_url)) as llm:
        verdict = await judge_panel(ex.trajectory, ex.task, [llm], random.Random(0))
    # the unquoted criterion fails, so the "pass" verdict does not stand
    assert not verdict.passed and verdict.score == 0.8
    assert [c.evidence for c in verdict.criteria] == ["TRK-55821", "the moon is cheese"]
    assert [c.passed for c in verdict.criteria] == [True, False]
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
    """Accepted only when every check passes; the verdict decides only with a vote."""
    ex = _good()
    ok = [CheckResult(name=n, passed=True) for n in CHECK_NAMES]
    bad = [c if c.name != "no_loops" else CheckResult(name="no_loops", passed=False, detail="get_order x3")
           for c in ok]
    policy = JudgePolicy()
    pass_v = LLMVerdict(passed=True, score=0.9, criteria=[CriterionVerdict(criterion="c", passed=True)])
    fail_v = LLMVerdict(passed=False, score=0.2, reasons=["judge verdict: fail (score 0.20)"])
    decisive = {"model": "m", "vote": "decisive"}

    j = combine(ex.trajectory, ex.task, ok, pass_v, policy, decisive)
    assert j.accepted and j.well_formed and j.score == 0.9 and j.reasons == [] and len(j.criteria) == 1
    j = combine(ex.trajectory, ex.task, ok, fail_v, policy, decisive)
    assert not j.accepted and j.well_formed and j.reasons == ["judge verdict: fail (score 0.20)"]
    j = combine(ex.trajectory, ex.task, bad, None, policy, {})
    assert not j.accepted and j.well_formed and j.failed_checks == ["no_loops"]
    assert j.reasons == ["check no_loops: get_order x3", "llm judge skipped: a check failed"]
    assert j.score == round((len(CHECK_NAMES) - 1) / len(CHECK_NAMES), 4)
    row = j.to_row("r")
    assert row["failed_checks"] == ["no_loops"] and row["checks"][3]["passed"] is False
    assert row["accepted"] is False and row["well_formed"] is True
    # a passing verdict never rescues a failed check, whatever the vote
    assert not combine(ex.trajectory, ex.task, bad, pass_v, policy, decisive).accepted
    ended = ex.trajectory.model_copy(update={"termination": "error"})
    j = combine(ended, ex.task, ok, pass_v, policy, decisive)
    assert not j.accepted and "episode ended by error, not by the user" in j.reasons


def test_policy_cannot_be_weakened():
    for table in ({"required_checks": ["tools_exist"]}, {"required_checks": "all"}, {"llm_judge_required": False}):
        with pytest.raises(ValidationError, match="was removed"):
            JudgePolicy.model_validate(table)


def test_one_failed_check_rejects_but_can_stay_well_formed():
    ex = _good()
    ok = [CheckResult(name=n, passed=True) for n in CHECK_NAMES]
    for name in CHECK_NAMES:
        checks = [c if c.name != name else CheckResult(name=name, passed=False, detail="x") for c in ok]
        j = combine(ex.trajectory, ex.task, checks, None, JudgePolicy(llm_judge=False), {"vote": "off"})
        assert not j.accepted and j.failed_checks == [name], name
        assert j.well_formed == (name not in WELL_FORMED_CHECKS), name


def _calibration(model: str, recall: float, precision: float) -> Calibration:
    return Calibration(judge_model=model, judge_recall=recall, judge_precision=precision)


def test_vote_follows_the_stored_calibration():
    policy = JudgePolicy()
    assert vote_of(policy, "m", None) == ("advisory", "no calibration stored for model m")
    vote, why = vote_of(policy, "m", _calibration("m", 0.41, 0.95))
    assert vote == "advisory" and why == "calibration recall 0.41 < floor 0.8"
    vote, why = vote_of(policy, "m", _calibration("m", 0.95, 0.5))
    assert vote == "advisory" and "precision 0.50 < floor 0.8" in why
    assert vote_of(policy, "m", _calibration("other", 1.0, 1.0))[0] == "advisory"
    assert vote_of(policy, "m", _calibration("m", 0.9, 0.85))[0] == "decisive"
    assert vote_of(JudgePolicy(vote_floor_recall=0.95), "m", _calibration("m", 0.9, 0.85))[0] == "advisory"
    assert vote_of(JudgePolicy(llm_judge=False), "m", _calibration("m", 1.0, 1.0))[0] == "off"


def test_advisory_llm_verdict_is_stored_but_does_not_decide():
    """Without a vote, a failing verdict is kept with its score and reasons but does not reject
    (nor set the score, which stays the checks' share, reproducible without a model), and a
    passing one does not accept a trajectory a check rejects."""
    ex = _good()
    ok = [CheckResult(name=n, passed=True) for n in CHECK_NAMES]
    fail_v = LLMVerdict(passed=False, score=0.2, reasons=["judge verdict: fail (score 0.20)"])
    pass_v = LLMVerdict(passed=True, score=0.9)
    advisory = {"vote": "advisory", "vote_reason": "no calibration stored for model m"}
    j = combine(ex.trajectory, ex.task, ok, fail_v, JudgePolicy(), advisory)
    assert j.accepted and j.score == 1.0 and j.judge["verdict_score"] == 0.2
    assert j.reasons[0] == "judge verdict: fail (score 0.20)"
    assert j.reasons[-1] == "llm judge verdict is advisory (no calibration stored for model m)"
    bad = [c if c.name != "tools_exist" else CheckResult(name="tools_exist", passed=False, detail="x")
           for c in ok]
    assert not combine(ex.trajectory, ex.task, bad, pass_v, JudgePolicy(), advisory).accepted


async def test_judge_runs_checks_then_the_llm(fake_server):
    ex = _good()
    rng = random.Random(0)
    checks_only = await judge(ex.trajectory, ex.task, ex.tools, None, rng, JudgePolicy(llm_judge=False))
    assert checks_only.accepted and checks_only.score == 1.0 and checks_only.criteria == []
    assert checks_only.judge["vote"] == "off"
    with pytest.raises(ValueError, match="no model client"):
        await judge(ex.trajectory, ex.task, ex.tools, None, rng, JudgePolicy())

    server = fake_server(responder=verdict_reply(False, 3))
    broken = CORRUPTIONS["fabricated_result"](ex, rng)
    assert broken is not None
    async with LLMClient(make_config(server.base_url)) as llm:
        model = llm.roles["judge"].model
        # no calibration stored: the failing verdict is advisory
        j = await judge(ex.trajectory, ex.task, ex.tools, llm, rng, JudgePolicy(samples=3))
        assert j.accepted and j.judge["verdict_score"] == 0.3 and server.served == 3
        assert j.judge["vote"] == "advisory" and j.judge["vote_reason"] == f"no calibration stored for model {model}"
        assert j.judge["model"] == model and j.judge["policy"]["samples"] == 3
        # a calibration that meets the floors: the same verdict rejects
        good_cal = _calibration(model, 0.9, 0.9)
        j = await judge(ex.trajectory, ex.task, ex.tools, llm, rng, JudgePolicy(samples=3), good_cal)
        assert not j.accepted and j.judge["vote"] == "decisive" and j.judge["calibration_id"] == good_cal.id
        weak = await judge(ex.trajectory, ex.task, ex.tools, llm, rng, JudgePolicy(), _calibration(model, 0.41, 0.9))
        assert weak.accepted and weak.judge["vote_reason"] == "calibration recall 0.41 < floor 0.8"
        served = server.served
        skipped = await judge(broken.trajectory, ex.task, ex.tools, llm, rng, JudgePolicy(), good_cal)
        assert server.served == served  # a failed check spares the judge call
        assert not skipped.accepted and "no_fabrication" in skipped.failed_checks
        judged = await judge(broken.trajectory, ex.task, ex.tools, llm, rng, JudgePolicy(judge_rejected=True))
        assert server.served == served + 1 and len(judged.criteria) == 2


# ---------------------------------------------------------------- the real model


@pytest.mark.integration
def test_calibrate_cli_with_the_real_model(backend_url: str):
    """SmolLM2-135M as judge: the report must come out complete whatever the model's quality."""
    from typer.testing import CliRunner

    from synth.cli import app

    # two good trajectories and their corruptions: every path of the report, at a CI-sized cost
    result = CliRunner().invoke(app, ["judge", "calibrate", "--no-store", "--fixtures", "2", "--base-url", backend_url,
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_good"] == 2 and report["checks_false_rejects"] == 0
    assert report["llm_false_rejects"] is not None
    for kind in report["kinds"]:
        if kind["n"]:
            assert kind["checks_recall"] == 1.0
            assert kind["llm_recall"] is not None and 0.0 <= kind["llm_recall"] <= 1.0


async def test_a_free_text_verdict_is_read_from_its_last_json_block_or_repaired(fake_server):
    """The judge reasons freely and ends with a JSON block; a reply without a readable block gets
    one schema-constrained repair call that continues from its reasoning, and the repair is counted."""
    from synth.judges.rubric import last_json_object

    assert last_json_object('draft {"verdict": "fail"} then\n```json\n{"verdict": "pass"}\n```') == {"verdict": "pass"}
    assert last_json_object('first {"a": 1} and last {"b": {"c": 2}} done') == {"b": {"c": 2}}
    with pytest.raises(ValueError):
        last_json_object("no verdict at all")
    ex = load_fixture_examples()[0]
    quote = ex.trajectory.messages[-1]["content"][:40]
    seen: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body)
        if not body.get("response_format"):
            return {"role": "assistant", "content": "Both criteria look met, the reply quotes the result."}
        return judge_answer(body, lambda n: {"criteria": [{"passed": True, "evidence": quote}] * n,
                                             "score": 9, "verdict": "pass"})

    server = fake_server(responder=respond)
    async with LLMClient(make_config(server.base_url)) as llm:
        verdict = await judge_panel(ex.trajectory, ex.task, [llm], random.Random(0))
    assert verdict.passed and verdict.repaired == 1
    assert any("repaired under the schema" in r for r in verdict.reasons)
    repair = seen[-1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "Both criteria look met, the reply quotes the result."}
    # the schema format asks once, under the schema, with nothing to repair
    seen.clear()
    async with LLMClient(make_config(server.base_url)) as llm:
        verdict = await judge_panel(ex.trajectory, ex.task, [llm], random.Random(1), verdict_format="schema")
    assert verdict.passed and verdict.repaired == 0 and len(seen) == 1 and seen[0]["response_format"]
