"""Deterministic checks of a trajectory: the part of judging a model cannot talk its way past.

`run_checks(trajectory, task, tools)` returns one `CheckResult` per check, always in the order of
`CHECK_NAMES`, so a stored judgment lists every check (passed or not) and the dataset can count
failures per check. A check that does not apply (e.g. `expected_calls` for a rubric without
expected calls) passes with a detail saying why.

The trajectory is the canonical OpenAI chat format (see `synth.models.Trajectory`): assistant
messages with `tool_calls` whose `arguments` are JSON strings, `tool` messages with
`tool_call_id`. A tool observation counts as an error when its step record has `error` or
`fault` set, when its content is JSON with an `error` key (or `"isError": true`), or when its
text starts with "error".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema

from synth.models import CheckResult, ExpectedCall, Task, ToolSpec, Trajectory

DEFAULT_MAX_TURNS = 12
LOOP_THRESHOLD = 3

CHECK_NAMES = (
    "tools_exist",
    "arguments_valid",
    "calls_answered",
    "no_loops",
    "turn_limit",
    "expected_calls",
    "checkpoints",
    "final_reply",
    "no_fabrication",
    "errors_handled",
    "no_needless_tools",
)

# Words with which a reply admits that something went wrong (so an error was not ignored).
_ACKNOWLEDGE = re.compile(
    r"\b(error|errors|fail|failed|failure|unable|could not|couldn't|cannot|can't|not found|"
    r"unavailable|sorry|unfortunately|problem|issue|try again|retry|timed out|timeout|denied|"
    r"not able|wasn't able|was not able|didn't work|did not work)\b",
    re.I,
)
# Tokens that look like identifiers (letters, a separator, digits: o-17, ORD_2231, cnf-48213), or
# letters glued to 3+ digits (ORD12345), or numbers with 3+ digits (1,250.00 -> 125000).
_ID_TOKEN = re.compile(r"\b[A-Za-z][A-Za-z0-9]*[-_][A-Za-z0-9_-]*\d[A-Za-z0-9_-]*\b|\b[A-Za-z]{1,6}\d{3,}\b")
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class ToolCall:
    """One call made by the agent, flattened out of an assistant message."""

    index: int  # position of the assistant message in trajectory.messages
    id: str
    name: str
    arguments_text: str
    arguments: dict[str, Any] | None  # None when the text is not a JSON object


def _text(content: Any) -> str:
    """A message's content as plain text (content may be None, a string or OpenAI parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return json.dumps(content, ensure_ascii=False)


def iter_tool_calls(messages: list[dict[str, Any]]) -> Iterator[ToolCall]:
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant":
            continue
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") or {}
            raw = fn.get("arguments")
            args: dict[str, Any] | None
            if isinstance(raw, dict):  # tolerate decoded arguments, judge the content
                text, args = json.dumps(raw), raw
            else:
                text = raw if isinstance(raw, str) else ""
                try:
                    parsed = json.loads(text) if text.strip() else {}
                except ValueError:
                    parsed = None
                args = parsed if isinstance(parsed, dict) else None
            yield ToolCall(i, str(call.get("id") or ""), str(fn.get("name") or ""), text, args)


def is_error_observation(message: dict[str, Any], step_errors: set[str]) -> bool:
    """True when a `tool` message reports a failure (see the module docstring)."""
    if message.get("tool_call_id") in step_errors:
        return True
    text = _text(message.get("content")).strip()
    if text.lower().startswith("error"):
        return True
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and (bool(data.get("error")) or data.get("isError") is True)


def final_reply(trajectory: Trajectory) -> str | None:
    """The text of the last message when it is an assistant reply without tool calls."""
    if not trajectory.messages:
        return None
    last = trajectory.messages[-1]
    if last.get("role") != "assistant" or last.get("tool_calls"):
        return None
    text = _text(last.get("content")).strip()
    return text or None


def _matches(call: ToolCall, expected: ExpectedCall) -> bool:
    if call.name != expected.tool:
        return False
    args = call.arguments or {}
    for key, want in expected.arguments.items():
        if key not in args:
            return False
        got = args[key]
        if isinstance(want, str) and isinstance(got, str):
            if want.strip().lower() != got.strip().lower():
                return False
        elif want != got:
            return False
    return True


# ---------------------------------------------------------------- the checks


class _Context:
    """What several checks need, computed once."""

    def __init__(self, trajectory: Trajectory, task: Task, tools: list[ToolSpec], max_turns: int) -> None:
        self.trajectory = trajectory
        self.task = task
        self.tools = {t.name: t for t in tools}
        self.max_turns = max_turns
        self.messages = trajectory.messages
        self.calls = list(iter_tool_calls(self.messages))
        self.step_errors = {
            s.tool_call_id for s in trajectory.steps
            if s.actor == "tool" and s.tool_call_id and (s.error or s.fault)
        }


def _check_tools_exist(ctx: _Context) -> CheckResult:
    unknown = sorted({c.name for c in ctx.calls if c.name not in ctx.tools})
    if unknown:
        return CheckResult(name="tools_exist", passed=False, detail=f"called unknown tool(s): {', '.join(unknown)}")
    return CheckResult(name="tools_exist", passed=True, detail=f"{len(ctx.calls)} call(s), all in the toolset")


def _check_arguments_valid(ctx: _Context) -> CheckResult:
    problems = []
    for c in ctx.calls:
        if c.arguments is None:
            problems.append(f"{c.name}: arguments are not a JSON object: {c.arguments_text[:60]!r}")
            continue
        tool = ctx.tools.get(c.name)
        if tool is None:
            continue  # tools_exist reports it
        try:
            validator_cls = jsonschema.validators.validator_for(tool.input_schema)
            error = jsonschema.exceptions.best_match(validator_cls(tool.input_schema).iter_errors(c.arguments))
        except jsonschema.exceptions.SchemaError as exc:
            problems.append(f"{c.name}: the tool's inputSchema is invalid: {exc.message[:80]}")
            continue
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            problems.append(f"{c.name}: {where}: {error.message[:120]}")
    if problems:
        return CheckResult(name="arguments_valid", passed=False, detail="; ".join(problems))
    return CheckResult(name="arguments_valid", passed=True)


def _check_calls_answered(ctx: _Context) -> CheckResult:
    answers = Counter(m.get("tool_call_id") for m in ctx.messages if m.get("role") == "tool")
    ids = Counter(c.id for c in ctx.calls)
    problems = []
    for call in ctx.calls:
        if not call.id:
            problems.append(f"a {call.name} call has no id")
        elif ids[call.id] > 1:
            problems.append(f"call id {call.id} is used {ids[call.id]} times")
        elif answers[call.id] != 1:
            problems.append(f"{call.name} call {call.id} has {answers[call.id]} tool message(s)")
    orphans = sorted(str(i) for i in answers if i not in ids)
    if orphans:
        problems.append(f"tool message(s) answer no call: {', '.join(orphans)}")
    if problems:
        return CheckResult(name="calls_answered", passed=False, detail="; ".join(sorted(set(problems))))
    return CheckResult(name="calls_answered", passed=True)


def _check_no_loops(ctx: _Context) -> CheckResult:
    seen = Counter((c.name, json.dumps(c.arguments, sort_keys=True) if c.arguments is not None else c.arguments_text)
                   for c in ctx.calls)
    loops = [f"{name} x{n}" for (name, _), n in seen.items() if n >= LOOP_THRESHOLD]
    if loops:
        return CheckResult(name="no_loops", passed=False, detail=f"same call repeated: {', '.join(sorted(loops))}")
    return CheckResult(name="no_loops", passed=True)


def _check_turn_limit(ctx: _Context) -> CheckResult:
    n = ctx.trajectory.n_turns
    if n > ctx.max_turns:
        return CheckResult(name="turn_limit", passed=False, detail=f"{n} user turns > limit {ctx.max_turns}")
    if ctx.trajectory.termination in ("max_turns", "error"):
        return CheckResult(name="turn_limit", passed=False,
                           detail=f"episode ended by {ctx.trajectory.termination}")
    return CheckResult(name="turn_limit", passed=True, detail=f"{n} user turn(s)")


def _check_expected_calls(ctx: _Context) -> CheckResult:
    rubric = ctx.task.rubric
    if not rubric.expected_calls:
        return CheckResult(name="expected_calls", passed=True, detail="rubric expects no particular call")
    missing = [e for e in rubric.expected_calls if not any(_matches(c, e) for c in ctx.calls)]
    if missing:
        desc = ", ".join(f"{e.tool}({json.dumps(e.arguments, sort_keys=True)})" for e in missing)
        return CheckResult(name="expected_calls", passed=False, detail=f"missing: {desc}")
    if rubric.ordered:
        # Greedy in-order matching: each expected call must match a call after the previous match.
        pos = 0
        for e in rubric.expected_calls:
            found = next((k for k in range(pos, len(ctx.calls)) if _matches(ctx.calls[k], e)), None)
            if found is None:
                order = " -> ".join(e.tool for e in rubric.expected_calls)
                return CheckResult(name="expected_calls", passed=False, detail=f"calls out of order (want {order})")
            pos = found + 1
    return CheckResult(name="expected_calls", passed=True)


def _check_checkpoints(ctx: _Context) -> CheckResult:
    points = ctx.task.rubric.checkpoints
    if not points:
        return CheckResult(name="checkpoints", passed=True, detail="rubric has no checkpoints")
    haystack = "\n".join(
        _text(m.get("content")) for m in ctx.messages if m.get("role") in ("tool", "assistant")
    ).lower()
    missing = [p for p in points if p.strip().lower() not in haystack]
    if missing:
        return CheckResult(name="checkpoints", passed=False, detail=f"never appeared: {missing}")
    return CheckResult(name="checkpoints", passed=True)


def _check_final_reply(ctx: _Context) -> CheckResult:
    if final_reply(ctx.trajectory) is None:
        last = ctx.messages[-1].get("role") if ctx.messages else "nothing"
        return CheckResult(name="final_reply", passed=False,
                           detail=f"the episode ends with {last}, not an assistant reply")
    return CheckResult(name="final_reply", passed=True)


def claim_tokens(text: str) -> set[str]:
    """Identifier-like tokens and numbers of 3+ digits in `text` (numbers without separators)."""
    found = {m.group(0).lower() for m in _ID_TOKEN.finditer(text)}
    for m in _NUMBER.finditer(text):
        digits = m.group(0).replace(",", "")
        if sum(ch.isdigit() for ch in digits) >= 3:
            found.add(digits.rstrip("0").rstrip(".") if "." in digits else digits)
    return found


def _check_no_fabrication(ctx: _Context) -> CheckResult:
    # Everything the agent could legitimately know, so far: system, user and tool messages.
    seen: list[str] = []
    invented: list[str] = []
    for msg in ctx.messages:
        role = msg.get("role")
        text = _text(msg.get("content"))
        if role in ("system", "user", "tool"):
            seen.append(text.lower().replace(",", ""))
            continue
        if role != "assistant" or not text:
            continue
        known = "\n".join(seen)
        invented += [tok for tok in claim_tokens(text) if tok not in known]
    if invented:
        return CheckResult(name="no_fabrication", passed=False,
                           detail=f"asserted values no tool or user gave: {sorted(set(invented))[:8]}")
    return CheckResult(name="no_fabrication", passed=True)


def _check_errors_handled(ctx: _Context) -> CheckResult:
    by_id = {c.id: c for c in ctx.calls}
    ignored = []
    for i, msg in enumerate(ctx.messages):
        if msg.get("role") != "tool" or not is_error_observation(msg, ctx.step_errors):
            continue
        call = by_id.get(str(msg.get("tool_call_id")))
        name = call.name if call else "?"
        retried = any(c.name == name and c.index > i for c in ctx.calls)
        later_text = " ".join(
            _text(m.get("content")) for m in ctx.messages[i + 1:] if m.get("role") == "assistant"
        )
        if not retried and not _ACKNOWLEDGE.search(later_text):
            ignored.append(name)
    if ignored:
        return CheckResult(name="errors_handled", passed=False,
                           detail=f"error from {', '.join(ignored)} neither retried nor acknowledged")
    return CheckResult(name="errors_handled", passed=True)


def _check_no_needless_tools(ctx: _Context) -> CheckResult:
    if ctx.task.kind == "tool":
        return CheckResult(name="no_needless_tools", passed=True, detail="task needs tools")
    if ctx.calls:
        return CheckResult(name="no_needless_tools", passed=False,
                           detail=f"{len(ctx.calls)} call(s) on a {ctx.task.kind} task")
    return CheckResult(name="no_needless_tools", passed=True)


_CHECKS: dict[str, Callable[[_Context], CheckResult]] = {
    "tools_exist": _check_tools_exist,
    "arguments_valid": _check_arguments_valid,
    "calls_answered": _check_calls_answered,
    "no_loops": _check_no_loops,
    "turn_limit": _check_turn_limit,
    "expected_calls": _check_expected_calls,
    "checkpoints": _check_checkpoints,
    "final_reply": _check_final_reply,
    "no_fabrication": _check_no_fabrication,
    "errors_handled": _check_errors_handled,
    "no_needless_tools": _check_no_needless_tools,
}
assert tuple(_CHECKS) == CHECK_NAMES


def run_checks(
    trajectory: Trajectory, task: Task, tools: list[ToolSpec], *, max_turns: int = DEFAULT_MAX_TURNS
) -> list[CheckResult]:
    """Every deterministic check, in `CHECK_NAMES` order. Never raises on odd trajectories: a
    malformed message fails the check it breaks."""
    ctx = _Context(trajectory, task, tools, max_turns)
    return [check(ctx) for check in _CHECKS.values()]


def tools_from_trajectory(trajectory: Trajectory) -> list[ToolSpec]:
    """The toolset recorded in a trajectory, as ToolSpecs. `trajectory.tools` may hold OpenAI
    function tools (`{"type": "function", "function": {...}}`) or ToolSpec dumps."""
    out = []
    for raw in trajectory.tools:
        fn = raw.get("function") if isinstance(raw.get("function"), dict) else None
        if fn is not None:
            out.append(ToolSpec.model_validate({
                "name": fn["name"], "description": fn.get("description") or "",
                "inputSchema": fn.get("parameters") or {"type": "object"}, "domain": trajectory.domain,
            }))
        else:
            data = {"domain": trajectory.domain, **raw}
            if "input_schema" not in data and "inputSchema" not in data:
                data["inputSchema"] = {"type": "object"}
            data.setdefault("description", "")
            data.pop("id", None)
            out.append(ToolSpec.model_validate(data))
    return out
