"""The DuckDB dataset end to end: stored through `Dataset`, read back by `synth stats`, every
export format, the inspection notebook, and a reader opening the file while a writer flushes.

The dataset is built from the judges' fixture trajectories (six domains, tool / no-tool /
unserviceable tasks): each good trajectory is judged accepted by the real deterministic checks,
its corruptions rejected, plus rejected tools/agents/tasks with reasons, model-call rows, a task
never rolled out, a second judge's judgment of one trajectory, and one accepted trajectory whose
tool call has no answer (which exports must skip, not write broken).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.export import ExportError, export_dataset, openai_messages, unanswered_calls
from synth.judges.calibrate import CORRUPTIONS, Example, load_fixture_examples
from synth.judges.policy import JudgePolicy, judge
from synth.models import Agent, Judgment, StepRecord, Task, ToolSpec
from synth.stats import dataset_stats
from synth.store import TABLES, VIEWS, Dataset, connect_readonly, now

REPO = Path(__file__).resolve().parents[1]
RUN_ID = "run_test"


def _q(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connect_readonly(db) as con:
        return con.execute(sql, params or []).fetchall()


def build_dataset(path: Path) -> None:
    """A small dataset with accepted and rejected items at every stage (see module docstring)."""
    ds = Dataset(path, flush_every=25)
    ds.upsert("runs", {"id": RUN_ID, "run_id": RUN_ID, "started_at": now(), "status": "finished",
                       "domains": ["retail", "travel"], "target_trajectories": 10, "config": {}, "usage": {}})
    rng = random.Random(0)
    policy = JudgePolicy(llm_judge=False)
    for n, ex in enumerate(load_fixture_examples()):
        system = ex.trajectory.messages[0]["content"]
        agent = Agent(name=f"{ex.task.domain} agent", domain=ex.task.domain, system_prompt=system,
                      tool_ids=[t.id for t in ex.tools])
        task = ex.task.model_copy(update={"agent_id": agent.id})
        steps = [StepRecord(turn=1, actor="agent", prompt_tokens=100 + n, completion_tokens=20 + n)]
        traj = ex.trajectory.model_copy(update={"task_id": task.id, "agent_id": agent.id, "steps": steps})
        good = Example(task, ex.tools, traj)
        ds.add_many("tools", (t.to_row(RUN_ID) for t in ex.tools))
        ds.add("agents", agent.to_row(RUN_ID))
        ds.add("tasks", task.to_row(RUN_ID))
        for item in [good, *(corrupt(good, rng) for corrupt in CORRUPTIONS.values())]:
            if item is None:
                continue
            judgment = asyncio.run(judge(item.trajectory, item.task, item.tools, None, rng, policy))
            # a no_tool answer needs a judge with a vote (`UNCHECKED_ANSWER`); this policy has none
            assert judgment.accepted == (item.label == "good" and item.task.kind != "no_tool"), judgment.reasons
            ds.add("trajectories", item.trajectory.to_row(RUN_ID))
            ds.add("judgments", judgment.to_row(RUN_ID))
        if n == 0:
            # A second judge (another configuration) also accepts the good trajectory.
            second = Judgment(trajectory_id=traj.id, task_id=task.id, accepted=True, score=0.9,
                              judge={"model": "second-judge"})
            ds.add("judgments", second.to_row(RUN_ID))
            # An accepted trajectory whose tool call is never answered (a lax policy let it in).
            broken = traj.model_copy(update={"messages": [m for m in traj.messages if m["role"] != "tool"],
                                             "seed": 99})
            ds.add("trajectories", broken.to_row(RUN_ID))
            ds.add("judgments", Judgment(trajectory_id=broken.id, task_id=task.id, accepted=True,
                                         score=0.7, judge={"model": "lax"}).to_row(RUN_ID))
            # A task never rolled out: the RL export takes its prompt from the goal.
            fresh = Task(agent_id=agent.id, domain=task.domain, goal="List the orders of customer c-7.",
                         rubric={"success_criteria": ["The assistant lists the orders of c-7"]})
            ds.add("tasks", fresh.to_row(RUN_ID))
    bad_tool = ToolSpec(name="broken_tool", description="?", inputSchema={"type": "object"}, domain="retail")
    ds.add("tools", bad_tool.to_row(RUN_ID, "rejected", "invalid output schema: not an object"))
    ds.add("agents", Agent(name="dup", domain="retail", system_prompt="x", tool_ids=[]).to_row(
        RUN_ID, "rejected", "empty toolset: no tool matched"))
    for i, reason in enumerate(["unsolvable: the toolset cannot do this", "unsolvable: no such entity",
                                "malformed rubric: no criteria", "goal 'abc' is too short (1 word(s))",
                                "goal 'xyz zy' is too short (2 word(s))"]):
        bad = Task(agent_id="a-x", domain="travel", goal=f"impossible {i}", rubric={"success_criteria": []})
        ds.add("tasks", bad.to_row(RUN_ID, "rejected", reason))
    for i, role in enumerate(["generator", "generator", "user", "agent", "agent", "environment", "judge"]):
        ds.add("llm_calls", {"id": f"call-{i}", "run_id": RUN_ID, "role": role, "model": "m", "endpoint": "e",
                             "prompt_tokens": 50 + i, "completion_tokens": 10 + i, "latency_s": 0.1,
                             "retries": i % 2, "structured_attempts": 1, "cache_hit": i == 3, "ok": i != 6,
                             "error": None if i != 6 else "boom",
                             "finish_reason": {0: "length", 1: "repetition", 3: "length"}.get(i, "stop")})
    ds.flush()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dataset") / "synth.duckdb"
    build_dataset(path)
    return path


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _accepted_ids(db: Path) -> set[str]:
    """Trajectories whose latest judgment accepts them (what views, stats and exports count)."""
    return {r[0] for r in _q(db, "SELECT trajectory_id FROM latest_judgments WHERE accepted")}


# ---------------------------------------------------------------- sft


def test_sft_export_loads_with_datasets_and_pairs_every_call(db: Path, tmp_path: Path):
    out = tmp_path / "sft.jsonl"
    summary = export_dataset(db, "sft", out)
    records = _lines(out)
    accepted = _accepted_ids(db)
    # every accepted trajectory once (the doubly judged one too), except the broken one
    assert len(records) == len(accepted) - 1
    assert summary.written[str(out)] == len(records)
    assert summary.skipped == {"a tool call has no tool message": 1}
    assert {r["metadata"]["trajectory_id"] for r in records} < accepted
    assert {r["metadata"]["domain"] for r in records} == {"retail", "travel", "weather", "productivity",
                                                          "banking", "calendar"}
    n_calls = 0
    for rec in records:
        assert set(rec) == {"messages", "tools", "metadata"}
        assert rec["tools"] and all(t["type"] == "function" and t["function"]["name"] for t in rec["tools"])
        msgs = rec["messages"]
        assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "assistant"
        answers = [m["tool_call_id"] for m in msgs if m["role"] == "tool"]
        for i, m in enumerate(msgs):
            assert isinstance(m["content"], str)
            for call in m.get("tool_calls") or []:
                n_calls += 1
                assert isinstance(call["function"]["arguments"], str)
                assert isinstance(json.loads(call["function"]["arguments"]), dict)
                later = [x for x in msgs[i + 1:] if x["role"] == "tool" and x["tool_call_id"] == call["id"]]
                assert len(later) == 1 and later[0]["name"] == call["function"]["name"]
        assert len(answers) == len(set(answers))
        assert unanswered_calls(msgs) == ""
    assert n_calls > 0

    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("json", data_files=str(out), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == len(records)
    assert set(loaded.column_names) == {"messages", "tools", "metadata"}
    for row in loaded:
        for m in row["messages"]:
            for call in m.get("tool_calls") or []:
                assert isinstance(call["function"]["arguments"], str)


def test_openai_messages_normalises_and_rejects():
    raw = [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
           {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}}]},
           {"role": "tool", "tool_call_id": "c1", "content": None},
           {"role": "assistant", "content": "done"}]
    msgs, problem = openai_messages(raw)
    assert problem == "" and msgs is not None
    assert msgs[0]["content"] == "hi"
    assert msgs[1]["tool_calls"][0] == {"id": "c1", "type": "function",
                                        "function": {"name": "f", "arguments": '{"a": 1}'}}
    assert msgs[2] == {"role": "tool", "tool_call_id": "c1", "name": "f", "content": ""}
    assert openai_messages(raw[:2] + raw[3:])[1] == "a tool call has no tool message"
    assert openai_messages([raw[0], raw[2]])[1] == "a tool message answers no call"
    bad_args = [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]
    assert openai_messages(bad_args)[1] == "tool call arguments are not a JSON object"


# ---------------------------------------------------------------- sharegpt, rl, parquet


def test_sharegpt_export_alternates_like_apigen_mt(db: Path, tmp_path: Path):
    out = tmp_path / "sharegpt.jsonl"
    export_dataset(db, "sharegpt", out)
    records = _lines(out)
    assert len(records) == len(_accepted_ids(db)) - 1
    saw_call = False
    for rec in records:
        assert set(rec) == {"conversations", "system", "tools", "metadata"}
        assert rec["system"]
        tools = json.loads(rec["tools"])
        assert isinstance(tools, list) and tools
        turns = rec["conversations"]
        assert turns[0]["from"] == "human" and turns[-1]["from"] == "gpt"
        for i, turn in enumerate(turns):
            assert set(turn) == {"from", "value"} and isinstance(turn["value"], str)
            assert turn["from"] in (("human", "observation") if i % 2 == 0 else ("gpt", "function_call"))
            if turn["from"] == "function_call":
                saw_call = True
                call = json.loads(turn["value"])
                assert isinstance(call["arguments"], dict) and call["name"] in {t["function"]["name"] for t in tools}
                assert turns[i + 1]["from"] == "observation"
    assert saw_call


def test_rl_export_tasks_and_preference_pairs(db: Path, tmp_path: Path):
    out = tmp_path / "rl"
    summary = export_dataset(db, "rl", out)
    tasks = _lines(out / "tasks.jsonl")
    n_tasks = _q(db, "SELECT count(*) FROM rl_tasks")[0][0]
    assert len(tasks) == n_tasks == summary.written[str(out / "tasks.jsonl")]
    for t in tasks:
        assert [m["role"] for m in t["prompt"]] == ["system", "user"]
        assert all(m["content"] for m in t["prompt"])
        assert t["tools"] and t["rubric"]["success_criteria"] is not None
        assert isinstance(t["initial_state"], dict)
    fresh = [t for t in tasks if t["n_trajectories"] == 0]
    assert len(fresh) == 1 and fresh[0]["first_turn_source"] == "goal"
    assert fresh[0]["prompt"][1]["content"] == "List the orders of customer c-7."
    assert {x["function"]["name"] for x in fresh[0]["tools"]} == {"get_order", "cancel_order", "list_orders"}
    rolled = [t for t in tasks if t["n_trajectories"]]
    assert all(t["first_turn_source"] == "trajectory" for t in rolled)

    pairs = _lines(out / "pairs.jsonl")
    verdict = dict(_q(db, "SELECT trajectory_id, accepted FROM latest_judgments"))
    exportable = {i for i, m in _q(db, "SELECT id, messages FROM trajectories")
                  if openai_messages(json.loads(m))[0] is not None}
    # a rejected trajectory pairs with its task's accepted one; the no_tool task has none
    task_of = dict(_q(db, "SELECT trajectory_id, task_id FROM latest_judgments"))
    with_chosen = {task_of[t] for t, v in verdict.items() if v}
    n_rejected = sum(1 for t, v in verdict.items() if not v and t in exportable and task_of[t] in with_chosen)
    same = summary.skipped.get("rejected trajectory has the same messages as the accepted one", 0)
    assert len(pairs) == n_rejected - same > 0
    for p in pairs:
        assert verdict[p["chosen_id"]] is True and verdict[p["rejected_id"]] is False
        assert p["prompt"] and p["prompt"][0]["role"] == "system"
        assert p["chosen"] and p["chosen"] != p["rejected"]
        assert p["rejected_reasons"]
        assert unanswered_calls(p["prompt"] + p["chosen"]) == ""
        assert unanswered_calls(p["prompt"] + p["rejected"]) == ""


def test_parquet_export_writes_every_table_and_view(db: Path, tmp_path: Path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "parquet"
    export_dataset(db, "parquet", out)
    for name in [*TABLES, *VIEWS]:
        table = pq.read_table(out / f"{name}.parquet")
        assert table.num_rows == _q(db, f"SELECT count(*) FROM {name}")[0][0], name
        assert set(table.column_names) >= ({"id"} if name in TABLES else {"run_id"})
    messages = pq.read_table(out / "trajectories.parquet").column("messages").to_pylist()
    assert isinstance(json.loads(messages[0]), list)


def test_export_errors(db: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        export_dataset(tmp_path / "none.duckdb", "sft", tmp_path / "x.jsonl")
    with pytest.raises(ExportError, match="unknown export format"):
        export_dataset(db, "csv", tmp_path / "x")
    with pytest.raises(ExportError, match="is a directory"):
        export_dataset(db, "sft", tmp_path)
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database")
    with pytest.raises(ExportError, match="not a DuckDB dataset"):
        export_dataset(junk, "sft", tmp_path / "y.jsonl")


# ---------------------------------------------------------------- stats and the CLI


def test_stats_json_agrees_with_sql(db: Path):
    result = CliRunner().invoke(app, ["stats", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats == json.loads(json.dumps(dataset_stats(db), default=str))
    stages = stats["stages"]
    for table in ("tools", "agents", "tasks"):
        for status in ("accepted", "rejected"):
            want = _q(db, f"SELECT count(*) FROM {table} WHERE status = ?", [status])[0][0]
            assert stages[table][status] == want, (table, status)
        assert stages[table]["total"] == _q(db, f"SELECT count(*) FROM {table}")[0][0]
    assert stages["tools"]["rejected"] == 1 and stages["agents"]["rejected"] == 1 and stages["tasks"]["rejected"] == 5
    assert stages["trajectories"]["total"] == _q(db, "SELECT count(*) FROM trajectories")[0][0]
    assert stages["judgments"]["accepted"] == _q(db, "SELECT count(*) FROM judgments WHERE accepted")[0][0]
    assert stages["judgments"]["rejected"] == _q(db, "SELECT count(*) FROM judgments WHERE NOT accepted")[0][0]
    assert stages["judgments"]["accepted_trajectories"] == len(_accepted_ids(db))
    assert stages["runs"] == 1

    by_domain = {r["domain"]: r for r in stats["yield_by_domain"]}
    sql = dict(_q(db, """SELECT t.domain, count(DISTINCT t.id) FROM trajectories t
                         JOIN latest_judgments j ON j.trajectory_id = t.id WHERE j.accepted GROUP BY 1"""))
    assert {d: r["accepted"] for d, r in by_domain.items()} == sql
    assert by_domain["retail"]["yield"] == round(by_domain["retail"]["accepted"] / by_domain["retail"]["judged"], 4)

    reasons = stats["rejection_reasons"]
    assert reasons["tasks"][:2] == [{"reason": "goal '…' is too short (N word(s))", "count": 2},
                                    {"reason": "unsolvable", "count": 2}]
    checks = {r["check"]: r["count"] for r in reasons["judgments"]["failed_checks"]}
    assert checks["no_fabrication"] >= 6 and checks["final_reply"] >= 6

    tok = stats["tokens_per_accepted_trajectory"]
    assert tok["n"] == len(_accepted_ids(db))
    mean = _q(db, """SELECT avg(prompt_tokens + completion_tokens) FROM trajectories
                     WHERE id IN (SELECT trajectory_id FROM latest_judgments WHERE accepted)""")[0][0]
    assert tok["mean_total"] == round(mean, 2)
    usage = {r["role"]: r for r in stats["llm_usage"]}
    assert {r: u["calls"] for r, u in usage.items()} == dict(
        _q(db, "SELECT role, count(*) FROM llm_calls GROUP BY 1"))
    assert usage["judge"]["failed"] == 1 and usage["agent"]["cache_hits"] == 1
    # Replies cut at max_tokens or stopped looping, not counting a cache replay of one.
    assert (usage["generator"]["cut_off"], usage["generator"]["cut_off_tokens"]) == (2, 10 + 11)
    assert usage["agent"]["cut_off"] == 0

    table = CliRunner().invoke(app, ["stats", "--db", str(db)])
    assert table.exit_code == 0 and "yield by domain" in table.stdout and "retail" in table.stdout


def test_stats_of_a_run_that_accepted_nothing(tmp_path: Path):
    """The README's main job on the embedded model may accept nothing: the stats say so in words
    (not "mean None ... over 0"), and reasons are grouped without mangling what they say: an
    apostrophe opens no quoted value ("answer'…'s" before) and a model's name keeps its digits
    ("smollmN-Nm" before), while quoted values and numbers standing alone are still masked."""
    db = tmp_path / "d.duckdb"
    ds = Dataset(db)
    task = load_fixture_examples()[0].task
    reasons = ["the llm judge's vote is advisory (no calibration stored for model smollm2-135m-instruct)",
               "goal 'get order ord-27894' is too short (4 word(s))", "goal 'look it up' is too short (3 word(s))"]
    for i, reason in enumerate(reasons):
        ds.add("tasks", task.model_copy(update={"goal": f"{task.goal} {i}"}).to_row(RUN_ID, "rejected", reason))
    ds.flush()
    heads = {r["reason"]: r["count"] for r in dataset_stats(db)["rejection_reasons"]["tasks"]}
    assert heads == {"the llm judge's vote is advisory (no calibration stored for model smollm2-135m-instruct)": 1,
                     "goal '…' is too short (N word(s))": 2}
    table = CliRunner().invoke(app, ["stats", "--db", str(db)], terminal_width=200)
    assert table.exit_code == 0, table.output
    assert "tokens per accepted trajectory: none accepted yet" in table.stdout and "None" not in table.stdout


def test_cli_export_and_bad_databases(db: Path, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--db", str(db), "--format", "sft", "--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["written"][str(tmp_path / "s.jsonl")] == len(_accepted_ids(db)) - 1
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database")
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    for args in (["stats", "--db", str(tmp_path / "missing.duckdb")],
                 ["stats", "--db", str(junk)],
                 ["stats", "--db", str(empty), "--json"],
                 ["export", "--db", str(tmp_path / "missing.duckdb"), "--format", "sft", "--out", "x"],
                 ["export", "--db", str(db), "--format", "csv", "--out", str(tmp_path / "c")],
                 ["judge", "calibrate", "--db", str(junk), "--checks-only"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "error" in result.output and "Traceback" not in result.output


def test_judge_calibrate_cli_checks_only(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # without --db the report is stored in the configured run.db
    runner = CliRunner()
    n_db_good = len(_accepted_ids(db))
    # With --db the good examples are the fixtures plus the dataset's accepted trajectories, which
    # include the one a lax judge let through with an unanswered call: the checks reject it, which
    # calibration reports as one false reject.
    n_fixtures = len(load_fixture_examples())
    for extra, n_good, false_rejects in (([], n_fixtures, 0), (["--db", str(db)], n_fixtures + n_db_good, 1)):
        result = runner.invoke(app, ["judge", "calibrate", "--checks-only", "--json", *extra])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["n_good"] == n_good
        assert report["checks_false_rejects"] == report["false_rejects"] == false_rejects
        assert report["judge_model"] is None and report["vote"] == "off"
        for kind in report["kinds"]:
            if kind["n"] and kind["structural"]:
                assert kind["recall"] == 1.0 and kind["recall_ci"][1] == 1.0, kind
                assert kind["precision"] == kind["n"] / (kind["n"] + false_rejects), kind
        stored = Path(report["stored_in"])
        assert stored == (db if extra else Path("data/synth.duckdb").resolve())  # config paths are absolute
        assert _q(stored, "SELECT count(*) FROM calibrations WHERE id = ?", [report["calibration_id"]])[0][0] == 1
    text = runner.invoke(app, ["judge", "calibrate", "--checks-only", "--no-store"])
    assert text.exit_code == 0 and "fabricated_result" in text.stdout and "stored" not in text.stdout


# ---------------------------------------------------------------- the notebook


def test_notebook_executes_against_the_dataset(db: Path, monkeypatch: pytest.MonkeyPatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("SYNTH_DB", str(db))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders PNGs
    nb = nbformat.read(REPO / "notebooks" / "inspect.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "[user]" in text and "[assistant]" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2


# ---------------------------------------------------------------- concurrent reading

_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from synth.store import Dataset

    path, flags, batches, per_batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ds = Dataset(path, flush_every=10**9)
    (flags / "ready").touch()
    for b in range(batches):
        ds.add_many("llm_calls", ({"id": f"c{b}-{i}", "run_id": "r", "role": "agent", "prompt_tokens": i,
                                  "completion_tokens": 1, "ok": True} for i in range(per_batch)))
        ds.flush()
        if b == batches // 2:
            # Wait for the reader to see this batch, so a read provably happens mid-run.
            deadline = time.monotonic() + 120
            while not (flags / "seen").exists():
                if time.monotonic() > deadline:
                    sys.exit(3)
                time.sleep(0.01)
""")


def test_reader_opens_the_file_while_a_writer_flushes(tmp_path: Path):
    path, flags = tmp_path / "live.duckdb", tmp_path / "flags"
    flags.mkdir()
    batches, per_batch = 30, 20
    total = batches * per_batch
    half = (batches // 2 + 1) * per_batch
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(flags), str(batches), str(per_batch)],
                              env=env, stderr=subprocess.PIPE, text=True)
    try:
        seen: list[int] = []
        while not (flags / "ready").exists():
            assert writer.poll() is None, writer.communicate()[1]
        while writer.poll() is None:
            with connect_readonly(path, timeout_s=120) as con:
                seen.append(con.execute("SELECT count(*) FROM llm_calls").fetchall()[0][0])
            if seen[-1] >= half:
                (flags / "seen").touch()
        _, err = writer.communicate()
        assert writer.returncode == 0, err
        with connect_readonly(path) as con:
            seen.append(con.execute("SELECT count(*) FROM llm_calls").fetchall()[0][0])
    finally:
        if writer.poll() is None:
            writer.kill()
    assert seen == sorted(seen), "counts went backwards"
    assert seen[-1] == total
    assert any(0 < n < total for n in seen), "no read happened while the writer was mid-run"
    assert all(n % per_batch == 0 for n in seen), "a reader saw a partly flushed batch"


def test_flush_counts_batches_that_add_wrote_on_its_own(tmp_path: Path):
    """`flush()` reports every row inserted since the previous flush, including the batches that
    `add` wrote when `flush_every` filled up (import-mcp reports "added" from it)."""
    from synth.store import Dataset

    dataset = Dataset(tmp_path / "d.duckdb", flush_every=50)
    for i in range(130):
        dataset.add("runs", {"id": f"r{i % 120}", "status": "x"})
    assert dataset.flush() == {"runs": 120}
    assert dataset.flush() == {}
