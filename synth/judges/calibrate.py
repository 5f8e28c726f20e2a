"""Judge calibration: a labelled set of good trajectories and programmatic corruptions of them,
and the precision/recall of the deterministic checks and of the LLM judge per corruption kind.

Each corruption function takes a good example and returns a corrupted copy, or None where the
corruption does not apply (no tool call to break, a tool task for `needless_tool_use`, ...).
Per kind, the positives are that kind's corruptions (they should be rejected) and the negatives
are the good examples (they should be accepted): recall = rejected corruptions / corruptions,
precision = rejected corruptions / (rejected corruptions + rejected good examples).
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pydantic import BaseModel

from synth.judges.checks import final_reply, iter_tool_calls, run_checks, tools_from_trajectory
from synth.judges.rubric import Aggregation, judge_trajectory
from synth.llm import LLMClient
from synth.models import Task, ToolSpec, Trajectory


@dataclass
class Example:
    """One labelled item: `label` is "good" or the corruption kind."""

    task: Task
    tools: list[ToolSpec]
    trajectory: Trajectory
    label: str = "good"
    source: str = ""

    def corrupted(self, label: str, messages: list[dict[str, Any]], **changes: Any) -> Example:
        traj = self.trajectory.model_copy(update={"messages": messages, **changes}, deep=True)
        return Example(self.task, self.tools, traj, label, self.source)


def load_fixture_examples() -> list[Example]:
    """The hand-written good trajectories shipped with the package (several domains and kinds)."""
    text = resources.files("synth.judges").joinpath("fixtures/good_trajectories.json").read_text("utf-8")
    return examples_from_json(json.loads(text), source="fixtures")


def examples_from_json(items: list[dict[str, Any]], source: str = "") -> list[Example]:
    """Examples from `{task, tools, messages, termination[, steps]}` dicts (the fixture format)."""
    out = []
    for item in items:
        task = Task.model_validate(item["task"])
        tools = [ToolSpec.model_validate(t) for t in item["tools"]]
        traj = Trajectory(
            task_id=task.id, agent_id=task.agent_id, domain=task.domain, messages=item["messages"],
            tools=[t.to_openai() for t in tools], steps=item.get("steps", []),
            termination=item.get("termination", "user_done"),
        )
        out.append(Example(task, tools, traj, "good", source))
    return out


def examples_from_db(path: str, limit: int = 50) -> list[Example]:
    """Accepted trajectories of a dataset (each once, however many judges accepted it) with their
    tasks; tools come from the trajectory's recorded toolset."""
    from synth.store import connect_readonly

    with connect_readonly(path) as con:
        rows = con.execute(
            """SELECT t.task_id, t.agent_id, t.domain, t.messages, t.tools, t.steps, t.termination,
                      k.goal, k.kind, k.difficulty, k.rubric, k.initial_state, k.persona, k.withheld
               FROM trajectories t JOIN tasks k ON k.id = t.task_id
               WHERE t.id IN (SELECT trajectory_id FROM accepted_sft) ORDER BY t.id LIMIT ?""", [limit],
        ).fetchall()
    out = []
    for r in rows:
        task = Task(agent_id=r[1], domain=r[2], goal=r[7], kind=r[8], difficulty=r[9], rubric=json.loads(r[10]),
                    initial_state=json.loads(r[11] or "{}"), persona=json.loads(r[12] or "{}"),
                    withheld=json.loads(r[13] or "{}"))
        traj = Trajectory(task_id=r[0], agent_id=r[1], domain=r[2], messages=json.loads(r[3]),
                          tools=json.loads(r[4]), steps=json.loads(r[5] or "[]"), termination=r[6])
        out.append(Example(task, tools_from_trajectory(traj), traj, "good", path))
    return out


# ---------------------------------------------------------------- corruptions


def _last_call(messages: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(message index, call index) of the last tool call."""
    for i in range(len(messages) - 1, -1, -1):
        calls = messages[i].get("tool_calls") or []
        if messages[i].get("role") == "assistant" and calls:
            return i, len(calls) - 1
    return None


def wrong_tool(ex: Example, rng: random.Random) -> Example | None:
    """The last call goes to another tool of the toolset (or an unknown one)."""
    where = _last_call(ex.trajectory.messages)
    if where is None:
        return None
    msgs = copy.deepcopy(ex.trajectory.messages)
    fn = msgs[where[0]]["tool_calls"][where[1]]["function"]
    others = sorted(t.name for t in ex.tools if t.name != fn["name"])
    fn["name"] = rng.choice(others) if others else fn["name"] + "_v2"
    return ex.corrupted("wrong_tool", msgs)


def missing_required_argument(ex: Example, rng: random.Random) -> Example | None:
    """A required argument is dropped from a call."""
    tools = {t.name: t for t in ex.tools}
    msgs = copy.deepcopy(ex.trajectory.messages)
    candidates = []
    for call in iter_tool_calls(msgs):
        tool = tools.get(call.name)
        required = (tool.input_schema.get("required") or []) if tool else []
        present = [k for k in required if call.arguments and k in call.arguments]
        if present:
            candidates.append((call, present))
    if not candidates:
        return None
    call, present = rng.choice(candidates)
    key = rng.choice(present)
    for tc in msgs[call.index]["tool_calls"]:
        if tc.get("id") == call.id:
            args = json.loads(tc["function"]["arguments"])
            args.pop(key)
            tc["function"]["arguments"] = json.dumps(args)
    return ex.corrupted("missing_required_argument", msgs)


def ignored_tool_error(ex: Example, rng: random.Random) -> Example | None:
    """The last successful tool result becomes an error; the agent carries on as if it worked."""
    msgs = copy.deepcopy(ex.trajectory.messages)
    idx = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].get("role") == "tool"), None)
    if idx is None or final_reply(ex.trajectory) is None:
        return None
    error = rng.choice(["internal error: service unavailable", "permission denied", "not found: no such record"])
    msgs[idx]["content"] = json.dumps({"error": error})
    return ex.corrupted("ignored_tool_error", msgs)


def fabricated_result(ex: Example, rng: random.Random) -> Example | None:
    """The final reply asserts a confirmation number and an amount no tool returned."""
    if final_reply(ex.trajectory) is None:
        return None
    msgs = copy.deepcopy(ex.trajectory.messages)
    ref = f"CNF-{rng.randrange(10000, 99999)}"
    amount = f"{rng.randrange(1000, 9999)}.{rng.randrange(10, 99)}"
    msgs[-1]["content"] = f"{msgs[-1]['content']} Your confirmation number is {ref} and the total charged is ${amount}."
    return ex.corrupted("fabricated_result", msgs)


def premature_end(ex: Example, rng: random.Random) -> Example | None:
    """The episode stops before the agent's final reply: after the first tool result, or (with
    no tools used) right after the user's request."""
    msgs = ex.trajectory.messages
    first_tool = next((i for i, m in enumerate(msgs) if m.get("role") == "tool"), None)
    if first_tool is not None:
        cut = first_tool + 1
    else:
        users = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
        if not users:
            return None
        cut = users[-1] + 1
    if cut >= len(msgs):
        return None
    return ex.corrupted("premature_end", copy.deepcopy(msgs[:cut]))


def needless_tool_use(ex: Example, rng: random.Random) -> Example | None:
    """On a task meant to be answered without tools, the agent calls one anyway before replying."""
    if ex.task.kind == "tool" or not ex.tools or final_reply(ex.trajectory) is None:
        return None
    tool = rng.choice(ex.tools)
    props = tool.input_schema.get("properties") or {}
    args = {k: (1 if (props.get(k) or {}).get("type") == "integer" else "x")
            for k in tool.input_schema.get("required") or []}
    msgs = copy.deepcopy(ex.trajectory.messages)
    call = {"id": "call_extra", "type": "function", "function": {"name": tool.name, "arguments": json.dumps(args)}}
    extra: list[dict[str, Any]] = [{"role": "assistant", "content": "", "tool_calls": [call]},
             {"role": "tool", "tool_call_id": "call_extra", "content": json.dumps({"ok": True})}]
    return ex.corrupted("needless_tool_use", [*msgs[:-1], *extra, msgs[-1]])


CORRUPTIONS: dict[str, Callable[[Example, random.Random], Example | None]] = {
    "wrong_tool": wrong_tool,
    "missing_required_argument": missing_required_argument,
    "ignored_tool_error": ignored_tool_error,
    "fabricated_result": fabricated_result,
    "premature_end": premature_end,
    "needless_tool_use": needless_tool_use,
}


def labelled_set(good: Iterable[Example], rng: random.Random) -> list[Example]:
    """The good examples followed by every applicable corruption of each."""
    good = list(good)
    out = list(good)
    for ex in good:
        for corrupt in CORRUPTIONS.values():
            bad = corrupt(ex, rng)
            if bad is not None:
                out.append(bad)
    return out


# ---------------------------------------------------------------- scoring


class KindScore(BaseModel):
    kind: str
    n: int
    checks_precision: float | None
    checks_recall: float | None
    llm_precision: float | None = None
    llm_recall: float | None = None
    caught_by: dict[str, int] = {}


class CalibrationReport(BaseModel):
    n_good: int
    checks_false_rejects: int
    llm_false_rejects: int | None = None
    llm_invalid_outputs: int = 0
    kinds: list[KindScore]


@dataclass
class _Outcome:
    label: str
    checks_reject: bool
    failed_checks: list[str]
    llm_reject: bool | None = None
    llm_invalid: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _pr(rejected_bad: int, n_bad: int, rejected_good: int) -> tuple[float | None, float | None]:
    recall = rejected_bad / n_bad if n_bad else None
    flagged = rejected_bad + rejected_good
    precision = rejected_bad / flagged if flagged else None
    return precision, recall


def score_outcomes(outcomes: list[_Outcome]) -> CalibrationReport:
    good = [o for o in outcomes if o.label == "good"]
    g_checks = sum(o.checks_reject for o in good)
    llm_ran = any(o.llm_reject is not None for o in outcomes)
    g_llm = sum(bool(o.llm_reject) for o in good)
    kinds = []
    for kind in CORRUPTIONS:
        bad = [o for o in outcomes if o.label == kind]
        p, r = _pr(sum(o.checks_reject for o in bad), len(bad), g_checks)
        caught: dict[str, int] = {}
        for o in bad:
            for name in o.failed_checks:
                caught[name] = caught.get(name, 0) + 1
        ks = KindScore(kind=kind, n=len(bad), checks_precision=p, checks_recall=r, caught_by=caught)
        if llm_ran:
            ks.llm_precision, ks.llm_recall = _pr(sum(bool(o.llm_reject) for o in bad), len(bad), g_llm)
        kinds.append(ks)
    return CalibrationReport(
        n_good=len(good), checks_false_rejects=g_checks, llm_false_rejects=g_llm if llm_ran else None,
        llm_invalid_outputs=sum(o.llm_invalid for o in outcomes), kinds=kinds,
    )


async def calibrate(
    examples: list[Example], llm: LLMClient | None, rng: random.Random, *, samples: int = 1, max_turns: int = 12,
    aggregation: Aggregation = "majority", threshold: float = 0.5,
) -> CalibrationReport:
    """Run the checks (and the LLM judge when `llm` is given) on a labelled set and score them.
    Judge calls for all examples run concurrently (the client bounds them per endpoint); each
    example's samples are seeded from `rng` in order, so a report is reproducible."""
    outcomes = []
    for ex in examples:
        checks = run_checks(ex.trajectory, ex.task, ex.tools, max_turns=max_turns)
        failed = [c.name for c in checks if not c.passed]
        outcomes.append(_Outcome(ex.label, bool(failed), failed))
    if llm is not None:
        seeds = [rng.randrange(2**31) for _ in examples]
        verdicts = await asyncio.gather(*(
            judge_trajectory(ex.trajectory, ex.task, llm, random.Random(seed), samples,
                             aggregation=aggregation, threshold=threshold)
            for ex, seed in zip(examples, seeds, strict=True)))
        for outcome, verdict in zip(outcomes, verdicts, strict=True):
            outcome.llm_reject = not verdict.passed
            outcome.llm_invalid = verdict.invalid_samples > 0 and not verdict.votes
    return score_outcomes(outcomes)


def format_report(report: CalibrationReport) -> str:
    """A plain-text table of the report."""

    def f(v: float | None) -> str:
        return "  -  " if v is None else f"{v:5.2f}"

    lines = [f"good examples: {report.n_good}; rejected by checks: {report.checks_false_rejects}"
             + ("" if report.llm_false_rejects is None else f"; rejected by LLM judge: {report.llm_false_rejects}")]
    if report.llm_invalid_outputs:
        lines.append(f"LLM judge gave no valid output on {report.llm_invalid_outputs} example(s) (counted as reject)")
    lines.append(f"{'corruption':<27}{'n':>3}  {'chk P':>5}  {'chk R':>5}  {'llm P':>5}  {'llm R':>5}  caught by")
    for k in report.kinds:
        caught = ", ".join(f"{n}:{c}" for n, c in sorted(k.caught_by.items(), key=lambda x: -x[1]))
        lines.append(f"{k.kind:<27}{k.n:>3}  {f(k.checks_precision)}  {f(k.checks_recall)}  "
                     f"{f(k.llm_precision)}  {f(k.llm_recall)}  {caught}")
    return "\n".join(lines)
