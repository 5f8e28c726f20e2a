"""Exports of a dataset for training stacks: `sft`, `sharegpt`, `rl` and `parquet`.

`export_dataset(db, fmt, out)` reads the DuckDB file with `synth.store.connect_readonly` and
writes what a trainer loads without conversion scripts:

Trajectories are selected by their latest judgment (`latest_judgments`): accepted ones by
default, well-formed ones only when asked for by name (`select="well_formed"`).

- `sft` (one JSONL file): one accepted trajectory per line,
  `{"messages": [...], "tools": [...], "metadata": {...}}` in the OpenAI chat format that TRL's
  SFT trainer and tool-aware chat templates take as is. Assistant tool calls are
  `{"id", "type": "function", "function": {"name", "arguments"}}` with `arguments` a JSON string;
  every call is answered by one `tool` message carrying its `tool_call_id` (and the tool's `name`).
  Content is always a string.
- `sharegpt` (one JSONL file): APIGen-MT's layout, `{"conversations": [{"from", "value"}],
  "system", "tools", "metadata"}` with `from` in human / gpt / function_call / observation.
  A `function_call` value is `{"name", "arguments"}` as JSON (a JSON list for parallel calls), an
  `observation` value is the tool result (a JSON list of results for parallel calls); `tools` is
  the OpenAI function list as a JSON string, as in APIGen-MT and LLaMA-Factory.
- `rl` (a directory): `tasks.jsonl`, one accepted task per line with the prompt (system and
  first user turn), tools, rubric, initial state, the simulated user's persona and withheld
  facts, and the task's pass rate over its rollouts (`[rollout] per_task`), filtered by
  `min_pass_rate` / `max_pass_rate`; `rollouts.jsonl`, each judged rollout of those tasks with
  its reward (score, accepted, each check), which `synth.reward.score_rollout` reproduces; and
  `pairs.jsonl`, preference pairs in TRL's conversational preference shape `{"prompt", "chosen", "rejected"}`:
  an accepted and a rejected trajectory of the same task, `prompt` their common opening
  messages, `chosen`/`rejected` the rest of each.
- `parquet` (a directory): one `<table>.parquet` per table and per view (JSON columns stay JSON
  text).

Reading is paged by key (`ORDER BY key LIMIT n`, one short connection per page), so no table is
materialised whole and a run still writing the file gets the lock between pages. Rows written
while an export runs may or may not be included; stop the run for an exact snapshot.

Near-duplicates (`synth.duplicates`, the `duplicates` table) are left out: a trajectory or task that
is not its group's representative is not written (counted in `ExportSummary.duplicates_left_out`),
unless `keep_duplicates=True` (`synth export --keep-duplicates`). Parquet writes every row.

A trajectory that cannot be exported faithfully (a tool call without its answer, arguments that
are not a JSON object) is skipped and counted in `ExportSummary.skipped`, never written broken.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from synth.judges.messages import ProblemKind, answer_problems
from synth.judges.messages import text as _text
from synth.models import Task, ToolSpec
from synth.store import TABLES, VIEWS, connect_readonly, json_value

ExportFormat = Literal["sft", "sharegpt", "rl", "parquet"]
FORMATS: tuple[str, ...] = ("sft", "sharegpt", "rl", "parquet")
PAGE_SIZE = 500


class ExportError(ValueError):
    """An export that cannot run (unknown format, unusable output path, not a dataset)."""


@dataclass
class ExportSummary:
    """What an export wrote: `written` records per file, and skipped items per reason."""

    format: str
    out: str
    written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    duplicates_left_out: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"format": self.format, "out": self.out, "written": self.written, "skipped": self.skipped,
                "duplicates_left_out": self.duplicates_left_out}


# ---------------------------------------------------------------- reading


def iter_rows(db: str | Path, sql: str, key: str, *, page_size: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
    """The rows of `sql` as dicts, in `key` order, read page by page (a short read-only
    connection per page). `key` must be a unique, non-null column of the query."""
    last: Any = None
    while True:
        where = "" if last is None else f"WHERE {key} > ?"
        paged = f"SELECT * FROM ({sql}) AS q {where} ORDER BY {key} LIMIT {int(page_size)}"
        with connect_readonly(db) as con:
            cur = con.execute(paged, [] if last is None else [last])
            cols = [d[0] for d in cur.description or []]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        yield from rows
        if len(rows) < page_size:
            return
        last = rows[-1][key]


def _check_dataset(db: str | Path) -> Path:
    path = Path(db)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {path}")
    try:
        with connect_readonly(path) as con:
            names = {r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables").fetchall()}
    except Exception as exc:  # duckdb raises several types for "not a database"
        if isinstance(exc, FileNotFoundError):
            raise
        raise ExportError(f"{path} is not a DuckDB dataset: {str(exc).splitlines()[0][:200]}") from None
    missing = sorted((set(TABLES) | set(VIEWS)) - names)
    if missing:
        raise ExportError(f"{path} is not a synth dataset: missing {', '.join(missing)}")
    return path


# ---------------------------------------------------------------- OpenAI messages


def openai_messages(raw: list[dict[str, Any]]) -> tuple[list[dict[str, Any]] | None, str]:
    """Stored messages normalised to the canonical OpenAI shape, or (None, reason) when they
    cannot be: a tool call without exactly one answering `tool` message, arguments that are not a
    JSON object, a tool message answering no call."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for msg in raw:
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            return None, f"unknown message role {role!r}"
        if role == "assistant" and msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                fn = call.get("function") or {}
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        parsed = json.loads(args) if args.strip() else {}
                    except ValueError:
                        return None, "tool call arguments are not JSON"
                else:
                    parsed = args if args is not None else {}
                if not isinstance(parsed, dict):
                    return None, "tool call arguments are not a JSON object"
                call_id = str(call.get("id") or "")
                if not call_id or call_id in names:
                    return None, "tool call without a unique id"
                names[call_id] = str(fn.get("name") or "")
                calls.append({"id": call_id, "type": "function", "function": {
                    "name": names[call_id], "arguments": json.dumps(parsed, ensure_ascii=False)}})
            out.append({"role": "assistant", "content": _text(msg.get("content")), "tool_calls": calls})
        elif role == "tool":
            call_id = str(msg.get("tool_call_id") or "")
            out.append({"role": "tool", "tool_call_id": call_id, "name": names.get(call_id, ""),
                        "content": _text(msg.get("content"))})
        else:
            out.append({"role": role, "content": _text(msg.get("content"))})
    problem = unanswered_calls(out)
    return (None, problem) if problem else (out, "")


def unanswered_calls(messages: list[dict[str, Any]]) -> str:
    """'' when every assistant tool call is answered by exactly one later `tool` message (before
    the next assistant or user turn) and every tool message answers a call; else the first
    problem (`synth.judges.messages.answer_problems`), in words that count skipped rows."""
    problems = answer_problems(messages)
    return _PROBLEM_WORDS[problems[0].kind] if problems else ""


_PROBLEM_WORDS: dict[ProblemKind, str] = {
    "no_id": "tool call without a unique id",
    "duplicate_id": "tool call without a unique id",
    "unanswered": "a tool call has no tool message",
    "answered_twice": "a tool call is answered twice",
    "early": "a tool message answers no call",
    "late": "a tool message answers no call",
    "orphan": "a tool message answers no call",
}


def _openai_tools(raw: Any) -> list[dict[str, Any]]:
    """Stored toolsets as OpenAI function tools (ToolSpec dumps are converted)."""
    tools = []
    for t in json_value(raw, []) or []:
        if not isinstance(t, dict):
            continue
        if isinstance(t.get("function"), dict):
            fn = t["function"]
        else:
            fn = {"name": t.get("name", ""), "description": t.get("description", ""),
                  "parameters": t.get("inputSchema") or t.get("input_schema") or {"type": "object"}}
        tools.append({"type": "function", "function": {
            "name": fn.get("name", ""), "description": fn.get("description") or "",
            "parameters": fn.get("parameters") or {"type": "object", "properties": {}}}})
    return tools


# ---------------------------------------------------------------- sft and sharegpt

# What an export selects, by the trajectory's latest judgment: `accepted` (a correct worked example
# of its task; the default) or `well_formed` (structurally valid, asserts nothing no tool returned;
# only when asked for by name).
SELECTIONS: tuple[str, ...] = ("accepted", "well_formed")

# One row per selected trajectory, by its latest judgment (never two judgments of one trajectory).
_SELECTED_SQL = """
    SELECT t.id AS trajectory_id, j.id AS judgment_id, t.run_id, t.domain, t.task_id, t.agent_id, t.messages,
           t.tools, j.score, j.accepted, j.well_formed, t.termination, t.n_turns, t.n_tool_calls, k.kind,
           k.difficulty
    FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id
    LEFT JOIN tasks k ON k.id = t.task_id
    WHERE j.{column}
"""


# Members of a near-duplicate group other than its representative (`synth.duplicates`).
_NOT_REPRESENTATIVE_SQL = "SELECT id FROM duplicates WHERE kind = '{kind}' AND NOT is_representative"


def _without_duplicates(db: Path, sql: str, key: str, kind: str, summary: ExportSummary) -> str:
    """`sql` less the rows whose `key` is a near-duplicate left out; their number goes to `summary`."""
    dropped = _NOT_REPRESENTATIVE_SQL.format(kind=kind)
    with connect_readonly(db) as con:
        n = con.execute(f"SELECT count(*) FROM ({sql}) q WHERE {key} IN ({dropped})").fetchall()[0][0]
    summary.duplicates_left_out += int(n)
    return f"SELECT * FROM ({sql}) q WHERE {key} NOT IN ({dropped})"


def _selection(select: str) -> str:
    if select not in SELECTIONS:
        raise ExportError(f"unknown selection {select!r}; choose one of {', '.join(SELECTIONS)}")
    return select


def _accepted(db: Path, summary: ExportSummary, select: str = "accepted", keep_duplicates: bool = False,
              ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Selected trajectories with their normalised messages; unexportable ones are counted."""
    sql = _SELECTED_SQL.format(column=_selection(select))
    if not keep_duplicates:
        sql = _without_duplicates(db, sql, "trajectory_id", "trajectory", summary)
    for row in iter_rows(db, sql, "trajectory_id"):
        messages, problem = openai_messages(json_value(row["messages"], []))
        if messages is None:
            summary.skip(problem)
            continue
        yield row, messages


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "trajectory_id": row["trajectory_id"], "judgment_id": row["judgment_id"], "task_id": row["task_id"],
        "agent_id": row["agent_id"], "run_id": row["run_id"], "domain": row["domain"],
        "kind": row.get("kind"), "difficulty": row.get("difficulty"),
        "score": float(row["score"]) if row.get("score") is not None else None,
        "termination": row.get("termination"), "n_turns": row.get("n_turns"),
        "n_tool_calls": row.get("n_tool_calls"), "accepted": row.get("accepted"),
        "well_formed": row.get("well_formed"),
    }


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def export_sft(db: Path, out: Path, summary: ExportSummary, select: str = "accepted",
               keep_duplicates: bool = False) -> None:
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for row, messages in _accepted(db, summary, select, keep_duplicates):
            f.write(_dump({"messages": messages, "tools": _openai_tools(row["tools"]), "metadata": _metadata(row)}))
            n += 1
    summary.written[str(out)] = n


def sharegpt_conversation(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, str]]] | None:
    """(system, turns) in APIGen-MT's from/value layout, or None when the conversation does not
    alternate as ShareGPT requires (human/observation on odd turns, gpt/function_call on even).
    Consecutive user messages (or assistant texts) are joined; parallel tool calls become one
    function_call turn holding a JSON list and one observation turn holding a JSON list."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns: list[dict[str, str]] = []
    pending: list[str] = []
    for msg in messages:
        role = msg["role"]
        if role == "system":
            continue
        if role != "tool" and pending:
            value = pending[0] if len(pending) == 1 else json.dumps(pending, ensure_ascii=False)
            turns.append({"from": "observation", "value": value})
            pending = []
        if role == "tool":
            pending.append(msg["content"])
        elif role == "assistant" and msg.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                     for c in msg["tool_calls"]]
            value = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
            turns.append({"from": "function_call", "value": value})
        else:
            who = "human" if role == "user" else "gpt"
            if turns and turns[-1]["from"] == who:
                turns[-1]["value"] += "\n\n" + msg["content"]
            else:
                turns.append({"from": who, "value": msg["content"]})
    if pending:
        turns.append({"from": "observation", "value": pending[0] if len(pending) == 1 else json.dumps(pending)})
    for i, turn in enumerate(turns):
        allowed = ("human", "observation") if i % 2 == 0 else ("gpt", "function_call")
        if turn["from"] not in allowed:
            return None
    if not turns or turns[-1]["from"] != "gpt":
        return None
    return system, turns


def export_sharegpt(db: Path, out: Path, summary: ExportSummary, select: str = "accepted",
                    keep_duplicates: bool = False) -> None:
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for row, messages in _accepted(db, summary, select, keep_duplicates):
            converted = sharegpt_conversation(messages)
            if converted is None:
                summary.skip("turns do not alternate as ShareGPT requires")
                continue
            system, turns = converted
            f.write(_dump({"conversations": turns, "system": system,
                           "tools": json.dumps(_openai_tools(row["tools"]), ensure_ascii=False),
                           "metadata": _metadata(row)}))
            n += 1
    summary.written[str(out)] = n


# ---------------------------------------------------------------- rl

_RL_TASKS_SQL = """
    WITH ranked AS (
        SELECT t.task_id, t.messages, t.tools,
               row_number() OVER (PARTITION BY t.task_id
                                  ORDER BY coalesce(j.{column}, false) DESC, t.id) AS rn,
               count(j.id) OVER (PARTITION BY t.task_id) AS n_trajectories,
               sum(CASE WHEN j.{column} THEN 1 ELSE 0 END) OVER (PARTITION BY t.task_id) AS n_selected,
               list(DISTINCT t.agent_model) OVER (PARTITION BY t.task_id) AS agent_models
        FROM trajectories t LEFT JOIN latest_judgments j ON j.trajectory_id = t.id
    )
    SELECT k.* EXCLUDE (n_judged, n_accepted), r.messages, r.tools, r.agent_models,
           coalesce(r.n_trajectories, 0) AS n_trajectories, coalesce(r.n_selected, 0) AS n_accepted
    FROM rl_tasks k LEFT JOIN ranked r ON r.task_id = k.task_id AND r.rn = 1
"""

# Tasks with both a selected and an unselected trajectory (by latest judgments).
_PAIR_TASKS_SQL = """
    SELECT t.task_id FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id
    GROUP BY t.task_id HAVING bool_or(j.{column}) AND bool_or(NOT j.{column})
"""

# Every judged rollout of one task, with what scored it.
_ROLLOUTS_SQL = """
    SELECT t.id AS trajectory_id, t.task_id, coalesce(t.rollout_index, 0) AS rollout_index, t.agent_model,
           t.seed, t.messages, t.termination, t.final_state, t.state_log, t.steps,
           j.score, j.accepted, j.well_formed, j.checks, j.judge
    FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id
    WHERE t.task_id = ? ORDER BY rollout_index, t.id
"""


def _tools_by_id(db: Path, ids: list[str]) -> list[ToolSpec]:
    """The agent's toolset as stored, in `ids` order: what the judge checked calls against."""
    if not ids:
        return []
    marks = ", ".join("?" for _ in ids)
    with connect_readonly(db) as con:
        cur = con.execute(f"SELECT * FROM tools WHERE id IN ({marks})", ids)
        cols = [d[0] for d in cur.description or []]
        rows = {r[0]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}
    specs = []
    for i in ids:
        if i in rows:
            row = rows[i] | {k: json_value(rows[i][k], None) for k in ("input_schema", "output_schema", "error_modes",
                                                                     "provenance")}
            specs.append(ToolSpec.from_row(row))
    return specs


def pass_rate(row: dict[str, Any]) -> float | None:
    """The share of a task's judged rollouts that were selected; None when none was judged."""
    n = int(row.get("n_trajectories") or 0)
    return round(int(row.get("n_accepted") or 0) / n, 6) if n else None


def rl_task_record(row: dict[str, Any], tools: list[dict[str, Any]],
                   specs: list[ToolSpec] | None = None) -> dict[str, Any]:
    """One RL task, with what a trainer needs to roll it out again and score the rollout the way
    synth did (`synth.reward.score_rollout`): the prompt (the agent's system prompt and the first
    user turn of a stored rollout, an accepted one when there is one, else the goal), the tools
    (OpenAI functions for the policy, `tool_specs` for the reward), the initial state, the
    simulated user's persona and withheld facts, the rubric, the task itself as synth's `Task`
    (`task`), and its pass rate over its judged rollouts."""
    messages = json_value(row.get("messages"), []) or []
    first_user = next((_text(m.get("content")) for m in messages if m.get("role") == "user"), None)
    prompt = [{"role": "system", "content": row.get("system_prompt") or ""},
              {"role": "user", "content": first_user if first_user is not None else row.get("goal") or ""}]
    task = Task.from_row({k: json_value(row.get(k), None) if k in ("persona", "withheld", "initial_state", "rubric")
                          else row.get(k) for k in ("agent_id", "domain", "goal", "persona", "withheld",
                                                     "initial_state", "difficulty", "kind", "rubric")})
    return {
        "task_id": row["task_id"], "run_id": row["run_id"], "domain": row["domain"], "agent_id": row["agent_id"],
        "kind": row.get("kind"), "difficulty": row.get("difficulty"), "goal": row.get("goal"),
        "prompt": prompt, "first_turn_source": "trajectory" if first_user is not None else "goal",
        "tools": tools, "rubric": json_value(row.get("rubric"), {}),
        "initial_state": json_value(row.get("initial_state"), {}),
        "persona": json_value(row.get("persona"), {}), "withheld": json_value(row.get("withheld"), {}),
        "task": task.model_dump(mode="json"),
        "tool_specs": [t.model_dump(mode="json") for t in specs or []],
        "agent_models": [m for m in row.get("agent_models") or [] if m],
        "n_trajectories": int(row.get("n_trajectories") or 0), "n_accepted": int(row.get("n_accepted") or 0),
        "pass_rate": pass_rate(row),
    }


def rollout_record(row: dict[str, Any]) -> dict[str, Any]:
    """One judged rollout of an exported task, with its reward as stored: the policy's `score`,
    `accepted`, `well_formed` and each check's result. `synth.reward.score_rollout(task, rollout)`
    recomputes the reward from the rest of the record."""
    judge = json_value(row.get("judge"), {}) or {}
    return {
        "trajectory_id": row["trajectory_id"], "task_id": row["task_id"], "rollout_index": row["rollout_index"],
        "agent_model": row.get("agent_model"), "seed": row.get("seed"),
        "messages": json_value(row.get("messages"), []), "termination": row.get("termination"),
        "final_state": json_value(row.get("final_state"), {}), "state_log": json_value(row.get("state_log"), []),
        "steps": json_value(row.get("steps"), []),
        "reward": {
            "score": row.get("score"), "accepted": bool(row.get("accepted")),
            "well_formed": bool(row.get("well_formed")),
            "checks": {c["name"]: bool(c["passed"]) for c in json_value(row.get("checks"), []) or []},
            "judge_vote": judge.get("vote"), "judge_policy": judge.get("policy"),
        },
    }


def preference_pair(
    task_id: str, chosen: dict[str, Any], rejected: dict[str, Any],
    chosen_messages: list[dict[str, Any]], rejected_messages: list[dict[str, Any]],
) -> dict[str, Any]:
    """TRL's conversational preference record: the shared opening as `prompt`, the rest of each."""
    shared = 0
    for a, b in zip(chosen_messages, rejected_messages, strict=False):
        if a != b or a["role"] == "assistant":
            break
        shared += 1
    return {
        "task_id": task_id, "domain": chosen["domain"],
        "prompt": chosen_messages[:shared], "chosen": chosen_messages[shared:],
        "rejected": rejected_messages[shared:], "tools": _openai_tools(chosen["tools"]),
        "chosen_id": chosen["trajectory_id"], "rejected_id": rejected["trajectory_id"],
        "chosen_score": chosen["score"], "rejected_score": rejected["score"],
        "rejected_reasons": json_value(rejected["reasons"], []),
    }


def _pairs(db: Path, summary: ExportSummary, select: str = "accepted",
           tasks: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """Each rejected trajectory of a task paired with one of its accepted ones (round robin), by
    each trajectory's latest judgment (`select` = "well_formed": well-formed against not); only
    the tasks in `tasks` when given."""
    column = _selection(select)
    for task in iter_rows(db, _PAIR_TASKS_SQL.format(column=column), "task_id"):
        if tasks is not None and task["task_id"] not in tasks:
            continue
        with connect_readonly(db) as con:
            cur = con.execute(
                f"""SELECT t.id AS trajectory_id, t.domain, t.messages, t.tools, j.{column} AS accepted,
                          j.score, j.reasons
                   FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id
                   WHERE t.task_id = ? ORDER BY t.id""", [task["task_id"]])
            cols = [d[0] for d in cur.description or []]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        good: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        bad: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        for r in rows:
            messages, problem = openai_messages(json_value(r["messages"], []))
            if messages is None:
                summary.skip(problem)
                continue
            (good if r["accepted"] else bad).append((r, messages))
        for i, (r, messages) in enumerate(bad):
            if not good:
                break
            g, g_messages = good[i % len(good)]
            if g_messages == messages:  # rejected for how it ended, not for what was said
                summary.skip("rejected trajectory has the same messages as the accepted one")
                continue
            yield preference_pair(task["task_id"], g, r, g_messages, messages)


def _in_band(rate: float | None, low: float | None, high: float | None) -> bool:
    if low is None and high is None:
        return True
    return rate is not None and (low is None or rate >= low) and (high is None or rate <= high)


def export_rl(db: Path, out: Path, summary: ExportSummary, select: str = "accepted",
              min_pass_rate: float | None = None, max_pass_rate: float | None = None,
              keep_duplicates: bool = False) -> None:
    """`tasks.jsonl` (the tasks whose pass rate lies in [min_pass_rate, max_pass_rate]; every
    accepted task when no bound is given; near-duplicate tasks left out unless `keep_duplicates`),
    `rollouts.jsonl` (each judged rollout of those tasks with its reward) and `pairs.jsonl`
    (preference pairs of those tasks)."""
    out.mkdir(parents=True, exist_ok=True)
    column = _selection(select)
    kept: set[str] = set()
    n_tasks = n_rollouts = 0
    with (out / "tasks.jsonl").open("w", encoding="utf-8") as tasks_file, \
            (out / "rollouts.jsonl").open("w", encoding="utf-8") as rollouts_file:
        tasks_sql = _RL_TASKS_SQL.format(column=column)
        if not keep_duplicates:
            tasks_sql = _without_duplicates(db, tasks_sql, "task_id", "task", summary)
        for row in iter_rows(db, tasks_sql, "task_id"):
            if not _in_band(pass_rate(row), min_pass_rate, max_pass_rate):
                summary.skip("task pass rate outside --min-pass-rate/--max-pass-rate")
                continue
            specs = _tools_by_id(db, [str(i) for i in json_value(row.get("tool_ids"), []) or []])
            tools = _openai_tools(row["tools"]) if row.get("tools") is not None else []
            tasks_file.write(_dump(rl_task_record(row, tools or [t.to_openai() for t in specs], specs)))
            kept.add(row["task_id"])
            n_tasks += 1
            with connect_readonly(db) as con:
                cur = con.execute(_ROLLOUTS_SQL, [row["task_id"]])
                cols = [d[0] for d in cur.description or []]
                for r in cur.fetchall():
                    rollouts_file.write(_dump(rollout_record(dict(zip(cols, r, strict=True)))))
                    n_rollouts += 1
    summary.written[str(out / "tasks.jsonl")] = n_tasks
    summary.written[str(out / "rollouts.jsonl")] = n_rollouts
    n = 0
    with (out / "pairs.jsonl").open("w", encoding="utf-8") as f:
        for pair in _pairs(db, summary, select, kept):
            f.write(_dump(pair))
            n += 1
    summary.written[str(out / "pairs.jsonl")] = n


# ---------------------------------------------------------------- parquet


def export_parquet(db: Path, out: Path, summary: ExportSummary) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in [*TABLES, *VIEWS]:
        target = out / f"{name}.parquet"
        with connect_readonly(db) as con:
            order = " ORDER BY id" if name in TABLES else ""
            con.execute(f"COPY (SELECT * FROM {name}{order}) TO ? (FORMAT parquet)", [str(target)]).fetchall()
            n = con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        summary.written[str(target)] = int(n)


# ---------------------------------------------------------------- entry point


def export_dataset(db: str | Path, fmt: str, out: str | Path, select: str = "accepted",
                   min_pass_rate: float | None = None, max_pass_rate: float | None = None,
                   keep_duplicates: bool = False) -> ExportSummary:
    """Write `db` in format `fmt` (sft | sharegpt | rl | parquet) to `out`: a JSONL file for sft
    and sharegpt, a directory for rl and parquet (created if missing). `select` picks the
    trajectories by their latest judgment: "accepted" (default) or "well_formed" (sft, sharegpt,
    and the chosen side of rl pairs; parquet writes every table). Raises FileNotFoundError for a
    missing dataset and ExportError for an unknown format or selection, a file that is not a
    synth dataset, or an output path of the wrong kind. `min_pass_rate` / `max_pass_rate` keep
    the rl tasks whose pass rate lies in that band (rl only). Near-duplicates that are not their
    group's representative are left out of sft, sharegpt and rl tasks unless `keep_duplicates`."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    _selection(select)
    path = _check_dataset(db)
    out = Path(out)
    summary = ExportSummary(format=fmt, out=str(out))
    if fmt in ("sft", "sharegpt"):
        if out.is_dir():
            raise ExportError(f"--out {out} is a directory; {fmt} writes one JSONL file")
        out.parent.mkdir(parents=True, exist_ok=True)
        (export_sft if fmt == "sft" else export_sharegpt)(path, out, summary, select, keep_duplicates)
    else:
        if out.exists() and not out.is_dir():
            raise ExportError(f"--out {out} is a file; {fmt} writes a directory")
        if fmt == "rl":
            export_rl(path, out, summary, select, min_pass_rate, max_pass_rate, keep_duplicates)
        else:
            export_parquet(path, out, summary)
    return summary
