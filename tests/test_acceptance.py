"""Accepted means correct (issue 11), end to end through the CLI: `synth judge file` on the shipped
good trajectories and corrupted copies, lenient input and bad lines; the LLM judge's vote gated by
a stored calibration; `synth judge run` re-judging a dataset so that views, stats and exports see
one (the latest) judgment per trajectory; calibration stored in DuckDB; schema migration.
Unit tier: --no-llm or the scripted fake server only.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.config import ConfigError, load_config
from synth.export import export_dataset
from synth.judges.calibrate import CORRUPTIONS, STRUCTURAL_KINDS, Example, load_fixture_examples
from synth.judges.policy import UNCHECKED_ANSWER, JudgePolicy, judge
from synth.models import Agent, Calibration, Judgment
from synth.stats import dataset_stats
from synth.store import Dataset, connect_readonly, read_judgments
from tests.conftest import verdict_reply

FIXTURES = Path(__file__).resolve().parents[1] / "synth" / "judges" / "fixtures" / "good_trajectories.json"
RUN_ID = "run_accept"

# The check that must name each corruption (others may fail too).
NAMED_BY = {
    "unknown_tool": "tools_exist",
    "invalid_json_arguments": "arguments_valid",
    "missing_required_argument": "arguments_valid",
    "duplicate_call_ids": "calls_answered",
    "out_of_order_answer": "calls_answered",
    "premature_end": "final_reply",
    "fabricated_result": "no_fabrication",
    "short_fabricated_value": "no_fabrication",
    "max_turns_ended": "turn_limit",
    "success_after_error": "errors_handled",
    "unrequested_write": "no_unrequested_writes",
}


def _q(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connect_readonly(db) as con:
        return con.execute(sql, params or []).fetchall()


def _items() -> list[dict[str, Any]]:
    return json.loads(FIXTURES.read_text("utf-8"))


def _item_of(ex: Example) -> dict[str, Any]:
    return {"task": ex.task.model_dump(mode="json"), "tools": [t.model_dump(mode="json", by_alias=True)
                                                               for t in ex.tools],
            "messages": ex.trajectory.messages, "termination": ex.trajectory.termination}


def _write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), "utf-8")
    return path


def _judge_file(tmp_path: Path, lines: list[Any], *extra: str) -> tuple[Any, list[dict[str, Any]]]:
    src = _write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["judge", "file", str(src), "--out", str(out), *extra])
    records = [json.loads(x) for x in out.read_text("utf-8").splitlines()] if out.exists() else []
    return result, records


# ---------------------------------------------------------------- synth judge file


def test_judge_file_accepts_the_fixtures_and_names_each_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(3)
    good = load_fixture_examples()
    corrupted = [(kind, bad) for ex in good for kind, fn in CORRUPTIONS.items() if (bad := fn(ex, rng)) is not None]
    lines = _items() + [_item_of(bad) for _, bad in corrupted]
    result, records = _judge_file(tmp_path, lines, "--no-llm")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["judged"] == len(lines) and summary["input_errors"] == 0
    # A no_tool answer passes every check but is accepted only with a judge that has a vote.
    unchecked = [ex.task.kind == "no_tool" for ex in good]
    assert any(unchecked) and summary["accepted"] == len(good) - sum(unchecked)
    for record, no_tool in zip(records[:len(good)], unchecked, strict=True):
        assert record["well_formed"] and record["failed_checks"] == [], record["reasons"]
        assert record["task"]["goal"]  # the input is kept
        if no_tool:
            assert not record["accepted"]
            assert record["reasons"] == [f"{UNCHECKED_ANSWER}; the llm judge's vote is off "
                                         "(llm judge off (judge.llm_judge = false))"]
        else:
            assert record["accepted"] and record["reasons"] == []
    kinds_seen = set()
    for (kind, _), record in zip(corrupted, records[len(good):], strict=True):
        kinds_seen.add(kind)
        assert not record["accepted"], (kind, record["reasons"])
        assert record["failed_checks"] and record["reasons"], kind
        if kind in NAMED_BY:
            assert NAMED_BY[kind] in record["failed_checks"], (kind, record["failed_checks"])
        if kind in STRUCTURAL_KINDS - {"max_turns_ended"}:
            assert not record["well_formed"], (kind, record["failed_checks"])
    assert kinds_seen == set(CORRUPTIONS)


def test_judge_file_is_lenient_on_input_and_reports_bad_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    item = _items()[0]  # retail: get_order / cancel_order / list_orders
    sparse = {"task": {"goal": item["task"]["goal"]}, "messages": item["messages"],
              "tools": [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                          "parameters": t["inputSchema"]}} for t in item["tools"]]}
    # MCP annotations mark cancel_order as writing; the agent cancels although nobody asked
    mcp_tools = [{"name": t["name"], "description": t["description"], "inputSchema": t["inputSchema"],
                  "annotations": {"readOnlyHint": t["name"] != "cancel_order",
                                  "destructiveHint": t["name"] == "cancel_order"}} for t in item["tools"]]
    cancel = {"role": "assistant", "content": "", "tool_calls": [{"id": "c9", "type": "function", "function": {
        "name": "cancel_order", "arguments": {"order_id": "o-1042"}}}]}
    answer = {"role": "tool", "tool_call_id": "c9",
              "content": json.dumps({"order_id": "o-1042", "status": "cancelled"})}
    unasked = {"task": item["task"], "tools": mcp_tools,
               "messages": [*item["messages"][:-1], cancel, answer, item["messages"][-1]]}
    lines = [sparse, "{not json", {"tools": []}, {"task": {"goal": "x"}, "messages": "hello"}, unasked,
             {"task": {"goal": "g"}, "messages": [{"role": "user", "content": "hi"}], "termination": "whenever"}]
    result, records = _judge_file(tmp_path, lines, "--no-llm")
    assert result.exit_code == 0, result.output
    assert len(records) == len(lines)
    assert records[0]["accepted"], records[0]["reasons"]  # defaults filled: kind tool, domain file, no rubric
    for n in (2, 3, 4, 6):
        record = records[n - 1]
        assert record["accepted"] is False and record["well_formed"] is False
        assert record["reasons"][0].startswith(f"input error: line {n}: "), record
    assert "not JSON" in records[1]["reasons"][0] and records[1]["input"] == "{not json"
    assert "'task'" in records[2]["reasons"][0]
    assert "messages" in records[3]["reasons"][0]
    assert "whenever" in records[5]["reasons"][0]
    assert not records[4]["accepted"] and "no_unrequested_writes" in records[4]["failed_checks"]
    assert records[4]["well_formed"]
    assert "line 2" in result.stderr


def test_judge_file_exits_nonzero_only_when_no_line_reads(tmp_path: Path):
    result, _ = _judge_file(tmp_path, ["{", "[1, 2]"], "--no-llm")
    assert result.exit_code == 2 and "no line" in result.output and "line 1" in result.output


# ---------------------------------------------------------------- the judge's vote


def _verdict(passed: bool) -> Any:
    return verdict_reply(passed, 9 if passed else 1)


def test_llm_vote_is_advisory_until_a_calibration_earns_it(fake_server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    server = fake_server(responder=_verdict(False))  # a judge that fails everything
    db = tmp_path / "cal.duckdb"
    Dataset(db)
    args = ["--base-url", server.base_url, "--model", "judge-x", "--db", str(db)]
    result, records = _judge_file(tmp_path, _items()[:2], *args)
    assert result.exit_code == 0, result.output
    assert all(r["accepted"] for r in records)  # no calibration stored: advisory
    assert all(any("advisory (no calibration stored for model judge-x)" in x for x in r["reasons"]) for r in records)

    weak = Calibration(judge_model="judge-x", judge_recall=0.41, judge_precision=0.9)
    Dataset(db).upsert_many("calibrations", [weak.to_row()])
    result, records = _judge_file(tmp_path, _items()[:2], *args)
    assert all(r["accepted"] for r in records)
    assert any("calibration recall 0.41 < floor 0.8" in x for x in records[0]["reasons"])

    strong = Calibration(judge_model="judge-x", judge_recall=0.9, judge_precision=0.95)
    Dataset(db).upsert_many("calibrations", [strong.to_row()])
    result, records = _judge_file(tmp_path, _items()[:2], *args)
    assert result.exit_code == 0, result.output
    assert not any(r["accepted"] for r in records)  # the judge now has a vote, and it says fail
    assert all(r["well_formed"] and r["failed_checks"] == [] for r in records)


def test_a_no_tool_answer_is_accepted_only_by_a_judge_with_a_vote():
    """No check can tell whether advice or an explanation is true, so a no_tool answer that passes
    every check is accepted only when the LLM judge has a vote and passes it; it stays well formed
    either way. A tool task needs no vote."""
    from synth.judges.checks import run_checks
    from synth.judges.policy import combine
    from synth.judges.rubric import LLMVerdict

    examples = load_fixture_examples()
    no_tool = next(ex for ex in examples if ex.task.kind == "no_tool")
    tool = next(ex for ex in examples if ex.task.kind == "tool")
    passes = LLMVerdict(passed=True, score=0.9)
    cases = [("off", None, False), ("advisory", passes, False), ("decisive", passes, True),
             ("decisive", LLMVerdict(passed=False, score=0.1), False)]
    for vote, verdict, accepted in cases:
        info = {"vote": vote, "vote_reason": "r"}
        checks = run_checks(no_tool.trajectory, no_tool.task, no_tool.tools)
        j = combine(no_tool.trajectory, no_tool.task, checks, verdict, JudgePolicy(), info)
        assert j.accepted is accepted and j.well_formed and j.failed_checks == [], (vote, j.reasons)
        assert any(UNCHECKED_ANSWER in r for r in j.reasons) is (vote != "decisive"), (vote, j.reasons)
        checks = run_checks(tool.trajectory, tool.task, tool.tools)
        j = combine(tool.trajectory, tool.task, checks, verdict, JudgePolicy(), info)
        assert j.accepted is (verdict is None or verdict.passed or vote != "decisive"), (vote, j.reasons)


def test_calibrate_with_a_capable_judge_earns_the_vote(fake_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A judge that rejects exactly the corruptions and passes the good ones earns its vote, and
    the stored report is what `synth judge file` then reads."""
    monkeypatch.setenv("SYNTH_CACHE__DIR", str(tmp_path / "cache"))  # never replay another test's verdicts
    from synth.judges.rubric import render_conversation

    goods = {"Conversation:\n" + render_conversation(ex.trajectory).rstrip() for ex in load_fixture_examples()}

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        conversation = body["messages"][-1]["content"].rstrip()
        return _verdict(any(conversation.endswith(g) for g in goods))(body)

    server = fake_server(responder=respond)
    db = tmp_path / "cal.duckdb"
    Dataset(db)
    result = CliRunner().invoke(app, ["judge", "calibrate", "--db", str(db), "--base-url", server.base_url,
                                      "--model", "judge-y", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["judge_model"] == "judge-y" and report["stored_in"] == str(db)
    assert report["judge_recall"] >= 0.8 and report["judge_precision"] >= 0.8, report
    assert report["vote"] == "decisive" and report["false_rejects"] == 0
    rows = _q(db, "SELECT judge_model, judge_recall, judge_precision, kinds FROM calibrations")
    assert len(rows) == 1 and rows[0][0] == "judge-y"
    assert rows[0][1] == report["judge_recall"] and rows[0][2] == report["judge_precision"]
    kinds = {k["kind"]: k for k in json.loads(rows[0][3])}
    assert set(kinds) == set(CORRUPTIONS)
    for k in kinds.values():
        assert k["n"] > 0 and len(k["recall_ci"]) == 2 and k["llm_recall_ci"] is not None
        if k["structural"]:
            assert k["recall"] == 1.0


def test_calibrate_checks_only_stores_structural_recall_with_intervals(tmp_path: Path):
    db = tmp_path / "cal.duckdb"
    Dataset(db)
    result = CliRunner().invoke(app, ["judge", "calibrate", "--no-llm", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    rows = _q(db, "SELECT id, run_id, judge_model, policy, kinds, created_at FROM calibrations")
    assert len(rows) == 1
    _id, run_id, model, policy, kinds, created = rows[0]
    assert run_id is None and model is None and created is not None and json.loads(policy)["max_turns"]
    structural = [k for k in json.loads(kinds) if k["structural"]]
    assert {k["kind"] for k in structural} == set(STRUCTURAL_KINDS)
    for k in structural:
        assert k["n"] > 0 and k["recall"] == 1.0, k
        lo, hi = k["recall_ci"]
        assert 0.5 < lo < 1.0 and hi == 1.0


# ---------------------------------------------------------------- synth judge run


def _lax_dataset(path: Path) -> dict[str, str]:
    """The fixtures and corrupted copies, every one judged accepted by a lax old judge."""
    ds = Dataset(path)
    rng = random.Random(5)
    kinds: dict[str, str] = {}
    for ex in load_fixture_examples():
        agent = Agent(name="a", domain=ex.task.domain, system_prompt="s", tool_ids=[t.id for t in ex.tools])
        task = ex.task.model_copy(update={"agent_id": agent.id})
        traj = ex.trajectory.model_copy(update={"task_id": task.id, "agent_id": agent.id})
        good = Example(task, ex.tools, traj)
        ds.add_many("tools", (t.to_row(RUN_ID) for t in ex.tools))
        ds.add("agents", agent.to_row(RUN_ID))
        ds.add("tasks", task.to_row(RUN_ID))
        for item in [good, *(fn(good, rng) for fn in CORRUPTIONS.values())]:
            if item is None:
                continue
            # a good no_tool answer stays rejected without a judge with a vote (`UNCHECKED_ANSWER`)
            unchecked = item.label == "good" and task.kind == "no_tool"
            kinds[item.trajectory.id] = "unchecked" if unchecked else item.label
            ds.add("trajectories", item.trajectory.to_row(RUN_ID))
            ds.add("judgments", Judgment(trajectory_id=item.trajectory.id, task_id=task.id, accepted=True,
                                         score=0.9, judge={"model": "lax"}).to_row(RUN_ID))
    ds.flush()
    return kinds


def test_judge_run_rejudges_and_everything_uses_the_latest_judgment(tmp_path: Path):
    db = tmp_path / "lax.duckdb"
    kinds = _lax_dataset(db)
    n = len(kinds)
    assert _q(db, "SELECT count(*) FROM accepted_sft")[0][0] == n
    runner = CliRunner()
    result = runner.invoke(app, ["judge", "run", "--db", str(db), "--no-llm"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    n_good = sum(1 for k in kinds.values() if k == "good")
    assert summary["judged"] == n and summary["accepted"] == n_good
    assert summary["newly_rejected"] == n - n_good
    assert _q(db, "SELECT count(*) FROM judgments")[0][0] == 2 * n
    assert _q(db, "SELECT count(*), count(DISTINCT trajectory_id) FROM latest_judgments")[0] == (n, n)
    accepted = {r[0] for r in _q(db, "SELECT trajectory_id FROM accepted_sft")}
    assert accepted == {t for t, k in kinds.items() if k == "good"}
    # every accepted trajectory's own judgment has no failed check
    for _, j in read_judgments(db):
        if j.accepted:
            assert j.failed_checks == [] and kinds[j.trajectory_id] == "good"
    stats = dataset_stats(db)
    assert stats["stages"]["trajectories"] == {"total": n, "judged": n, "accepted": n_good,
                                               "well_formed": summary["well_formed"]}
    assert stats["stages"]["judgments"]["total"] == 2 * n
    assert {v["vote"] for v in stats["judge_vote"]} == {"off"}
    out = tmp_path / "sft.jsonl"
    written = export_dataset(db, "sft", out).written[str(out)]
    exported = [json.loads(x)["metadata"]["trajectory_id"] for x in out.read_text().splitlines()]
    assert written == len(exported) == len(set(exported)) == n_good
    # well_formed only when asked for by name
    wf = tmp_path / "wf.jsonl"
    result = runner.invoke(app, ["export", "--db", str(db), "--format", "sft", "--out", str(wf),
                                 "--select", "well_formed"])
    assert result.exit_code == 0, result.output
    wf_ids = {json.loads(x)["metadata"]["trajectory_id"] for x in wf.read_text().splitlines()}
    assert set(exported) <= wf_ids
    assert all(kinds[t] not in STRUCTURAL_KINDS - {"max_turns_ended"} for t in wf_ids)
    bad = runner.invoke(app, ["export", "--db", str(db), "--format", "sft", "--out", str(wf), "--select", "all"])
    assert bad.exit_code == 2 and "--select" in bad.output

    # judging again under the same policy adds no row, and stays the latest
    again = runner.invoke(app, ["judge", "run", "--db", str(db), "--no-llm"])
    assert again.exit_code == 0 and json.loads(again.stdout)["newly_rejected"] == 0
    assert _q(db, "SELECT count(*) FROM judgments")[0][0] == 2 * n
    assert _q(db, "SELECT count(*) FROM accepted_sft")[0][0] == n_good


def test_stats_say_when_the_judge_is_advisory(tmp_path: Path):
    db = tmp_path / "d.duckdb"
    ds = Dataset(db)
    ex = load_fixture_examples()[0]
    info = {"model": "tiny", "vote": "advisory", "vote_reason": "no calibration stored for model tiny"}
    j = asyncio.run(judge(ex.trajectory, ex.task, ex.tools, None, random.Random(0), JudgePolicy(llm_judge=False)))
    ds.add("trajectories", ex.trajectory.to_row(RUN_ID))
    ds.add("judgments", j.model_copy(update={"judge": info}).to_row(RUN_ID))
    ds.flush()
    stats = dataset_stats(db)
    assert stats["judge_vote"] == [{"vote": "advisory", "reason": "no calibration stored for model tiny",
                                    "model": "tiny", "count": 1}]
    text = CliRunner().invoke(app, ["stats", "--db", str(db)])
    assert text.exit_code == 0 and "advisory" in text.stdout and "no calibration stored" in text.stdout


# ---------------------------------------------------------------- config and schema


def test_a_config_cannot_redefine_accepted(tmp_path: Path):
    path = tmp_path / "synth.toml"
    path.write_text('[judge]\nrequired_checks = ["tools_exist"]\nllm_judge_required = false\n')
    with pytest.raises(ConfigError, match="required_checks' was removed"):
        load_config(path, environ={})
    shipped = load_config(Path(__file__).resolve().parents[1] / "synth.toml", environ={})
    policy = shipped.judge_policy()
    assert policy.llm_judge and policy.vote_floor_recall >= 0.8 and policy.vote_floor_precision >= 0.8


def test_an_older_dataset_is_migrated(tmp_path: Path):
    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("""CREATE TABLE judgments (id VARCHAR PRIMARY KEY, run_id VARCHAR, trajectory_id VARCHAR,
                       task_id VARCHAR, accepted BOOLEAN, score DOUBLE, checks JSON, failed_checks JSON,
                       criteria JSON, reasons JSON, judge JSON, created_at TIMESTAMP)""")
        con.execute("""INSERT INTO judgments VALUES ('j1', 'r', 't1', 'k', true, 1, '[]', '["no_loops"]', '[]',
                       '[]', '{}', now()), ('j2', 'r', 't2', 'k', false, 0, '[]', '["calls_answered"]', '[]',
                       '[]', '{}', now())""")
    Dataset(db)
    assert dict(_q(db, "SELECT id, well_formed FROM judgments")) == {"j1": True, "j2": False}
    assert _q(db, "SELECT count(*) FROM calibrations")[0][0] == 0
    assert _q(db, "SELECT count(*) FROM latest_judgments")[0][0] == 2
