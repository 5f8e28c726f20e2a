"""Agreement of `synth judge file --no-llm` with a public benchmark's own reward (issue 11).

    python bench/eval_judge_precision.py gpt-4o-airline.json [more.json ...] [--tools tools.json] [--show]

Reads tau-bench historical trajectories (a JSON list of `{"task_id", "reward", "info": {"task":
{"instruction", ...}}, "traj": [OpenAI messages]}`; e.g. `historical_trajectories/gpt-4o-airline.json`
of sierra-research/tau-bench, which you download yourself: no benchmark data is kept in this
repository), turns each into a `synth judge file` line the way a user of synth would (goal = the
user instruction, kind "tool", the messages as they are, no termination so synth infers it from the
conversation, e.g. the user's `###STOP###`), judges them with `synth judge file --no-llm`, and prints
the confusion table of "accepted" against reward == 1, precision, recall, and the checks that fail
most on reward-1 trajectories. The reward and the benchmark's expected actions are never passed to
synth. Tools: `--tools` names a JSON list of OpenAI function tools (tau-bench's `get_info()`
schemas); without it each tool the trajectories call is given with an open schema, so
`arguments_valid` cannot fail and whether it writes is inferred from its name.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def _tools_called(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = sorted({call["function"]["name"] for item in items for msg in item["traj"]
                    for call in msg.get("tool_calls") or []})
    return [{"type": "function", "function": {"name": n, "description": "", "parameters": {"type": "object"}}}
            for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="tau-bench historical trajectories (JSON lists)")
    parser.add_argument("--tools", type=Path, help="JSON list of OpenAI function tools (default: from the calls)")
    parser.add_argument("--config", type=Path, help="synth config for `judge file` (default: synth's own)")
    parser.add_argument("--show", action="store_true", help="print each trajectory's verdict and failed checks")
    args = parser.parse_args()

    items = [item for f in args.files for item in json.loads(f.read_text())]
    tools = json.loads(args.tools.read_text()) if args.tools else _tools_called(items)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps({"task": {"goal": item["info"]["task"]["instruction"], "kind": "tool"},
                                           "tools": tools, "messages": item["traj"]}) + "\n" for item in items))
        cmd = [sys.executable, "-m", "synth", "judge", "file", str(src), "--out", str(out), "--no-llm"]
        if args.config:
            cmd += ["--config", str(args.config)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        judged = [json.loads(line) for line in out.read_text().splitlines()]

    table: collections.Counter[tuple[bool, bool]] = collections.Counter()
    fails_good: collections.Counter[str] = collections.Counter()
    for item, j in zip(items, judged, strict=True):
        good = float(item["reward"]) == 1.0
        table[(good, j["accepted"])] += 1
        if good:
            fails_good.update(j["failed_checks"])
        if args.show:
            print(f"task {item.get('task_id')!s:>4} trial {item.get('trial')!s:>2} reward {item['reward']} "
                  f"accepted {j['accepted']!s:5} failed {j['failed_checks']}")
    tp, fp, fn, tn = table[(True, True)], table[(False, True)], table[(True, False)], table[(False, False)]
    print(f"trajectories: {len(items)} (reward 1: {tp + fn}, reward 0: {fp + tn})")
    print(f"                 accepted  rejected\nreward 1       {tp:>9} {fn:>9}\nreward 0       {fp:>9} {tn:>9}")
    print(f"precision of accepted: {tp / (tp + fp):.3f}" if tp + fp else "precision of accepted: n/a (none accepted)")
    print(f"recall of reward 1:    {tp / (tp + fn):.3f}" if tp + fn else "recall of reward 1:    n/a")
    print("checks failed on reward-1 trajectories:", dict(fails_good.most_common()) or "none")


if __name__ == "__main__":
    main()
