"""`synth stats`, `synth export` and `synth judge calibrate`: reading a dataset and measuring the
judges. Every command opens the dataset read-only (retrying while a run flushes), so they work
while `synth run` is still writing the file.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from synth.cli.app import BaseUrlOpt, ConfigOpt, ModelOpt, UserError, app, build_config, console, friendly_errors

judge_app = typer.Typer(no_args_is_help=True, help="The judges: calibrate them on a labelled set.")
app.add_typer(judge_app, name="judge")

DEFAULT_DB = Path("data/synth.duckdb")
DbOpt = typer.Option(DEFAULT_DB, "--db", help="DuckDB dataset file.")


def _existing_db(db: Path) -> Path:
    if not db.exists():
        raise UserError(f"no dataset at {db} (pass --db PATH; `synth run --db PATH` creates one)")
    if db.is_dir():
        raise UserError(f"--db {db} is a directory, not a DuckDB file")
    import duckdb

    from synth.store import TABLES, connect_readonly

    try:
        with connect_readonly(db) as con:
            names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    except duckdb.Error as exc:
        raise UserError(f"--db {db} is not a DuckDB dataset: {str(exc).splitlines()[0][:200]}") from None
    missing = sorted(set(TABLES) - names)
    if missing:
        raise UserError(f"--db {db} is not a synth dataset (no table(s) {', '.join(missing)})")
    return db


# ---------------------------------------------------------------- stats


def _print_stats(stats: dict[str, Any]) -> None:
    from rich.console import Console

    out = Console()
    stages = stats["stages"]
    table = Table(title=f"synth dataset {stats['db']}")
    for col in ("stage", "accepted", "rejected", "total"):
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=col == "stage")
    for name in ("tools", "agents", "tasks"):
        s = stages[name]
        table.add_row(name, str(s["accepted"]), str(s["rejected"]), str(s["total"]))
    t = stages["trajectories"]
    table.add_row("trajectories", str(t["accepted"]), str(t["judged"] - t["accepted"]), str(t["total"]))
    j = stages["judgments"]
    table.add_row("judgments", str(j["accepted"]), str(j["rejected"]), str(j["total"]))
    out.print(table)

    ydom = Table(title="yield by domain")
    for col in ("domain", "trajectories", "judged", "accepted", "yield"):
        ydom.add_column(col, justify="left" if col == "domain" else "right", no_wrap=col == "domain")
    for r in stats["yield_by_domain"]:
        ydom.add_row(r["domain"], str(r["trajectories"]), str(r["judged"]), str(r["accepted"]),
                     "-" if r["yield"] is None else f"{r['yield']:.0%}")
    out.print(ydom)

    reasons = Table(title="rejection reasons (top)")
    reasons.add_column("stage")
    reasons.add_column("reason")
    reasons.add_column("count", justify="right")
    rr = stats["rejection_reasons"]
    for stage in ("tools", "agents", "tasks"):
        for r in rr[stage]:
            reasons.add_row(stage, r["reason"], str(r["count"]))
    for r in rr["judgments"]["failed_checks"]:
        reasons.add_row("judgments", f"check {r['check']}", str(r["count"]))
    for r in rr["judgments"]["reasons"]:
        if not r["reason"].startswith("check "):
            reasons.add_row("judgments", r["reason"], str(r["count"]))
    out.print(reasons)

    tok = stats["tokens_per_accepted_trajectory"]
    usage = Table(title="model usage by role")
    for col in ("role", "calls", "failed", "cache hits", "prompt tok", "completion tok", "latency s"):
        usage.add_column(col, justify="left" if col == "role" else "right", no_wrap=col == "role")
    for r in stats["llm_usage"]:
        usage.add_row(r["role"], str(r["calls"]), str(r["failed"]), str(r["cache_hits"]),
                      str(r["prompt_tokens"]), str(r["completion_tokens"]), f"{r['latency_s']:.1f}")
    out.print(usage)
    out.print(f"tokens per accepted trajectory (rollout): mean {tok['mean_total']}, median {tok['median_total']}, "
              f"max {tok['max_total']} over {tok['n']}; all model tokens per accepted trajectory: "
              f"{stats['llm_tokens_per_accepted']}")


@app.command("stats")
@friendly_errors
def stats(
    db: Path = DbOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
) -> None:
    """Counts per stage, yield per domain, rejection reasons, tokens per accepted trajectory."""
    from synth.stats import dataset_stats

    data = dataset_stats(_existing_db(db))
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        _print_stats(data)


# ---------------------------------------------------------------- export


@app.command("export")
@friendly_errors
def export(
    db: Path = DbOpt,
    fmt: str = typer.Option(..., "--format", "-f", help="sft | sharegpt | rl | parquet"),
    out: Path = typer.Option(..., "--out", "-o",
                             help="A JSONL file (sft, sharegpt) or a directory (rl, parquet)."),
) -> None:
    """Write accepted trajectories for SFT (OpenAI messages + tools, or ShareGPT), tasks and
    preference pairs for RL, or every table as Parquet. Prints a JSON summary."""
    from synth.export import FORMATS, export_dataset

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    summary = export_dataset(_existing_db(db), fmt, out)
    print(json.dumps(summary.as_dict()))
    for reason, n in sorted(summary.skipped.items()):
        console.print(f"[yellow]skipped {n}[/]: {reason}")


# ---------------------------------------------------------------- judge calibrate


@judge_app.command("calibrate")
@friendly_errors
def judge_calibrate(
    db: Path | None = typer.Option(None, "--db", help="Take good trajectories from this dataset's accepted ones "
                                                      "(default: the fixtures shipped with synth)."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many good trajectories."),
    checks_only: bool = typer.Option(False, "--checks-only", help="Only the deterministic checks (no model)."),
    samples: int | None = typer.Option(None, "--samples", min=1, help="Judge samples per trajectory "
                                                                      "(default: the [judge] config)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corruptions and judge samples."),
    config: Path | None = ConfigOpt,
    base_url: str | None = BaseUrlOpt,
    model: str | None = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run the judges on good trajectories and corruptions of them (wrong tool, missing required
    argument, ignored tool error, fabricated result, premature end, needless tool use); report
    precision and recall per corruption kind for the checks and the LLM judge. Starts the
    embedded backend when no base URL is configured (unless --checks-only)."""
    from synth.judges.calibrate import (
        calibrate,
        examples_from_db,
        format_report,
        labelled_set,
        load_fixture_examples,
    )
    from synth.llm import LLMClient
    from synth.llm.session import model_endpoints

    good = examples_from_db(str(_existing_db(db)), limit) if db is not None else load_fixture_examples()[:limit]
    if not good:
        raise UserError(f"{db} has no accepted trajectory to calibrate on (omit --db to use the fixtures)")
    examples = labelled_set(good, random.Random(seed))
    cfg = build_config(config, base_url=base_url, model=model)
    policy = cfg.judge_policy()
    n_samples = samples or policy.samples

    if checks_only:
        report = asyncio.run(calibrate(examples, None, random.Random(seed), max_turns=policy.max_turns))
    else:
        with model_endpoints(cfg) as (live, _backend):

            async def go() -> Any:
                async with LLMClient(live) as client:
                    return await calibrate(examples, client, random.Random(seed), samples=n_samples,
                                           max_turns=policy.max_turns, aggregation=policy.aggregation,
                                           threshold=policy.min_score)

            report = asyncio.run(go())
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        print(format_report(report))
