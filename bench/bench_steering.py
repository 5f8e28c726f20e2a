"""What `[run] steer_coverage` changes, on fake-backend runs: where a second run's toolsets go when
the first run's accepted trajectories covered one domain only.

1. Run A: `synth run` over four domains against the scripted fake backend.
2. The fake backend's replies are random, so its trajectories are rejected; to stand for a first run
   whose model succeeded in one domain only, run A's trajectories of `weather` are marked accepted
   (an extra judgment, `judge.model = "planted"`).
3. Run B (another seed, so another run) on two copies of that dataset: once with `steer_coverage`
   off, once on. The same tool pool, the same rng.
4. For each, the report's "Coverage by run" figures of run B: the share of the tools its toolsets
   sampled that lie in map cells and domains no accepted trajectory of run A reached.
   The report of the steered copy is written beside it.

    python bench/bench_steering.py [--agents N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from synth.cli import app
from synth.llm.fake_server import FakeOpenAIServer
from synth.models import Judgment
from synth.report import write_report
from synth.report.coverage import coverage_by_run, tool_map
from synth.store import Dataset, connect_readonly

DOMAINS = "weather,order_management,issue_tracking,cloud_drive"
COVERED = "weather"


def synth_run(db: Path, config: Path, base_url: str, seed: int, trajectories: int) -> None:
    result = CliRunner().invoke(app, ["run", "--domains", DOMAINS, "--db", str(db), "--trajectories",
                                      str(trajectories), "--config", str(config), "--base-url", base_url,
                                      "--seed", str(seed), "--no-ray", "--quiet"])
    if result.exit_code not in (0, 1):
        raise SystemExit(result.output)


def plant_accepted(db: Path, domain: str) -> int:
    """Mark every trajectory of `domain` accepted by a later judgment; returns how many."""
    with connect_readonly(db) as con:
        rows = con.execute("SELECT id, task_id, run_id FROM trajectories WHERE domain = ?", [domain]).fetchall()
    ds = Dataset(db)
    for trajectory_id, task_id, run_id in rows:
        ds.add("judgments", Judgment(trajectory_id=trajectory_id, task_id=task_id, accepted=True, score=1.0,
                                     judge={"model": "planted"}).to_row(run_id))
    ds.flush()
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=12, help="judged trajectories per run")
    parser.add_argument("--out", default=None, help="where the datasets and the report go")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_steering_"))
    out.mkdir(parents=True, exist_ok=True)
    server = FakeOpenAIServer().start()
    figures = {}
    try:
        first = out / "first.duckdb"
        config = out / "synth.toml"
        config.write_text(f'[run]\ntools_per_domain = 6\ntasks_per_agent = 1\n[cache]\ndir = "{out / "cache"}"\n')
        synth_run(first, config, server.base_url, 0, args.trajectories)
        planted = plant_accepted(first, COVERED)
        print(f"run A: {args.trajectories} trajectories over {DOMAINS}; {planted} of {COVERED} marked accepted")
        for steer in (False, True):
            db = out / f"steer_{'on' if steer else 'off'}.duckdb"
            shutil.copy(first, db)
            steered = out / f"synth_{'on' if steer else 'off'}.toml"
            steered.write_text(config.read_text().replace("[run]\n", f"[run]\nsteer_coverage = {str(steer).lower()}\n"))
            synth_run(db, steered, server.base_url, 1, args.trajectories)
            runs = coverage_by_run(db, tool_map(db))
            second = runs[-1]
            figures[f"steer_coverage={'on' if steer else 'off'}"] = {
                "tools_sampled": second["tools_sampled"], "in_empty_cells": round(second["in_empty_cells"], 3),
                "in_empty_domains": round(second["in_empty_domains"], 3)}
            print(f"run B, steer_coverage {'on ' if steer else 'off'}: {second['tools_sampled']} tools sampled, "
                  f"{second['in_empty_cells']:.0%} in map cells and {second['in_empty_domains']:.0%} in domains "
                  f"that run A's accepted trajectories did not reach")
            if steer:
                report = write_report(db, out / "report.html")
                print(f"report: {report.out}")
    finally:
        server.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
