"""Trajectories from outside the pipeline, read leniently: what `synth judge file` judges and what
the calibration fixtures are written in.

One item is `{"task": {"goal", "kind"?, "initial_state"?, "rubric"?, ...}, "tools": [...],
"messages": [...], "termination"?: ..., "steps"?: [...]}`:
- task fields other than `goal` may be missing (`kind` "tool", `agent_id` / `domain` "file", an
  empty rubric); unknown task or rubric keys are ignored;
- a tool is MCP-style `{name, description, inputSchema, annotations?, side_effect?}` or an OpenAI
  function tool `{"type": "function", "function": {name, description, parameters}}`. Whether it
  writes is decided by the checks (`synth.judges.checks.tool_writes`): MCP annotations
  (`readOnlyHint: false`, `destructiveHint: true`), a stated `side_effect`, else its name;
- messages are OpenAI chat messages; tool-call `arguments` given as an object are encoded to the
  canonical JSON string;
- a missing `termination` is inferred (`synth.judges.checks.infer_termination`: "user_done" only
  when the conversation ends with an assistant reply and every call is answered).
Anything that cannot be read raises `InputError` naming the field and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import ValidationError

from synth.judges.checks import infer_termination
from synth.models import ExpectedCall, Persona, Rubric, StepRecord, Task, Termination, ToolSpec, Trajectory

DEFAULT_AGENT = "file"
DEFAULT_DOMAIN = "file"


class InputError(ValueError):
    """An item that cannot be judged, with what is wrong."""


def _first_error(exc: ValidationError) -> str:
    item = exc.errors()[0]
    where = ".".join(str(p) for p in item["loc"])
    return f"{where}: {item['msg']}" if where else str(item["msg"])


def _known(data: Mapping[str, Any], model: type[Any]) -> dict[str, Any]:
    names = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    return {k: v for k, v in data.items() if k in names}


def read_task(raw: Any) -> Task:
    if not isinstance(raw, Mapping):
        raise InputError(f"'task' must be a JSON object, got {type(raw).__name__}")
    goal = raw.get("goal")
    if not isinstance(goal, str) or not goal.strip():
        raise InputError("'task.goal' must be a non-empty string")
    data = _known(raw, Task)
    data.setdefault("agent_id", DEFAULT_AGENT)
    data.setdefault("domain", DEFAULT_DOMAIN)
    rubric = raw.get("rubric") or {}
    if not isinstance(rubric, Mapping):
        raise InputError("'task.rubric' must be a JSON object")
    rubric = _known(rubric, Rubric)
    rubric.setdefault("success_criteria", [])
    calls = rubric.get("expected_calls") or []
    if not isinstance(calls, list):
        raise InputError("'task.rubric.expected_calls' must be a list")
    rubric["expected_calls"] = [_known(c, ExpectedCall) if isinstance(c, Mapping) else c for c in calls]
    data["rubric"] = rubric
    if isinstance(data.get("persona"), Mapping):
        data["persona"] = _known(data["persona"], Persona)
    for key in [k for k, v in data.items() if v is None]:
        data.pop(key)
    try:
        return Task.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"task.{_first_error(exc)}") from None


def read_tool(raw: Any, domain: str) -> ToolSpec:
    """One tool, MCP-style or OpenAI-style. `side_effect` is set only when the input states it;
    otherwise `synth.judges.checks.tool_writes` decides from the annotations, then the name."""
    if not isinstance(raw, Mapping):
        raise InputError(f"a tool must be a JSON object, got {type(raw).__name__}")
    fn = raw.get("function") if isinstance(raw.get("function"), Mapping) else None
    source = fn if fn is not None else raw
    name = source.get("name")
    if not isinstance(name, str):
        raise InputError(f"a tool has no string 'name' (got {name!r})")
    schema = (source.get("parameters") if fn is not None
              else source.get("inputSchema", source.get("input_schema")))
    if schema is None:
        schema = {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise InputError(f"tool {name!r}: its input schema is not a JSON object")
    annotations = raw.get("annotations") or (fn or {}).get("annotations")
    extra = {k: v for k, v in raw.items()
             if k not in ("name", "description", "inputSchema", "input_schema", "outputSchema", "output_schema",
                          "side_effect", "domain", "type", "function")}
    if annotations is not None:
        extra["annotations"] = annotations
    data: dict[str, Any] = {
        "name": name, "description": source.get("description") or "", "inputSchema": schema,
        "outputSchema": source.get("outputSchema", source.get("output_schema")), "domain": domain,
        "source": "mcp", "provenance": {"mcp_fields": extra},
    }
    side = raw.get("side_effect", (fn or {}).get("side_effect"))
    if side is not None:
        data["side_effect"] = side
    try:
        return ToolSpec.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"tool {name!r}: {_first_error(exc)}") from None


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise InputError("'messages' must be a non-empty list of chat messages")
    out = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, Mapping) or not isinstance(msg.get("role"), str):
            raise InputError(f"messages[{i}] is not a chat message with a 'role'")
        msg = dict(msg)
        calls = msg.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise InputError(f"messages[{i}].tool_calls must be a list")
            fixed = []
            for call in calls:
                if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                    fn = dict(call["function"])
                    if isinstance(fn.get("arguments"), (dict, list)):
                        fn["arguments"] = json.dumps(fn["arguments"], ensure_ascii=False)
                    call = {**call, "function": fn}
                fixed.append(call)
            msg["tool_calls"] = fixed
        out.append(msg)
    return out


def read_item(item: Any) -> tuple[Task, list[ToolSpec], Trajectory]:
    """(task, tools, trajectory) of one input item; raises InputError naming what is wrong."""
    if not isinstance(item, Mapping):
        raise InputError(f"an item must be a JSON object, got {type(item).__name__}")
    if "task" not in item:
        raise InputError("no 'task' (an object with at least a 'goal')")
    task = read_task(item["task"])
    raw_tools = item.get("tools") or []
    if not isinstance(raw_tools, list):
        raise InputError("'tools' must be a list")
    tools = [read_tool(t, task.domain) for t in raw_tools]
    messages = _messages(item.get("messages"))
    termination = item.get("termination") or infer_termination(messages)
    if termination not in get_args(Termination):
        raise InputError(f"'termination' {termination!r} is not one of {', '.join(get_args(Termination))}")
    try:
        steps = [StepRecord.model_validate(s) for s in item.get("steps") or []]
        traj = Trajectory(task_id=task.id, agent_id=task.agent_id, domain=task.domain,
                          messages=messages, tools=[t.to_openai() for t in tools],
                          steps=steps, termination=termination,
                          final_state=item.get("final_state") or {})
    except ValidationError as exc:
        raise InputError(_first_error(exc)) from None
    return task, tools, traj
