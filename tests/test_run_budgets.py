"""Balance and cost of a run: `[run] domain_quota` caps judged trajectories per domain, and
`[run] token_budget` stops a run cleanly once its model calls have used that many tokens; a
rerun with a larger budget resumes the same run (scripted fake server, in-process run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synth.config import load_config
from synth.pipeline.run import execute_run
from synth.store import connect_readonly


def _config(base_url: str, tmp_path: Path, trajectories: int, **run: Any) -> Any:
    return load_config(None, {
        "llm": {"base_urls": [base_url], "max_retries": 20},
        "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
        "run": {"domains": "weather,order_management", "db": str(tmp_path / "synth.duckdb"),
                "trajectories": trajectories, "tools_per_domain": 4, **run},
    }, environ={})


def _q(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with connect_readonly(db) as con:
        return con.execute(sql).fetchall()


def test_a_domain_quota_balances_the_dataset(fake_server: Any, tmp_path: Path) -> None:
    server = fake_server()
    summary = execute_run(_config(server.base_url, tmp_path, 6, domain_quota=3), use_ray=False, show_progress=False)
    assert summary.status == "finished" and summary.judged == 6
    per_domain = dict(_q(tmp_path / "synth.duckdb", "SELECT domain, count(*) FROM trajectories GROUP BY 1"))
    assert per_domain == {"weather": 3, "order_management": 3}

    # Asking for more than the quotas allow ends the run short, saying why.
    more = execute_run(_config(server.base_url, tmp_path, 8, domain_quota=3), use_ray=False, show_progress=False)
    assert more.status == "incomplete" and more.judged == 6 and more.run_id == summary.run_id


def test_a_token_budget_stops_the_run_cleanly_and_a_larger_one_resumes_it(fake_server: Any, tmp_path: Path) -> None:
    server = fake_server()
    db = tmp_path / "synth.duckdb"
    small = execute_run(_config(server.base_url, tmp_path, 8, token_budget=1_800), use_ray=False,
                        show_progress=False)
    spent = _q(db, "SELECT sum(prompt_tokens + completion_tokens) FROM llm_calls WHERE NOT cache_hit")[0][0]
    assert small.status == "budget_spent" and small.judged < 8
    assert spent >= 1_800
    judged = small.judged
    assert _q(db, "SELECT count(*) FROM judgments")[0][0] == judged  # what ran was stored, judged

    rest = execute_run(_config(server.base_url, tmp_path, 8, token_budget=10_000_000), use_ray=False,
                       show_progress=False)
    assert rest.status == "finished" and rest.run_id == small.run_id
    assert rest.judged == 8 and rest.new_trajectories == 8 - judged
    assert _q(db, "SELECT count(*) - count(DISTINCT id) FROM trajectories") == [(0,)]


def test_a_spent_budget_also_stops_the_streamed_tool_stage(fake_server: Any, tmp_path: Path) -> None:
    """Later waves of domains are not synthesised once the budget is spent."""
    server = fake_server()
    domains = "weather,order_management,issue_tracking,cloud_drive,stock_trading,recipes_cooking"
    cfg = _config(server.base_url, tmp_path, 20, token_budget=1_500, tool_wave_domains=1)
    cfg.run.domains = domains.split(",")
    summary = execute_run(cfg, use_ray=False, show_progress=False)
    assert summary.status == "budget_spent"
    made = _q(tmp_path / "synth.duckdb", "SELECT count(DISTINCT domain) FROM tools")[0][0]
    assert made < 6
