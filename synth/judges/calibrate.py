"""Judge calibration: a labelled set of good trajectories and programmatic corruptions of them,
and the precision/recall, per corruption kind, of the judging policy in use (every check plus the
LLM verdict where it has a vote), of the checks alone and of the LLM judge alone, with 95% Wilson
intervals. The report's stored form (`CalibrationReport.to_calibration`, the `calibrations` table)
is what gives a judge model its vote (`synth.judges.policy.vote_of`).

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
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pydantic import BaseModel

from synth.config import Role
from synth.judges.checks import final_reply, iter_tool_calls, run_checks, tool_writes, tools_from_trajectory
from synth.judges.policy import JudgePolicy, combine, judge_name, vote_of
from synth.judges.rubric import LLMVerdict, judge_panel
from synth.llm import LLMClient
from synth.models import Calibration, CheckResult, Task, ToolSpec, Trajectory


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


# (task, trajectory, its toolset or None) of a dataset's accepted trajectories, at most `limit`.
EpisodeLoader = Callable[[int], Iterable[tuple[Task, Trajectory, list[ToolSpec] | None]]]


def examples_from_db(load: EpisodeLoader, limit: int = 50, source: str = "db") -> list[Example]:
    """Good examples from a dataset's accepted trajectories, read through `load` (the caller's
    reader of the store, e.g. `synth.store.read_episodes`); tools are the stored toolset, else
    the trajectory's recorded one."""
    return [Example(task, tools or tools_from_trajectory(traj), traj, "good", source)
            for task, traj, tools in load(limit)]


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


def _schema_value(schema: dict[str, Any]) -> Any:
    """A small value valid under a property schema (its first enum value, else one per type)."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    return {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(str(kind), "x")


def _valid_arguments(tool: ToolSpec) -> dict[str, Any]:
    props = tool.input_schema.get("properties") or {}
    return {k: _schema_value(props.get(k) or {}) for k in tool.input_schema.get("required") or []}


def _call_message(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def _conversation_text(messages: list[dict[str, Any]]) -> str:
    return json.dumps(messages, ensure_ascii=False).lower()


def duplicate_call_ids(ex: Example, rng: random.Random) -> Example | None:
    """Two tool calls share one id: a second call (to the same tool) reuses the first call's id."""
    where = _last_call(ex.trajectory.messages)
    if where is None or final_reply(ex.trajectory) is None:
        return None
    msgs = copy.deepcopy(ex.trajectory.messages)
    first = next(m for m in msgs if m.get("role") == "assistant" and m.get("tool_calls"))["tool_calls"][0]
    answer = next((m for m in msgs if m.get("role") == "tool" and m.get("tool_call_id") == first.get("id")), None)
    if answer is None:
        return None
    again = {"role": "assistant", "content": "", "tool_calls": [copy.deepcopy(first)]}
    return ex.corrupted("duplicate_call_ids", [*msgs[:-1], again, copy.deepcopy(answer), msgs[-1]])


def invalid_json_arguments(ex: Example, rng: random.Random) -> Example | None:
    """A call's arguments are not JSON (cut off mid-object)."""
    where = _last_call(ex.trajectory.messages)
    if where is None:
        return None
    msgs = copy.deepcopy(ex.trajectory.messages)
    fn = msgs[where[0]]["tool_calls"][where[1]]["function"]
    text = fn["arguments"] if isinstance(fn.get("arguments"), str) else json.dumps(fn.get("arguments"))
    fn["arguments"] = text.rstrip("}") + ', "' if len(text) > 2 else '{"'
    return ex.corrupted("invalid_json_arguments", msgs)


def unknown_tool(ex: Example, rng: random.Random) -> Example | None:
    """A call names a tool the toolset does not have."""
    where = _last_call(ex.trajectory.messages)
    if where is None:
        return None
    msgs = copy.deepcopy(ex.trajectory.messages)
    fn = msgs[where[0]]["tool_calls"][where[1]]["function"]
    names = {t.name for t in ex.tools}
    fn["name"] = next(n for n in (f"{fn['name']}_v2", "lookup_anything", "do_it") if n not in names)
    return ex.corrupted("unknown_tool", msgs)


def out_of_order_answer(ex: Example, rng: random.Random) -> Example | None:
    """A tool answer placed before the call it answers."""
    msgs = copy.deepcopy(ex.trajectory.messages)
    for i, msg in enumerate(msgs):
        if msg.get("role") == "assistant" and msg.get("tool_calls") and i + 1 < len(msgs) \
                and msgs[i + 1].get("role") == "tool":
            msgs[i], msgs[i + 1] = msgs[i + 1], msgs[i]
            return ex.corrupted("out_of_order_answer", msgs)
    return None


# Short values a reply may assert that no tool returned (each a claim the checks must see).
_SHORT_CLAIMS = [("It takes about {} minutes.", lambda r: str(r.randrange(15, 90, 5))),
                 ("The total is ${}.", lambda r: str(r.randrange(20, 400))),
                 ("It starts at {}.", lambda r: f"{r.randrange(6, 12):02d}:{r.choice(['00', '15', '30', '45'])}"),
                 ("That was on {}.", lambda r: f"2024-{r.randrange(1, 13):02d}-{r.randrange(10, 29)}")]


def short_fabricated_value(ex: Example, rng: random.Random) -> Example | None:
    """The final reply adds one short value no message gave: a duration, an amount, a time, a date."""
    if final_reply(ex.trajectory) is None:
        return None
    seen = _conversation_text(ex.trajectory.messages)
    template, make = rng.choice(_SHORT_CLAIMS)
    value = make(rng)
    for _ in range(20):
        if value.lower() not in seen:
            break
        value = make(rng)
    else:
        return None
    msgs = copy.deepcopy(ex.trajectory.messages)
    msgs[-1]["content"] = f"{msgs[-1]['content']} {template.format(value)}"
    return ex.corrupted("short_fabricated_value", msgs)


def success_after_error(ex: Example, rng: random.Random) -> Example | None:
    """The last tool call fails, and the final reply claims it succeeded."""
    msgs = copy.deepcopy(ex.trajectory.messages)
    idx = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].get("role") == "tool"), None)
    if idx is None or final_reply(ex.trajectory) is None:
        return None
    msgs[idx]["content"] = json.dumps({"error": rng.choice(["timeout: the service did not answer",
                                                             "rate limited: try again later"])})
    msgs[-1]["content"] = "All done: that went through successfully."
    return ex.corrupted("success_after_error", msgs)


def wrong_tool_compatible(ex: Example, rng: random.Random) -> Example | None:
    """An expected call goes to another tool of the toolset that accepts the same arguments."""
    import jsonschema

    expected = {c.tool for c in ex.task.rubric.expected_calls}
    msgs = copy.deepcopy(ex.trajectory.messages)
    for msg in msgs:
        for call in (msg.get("tool_calls") or []) if msg.get("role") == "assistant" else []:
            fn = call.get("function") or {}
            if fn.get("name") not in expected:
                continue
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                continue
            others = []
            for tool in ex.tools:
                if tool.name == fn["name"]:
                    continue
                try:
                    jsonschema.validate(args, tool.input_schema)
                except (jsonschema.ValidationError, jsonschema.SchemaError):
                    continue
                others.append(tool.name)
            if others:
                fn["name"] = rng.choice(sorted(others))
                return ex.corrupted("wrong_tool_compatible", msgs)
    return None


def max_turns_ended(ex: Example, rng: random.Random) -> Example | None:
    """The episode was cut off by the turn limit, not ended by the user. (Another seed, so the
    copy is another trajectory, not the good one with a second verdict.)"""
    return ex.corrupted("max_turns_ended", copy.deepcopy(ex.trajectory.messages), termination="max_turns",
                        seed=ex.trajectory.seed + 1)


def unrequested_write(ex: Example, rng: random.Random) -> Example | None:
    """Before its final reply the agent calls a writing tool the task does not call for."""
    expected = {c.tool for c in ex.task.rubric.expected_calls}
    writers = sorted((t for t in ex.tools if tool_writes(t) and t.name not in expected),
                     key=lambda t: t.name)
    if not writers or final_reply(ex.trajectory) is None:
        return None
    tool = rng.choice(writers)
    msgs = copy.deepcopy(ex.trajectory.messages)
    extra = [_call_message("call_unasked", tool.name, _valid_arguments(tool)),
             {"role": "tool", "tool_call_id": "call_unasked", "content": json.dumps({"ok": True})}]
    return ex.corrupted("unrequested_write", [*msgs[:-1], *extra, msgs[-1]])


CORRUPTIONS: dict[str, Callable[[Example, random.Random], Example | None]] = {
    "wrong_tool": wrong_tool,
    "missing_required_argument": missing_required_argument,
    "ignored_tool_error": ignored_tool_error,
    "fabricated_result": fabricated_result,
    "premature_end": premature_end,  # truncation mid-conversation
    "needless_tool_use": needless_tool_use,
    "duplicate_call_ids": duplicate_call_ids,
    "invalid_json_arguments": invalid_json_arguments,
    "unknown_tool": unknown_tool,
    "out_of_order_answer": out_of_order_answer,
    "short_fabricated_value": short_fabricated_value,
    "success_after_error": success_after_error,
    "wrong_tool_compatible": wrong_tool_compatible,
    "max_turns_ended": max_turns_ended,
    "unrequested_write": unrequested_write,
}

# Kinds that break the conversation's form: the checks must catch every one (recall 1.0).
STRUCTURAL_KINDS = frozenset({
    "missing_required_argument", "premature_end", "duplicate_call_ids", "invalid_json_arguments",
    "unknown_tool", "out_of_order_answer", "max_turns_ended",
})


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

Interval = tuple[float, float]


def wilson(successes: int, n: int, z: float = 1.96) -> Interval | None:
    """The 95% Wilson score interval of a proportion (None for n = 0)."""
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


class KindScore(BaseModel):
    """One corruption kind: `n` corrupted examples; `recall`/`precision` of the policy in use
    (rejected corruptions / corruptions; rejected corruptions / all rejected, good ones included),
    with 95% Wilson intervals; the same for the checks alone and the LLM judge alone."""

    kind: str
    structural: bool = False
    n: int
    rejected: int = 0
    recall: float | None = None
    recall_ci: Interval | None = None
    precision: float | None = None
    precision_ci: Interval | None = None
    checks_recall: float | None = None
    checks_precision: float | None = None
    llm_recall: float | None = None
    llm_recall_ci: Interval | None = None
    llm_precision: float | None = None
    llm_precision_ci: Interval | None = None
    caught_by: dict[str, int] = {}


class CalibrationReport(BaseModel):
    judge_model: str | None = None
    vote: str = "off"
    vote_reason: str = ""
    policy: dict[str, Any] = {}
    n_good: int
    false_rejects: int = 0  # good examples the policy rejects
    checks_false_rejects: int
    llm_false_rejects: int | None = None
    llm_invalid_outputs: int = 0
    judge_recall: float | None = None  # the LLM judge alone, macro-averaged over the kinds
    judge_precision: float | None = None
    kinds: list[KindScore]

    def to_calibration(self, run_id: str | None = None) -> Calibration:
        """The stored form (the `calibrations` table), which `synth.judges.policy.vote_of` reads."""
        return Calibration(judge_model=self.judge_model, policy=self.policy, n_good=self.n_good,
                           kinds=[k.model_dump(mode="json") for k in self.kinds], judge_recall=self.judge_recall,
                           judge_precision=self.judge_precision, run_id=run_id)


@dataclass
class _Outcome:
    label: str
    checks_reject: bool
    failed_checks: list[str]
    checks: list[CheckResult] = field(default_factory=list)
    verdict: LLMVerdict | None = None
    policy_reject: bool = False

    @property
    def llm_reject(self) -> bool | None:
        return None if self.verdict is None else not self.verdict.passed

    @property
    def llm_invalid(self) -> bool:
        return self.verdict is not None and self.verdict.invalid_samples > 0 and not self.verdict.votes


def _pr(rejected_bad: int, n_bad: int, rejected_good: int) -> tuple[float | None, float | None]:
    recall = rejected_bad / n_bad if n_bad else None
    flagged = rejected_bad + rejected_good
    precision = rejected_bad / flagged if flagged else None
    return precision, recall


def _kind_score(kind: str, bad: list[_Outcome], good: list[_Outcome], llm_ran: bool) -> KindScore:
    n = len(bad)
    rej = sum(o.policy_reject for o in bad)
    g_rej = sum(o.policy_reject for o in good)
    p, r = _pr(rej, n, g_rej)
    cp, cr = _pr(sum(o.checks_reject for o in bad), n, sum(o.checks_reject for o in good))
    caught: dict[str, int] = {}
    for o in bad:
        for name in o.failed_checks:
            caught[name] = caught.get(name, 0) + 1
    ks = KindScore(kind=kind, structural=kind in STRUCTURAL_KINDS, n=n, rejected=rej, recall=r,
                   recall_ci=wilson(rej, n), precision=p, precision_ci=wilson(rej, rej + g_rej),
                   checks_recall=cr, checks_precision=cp, caught_by=caught)
    if llm_ran:
        l_rej = sum(bool(o.llm_reject) for o in bad)
        l_good = sum(bool(o.llm_reject) for o in good)
        ks.llm_precision, ks.llm_recall = _pr(l_rej, n, l_good)
        ks.llm_recall_ci, ks.llm_precision_ci = wilson(l_rej, n), wilson(l_rej, l_rej + l_good)
    return ks


def _macro(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else 0.0


async def calibrate(
    examples: list[Example], llm: LLMClient | None, rng: random.Random, policy: JudgePolicy | None = None,
) -> CalibrationReport:
    """Score the judging `policy` (default: the default policy) on a labelled set: every check,
    and, when `llm` is given, the rubric judge on every example (even those a check rejects, so
    its own recall is measured), whose vote follows from this very calibration (`vote_of`).
    Judge calls run concurrently (the client bounds them per endpoint); each example's samples
    are seeded from `rng` in order, so a report is reproducible."""
    policy = policy or JudgePolicy()
    outcomes = []
    for ex in examples:
        checks = run_checks(ex.trajectory, ex.task, ex.tools, max_turns=policy.max_turns)
        failed = [c.name for c in checks if not c.passed]
        outcomes.append(_Outcome(ex.label, bool(failed), failed, checks))
    model = None
    if llm is not None:
        model = judge_name(policy, llm.roles[Role.JUDGE].model)
        judges = [llm.with_role(Role.JUDGE, member) for member in policy.panel] or [llm]
        seeds = [rng.randrange(2**31) for _ in examples]
        verdicts = await asyncio.gather(*(
            judge_panel(ex.trajectory, ex.task, judges, random.Random(seed), samples=policy.samples,
                        aggregation=policy.aggregation, threshold=policy.min_score,
                        verdict_format=policy.verdict_format)
            for ex, seed in zip(examples, seeds, strict=True)))
        for outcome, verdict in zip(outcomes, verdicts, strict=True):
            outcome.verdict = verdict
    llm_ran = llm is not None
    good = [o for o in outcomes if o.label == "good"]
    by_kind = {kind: [o for o in outcomes if o.label == kind] for kind in CORRUPTIONS}
    judge_scores = [_kind_score(k, bad, good, llm_ran) for k, bad in by_kind.items() if bad]
    judge_recall = _macro([k.llm_recall for k in judge_scores]) if llm_ran else None
    judge_precision = _macro([k.llm_precision for k in judge_scores]) if llm_ran else None
    measured = Calibration(judge_model=model, judge_recall=judge_recall, judge_precision=judge_precision)
    active = policy if llm_ran else policy.model_copy(update={"llm_judge": False})
    vote, why = vote_of(active, model, measured)
    info = {"model": model, "vote": vote, "vote_reason": why}
    for ex, o in zip(examples, outcomes, strict=True):
        o.policy_reject = not combine(ex.trajectory, ex.task, o.checks, o.verdict, active, info,
                                      gate_unchecked=False).accepted
    kinds = [_kind_score(kind, bad, good, llm_ran) for kind, bad in by_kind.items()]
    return CalibrationReport(
        judge_model=model, vote=vote, vote_reason=why, policy=policy.describe(), n_good=len(good),
        false_rejects=sum(o.policy_reject for o in good), checks_false_rejects=sum(o.checks_reject for o in good),
        llm_false_rejects=sum(bool(o.llm_reject) for o in good) if llm_ran else None,
        llm_invalid_outputs=sum(o.llm_invalid for o in outcomes), judge_recall=judge_recall,
        judge_precision=judge_precision, kinds=kinds,
    )


def format_report(report: CalibrationReport) -> str:
    """A plain-text table of the report."""

    def f(v: float | None) -> str:
        return "  -  " if v is None else f"{v:5.2f}"

    def ci(v: Interval | None) -> str:
        return "     -     " if v is None else f"[{v[0]:.2f},{v[1]:.2f}]"

    lines = [f"good examples: {report.n_good}; rejected by the policy: {report.false_rejects} "
             f"(by checks: {report.checks_false_rejects}"
             + ("" if report.llm_false_rejects is None else f"; by the LLM judge: {report.llm_false_rejects}") + ")"]
    if report.judge_model is not None:
        lines.append(f"LLM judge {report.judge_model}: recall {f(report.judge_recall)}, precision "
                     f"{f(report.judge_precision)} (macro over kinds); vote: {report.vote} ({report.vote_reason})")
    else:
        lines.append("LLM judge not run: the checks alone decide")
    if report.llm_invalid_outputs:
        lines.append(f"LLM judge gave no valid output on {report.llm_invalid_outputs} example(s) (counted as reject)")
    lines.append(f"{'corruption':<28}{'n':>4}  {'recall':>5} {'95% CI':<13} {'prec':>5} {'95% CI':<13} "
                 f"{'llm R':>5}  {'llm P':>5}  caught by")
    for k in report.kinds:
        caught = ", ".join(f"{n}:{c}" for n, c in sorted(k.caught_by.items(), key=lambda x: -x[1]))
        name = k.kind + (" *" if k.structural else "")
        lines.append(f"{name:<28}{k.n:>4}  {f(k.recall)} {ci(k.recall_ci):<13} {f(k.precision)} "
                     f"{ci(k.precision_ci):<13} {f(k.llm_recall)}  {f(k.llm_precision)}  {caught}")
    lines.append("(* structural: the checks must catch every one)")
    return "\n".join(lines)
