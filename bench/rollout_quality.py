"""What a dataset's rollouts look like, read from its DuckDB file (issue 12's figures).

    python bench/rollout_quality.py data/synth.duckdb [--show N]

Prints, over each trajectory's latest judgment: judged, accepted and well-formed counts; the
failed checks (each trajectory counted once per check); terminations; and the defects issue 12 is
about, counted over all trajectories and over accepted ones: two identical assistant messages in
a row, a role-confused or prompt-echoing user message, a repeated user message, a goal that is not
a request (`synth.agents.validate.request_problems`), `error_recovery` trajectories without a
fault on a planned call, and state updates the simulator refused. `--show N` prints the first N
rejected trajectories' failed checks and conversations, short. Read-only: safe while a run writes.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
from pathlib import Path
from typing import Any

import duckdb

from synth.agents.validate import request_problems
from synth.judges.messages import message_text
from synth.rollout.user import user_turn_problem


def _identical_in_a_row(messages: list[dict[str, Any]]) -> bool:
    texts = [message_text(m).strip() for m in messages if m.get("role") == "assistant" and message_text(m).strip()]
    return any(a == b for a, b in itertools.pairwise(texts))


def _user_problems(messages: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    problems = []
    for m in messages:
        if m.get("role") != "user":
            continue
        problem = user_turn_problem(message_text(m), seen)
        if problem is not None:
            problems.append(problem.split(":")[0])
        seen.append(message_text(m))
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path)
    parser.add_argument("--show", type=int, default=0, help="print N rejected trajectories")
    args = parser.parse_args()
    con = duckdb.connect(str(args.db), read_only=True)
    rows = con.execute("""
        SELECT t.id, t.messages, t.steps, t.state_log, t.termination, k.goal, k.difficulty, k.kind, k.rubric,
               j.accepted, j.well_formed, j.failed_checks
        FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id JOIN tasks k ON k.id = t.task_id
        ORDER BY t.created_at""").fetchall()
    judged = len(rows)
    accepted = sum(1 for r in rows if r[9])
    well_formed = sum(1 for r in rows if r[10])
    failed: collections.Counter[str] = collections.Counter()
    terminations: collections.Counter[str] = collections.Counter()
    defects: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    shown = 0
    for (_tid, messages_j, steps_j, log_j, termination, goal, difficulty, kind, rubric_j, ok, _wf, failed_j) in rows:
        messages, steps, log = json.loads(messages_j), json.loads(steps_j), json.loads(log_j or "[]")
        rubric = json.loads(rubric_j)
        failed.update(set(json.loads(failed_j or "[]")))
        terminations[termination] += 1
        found = {
            "identical assistant messages in a row": _identical_in_a_row(messages),
            "role-confused / echoing / empty user message": any(
                p.startswith(("role-confused", "echoes", "empty", "not a sentence")) for p in _user_problems(messages)),
            "repeated user message": any(p.startswith("repeats") for p in _user_problems(messages)),
            "goal that is not a request": bool(request_problems(goal)),
            "refused state update": any(e.get("refused") for e in log),
        }
        if difficulty == "error_recovery" and kind == "tool":
            planned = {e["tool"] for e in rubric.get("expected_calls") or []}
            called = any(s.get("actor") == "tool" and s.get("tool") in planned and s.get("executor") != "validator"
                         for s in steps)
            found["error_recovery: a planned tool was called, no fault on it"] = called and not any(
                s.get("fault") and s.get("tool") in planned for s in steps)
            found["error_recovery: no planned tool called at all"] = not called
        for name, hit in found.items():
            if hit:
                defects[name][0] += 1
                defects[name][1] += int(bool(ok))
        if not ok and shown < args.show:
            shown += 1
            print(f"--- rejected ({termination}): {json.loads(failed_j or '[]')}\n    goal: {goal[:150]}")
            for m in messages[1:]:
                text = message_text(m) or json.dumps(m.get("tool_calls"))[:200]
                print(f"    {m['role']:>9}: {text[:200]}")
    print(f"judged {judged}, accepted {accepted} ({accepted / max(judged, 1):.0%}), well_formed {well_formed}")
    print("failed checks (trajectories):", dict(failed.most_common()))
    print("terminations:", dict(terminations.most_common()))
    print("defects (all / accepted):")
    for name, (total, in_accepted) in sorted(defects.items()):
        print(f"  {name}: {total} / {in_accepted}")


if __name__ == "__main__":
    main()
