"""The tables of the HTML report, read from a dataset with one short read-only connection each (so
a run writing the file gets its lock between them), aggregated in SQL: no query materialises a
table in Python, so a dataset of 100,000 trajectories costs seconds, not memory.

Every count is by each trajectory's latest judgment, as in `synth.stats`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synth.judges.messages import text as message_text
from synth.report.coverage import category_of
from synth.stats import reason_head
from synth.store import connect_readonly, json_value

EXAMPLES_PER_VERDICT = 3
TOP = 12
_CHECKS_TYPE = '[{"name": "VARCHAR", "passed": "BOOLEAN", "detail": "VARCHAR"}]'


def _dicts(db: str | Path, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    with connect_readonly(db) as con:
        cur = con.execute(sql, params or [])
        cols = [d[0] for d in cur.description or []]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


# ---------------------------------------------------------------- yield

_STAGE_COUNTS_SQL = """
    SELECT coalesce(domain, '(none)') AS domain, count(*) FILTER (WHERE status = 'accepted') AS accepted,
           count(*) FILTER (WHERE status = 'rejected') AS rejected
    FROM {table} GROUP BY 1
"""

_TRAJECTORY_COUNTS_SQL = """
    SELECT coalesce(t.domain, '(none)') AS domain, count(*) AS trajectories, count(j.trajectory_id) AS judged,
           count(*) FILTER (WHERE j.accepted) AS accepted, count(*) FILTER (WHERE j.well_formed) AS well_formed
    FROM trajectories t LEFT JOIN latest_judgments j ON j.trajectory_id = t.id GROUP BY 1
"""

YIELD_COLUMNS = ("tools", "tools_rejected", "agents", "agents_rejected", "tasks", "tasks_rejected",
                 "trajectories", "judged", "accepted", "well_formed")


def yield_by_domain(db: str | Path) -> list[dict[str, Any]]:
    """Per domain (with its category): accepted and rejected tools, agents and tasks; trajectories
    stored, judged, accepted and well-formed; and the yield (accepted / judged)."""
    rows: dict[str, dict[str, Any]] = {}

    def row(domain: str) -> dict[str, Any]:
        return rows.setdefault(domain, {"domain": domain, "category": category_of(domain),
                                        **dict.fromkeys(YIELD_COLUMNS, 0)})

    for table in ("tools", "agents", "tasks"):
        for r in _dicts(db, _STAGE_COUNTS_SQL.format(table=table)):
            row(r["domain"])[table] = int(r["accepted"])
            row(r["domain"])[f"{table}_rejected"] = int(r["rejected"])
    for r in _dicts(db, _TRAJECTORY_COUNTS_SQL):
        target = row(r["domain"])
        for key in ("trajectories", "judged", "accepted", "well_formed"):
            target[key] = int(r[key])
    out = sorted(rows.values(), key=lambda r: (r["category"], r["domain"]))
    for r in out:
        r["yield"] = r["accepted"] / r["judged"] if r["judged"] else None
    return out


def yield_by_category(by_domain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`yield_by_domain` summed per category."""
    out: dict[str, dict[str, Any]] = {}
    for r in by_domain:
        target = out.setdefault(r["category"], {"category": r["category"], "domains": 0,
                                                **dict.fromkeys(YIELD_COLUMNS, 0)})
        target["domains"] += 1
        for key in YIELD_COLUMNS:
            target[key] += r[key]
    for r in out.values():
        r["yield"] = r["accepted"] / r["judged"] if r["judged"] else None
    return sorted(out.values(), key=lambda r: r["category"])


# ---------------------------------------------------------------- rejections

_STAGE_REASONS_SQL = """
    SELECT {head} AS reason, count(*) AS count, arg_min(reason, id) AS example, arg_min({label}, id) AS item,
           min(id) AS item_id
    FROM {table} WHERE status = 'rejected' GROUP BY 1 ORDER BY count DESC, reason LIMIT {top}
"""

_JUDGMENT_REASONS_SQL = """
    SELECT {head} AS reason, count(*) AS count, arg_min(r, trajectory_id) AS example, min(trajectory_id) AS item_id
    FROM (SELECT trajectory_id, unnest(from_json(reasons, '["VARCHAR"]')) AS r FROM latest_judgments
          WHERE NOT accepted)
    GROUP BY 1 ORDER BY count DESC, reason LIMIT {top}
"""

_LABELS = {"tools": "name", "agents": "name", "tasks": "goal"}


def rejection_reasons(db: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Per stage, the most frequent rejection reasons (grouped by their head, as `synth stats`
    does) with their counts and one example each: the full reason and the item it rejected."""
    out = {}
    for table, label in _LABELS.items():
        out[table] = _dicts(db, _STAGE_REASONS_SQL.format(head=reason_head("reason"), label=label, table=table,
                                                          top=TOP))
    out["trajectories"] = _dicts(db, _JUDGMENT_REASONS_SQL.format(head=reason_head("r"), top=TOP))
    return out


_CHECK_RATES_SQL = f"""
    SELECT c.name AS "check", count(*) AS evaluated, count(*) FILTER (WHERE NOT c.passed) AS failed,
           arg_min(c.detail, trajectory_id) FILTER (WHERE NOT c.passed) AS example,
           min(trajectory_id) FILTER (WHERE NOT c.passed) AS example_id
    FROM (SELECT trajectory_id, unnest(from_json(checks, '{_CHECKS_TYPE}')) AS c FROM latest_judgments)
    GROUP BY 1 ORDER BY failed DESC, "check"
"""


def check_failure_rates(db: str | Path) -> list[dict[str, Any]]:
    """Per deterministic check: judgments that ran it, how many it failed, the rate and one example."""
    rows = _dicts(db, _CHECK_RATES_SQL)
    for r in rows:
        r["rate"] = r["failed"] / r["evaluated"] if r["evaluated"] else None
    return rows


def calibrations(db: str | Path) -> list[dict[str, Any]]:
    """The stored calibrations of judge models (`synth judge calibrate`), newest first."""
    return _dicts(db, """SELECT judge_model, n_good, judge_recall, judge_precision, created_at FROM calibrations
                         ORDER BY created_at DESC NULLS LAST, id LIMIT 10""")


# ---------------------------------------------------------------- cost


def cost_per_role(llm_usage: list[dict[str, Any]], accepted: int) -> list[dict[str, Any]]:
    """Per role, model calls, tokens and model time in all and per accepted trajectory (every call
    of the dataset, all stages, divided by the accepted trajectories: the full cost of one)."""
    out = []
    for r in llm_usage:
        tokens = r["prompt_tokens"] + r["completion_tokens"]
        per = (lambda v: v / accepted if accepted else None)  # noqa: E731
        out.append({**r, "tokens": tokens, "tokens_per_accepted": per(tokens),
                    "seconds_per_accepted": per(r["latency_s"]), "calls_per_accepted": per(r["calls"])})
    return out


# ---------------------------------------------------------------- examples

_EXAMPLES_SQL = """
    SELECT t.id, t.domain, t.messages, t.termination, t.n_turns, t.n_tool_calls, k.goal, j.accepted, j.score,
           j.failed_checks, j.checks, j.reasons, j.judge, j.criteria
    FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id LEFT JOIN tasks k ON k.id = t.task_id
    WHERE j.accepted = ? AND t.id NOT IN (SELECT id FROM duplicates WHERE NOT is_representative)
    ORDER BY hash(t.id) LIMIT ?
"""


def conversation(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the report shows them: role, text, tool calls (name and pretty arguments), and
    for tool results the tool's name and the result, pretty-printed when it is JSON."""
    names: dict[str, str] = {}
    out = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        item: dict[str, Any] = {"role": m.get("role"), "text": message_text(m.get("content")), "calls": []}
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            args = fn.get("arguments")
            parsed = json_value(args, args)
            names[str(call.get("id"))] = str(fn.get("name") or "")
            item["calls"].append({"name": fn.get("name"), "arguments": json.dumps(parsed, indent=1, ensure_ascii=False)
                                  if not isinstance(parsed, str) else parsed})
        if m.get("role") == "tool":
            item["tool"] = names.get(str(m.get("tool_call_id")), m.get("name") or "tool")
            parsed = json_value(item["text"], None)
            if parsed is not None:
                item["text"] = json.dumps(parsed, indent=1, ensure_ascii=False)
        out.append(item)
    return out


def example_trajectories(db: str | Path, accepted: bool, n: int = EXAMPLES_PER_VERDICT) -> list[dict[str, Any]]:
    """A deterministic sample of `n` accepted (or rejected) trajectories, duplicates left out, with
    their conversations and judgments."""
    rows = _dicts(db, _EXAMPLES_SQL, [accepted, n])
    for r in rows:
        r["conversation"] = conversation(json_value(r.pop("messages"), []))
        r["failed_checks"] = json_value(r["failed_checks"], [])
        r["checks"] = [c for c in json_value(r["checks"], []) if isinstance(c, dict) and not c.get("passed")]
        r["reasons"] = json_value(r["reasons"], [])
        r["judge"] = json_value(r["judge"], {})
        r["criteria"] = json_value(r["criteria"], [])
    return rows


# ---------------------------------------------------------------- duplicates

_DUPLICATE_EXAMPLES_SQL = """
    WITH g AS (SELECT group_id, any_value(group_size) AS size, any_value(representative_id) AS rep,
                      min(id) FILTER (WHERE NOT is_representative) AS other,
                      min(similarity) FILTER (WHERE NOT is_representative) AS similarity
               FROM duplicates WHERE kind = ? GROUP BY 1 ORDER BY size DESC, group_id LIMIT ?)
    SELECT g.*, a.{text} AS rep_text, b.{text} AS other_text
    FROM g LEFT JOIN {table} a ON a.id = g.rep LEFT JOIN {table} b ON b.id = g.other ORDER BY size DESC, group_id
"""


def duplicate_examples(db: str | Path, n: int = 3) -> dict[str, list[dict[str, Any]]]:
    """The largest near-duplicate groups of each kind: the representative and one member left out
    (tasks by goal, trajectories by their first user message)."""
    tasks = _dicts(db, _DUPLICATE_EXAMPLES_SQL.format(text="goal", table="tasks"), ["task", n])
    trajectories = _dicts(db, _DUPLICATE_EXAMPLES_SQL.format(
        text="messages", table="trajectories"), ["trajectory", n])
    for r in trajectories:
        for key in ("rep_text", "other_text"):
            messages = json_value(r[key], []) or []
            r[key] = next((message_text(m.get("content")) for m in messages
                           if isinstance(m, dict) and m.get("role") == "user"), "")
    return {"task": tasks, "trajectory": trajectories}
