"""What a dataset holds and what it cost: `dataset_stats(db)` for `synth stats` and notebooks.

Counts come straight from SQL over the tables (one short read-only connection, so a running
writer is held up only for the moment it takes). Definitions, so the numbers can be checked by
hand:

- `stages.<tools|agents|tasks>`: rows per `status` (accepted / rejected) and in total.
- `stages.trajectories`: rows in total; `judged` are those with at least one judgment. Everything
  per trajectory counts its latest judgment only (the `latest_judgments` view): a trajectory
  re-judged under another policy (`synth judge run`) is counted once, as its latest verdict says.
- `stages.judgments`: judgment rows per `accepted` value (every row, re-judgings included);
  `accepted_trajectories` / `well_formed_trajectories` count trajectories whose latest judgment
  is accepted / well-formed (the rows of `synth export --format sft [--select well_formed]`).
- `judge_vote`: per vote of the LLM judge in the latest judgments ("decisive": its verdict
  decided; "advisory": recorded only, with the reason, e.g. no calibration stored for the
  model; "off": no LLM judge), the number of judgments.
- `yield_by_domain`: per trajectory domain, judged and accepted trajectories and their ratio.
- `rejection_reasons`: the most frequent reasons per stage. Reasons are grouped by their head
  (quoted values and numbers masked, then the text before the first ':'), since the rest usually
  names the item.
  For judgments, `failed_checks` counts each failed deterministic check over rejected latest
  judgments.
- `tokens_per_accepted_trajectory`: prompt/completion tokens recorded on the accepted
  trajectories' steps (the rollout itself), and `llm_tokens_per_accepted`: every model call
  of the dataset (all stages, all roles) divided by the accepted trajectories: the full cost.
- `pass_rates`: per agent model, over the tasks with judged rollouts (`task_pass_rates` view:
  a task's pass rate is the share of its rollouts accepted, `[rollout] per_task` = k): tasks,
  their mean k, how many were never / sometimes / always solved (only "sometimes" gives an RL
  learning signal), and a histogram of pass rates in fifths (0, (0, 0.2], ..., (0.8, 1]).
- `llm_usage`: per role, calls, failures, cache hits, retries, tokens and latency.
- `duplicates`: per kind (task, trajectory), the near-duplicate groups stored by the last
  `synth dedup` (or the end of `synth run`) and the members left out of exports (every member
  but each group's representative; see `synth.duplicates`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from synth.store import connect_readonly

TOP_REASONS = 10


# SQL masking quoted values ('x' or "x") as '…' and numbers as N in a reason. A quote opens only
# where a word does not go on (so "the judge's vote ... model's" keeps its apostrophes), and a
# number is masked only as a word of its own ("ord-27894" -> "ord-N", "smollm2-135m" kept).
_MASK = ("regexp_replace(regexp_replace({text}, '(^|[^[:alnum:]_])(''[^'']*''|\"[^\"]*\")', '\\1''…''', 'g'), "
         "'\\b[0-9]+\\b', 'N', 'g')")


def reason_head(column: str) -> str:
    """SQL for a reason's head: quoted values and numbers masked, then the text before the first
    ':' (the rest usually names the item), at most 120 characters."""
    masked = _MASK.format(text=f"coalesce({column}, '(no reason)')")
    return f"trim(left(split_part({masked}, ':', 1), 120))"


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    return con.execute(sql, params or []).fetchall()[0][0]


def _dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description or []]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _status_counts(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    rows = con.execute(f"SELECT coalesce(status, 'unknown'), count(*) FROM {table} GROUP BY 1").fetchall()
    out = {"accepted": 0, "rejected": 0}
    out.update({str(k): int(v) for k, v in rows})
    out["total"] = sum(out.values())
    return out


def _stage_reasons(con: duckdb.DuckDBPyConnection, table: str) -> list[dict[str, Any]]:
    return _dicts(con, f"""
        SELECT {reason_head('reason')} AS reason, count(*) AS count FROM {table}
        WHERE status = 'rejected' GROUP BY 1 ORDER BY count DESC, reason LIMIT {TOP_REASONS}""")


def _duplicates(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    out = {kind: {"groups": 0, "left_out": 0} for kind in ("task", "trajectory")}
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "duplicates" in tables:  # older datasets lack it
        for kind, groups, left_out in con.execute("""
                SELECT kind, count(DISTINCT group_id), count(*) FILTER (WHERE NOT is_representative)
                FROM duplicates GROUP BY 1""").fetchall():
            out[str(kind)] = {"groups": int(groups), "left_out": int(left_out)}
    return out


def _round(value: Any, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def run_rejections(db: str | Path, run_id: str, top: int = 4) -> tuple[int, int, list[tuple[str, int]]]:
    """(judged, rejected, the most frequent reasons) over the latest judgments of one run's
    trajectories, for the line `synth run` ends with. A reason is a failed check's name; a
    rejection that failed no check (a `no_tool` answer without a judge vote, an LLM verdict) counts
    under its first reason's head."""
    with connect_readonly(db) as con:
        judged, rejected = con.execute("""
            SELECT count(*), count(*) FILTER (WHERE NOT j.accepted) FROM latest_judgments j
            JOIN trajectories t ON t.id = j.trajectory_id WHERE t.run_id = ?""", [run_id]).fetchall()[0]
        reasons = con.execute(f"""
            WITH rejected AS (
                SELECT from_json(j.failed_checks, '["VARCHAR"]') AS checks, from_json(j.reasons, '["VARCHAR"]') AS rs
                FROM latest_judgments j JOIN trajectories t ON t.id = j.trajectory_id
                WHERE t.run_id = ? AND NOT j.accepted)
            SELECT reason, count(*) AS n FROM (
                SELECT unnest(checks) AS reason FROM rejected WHERE len(checks) > 0
                UNION ALL
                SELECT {reason_head("coalesce(rs[1], '(no reason)')")} FROM rejected WHERE len(checks) = 0)
            GROUP BY 1 ORDER BY n DESC, reason LIMIT {int(top)}""", [run_id]).fetchall()
    return int(judged), int(rejected), [(str(r), int(n)) for r, n in reasons]


def dataset_stats(db: str | Path) -> dict[str, Any]:
    """Counts per stage, yield per domain, rejection reasons, tokens and model usage of the
    dataset at `db` (see the module docstring for each number's definition). Raises
    FileNotFoundError when there is no file, ValueError when it is not a synth dataset."""
    path = Path(db)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {path}")
    try:
        con = connect_readonly(path)
    except duckdb.Error as exc:
        raise ValueError(f"{path} is not a DuckDB dataset: {str(exc).splitlines()[0][:200]}") from None
    with con:
        try:
            return _collect(con, path)
        except duckdb.CatalogException as exc:
            raise ValueError(f"{path} is not a synth dataset: {str(exc).splitlines()[0][:200]}") from None


def _collect(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, Any]:
    judgments = {"accepted": 0, "rejected": 0}
    for accepted, n in con.execute("SELECT accepted, count(*) FROM judgments GROUP BY 1").fetchall():
        judgments["accepted" if accepted else "rejected"] += int(n)
    judgments["total"] = judgments["accepted"] + judgments["rejected"]
    accepted_trajectories = int(_one(con, "SELECT count(*) FROM latest_judgments WHERE accepted"))
    well_formed = int(_one(con, "SELECT count(*) FROM latest_judgments WHERE well_formed"))
    trajectories = {
        "total": int(_one(con, "SELECT count(*) FROM trajectories")),
        "judged": int(_one(con, "SELECT count(*) FROM latest_judgments "
                                "WHERE trajectory_id IN (SELECT id FROM trajectories)")),
        "accepted": accepted_trajectories,
        "well_formed": well_formed,
    }
    stages = {
        "runs": int(_one(con, "SELECT count(*) FROM runs")),
        "tools": _status_counts(con, "tools"),
        "agents": _status_counts(con, "agents"),
        "tasks": _status_counts(con, "tasks"),
        "trajectories": trajectories,
        "judgments": {**judgments, "accepted_trajectories": accepted_trajectories,
                      "well_formed_trajectories": well_formed},
    }
    judge_vote = _dicts(con, """
        SELECT coalesce(judge->>'vote', '(unrecorded)') AS vote, judge->>'vote_reason' AS reason,
               judge->>'model' AS model, count(*) AS count
        FROM latest_judgments GROUP BY ALL ORDER BY count DESC, vote, model NULLS FIRST, reason NULLS FIRST""")
    yield_rows = _dicts(con, """
        WITH verdict AS (SELECT trajectory_id, accepted FROM latest_judgments)
        SELECT coalesce(t.domain, '(none)') AS domain, count(*) AS trajectories, count(v.trajectory_id) AS judged,
               count(*) FILTER (WHERE v.accepted) AS accepted,
               count(*) FILTER (WHERE NOT v.accepted) AS rejected
        FROM trajectories t LEFT JOIN verdict v ON v.trajectory_id = t.id
        GROUP BY 1 ORDER BY 1""")
    for r in yield_rows:
        r["yield"] = _round(r["accepted"] / r["judged"], 4) if r["judged"] else None
    failed_checks = _dicts(con, f"""
        SELECT c AS check, count(*) AS count
        FROM (SELECT unnest(from_json(failed_checks, '["VARCHAR"]')) AS c FROM latest_judgments WHERE NOT accepted)
        GROUP BY 1 ORDER BY count DESC, c LIMIT {TOP_REASONS}""")
    judge_reasons = _dicts(con, f"""
        SELECT {reason_head('r')} AS reason, count(*) AS count
        FROM (SELECT unnest(from_json(reasons, '["VARCHAR"]')) AS r FROM latest_judgments WHERE NOT accepted)
        GROUP BY 1 ORDER BY count DESC, reason LIMIT {TOP_REASONS}""")
    tok = con.execute("""
        SELECT count(*), avg(prompt_tokens), avg(completion_tokens), avg(prompt_tokens + completion_tokens),
               median(prompt_tokens + completion_tokens), max(prompt_tokens + completion_tokens)
        FROM trajectories WHERE id IN (SELECT trajectory_id FROM latest_judgments WHERE accepted)""").fetchall()[0]
    columns = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                         "WHERE table_name = 'llm_calls'").fetchall()}
    cached = "cached_prompt_tokens" if "cached_prompt_tokens" in columns else "0"  # older datasets lack it
    # Replies no caller could use: cut at max_tokens, or stopped looping (`synth.llm.repetition`).
    unusable = "finish_reason IN ('length', 'repetition')" if "finish_reason" in columns else "false"
    llm_usage = _dicts(con, f"""
        SELECT coalesce(role, '(none)') AS role, count(*) AS calls, count(*) FILTER (WHERE NOT ok) AS failed,
               count(*) FILTER (WHERE {unusable} AND NOT cache_hit) AS cut_off,
               coalesce(sum(completion_tokens) FILTER (WHERE {unusable} AND NOT cache_hit), 0) AS cut_off_tokens,
               count(*) FILTER (WHERE cache_hit) AS cache_hits, coalesce(sum(retries), 0) AS retries,
               coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
               coalesce(sum({cached}), 0) AS cached_prompt_tokens,
               coalesce(sum(completion_tokens), 0) AS completion_tokens,
               round(coalesce(sum(latency_s), 0), 3) AS latency_s
        FROM llm_calls GROUP BY 1 ORDER BY 1""")
    for r in llm_usage:
        for k in ("calls", "failed", "cut_off", "cut_off_tokens", "cache_hits", "retries", "prompt_tokens",
                  "cached_prompt_tokens", "completion_tokens"):
            r[k] = int(r[k])
        # Prefix-cache reuse: the share of prompt tokens the server did not have to compute.
        r["prefix_reuse"] = round(r["cached_prompt_tokens"] / r["prompt_tokens"], 3) if r["prompt_tokens"] else None
        r["latency_s"] = float(r["latency_s"])
    all_tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in llm_usage)
    views = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    pass_rates = _dicts(con, """
        SELECT coalesce(agent_model, '(unrecorded)') AS agent_model, count(*) AS tasks,
               round(avg(k), 2) AS mean_k,
               count(*) FILTER (WHERE pass_rate = 0) AS never,
               count(*) FILTER (WHERE pass_rate > 0 AND pass_rate < 1) AS sometimes,
               count(*) FILTER (WHERE pass_rate = 1) AS always,
               list(pass_rate) AS rates
        FROM task_pass_rates GROUP BY 1 ORDER BY 1""") if "task_pass_rates" in views else []
    for r in pass_rates:  # fifths: 0, (0, .2], (.2, .4], ..., (.8, 1]
        rates = r.pop("rates")
        r["histogram"] = [sum(1 for x in rates if x == 0)] + [
            sum(1 for x in rates if lo / 5 < x <= (lo + 1) / 5) for lo in range(5)]
        for k in ("tasks", "never", "sometimes", "always"):
            r[k] = int(r[k])
        r["mean_k"] = float(r["mean_k"])
    return {
        "db": str(path),
        "stages": stages,
        "judge_vote": judge_vote,
        "yield_by_domain": yield_rows,
        "rejection_reasons": {
            "tools": _stage_reasons(con, "tools"),
            "agents": _stage_reasons(con, "agents"),
            "tasks": _stage_reasons(con, "tasks"),
            "judgments": {"failed_checks": failed_checks, "reasons": judge_reasons},
        },
        "tokens_per_accepted_trajectory": {
            "n": int(tok[0]), "mean_prompt": _round(tok[1]), "mean_completion": _round(tok[2]),
            "mean_total": _round(tok[3]), "median_total": _round(tok[4]),
            "max_total": None if tok[5] is None else int(tok[5]),
        },
        "llm_tokens_per_accepted": _round(all_tokens / accepted_trajectories) if accepted_trajectories else None,
        "pass_rates": pass_rates,
        "llm_usage": llm_usage,
        "duplicates": _duplicates(con),
    }
