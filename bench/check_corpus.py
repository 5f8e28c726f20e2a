"""The standing corpus of embedded-model trajectories, and what the deterministic checks say of it.

    python bench/check_corpus.py show                 # verdicts now, and every change from the recorded ones
    python bench/check_corpus.py record               # after reading `show`: the verdicts now become the record
    python bench/check_corpus.py add DB [DB ...]      # add a dataset's embedded-model trajectories, then `record`

Why it exists: every acceptance rule of `synth.judges.checks` was priced on stored trajectories before
it landed (the verdicts it changes, the reasons it adds, the good fixtures it touches), and those
trajectories lived in temporary pytest and benchmark databases that pytest rotates away. The corpus
keeps them in the repository: `tests/data/smollm2_corpus.jsonl.gz`, one `synth judge file` item per
line (task, tools with their side effects, messages, termination, steps, final state) plus `source`
(the dataset it came from) and `trajectory_id`, all made by SmolLM2-135M-Instruct through the
pipeline (the embedded backend; benchmark runs and CI main jobs of 2026-12-06/07).

Two files beside it say what is known of it:
- `smollm2_corpus_verdicts.json`: what `synth judge file --no-llm` said of each trajectory under the
  shipped `synth.toml` when last recorded: accepted or not, and the checks it failed, a line per
  trajectory. `tests/test_check_corpus.py` fails when a change to the checks moves any of them, so
  the change's effect on real model output is in the diff of this file, read and recorded here.
- `smollm2_corpus_labels.json`: trajectories a person read, `junk` (must be rejected) or `honest`
  (a correct worked example the checks must keep), with why.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data"
CORPUS = DATA / "smollm2_corpus.jsonl.gz"
VERDICTS = DATA / "smollm2_corpus_verdicts.json"
LABELS = DATA / "smollm2_corpus_labels.json"


def _tool_item(tool: Any) -> dict[str, Any]:
    """A ToolSpec as the MCP-style tool `synth.judges.inputs.read_tool` reads back unchanged for the
    checks: its side effect only where the stored tool stated one (else the checks infer it from
    the name, as they did on the stored row)."""
    item: dict[str, Any] = {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema}
    if tool.output_schema is not None:
        item["outputSchema"] = tool.output_schema
    if "side_effect" in tool.model_fields_set:
        item["side_effect"] = tool.side_effect
    if tool.annotations:
        item["annotations"] = tool.annotations
    return item


def add(dbs: list[Path]) -> None:
    """Add the model-made trajectories of `dbs` that the corpus lacks. Lines already there are kept
    as they are: the datasets they came from are gone (that is why the corpus exists)."""
    from synth.judges.checks import tools_from_trajectory
    from synth.store import read_episodes

    lines = {line["trajectory_id"]: line for line in read_corpus()} if CORPUS.exists() else {}
    before = len(lines)
    for db in dbs:
        for episode in read_episodes(db):
            traj = episode.trajectory
            if traj.agent_model is None or episode.id in lines:
                continue  # the fake backend's (no model named) and trajectories already kept
            tools = episode.tools or tools_from_trajectory(traj)
            lines[episode.id] = {
                "source": db.stem, "trajectory_id": episode.id, "agent_model": traj.agent_model,
                "task": episode.task.model_dump(mode="json"), "tools": [_tool_item(t) for t in tools],
                "messages": traj.messages, "termination": traj.termination,
                "steps": [s.model_dump(mode="json") for s in traj.steps], "final_state": traj.final_state,
            }
    DATA.mkdir(parents=True, exist_ok=True)
    with gzip.open(CORPUS, "wt", encoding="utf-8") as f:
        for line in lines.values():
            f.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"{len(lines) - before} trajectories added from {len(dbs)} dataset(s); {len(lines)} in "
          f"{CORPUS.relative_to(ROOT)}. Read what `show` says of them, then `record`.")


def read_corpus() -> list[dict[str, Any]]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def current_verdicts() -> dict[str, dict[str, Any]]:
    """What `synth judge file --no-llm` says of each line under the shipped `synth.toml`: accepted
    or not (the strict policy without a judge vote) and the deterministic checks failed."""
    with tempfile.TemporaryDirectory() as tmp:
        items, judged = Path(tmp) / "corpus.jsonl", Path(tmp) / "judged.jsonl"
        with gzip.open(CORPUS, "rb") as src, items.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        subprocess.run([sys.executable, "-m", "synth", "judge", "file", str(items), "-o", str(judged), "--no-llm",
                        "--config", str(ROOT / "synth.toml")], check=True, cwd=tmp, stdout=subprocess.DEVNULL)
        lines = [json.loads(line) for line in judged.read_text(encoding="utf-8").splitlines()]
    return {line["trajectory_id"]: {"accepted": line["accepted"], "failed_checks": line["failed_checks"]}
            for line in lines}


def changes(now: dict[str, dict[str, Any]], recorded: dict[str, dict[str, Any]]) -> list[str]:
    """One line per trajectory whose verdict differs from the record (or that either lacks)."""
    out = []
    for tid in sorted(set(now) | set(recorded)):
        before, after = recorded.get(tid), now.get(tid)
        if before != after:
            moved = ("" if before is None or after is None or before["accepted"] == after["accepted"]
                     else "  ACCEPTED NOW" if after["accepted"] else "  REJECTED NOW")
            out.append(f"{tid}: {before} -> {after}{moved}")
    return out


def show() -> None:
    now = current_verdicts()
    counts = collections.Counter(name for v in now.values() for name in v["failed_checks"])
    accepted = sorted(tid for tid, v in now.items() if v["accepted"])
    passing = sum(1 for v in now.values() if not v["failed_checks"])
    print(f"{len(now)} trajectories; passing every check: {passing}; accepted (strict policy, no judge vote): "
          f"{len(accepted)} {accepted}")
    print("fails per check: " + ", ".join(f"{name} {n}" for name, n in counts.most_common()))
    labels = json.loads(LABELS.read_text()) if LABELS.exists() else {}
    wrong = sorted(f"{tid} ({label['label']})" for tid, label in labels.items()
                   if tid in now and now[tid]["accepted"] != (label["label"] == "honest"))
    print(f"read by a person: {len(labels)}; verdict against the label: {len(wrong)} {wrong}")
    recorded = json.loads(VERDICTS.read_text()) if VERDICTS.exists() else {}
    moved = changes(now, recorded)
    print(f"changed from the record: {len(moved)}")
    for line in moved:
        print("  " + line)


def record() -> None:
    now = current_verdicts()
    rows = [f"  {json.dumps(tid)}: {json.dumps(now[tid], sort_keys=True)}" for tid in sorted(now)]
    VERDICTS.write_text("{\n" + ",\n".join(rows) + "\n}\n")  # a line per trajectory: a change is a line of the diff
    print(f"recorded -> {VERDICTS.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("add", help="add stored datasets' model-made trajectories the corpus lacks")
    b.add_argument("dbs", nargs="+", type=Path)
    sub.add_parser("show", help="the checks' verdicts now, and changes from the record")
    sub.add_parser("record", help="make the verdicts now the record")
    args = parser.parse_args()
    if args.command == "add":
        add(args.dbs)
    elif args.command == "show":
        show()
    else:
        record()


if __name__ == "__main__":
    main()
