"""`synth stats` and `synth export`: reading a dataset. Both open the dataset read-only (retrying
while a run flushes), so they work while `synth run` is still writing the file; a dataset written
by an older synth is migrated first (a short read-write open, see `synth.store.create_schema`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from synth.cli.app import UserError, app, console, friendly_errors

DEFAULT_DB = Path("data/synth.duckdb")
DbOpt = typer.Option(DEFAULT_DB, "--db", help="DuckDB dataset file.")


def _existing_db(db: Path) -> Path:
    if not db.exists():
        raise UserError(f"no dataset at {db} (pass --db PATH; `synth run --db PATH` creates one)")
    if db.is_dir():
        raise UserError(f"--db {db} is a directory, not a DuckDB file")
    import duckdb

    from synth.store import TABLES, connect_readonly, migrate, needs_migration

    try:
        with connect_readonly(db) as con:
            names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    except duckdb.Error as exc:
        raise UserError(f"--db {db} is not a DuckDB dataset: {str(exc).splitlines()[0][:200]}") from None
    missing = sorted({"trajectories", "judgments", "tasks"} - names)
    if missing:
        raise UserError(f"--db {db} is not a synth dataset (no table(s) {', '.join(missing)})")
    if set(TABLES) - names or needs_migration(db):
        migrate(db)
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
    out.print(f"trajectories well-formed (latest judgment): {t.get('well_formed', 0)}")
    for v in stats.get("judge_vote", []):
        what = {"decisive": "decided acceptance", "advisory": "advisory, not counted",
                "off": "no LLM judge"}.get(v["vote"], v["vote"])
        out.print(f"LLM judge vote {v['vote']} ({what}) on {v['count']} judgment(s)"
                  + (f", model {v['model']}" if v.get("model") else "")
                  + (f": {v['reason']}" if v.get("reason") else ""), highlight=False, soft_wrap=True)

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

    if stats.get("pass_rates"):
        rates = Table(title="task pass rates (share of a task's rollouts accepted)")
        for col in ("agent model", "tasks", "mean k", "never", "sometimes", "always",
                    "histogram 0 ≤.2 ≤.4 ≤.6 ≤.8 ≤1"):
            rates.add_column(col, justify="left" if col == "agent model" else "right")
        for r in stats["pass_rates"]:
            rates.add_row(r["agent_model"], str(r["tasks"]), f"{r['mean_k']:.1f}", str(r["never"]),
                          str(r["sometimes"]), str(r["always"]), " ".join(str(n) for n in r["histogram"]))
        out.print(rates)

    tok = stats["tokens_per_accepted_trajectory"]
    usage = Table(title="model usage by role")
    for col in ("role", "calls", "failed", "cut off (tok)", "cache hits", "prompt tok", "prefix reuse",
                "completion tok", "latency s"):
        usage.add_column(col, justify="left" if col == "role" else "right", no_wrap=col == "role")
    for r in stats["llm_usage"]:
        reuse = "-" if r["prefix_reuse"] is None else f"{r['prefix_reuse']:.0%}"
        usage.add_row(r["role"], str(r["calls"]), str(r["failed"]), f"{r['cut_off']} ({r['cut_off_tokens']})",
                      str(r["cache_hits"]), str(r["prompt_tokens"]), reuse, str(r["completion_tokens"]),
                      f"{r['latency_s']:.1f}")
    out.print(usage)
    if tok["n"]:
        out.print(f"tokens per accepted trajectory (rollout): mean {tok['mean_total']}, median {tok['median_total']}, "
                  f"max {tok['max_total']} over {tok['n']}; all model tokens per accepted trajectory: "
                  f"{stats['llm_tokens_per_accepted']}")
    else:
        out.print("tokens per accepted trajectory: none accepted yet", highlight=False)
    dup = stats.get("duplicates") or {}
    out.print("near-duplicates left out of exports (synth dedup): " + ", ".join(
        f"{d['left_out']} {kind}(s) in {d['groups']} group(s)" for kind, d in dup.items()), highlight=False)


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
    select: str = typer.Option("accepted", "--select",
                               help="accepted (correct worked examples) | well_formed (structurally valid "
                                    "only; ask for it by name)."),
    min_pass_rate: float | None = typer.Option(None, "--min-pass-rate", min=0.0, max=1.0,
                                               help="rl: keep tasks whose pass rate over their rollouts is "
                                                    "at least this"),
    max_pass_rate: float | None = typer.Option(None, "--max-pass-rate", min=0.0, max=1.0,
                                               help="rl: keep tasks whose pass rate is at most this"),
    keep_duplicates: bool = typer.Option(False, "--keep-duplicates",
                                         help="Also write near-duplicates that are not their group's "
                                              "representative (see `synth dedup`)."),
) -> None:
    """Write accepted trajectories for SFT (OpenAI messages + tools, or ShareGPT), tasks,
    rollouts with their rewards and preference pairs for RL, or every table as Parquet; each
    trajectory by its latest judgment. Prints a JSON summary."""
    from synth.export import FORMATS, SELECTIONS, export_dataset

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if select not in SELECTIONS:
        raise UserError(f"unknown --select {select!r}; choose one of {', '.join(SELECTIONS)}")
    if fmt != "rl" and (min_pass_rate is not None or max_pass_rate is not None):
        raise UserError("--min-pass-rate / --max-pass-rate filter rl tasks; use them with --format rl")
    if min_pass_rate is not None and max_pass_rate is not None and min_pass_rate > max_pass_rate:
        raise UserError(f"--min-pass-rate {min_pass_rate} is above --max-pass-rate {max_pass_rate}")
    summary = export_dataset(_existing_db(db), fmt, out, select, min_pass_rate, max_pass_rate,
                             keep_duplicates=keep_duplicates)
    print(json.dumps(summary.as_dict()))
    for reason, n in sorted(summary.skipped.items()):
        console.print(f"[yellow]skipped {n}[/]: {reason}")
