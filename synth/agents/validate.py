"""Deterministic rubric validation: is a task something a rollout can be judged against?

`rubric_problems(task, toolset)` lists every defect, each naming the tool, argument or entity at
fault; an empty list means the task is usable. Rules:
- the goal states a request (non-empty, at least three words);
- the rubric has success criteria, none of them blank;
- a `tool` task expects at least one call; a `no_tool` or `unserviceable` task expects none;
- every expected call names a tool of the toolset (by name);
- its arguments validate against that tool's `inputSchema` (as a subset: a rubric names the key
  arguments, so `required` is not enforced, but types, enums, formats of values, and argument
  names are);
- every argument that refers to an entity (`id`, `<thing>_id`, `<thing>Id`, see
  `entity_reference`) names an entity present in `initial_state`;
- `initial_state` is collections of entities keyed by id (`{"orders": {"o-17": {...}}}`), the
  shape the tool simulator (`synth.rollout.world`) reads.

It never raises, whatever task it is given (a bad schema counts against the rubric's tool only
when the arguments cannot be checked at all).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from synth.llm.client import inline_refs
from synth.models import Task, ToolSpec
from synth.rollout.world import tool_intent

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_BARE_ID_NAMES = frozenset({"id", "uuid", "identifier"})
MIN_GOAL_WORDS = 3


def snake(name: str) -> str:
    """`orderId` / `order-id` -> `order_id`."""
    return _CAMEL.sub("_", name).replace("-", "_").lower()


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def entity_reference(argument: str, tool: ToolSpec) -> list[str] | None:
    """The resource words of the entity an argument names (`order_id` -> ["order"]; a bare `id`
    -> the tool's own resource), or None when the argument names no existing entity. The id
    argument of a `create_<thing>` tool names the entity it creates, so it refers to nothing."""
    key = snake(argument)
    kind, resource = tool_intent(tool)
    resource = [singular(w) for w in resource] or ["item"]
    if key in _BARE_ID_NAMES:
        return None if kind == "create" else resource
    if not key.endswith("_id") or len(key) <= 3:
        return None
    words = [singular(w) for w in key[:-3].split("_") if w]
    if not words:
        return None
    if kind == "create" and (words == resource or words[-1] == resource[-1]):
        return None
    return words


def _state_problems(state: Any) -> list[str]:
    if not isinstance(state, dict):
        return [f"initial_state is a {type(state).__name__}, not an object of collections"]
    problems = []
    for name, collection in state.items():
        if not isinstance(collection, dict):
            problems.append(
                f"initial_state[{name!r}] is a {type(collection).__name__}, not a collection of entities keyed by id")
            continue
        bad = [eid for eid, entity in collection.items() if not isinstance(entity, dict)]
        if bad:
            problems.append(f"initial_state[{name!r}] entries {bad[:3]} are not entity objects")
    return problems


def _known_ids(state: Any) -> dict[str, str]:
    """id -> collection holding it, over every collection of the state."""
    known: dict[str, str] = {}
    if isinstance(state, dict):
        for name, collection in state.items():
            if isinstance(collection, dict):
                for eid in collection:
                    known.setdefault(str(eid), str(name))
    return known


def argument_problems(tool: ToolSpec, arguments: dict[str, Any], where: str) -> list[str]:
    """Schema violations of a (possibly partial) argument object for `tool`."""
    schema = tool.input_schema
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    problems = []
    if props:
        unknown = [a for a in arguments if a not in props]
        for name in unknown:
            problems.append(f"{where}: argument {name!r} is not a parameter of {tool.name} "
                            f"(parameters: {', '.join(sorted(props)) or 'none'})")
    partial = {k: v for k, v in schema.items() if k != "required"}
    try:
        validator = jsonschema.Draft202012Validator(inline_refs(partial))
        errors = sorted(validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.absolute_path])
    except (jsonschema.exceptions.SchemaError, jsonschema.exceptions.RefResolutionError, TypeError) as exc:
        return [*problems, f"{where}: the inputSchema of {tool.name} cannot check arguments: {str(exc)[:120]}"]
    for error in errors:
        path = "/".join(str(p) for p in error.absolute_path)
        if not path and error.validator == "additionalProperties" and props:
            continue  # already reported by name above
        label = f"argument {path!r}" if path else "arguments"
        problems.append(f"{where}: {label} breaks the inputSchema of {tool.name}: {error.message[:200]}")
    return problems


def rubric_problems(task: Task, toolset: list[ToolSpec]) -> list[str]:
    """Every reason `task` cannot be used with `toolset` (see the module docstring); [] if none."""
    problems: list[str] = []
    words = task.goal.split()
    if not words:
        problems.append("goal is empty")
    elif len(words) < MIN_GOAL_WORDS:
        problems.append(f"goal {task.goal!r} is too short to state a request ({len(words)} word(s))")
    rubric = task.rubric
    if not any(c.strip() for c in rubric.success_criteria):
        problems.append("rubric has no success criteria")
    else:
        for i, criterion in enumerate(rubric.success_criteria, 1):
            if not criterion.strip():
                problems.append(f"success criterion #{i} is blank")
    if task.kind == "tool" and not rubric.expected_calls:
        problems.append("a tool task has no expected calls")
    if task.kind != "tool" and rubric.expected_calls:
        named = ", ".join(e.tool for e in rubric.expected_calls)
        problems.append(f"a {task.kind} task must expect no tool calls, but expects: {named}")
    state_problems = _state_problems(task.initial_state)
    problems += state_problems
    known = _known_ids(task.initial_state)
    by_name = {t.name: t for t in toolset}
    for i, call in enumerate(rubric.expected_calls, 1):
        where = f"expected call #{i} ({call.tool})"
        tool = by_name.get(call.tool)
        if tool is None:
            problems.append(f"{where}: tool {call.tool!r} is not in the toolset "
                            f"({', '.join(sorted(by_name)) or 'empty'})")
            continue
        problems += argument_problems(tool, call.arguments, where)
        for name, value in call.arguments.items():
            resource = entity_reference(name, tool)
            if resource is None or not isinstance(value, str | int) or isinstance(value, bool):
                continue
            if str(value) not in known:
                collections = ", ".join(sorted(task.initial_state)) if isinstance(task.initial_state, dict) else ""
                problems.append(
                    f"{where}: argument {name}={json.dumps(value)} refers to {'_'.join(resource)} "
                    f"{value!s}, which is missing from initial_state (collections: {collections or 'none'})")
    return problems
