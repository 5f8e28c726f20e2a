"""Near-duplicates: reworded copies of a task and of a trajectory are grouped, one representative is
kept, `synth stats` shows the groups and exports leave the others out (unless --keep-duplicates).

The dataset is `tests.test_dataset.build_dataset` (the judges' fixture trajectories, accepted and
rejected) with planted copies: the first retail task with its goal reworded (same agent, so the same
toolset, and the same order id), a rollout of that reworded task that makes the same call with the
same arguments in other words, and two look-alikes that must stay apart (another order id; other
call arguments).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.duplicates import (
    TASK_THRESHOLD,
    Item,
    content_words,
    dedup_dataset,
    find_duplicates,
    group_items,
    minhash,
    similarity,
    stated_values,
)
from synth.export import export_dataset
from synth.models import Judgment, Task, Trajectory
from synth.stats import dataset_stats
from synth.store import Dataset, connect_readonly
from tests.test_dataset import RUN_ID, build_dataset

REWORDED_GOAL = "Please check if order o-1042 was shipped and get me the tracking number."


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with connect_readonly(db) as con:
        return con.execute(sql).fetchall()


def _first_retail(db: Path) -> tuple[Task, Trajectory, str]:
    """The original task 'Find out whether order o-1042 has shipped ...' and its accepted trajectory."""
    with connect_readonly(db) as con:
        cur = con.execute("""SELECT t.*, k.goal, k.rubric, k.initial_state, k.persona, k.withheld, k.kind,
                                    k.difficulty, k.goal_source
                             FROM trajectories t JOIN tasks k ON k.id = t.task_id
                             JOIN latest_judgments j ON j.trajectory_id = t.id
                             WHERE k.goal LIKE 'Find out whether order o-1042%' AND j.accepted
                             ORDER BY t.created_at LIMIT 1""")
        cols = [d[0] for d in cur.description or []]
        row = dict(zip(cols, cur.fetchall()[0], strict=True))
    return Task.from_row(row), Trajectory.from_row(row), row["id"]


def _reword(messages: list[dict[str, Any]], order_id: str = "o-1042") -> list[dict[str, Any]]:
    out = []
    for m in messages:
        m = json.loads(json.dumps(m).replace("o-1042", order_id))
        if m["role"] == "user":
            m["content"] = f"Hello! Could you tell me if my order {order_id} has shipped? I need its tracking number."
        elif m["role"] == "assistant" and m.get("content"):
            m["content"] = f"Order {order_id} has shipped with UPS; the tracking number is TRK-55821."
        out.append(m)
    return out


def _plant(db: Path) -> dict[str, str]:
    task, traj, traj_row_id = _first_retail(db)
    ds = Dataset(db)
    reworded = task.model_copy(update={"goal": REWORDED_GOAL})
    other = task.model_copy(update={"goal": task.goal.replace("o-1042", "o-1043")})
    copy = traj.model_copy(update={"task_id": reworded.id, "seed": 7, "messages": _reword(traj.messages)})
    other_args = traj.model_copy(update={"task_id": other.id, "seed": 8,
                                         "messages": _reword(traj.messages, "o-1043")})
    for t in (reworded, other):
        ds.add("tasks", t.to_row(RUN_ID))
    for t in (copy, other_args):
        ds.add("trajectories", t.to_row(RUN_ID))
        ds.add("judgments", Judgment(trajectory_id=t.id, task_id=t.task_id, accepted=True, score=1.0,
                                     judge={"model": "planted"}).to_row(RUN_ID))
    ds.flush()
    return {"task": task.id, "reworded_task": reworded.id, "other_task": other.id,
            "trajectory": traj_row_id, "copy": copy.id, "other_trajectory": other_args.id}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    db = tmp_path_factory.mktemp("dups") / "synth.duckdb"
    build_dataset(db)
    return db, _plant(db)


def test_words_values_and_signatures():
    original = "Find out whether order o-1042 has shipped and get its tracking number."
    assert stated_values(original) == {"o-1042"} == stated_values(REWORDED_GOAL)
    assert {"order", "o-1042", "ship", "track", "number"} <= content_words(original) & content_words(REWORDED_GOAL)
    a, b = minhash(content_words(original)), minhash(content_words(REWORDED_GOAL))
    assert similarity(a, b) >= TASK_THRESHOLD
    assert similarity(a, minhash(content_words("Delete every calendar event of next week"))) < 0.2


def test_group_items_needs_equal_keys_and_joins_transitively():
    def item(i: str, key: str, text: str, rank: int) -> Item:
        return Item(i, key, minhash(content_words(text)), (rank,))

    items = [item("b", "k", "cancel order o-17 for customer c-3", 1),
             item("a", "k", "please cancel the order o-17 of customer c-3", 0),
             item("c", "other-toolset", "cancel order o-17 for customer c-3", 2),
             item("d", "k", "list every invoice of march", 3)]
    groups = group_items(items, 0.5, "task")
    assert len(groups) == 1
    assert groups[0].members == ["a", "b"] and groups[0].representative == "a" and groups[0].left_out == ["b"]


def test_reworded_task_and_trajectory_are_grouped(planted: tuple[Path, dict[str, str]]):
    db, ids = planted
    groups = find_duplicates(db)
    task_groups = [set(g.members) for g in groups["task"]]
    assert {ids["task"], ids["reworded_task"]} in task_groups
    assert not any(ids["other_task"] in g for g in task_groups)
    trajectory_groups = {g.representative: g for g in groups["trajectory"]}
    assert ids["trajectory"] in trajectory_groups, groups["trajectory"]
    group = trajectory_groups[ids["trajectory"]]
    # The earlier accepted one represents the group. (The fixture dataset's accepted copy with its
    # tool messages dropped says the same thing and is grouped too.)
    assert group.members[0] == ids["trajectory"] and ids["copy"] in group.members
    assert not any(ids["other_trajectory"] in g.members for g in groups["trajectory"])
    # A rejected corruption of the accepted trajectory is a negative, never its duplicate.
    rejected = {r[0] for r in _rows(db, "SELECT trajectory_id FROM latest_judgments WHERE NOT accepted")}
    assert not rejected & set(group.members)


def test_dedup_stores_groups_stats_show_them_and_exports_leave_them_out(planted: tuple[Path, dict[str, str]],
                                                                        tmp_path: Path):
    db, ids = planted
    result = CliRunner().invoke(app, ["dedup", "--db", str(db)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["left_out"]["task"] >= 1 and summary["left_out"]["trajectory"] >= 1
    stored = dict(_rows(db, "SELECT id, representative_id FROM duplicates"))
    assert stored[ids["copy"]] == ids["trajectory"] and stored[ids["reworded_task"]] == ids["task"]
    assert dedup_dataset(db).as_dict() == summary  # recomputed whole, same answer

    stats = dataset_stats(db)["duplicates"]
    assert stats["trajectory"]["left_out"] == summary["left_out"]["trajectory"]
    assert stats["task"]["groups"] == summary["groups"]["task"]
    table = CliRunner().invoke(app, ["stats", "--db", str(db)])
    assert "near-duplicates left out of exports" in table.stdout

    def exported(*extra: str) -> tuple[set[str], dict[str, Any]]:
        out = tmp_path / f"sft{len(extra)}.jsonl"
        res = CliRunner().invoke(app, ["export", "--db", str(db), "--format", "sft", "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        return {r["metadata"]["trajectory_id"] for r in lines}, json.loads(res.stdout)

    kept, info = exported()
    assert ids["trajectory"] in kept and ids["copy"] not in kept and ids["other_trajectory"] in kept
    assert info["duplicates_left_out"] == _rows(db, """SELECT count(*) FROM duplicates d
        JOIN latest_judgments j ON j.trajectory_id = d.id WHERE NOT d.is_representative AND j.accepted""")[0][0]
    everything, info = exported("--keep-duplicates")
    assert ids["copy"] in everything - kept <= {m for m, _ in _rows(db, """SELECT d.id, 1 FROM duplicates d
        JOIN latest_judgments j ON j.trajectory_id = d.id WHERE NOT d.is_representative AND j.accepted""")}
    assert info["duplicates_left_out"] == 0

    rl = export_dataset(db, "rl", tmp_path / "rl")
    tasks = {json.loads(line)["task_id"] for line in (tmp_path / "rl" / "tasks.jsonl").read_text().splitlines()}
    assert ids["task"] in tasks and ids["reworded_task"] not in tasks and rl.duplicates_left_out >= 1


def test_run_groups_duplicates_in_a_process_of_its_own(planted: tuple[Path, dict[str, str]],
                                                       capfd: pytest.CaptureFixture[str]):
    """`synth run`'s closing dedup pass runs in a child process: it stores the same groups as
    `synth dedup` and prints how many rows it left out; a file it cannot read is the command's
    error, naming the file and what the child said. Started early (as the run's rows are stored),
    it is the same pass."""
    from synth.cli.run import DuplicateGrouping

    def _group_duplicates(path: Path, *, early: bool = False) -> None:
        grouping = DuplicateGrouping(path)
        if early:
            grouping.start()
        grouping.finish()

    db, ids = planted
    _group_duplicates(db, early=True)
    expected = dedup_dataset(db).as_dict()["left_out"]
    line = "".join(capfd.readouterr())  # the run's console writes to stderr
    assert (f"near-duplicates: {expected['trajectory']} trajectory(ies) and {expected['task']} task(s) "
            "left out of exports") in line
    assert dict(_rows(db, "SELECT id, representative_id FROM duplicates"))[ids["copy"]] == ids["trajectory"]

    _group_duplicates(db.parent / "no-such.duckdb")  # no dataset yet (a run that stored nothing): no pass
    assert "".join(capfd.readouterr()) == ""
    broken = db.parent / "broken.duckdb"
    broken.write_text("not a database")
    with pytest.raises(RuntimeError, match=r"synth dedup of .*broken\.duckdb failed: .+"):
        _group_duplicates(broken)
    assert broken.read_text() == "not a database"  # nothing written over it
