"""Steering toward empty regions (`[run] steer_coverage`): the toolset sampler starts from tools
whose domains and map cells have few accepted trajectories, and the report's "Coverage by run"
shows the effect of a steered run against an unsteered one (fake backend, see
`bench/bench_steering.py`)."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path

from typer.testing import CliRunner

from synth.agents import ToolsetSampler
from synth.cli import app
from synth.config import load_config
from synth.llm.fake_server import FakeOpenAIServer
from synth.models import Judgment, ToolSpec
from synth.pipeline.driver import toolsets
from synth.report.coverage import coverage_by_run, coverage_priors, tool_map
from synth.store import Dataset, connect_readonly

DOMAINS = "weather,order_management,issue_tracking,cloud_drive"


def _tool(domain: str, i: int) -> ToolSpec:
    return ToolSpec(name=f"{domain}_tool_{i}", description=f"Tool {i} of {domain}",
                    inputSchema={"type": "object", "properties": {}}, domain=domain)


def test_prior_uses_send_the_sampler_to_the_uncovered_domains_first():
    tools = [_tool(d, i) for d in ("alpha", "beta", "gamma") for i in range(4)]
    covered = {t.id: 5 for t in tools if t.domain == "alpha"}
    steered = ToolsetSampler(tools, random.Random(0), min_size=2, max_size=3, prior_uses=covered)
    first = [steered.sample() for _ in range(4)]
    assert not any(t.domain == "alpha" for toolset in first for t in toolset)
    plain = ToolsetSampler(tools, random.Random(0), min_size=2, max_size=3)
    assert any(t.domain == "alpha" for _ in range(6) for t in plain.sample())


def _run(db: Path, config: Path, base_url: str, seed: int) -> None:
    result = CliRunner().invoke(app, ["run", "--domains", DOMAINS, "--db", str(db), "--trajectories", "8",
                                      "--config", str(config), "--base-url", base_url, "--seed", str(seed),
                                      "--no-ray", "--quiet"])
    assert result.exit_code in (0, 1), result.output


def test_a_steered_run_samples_where_accepted_trajectories_are_missing(tmp_path: Path):
    base = tmp_path / "synth.toml"
    base.write_text(f'[run]\ntools_per_domain = 6\ntasks_per_agent = 1\n[cache]\ndir = "{tmp_path / "cache"}"\n')
    server = FakeOpenAIServer().start()
    try:
        # Coverage counts accepted tool calls, so run A must have made some: with concurrent
        # episodes, the fake backend's run of 8 sometimes makes none (about 1 in 6), and then a
        # run A of another seed, in a fresh file, stands in.
        for seed in range(5):
            first = tmp_path / f"first_{seed}.duckdb"
            _run(first, base, server.base_url, seed)
            with connect_readonly(first) as con:
                if con.execute("SELECT coalesce(sum(n_tool_calls), 0) FROM trajectories").fetchall()[0][0]:
                    break
        # The fake backend's trajectories are all rejected: mark those of run A's busiest domain
        # accepted, as if its model had succeeded there only.
        with connect_readonly(first) as con:
            # (the domain whose trajectories called tools most: coverage counts accepted tool calls)
            covered = con.execute("SELECT domain FROM trajectories GROUP BY 1 "
                                  "ORDER BY sum(n_tool_calls) DESC, count(*) DESC, 1 LIMIT 1").fetchall()[0][0]
            rows = con.execute("SELECT id, task_id, run_id FROM trajectories WHERE domain = ?", [covered]).fetchall()
        ds = Dataset(first)
        for trajectory_id, task_id, run_id in rows:
            ds.add("judgments", Judgment(trajectory_id=trajectory_id, task_id=task_id, accepted=True, score=1.0,
                                         judge={"model": "planted"}).to_row(run_id))
        ds.flush()
        priors = coverage_priors(first)
        in_covered = {t for t, d in tool_map(first).domain_of.items() if d == covered}
        assert priors and set(priors) >= in_covered and all(v >= 1 for v in priors.values())

        second: dict[bool, dict[str, object]] = {}
        for steer in (False, True):
            db = tmp_path / f"steer_{steer}.duckdb"
            shutil.copy(first, db)
            config = tmp_path / f"steer_{steer}.toml"
            config.write_text(base.read_text().replace("[run]\n", f"[run]\nsteer_coverage = {str(steer).lower()}\n"))
            _run(db, config, server.base_url, seed + 1)  # run B: a seed of its own
            runs = coverage_by_run(db, tool_map(db))
            assert [r["steer"] for r in runs] == [False, steer]
            second[steer] = runs[-1]
            if steer:
                out = tmp_path / "report.html"
                assert CliRunner().invoke(app, ["report", "--db", str(db), "--out", str(out)]).exit_code == 0
                html = out.read_text()
                assert ">Coverage by run</h2>" in html and '<td class="l">on</td>' in html
    finally:
        server.stop()
    # Over the whole of run B (whose length varies with the fake backend's rejections), the steered
    # run sampled at least as much outside the covered domain; its first toolsets, all of them.
    assert second[True]["in_empty_domains"] >= second[False]["in_empty_domains"]  # type: ignore[operator]
    pool = [ToolSpec.from_row(r) for r in _tool_rows(first)]
    # Least-use draws every tool within a few toolsets; steered, the covered domain's tools start
    # with a head start of at least a few uses, so the first toolsets draw only the others.
    for steer, n, expect_covered in ((True, 3, False), (False, 8, True)):
        settings = load_config(None, {"run": {"db": str(first), "steer_coverage": steer}}, environ={}).run
        drawn = list(itertools.islice(toolsets(pool, settings, random.Random(1), "run_b"), n))
        assert any(t.domain == covered for ts in drawn for t in ts) == expect_covered, (steer, covered, drawn)


def _tool_rows(db: Path) -> list[dict[str, object]]:
    with connect_readonly(db) as con:
        cur = con.execute("SELECT * FROM tools WHERE status = 'accepted' ORDER BY id")
        cols = [d[0] for d in cur.description or []]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    return [{k: json.loads(v) if k in ("input_schema", "output_schema", "error_modes", "provenance") and
             isinstance(v, str) else v for k, v in r.items()} for r in rows]
