"""Deterministic rubric validation: is a task something a rollout can be judged against?

`rubric_problems(task, toolset)` lists every defect, each naming the tool, argument or entity at
fault; an empty list means the task is usable. Rules:
- the goal states a request (`goal_problems`): non-empty, at least three words, and a natural-
  language request, not an enumeration fragment ("1. A. 2. C. 3."), a template placeholder
  (`<order id>`, `{name}`, `order_id_2`, `TBD`) or a string of non-words;
- the rubric has success criteria, none of them blank;
- a `tool` task expects at least one call; a `no_tool` or `unserviceable` task expects none;
- every expected call names a tool of the toolset (by name);
- its arguments validate against that tool's `inputSchema` (as a subset: a rubric names the key
  arguments, so `required` is not enforced, but types, enums, formats of values, and argument
  names are);
- an expected call that creates or updates a record passes at least one value when its tool takes
  any (`writes_nothing`): otherwise the agent has to invent them all;
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
from collections.abc import Iterable
from typing import Any

import jsonschema

from synth.judges.messages import same_words
from synth.llm.client import inline_refs
from synth.models import Task, ToolSpec
from synth.naming import id_resource, resource_words, snake, tool_intent

_BARE_ID_NAMES = frozenset({"id", "uuid", "identifier"})
MIN_GOAL_WORDS = 3
# `synthesize.assemble_task` appends the planned values a goal omits after this marker; they are
# ids, emails and dates, not words, so the word rules judge only the text before it.
DETAILS_MARKER = " (Details:"
MIN_WORD_SHARE = 0.6

# Template placeholders a model copies from its prompt or leaves unfilled. Bracketed ones hold a
# short label (letters, spaces, `_`, `-`), so a JSON value like `["a", "b"]` is no placeholder.
_PLACEHOLDERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an angle-bracket placeholder", re.compile(r"<\s*[A-Za-z][\w \-]{0,40}\s*>")),
    ("a curly-brace placeholder", re.compile(r"\{\s*[A-Za-z_][\w \-]{0,40}\s*\}")),
    ("a square-bracket placeholder", re.compile(r"\[\s*[A-Za-z_][\w \-]{0,40}\s*\]")),
    ("a filler token", re.compile(r"(?<![\w-])(?:x{3,}|tbd|tba|n/a|lorem ipsum)(?![\w-])", re.I)),
)
# A snake_case identifier: at least two segments joined by `_`.
_SNAKE = re.compile(r"(?<![\w./@-])[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?![\w@-])", re.I)
# An enumeration marker: `1.`, `(2)`, `A.`, `b)`, a bullet, or a bare single letter other than
# the words "a" and "I".
_MARKER = re.compile(r"^[(\[]?(?:\d{1,3}|[A-Za-z])[.):\]]$|^[-*•#]+$|^[B-HJ-Zb-z]$")
_WORD = re.compile(r"^[A-Za-z]+(?:['’-][A-Za-z]+)*$")  # what's, follow-up
_EDGE_PUNCTUATION = "\"'“”‘’()[]{}<>.,;:!?"


def entity_reference(argument: str, tool: ToolSpec) -> list[str] | None:
    """The resource words of the entity an argument names (`order_id` -> ["order"]; a bare `id`
    -> the tool's own resource), or None when the argument names no existing entity. The id
    argument of a `create_<thing>` tool names the entity it creates, so it refers to nothing."""
    key = snake(argument)
    kind, resource = tool_intent(tool.name, tool.side_effect == "write")
    resource = resource_words(resource) or ["item"]
    if key in _BARE_ID_NAMES:
        return None if kind == "create" else resource
    words = id_resource(argument)
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


# A goal written about the user or the task, not by the user: "The user wants ...", "Write a task
# that ...", "The assistant should ..." (as any sentence of it: a CI main job accepted "I need to list
# orders cus-10996. The assistant must call me and list all orders, ..."), a plan's hint ("... system
# the tools do not reach", copied from the planner's idea into a CI main job's goal), "Your goal is ...".
_NOT_THE_USERS_VOICE = re.compile(
    r"^\s*(?:the |a )?(?:user|customer|client) (?:wants|asks|asked|needs|needed|requests|requested|would like|is|"
    r"was|has|had|should|must|will)\b"
    r"|\b(?:the|this) (?:user|customer) (?:wants|asks|asked|needs|requests|requested|would like|is asking)\b"
    r"|^\s*(?:write|create|generate|design|make|give) (?:a|an|one|the) (?:task|goal|request|prompt)\b"
    r"|(?:^|[.!?]\s+)(?:the |an? )?(?:ai )?assistant (?:should|must|will|can|needs|is)\b"
    r"|\bthe (?:assistant's )?tools (?:do not|don't|cannot|can't|can not) \w+"
    r"|^\s*(?:your|the|my) (?:goal|task|objective) (?:is|was)\b",
    re.IGNORECASE,
)


# What a request sounds like: a question, a polite or first-person ask, or an instruction.
_ASKS = re.compile(
    r"\?|\b(?:please|pls|can you|could you|would you|will you|i need|i want|i'?d like|i would like|i'?m looking|"
    r"i am looking|help me|let me know|tell me|show me|i have to|i must|we need|we want|kindly)\b"
    r"|^\W*(?:hi|hello|hey)?\W*(?:" + "|".join(sorted({
        "find", "list", "check", "cancel", "book", "send", "explain", "give", "get", "show", "tell", "update",
        "create", "delete", "make", "schedule", "add", "remove", "change", "set", "open", "close", "search", "look",
        "fetch", "reset", "refund", "order", "move", "rename", "assign", "submit", "register", "archive", "print",
        "call", "phone", "predict", "advise", "suggest", "recommend", "compare", "convert", "calculate", "summarise",
        "summarize", "track", "ship", "buy", "pay", "transfer", "reschedule", "confirm", "modify", "edit", "post",
        "upload", "download", "share", "note", "record", "plan", "prepare", "draft", "write", "describe"})) + r")\b",
    re.IGNORECASE,
)


def _machine_placeholder(token: str) -> bool:
    """`order_id_2`, `fleet_shipping_model_id_1`: a snake_case name with an `id` segment or a
    numbered suffix after at least two word segments (`ord_12345`, one word and a number, is an
    id shape, not a placeholder)."""
    parts = token.lower().split("_")
    if "id" in parts[1:]:
        return True
    return parts[-1].isdigit() and sum(p.isalpha() for p in parts[:-1]) >= 2


def _placeholder_problems(goal: str, allowed: Iterable[str]) -> list[str]:
    text = goal
    # Whole values only, the longest first, in one pattern of the values the goal holds at all
    # (a pattern per value, compiled for every goal, was ~3% of a fast run).
    values = sorted({v for v in allowed if v.strip() and v in goal}, key=len, reverse=True)
    if values:
        text = re.sub(rf"(?<![\w-])(?:{'|'.join(map(re.escape, values))})(?![\w-])", " ", text)
    problems = []
    for label, pattern in _PLACEHOLDERS:
        found = pattern.search(text)
        if found:
            problems.append(f"goal is not a natural-language request: it contains {label} "
                            f"{found.group(0)!r} where a real value belongs (goal: {goal!r})")
    machine = [m.group(0) for m in _SNAKE.finditer(text) if _machine_placeholder(m.group(0))]
    if machine:
        problems.append(f"goal is not a natural-language request: it contains the machine placeholder "
                        f"{machine[0]!r} where a real value belongs (goal: {goal!r})")
    return problems


def request_problems(goal: str, allowed: Iterable[str] = ()) -> list[str]:
    """The request rules alone (no length rule): why `goal` is not a natural-language request.

    - placeholders anywhere in the goal, appended details included (`<order id>`, `{name}`,
      `[customer]`, `XXX`, `TBD`, `lorem ipsum`, `N/A`, `order_id_2`); a value in `allowed` (the
      task's own planned ids and values) is never one;
    - in the text before `DETAILS_MARKER`: a description of the task instead of the user's own
      words ("The user wants ...", "Write a task ...", "The assistant should ..."); no ask at all
      (no question, no "please" / "can you" / "I need", no instruction: "Your request is too
      ambitious!"); an enumeration fragment (at least two list markers or
      single letters, and no more real words than markers), or mostly non-words (fewer than
      `MIN_GOAL_WORDS` alphabetic words of two or more letters, or under `MIN_WORD_SHARE` of the
      tokens).

    Each problem starts "goal is not a natural-language request" and quotes the goal, so a
    caller can tell these from the other rubric problems (`synthesize_task` replaces such a goal
    with one composed from the plan instead of rejecting the task)."""
    problems = _placeholder_problems(goal, allowed)
    head = goal.split(DETAILS_MARKER, 1)[0]
    tokens = head.split()
    if not tokens:
        return problems
    markers = sum(bool(_MARKER.match(t)) for t in tokens)
    words = [w for w in (t.strip(_EDGE_PUNCTUATION) for t in tokens) if len(w) >= 2 and _WORD.match(w)]
    meta = _NOT_THE_USERS_VOICE.search(head)
    if meta:
        problems.append(f"goal is not a natural-language request: it describes the task instead of asking "
                        f"({meta.group(0).strip()!r}); a goal is what the user says: {head!r}")
    if markers >= 2 and markers >= len(words):
        problems.append(f"goal is not a natural-language request: it is an enumeration fragment "
                        f"({markers} list markers or single letters, {len(words)} real word(s)): {head!r}")
    elif len(words) < MIN_GOAL_WORDS or len(words) / len(tokens) < MIN_WORD_SHARE:
        problems.append(f"goal is not a natural-language request: it is mostly non-words "
                        f"({len(words)} of {len(tokens)} tokens are words): {head!r}")
    if not problems and not _ASKS.search(head):  # the weakest rule: said only when no other one fits
        problems.append(f"goal is not a natural-language request: it asks for nothing (no question, no "
                        f"'please', 'can you', 'I need', no instruction): {head!r}")
    return problems


def goal_problems(goal: str, allowed: Iterable[str] = ()) -> list[str]:
    """Why `goal` states no request a user would make; [] when it does.

    Empty, or under `MIN_GOAL_WORDS` whitespace-separated words ("too short"): reported alone.
    Otherwise the request rules of `request_problems` (`allowed`: values of the task's plan,
    which are never placeholders)."""
    words = goal.split()
    if not words:
        return ["goal is empty"]
    if len(words) < MIN_GOAL_WORDS:
        return [f"goal {goal!r} is too short to state a request ({len(words)} word(s))"]
    return request_problems(goal, allowed)


def planned_values(task: Task) -> list[str]:
    """The task's own values as text: expected call arguments, withheld details and entity ids
    of `initial_state`. A goal may quote them whatever their shape."""
    values = [str(v) for call in task.rubric.expected_calls for v in call.arguments.values()
              if isinstance(v, str | int | float) and not isinstance(v, bool)]
    values += [str(v) for v in task.withheld.values()]
    if isinstance(task.initial_state, dict):
        values += [str(eid) for c in task.initial_state.values() if isinstance(c, dict) for eid in c]
    return values


# Resources a tool creates with no values of the user's (an export of everything, a fresh session).
_VALUELESS_RESOURCES = frozenset({"export", "report", "backup", "snapshot", "job", "session", "token", "key",
                                  "cart", "draft"})


def writes_nothing(tool: ToolSpec, arguments: dict[str, Any]) -> bool:
    """Whether an expected call creates or updates a record of `tool`'s, which takes values, with
    none: "I need to create weather." planned as `create_weather({})` left a main job's agent to make
    up `location: "example_location"`, and the judge can hold it to nothing."""
    kind, resource = tool_intent(tool.name, tool.side_effect == "write")
    props = tool.input_schema.get("properties")
    return (kind in ("create", "update") and not arguments and isinstance(props, dict) and bool(props)
            and not (resource and resource[-1] in _VALUELESS_RESOURCES))


def rubric_problems(task: Task, toolset: list[ToolSpec]) -> list[str]:
    """Every reason `task` cannot be used with `toolset` (see the module docstring); [] if none:
    `text_problems` then `plan_problems`."""
    return text_problems(task) + plan_problems(task, toolset)


def text_problems(task: Task) -> list[str]:
    """The problems of what a task draft writes: its goal and its success criteria (the plan's
    criterion among them). A redraft can mend these and nothing else."""
    problems: list[str] = goal_problems(task.goal, planned_values(task))
    rubric = task.rubric
    if not any(c.strip() for c in rubric.success_criteria):
        problems.append("rubric has no success criteria")
    else:
        failures = {same_words(f) for f in rubric.failure_conditions if f.strip()}
        for i, criterion in enumerate(rubric.success_criteria, 1):
            if not criterion.strip():
                problems.append(f"success criterion #{i} is blank")
            elif same_words(criterion) in failures:
                # A CI main job accepted a task whose rubric had "The assistant reports results that no
                # tool returned" as both: no trajectory can meet such a rubric, and none should.
                problems.append(f"success criterion #{i} is also a failure condition: {criterion!r}")
    return problems


def plan_problems(task: Task, toolset: list[ToolSpec]) -> list[str]:
    """The problems of what the task's plan fixes, which no draft writes: its kind against its
    expected calls, its initial state, and each expected call's tool, arguments and referenced
    records. A redraft cannot mend these (`synthesize_task` rejects such a task at once)."""
    problems: list[str] = []
    rubric = task.rubric
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
        if writes_nothing(tool, call.arguments):
            problems.append(f"{where}: {tool.name} writes a new or changed {' '.join(tool_intent(tool.name)[1])} "
                            "but the task gives it no value, so the agent would have to invent every one "
                            f"(parameters: {', '.join(sorted(tool.input_schema.get('properties', {})))})")
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
