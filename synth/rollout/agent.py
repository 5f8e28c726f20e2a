"""The agent under synthesis: one step = one model reply, either tool calls or a reply to the user.

Two modes (`RoleConfig.tool_mode` of role "agent"):
- `native`: the toolset goes in `tools=[...]` (OpenAI function tools) and calls come back in
  `tool_calls`; arguments pass through unrepaired, so the validator can answer bad ones with
  error observations (text that is not JSON is kept as a JSON string, see `ParsedCall`).
- `constrained`: the next action is generated under a JSON schema built from the toolset,
  `anyOf` of `{"action": "call", "calls": [{"tool": <const name>, "arguments": <that tool's
  inputSchema>}, ...]}` and `{"action": "reply", "message": str}`, so even a 135M model emits
  well-formed calls of real tools. History is shown to the model in that same JSON action format
  (tool results as user messages), which is what it is asked to continue. If no attempt validates,
  a reply that still has the action's shape is kept (its bad arguments then meet the validator,
  like a native call would); anything else raises `StructuredOutputError`.

Both modes return the step as a canonical OpenAI assistant message: `tool_calls=[{"id", "type":
"function", "function": {"name", "arguments": <JSON string>}}]` with ids assigned by the caller
(`call_id_prefix`), so ids are unique in the episode and identical when an episode is replayed.
Several calls in one step are allowed (at most `max_calls`; extra native calls are dropped).
A call naming a tool outside the toolset is dropped too (noted in `AgentStep.dropped`), so every
stored call names a tool the agent was offered; a step left with no call and no text is an empty
reply (the episode reads it as the agent giving up).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from synth.judges.messages import is_cursor_name, is_id_name
from synth.llm import LLMClient, StructuredOutputError, Usage, parse_json_reply
from synth.llm.client import inline_refs
from synth.models import Agent, ToolSpec
from synth.prompts import render
from synth.settings import ToolMode

FORCE_REPLY_NOTE = {"role": "user", "content": "(You have used all tool calls for this turn: reply to the user now.)"}


@dataclass(slots=True)
class ParsedCall:
    """One tool call of an agent step. `arguments_json` is always valid JSON text and
    `arguments == json.loads(arguments_json)`: when the model's arguments text did not parse,
    the text is kept as a JSON string (so the validator answers "must be a JSON object, got
    string") and `parse_error` says why."""

    id: str
    name: str
    arguments: Any
    arguments_json: str
    parse_error: str | None = None

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments_json}}


@dataclass(slots=True)
class AgentStep:
    """What one agent step produced: the canonical assistant message and its parts."""

    message: dict[str, Any]
    calls: list[ParsedCall]
    reply: str | None
    usage: Usage = field(default_factory=Usage)
    salvaged: str | None = None
    dropped: list[str] = field(default_factory=list)
    # The constrained action as the model generated it, when `message` says exactly that action
    # (nothing salvaged or dropped): the episode shows it back to the agent byte for byte.
    text: str | None = None

    @property
    def note(self) -> str | None:
        """What code changed about the model's reply, for the step's `error` field (None: nothing)."""
        parts = []
        if self.salvaged:
            parts.append(f"salvaged invalid action: {self.salvaged}")
        if self.dropped:
            parts.append(f"dropped call(s) to tools not in the toolset: {', '.join(self.dropped)}")
        return "; ".join(parts)[:1000] or None


def _params(spec: ToolSpec) -> str:
    props = spec.input_schema.get("properties") or {}
    required = set(spec.input_schema.get("required") or [])
    parts = []
    for name, sub in props.items():
        kind = sub.get("type", "any") if isinstance(sub, dict) else "any"
        parts.append(f"{name}{'' if name in required else '?'}: {kind}")
    return ", ".join(parts)


def offer_given_ids(schema: dict[str, Any], ids: Sequence[str], cursors: Sequence[str] = ()
                    ) -> dict[str, Any] | None:
    """`schema` (a tool's inlined input schema) with every id-named property (`is_id_name`) that
    has no enum or const of its own held to `ids`, the ids the user or a tool gave (those its own
    schema admits), and every paging cursor (`is_cursor_name`) to `cursors`, those tool results
    returned. An optional one with none of them left is dropped; a required one makes the tool
    uncallable for now (None). Nested objects are narrowed the same way."""
    props = schema.get("properties")
    if not isinstance(props, dict):
        return schema
    required = set(schema.get("required") or [])
    kept: dict[str, Any] = {}
    for name, sub in props.items():
        narrowed = _given_id_property(name, sub, ids, cursors)
        if narrowed is None:
            if name in required:
                return None
            continue
        kept[name] = narrowed
    return {**schema, "properties": kept, **({"required": [r for r in schema["required"] if r in kept]}
                                             if "required" in schema else {})}


def _given_id_property(name: str, sub: Any, ids: Sequence[str], cursors: Sequence[str]) -> Any:
    if not isinstance(sub, dict):
        return sub
    if isinstance(sub.get("properties"), dict):
        return offer_given_ids(sub, ids, cursors)
    if "enum" in sub or "const" in sub or not (is_id_name(name) or is_cursor_name(name)):
        return sub
    offered = cursors if is_cursor_name(name) else ids  # a cursor is opaque: only one a tool returned
    kinds = sub.get("type")
    kind = next((k for k in kinds if k != "null"), "string") if isinstance(kinds, list) else (kinds or "string")
    if kind in ("integer", "number"):
        candidates: list[Any] = [int(v) for v in offered if v.isdigit()]
    elif kind == "string":
        candidates = list(offered)
    else:
        return sub
    validator = _validator(json.dumps(sub, sort_keys=True))
    try:
        allowed = [v for v in candidates if validator.is_valid(v)] if validator is not None else candidates
    except re.error:  # a pattern Python cannot compile: the call's own validation answers it later
        allowed = candidates
    if not allowed:
        return None
    return {**{k: v for k, v in sub.items() if k in ("description", "title")}, "enum": allowed}


@functools.lru_cache(maxsize=2048)
def _validator(schema_text: str) -> Draft202012Validator | None:
    """A validator of one parameter's schema (None if the schema itself is broken), built once: the
    grammar of every agent step checks the given ids against the same few parameters."""
    schema = json.loads(schema_text)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        return None
    return Draft202012Validator(schema)


def action_schema(tools: list[ToolSpec], max_calls: int = 3, *, allow_calls: bool = True,
                  given_ids: Sequence[str] | None = None, given_cursors: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON schema of the agent's next action over `tools` (see module docstring). With
    `given_ids`, id arguments may only take those and paging cursors only `given_cursors`
    (`offer_given_ids`), and a tool that needs an id nobody gave yet is left out."""
    reply = {
        "type": "object",
        "properties": {"action": {"const": "reply"}, "message": {"type": "string", "minLength": 1}},
        "required": ["action", "message"],
        "additionalProperties": False,
    }
    if not (allow_calls and tools):
        return reply
    arguments = {spec.name: inline_refs(spec.input_schema) for spec in tools}
    if given_ids is not None:
        narrowed = {name: offer_given_ids(schema, given_ids, given_cursors) for name, schema in arguments.items()}
        arguments = {name: schema for name, schema in narrowed.items() if schema is not None}
    if not arguments:
        return reply
    items = [
        {
            "type": "object",
            "properties": {"tool": {"const": name}, "arguments": schema},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for name, schema in arguments.items()
    ]
    call = {
        "type": "object",
        "properties": {
            "action": {"const": "call"},
            "calls": {"type": "array", "items": {"anyOf": items}, "minItems": 1, "maxItems": max(1, max_calls)},
        },
        "required": ["action", "calls"],
        "additionalProperties": False,
    }
    return {"anyOf": [call, reply]}


def constrained_view(messages: list[dict[str, Any]], generated: Mapping[int, str] | None = None
                     ) -> list[dict[str, Any]]:
    """Canonical messages as the constrained agent sees them (system messages left out): its own
    turns as JSON actions, tool results as user messages (one per batch of calls).

    `generated` maps the index of an assistant message in `messages` to the action text the model
    generated for it (`AgentStep.text`), shown instead of a re-rendering: the server's cache holds
    the tokens it generated, and a re-rendering with other whitespace (SmolLM2 under a grammar
    writes indented JSON) made it recompute them, and the rest of the turn, at every step."""
    names: dict[str, str] = {}
    view: list[dict[str, Any]] = []
    for index, m in enumerate(messages):
        role = m.get("role")
        if role == "user":
            view.append({"role": "user", "content": m.get("content") or ""})
        elif role == "assistant":
            calls = m.get("tool_calls") or []
            for c in calls:
                names[c.get("id", "")] = (c.get("function") or {}).get("name", "")
            if generated is not None and index in generated:
                view.append({"role": "assistant", "content": generated[index]})
            elif calls:
                shown = []
                for c in calls:
                    fn = c.get("function") or {}
                    names[c.get("id", "")] = fn.get("name", "")
                    try:
                        args = json.loads(fn.get("arguments") or "{}")
                    except ValueError:
                        args = fn.get("arguments")
                    shown.append({"tool": fn.get("name"), "arguments": args})
                view.append({"role": "assistant", "content": json.dumps({"action": "call", "calls": shown})})
            else:
                view.append({"role": "assistant",
                             "content": json.dumps({"action": "reply", "message": m.get("content") or ""})})
        elif role == "tool":
            line = f"Result of {names.get(m.get('tool_call_id', ''), 'tool')}: {m.get('content')}"
            if view and view[-1]["role"] == "user" and view[-1].get("_tool"):
                view[-1]["content"] += "\n" + line
            else:
                view.append({"role": "user", "content": line, "_tool": True})
    return [{k: v for k, v in m.items() if k != "_tool"} for m in view]


def _salvage(raw: str, max_calls: int) -> dict[str, Any] | None:
    """An action-shaped reply that failed validation (e.g. bad arguments), else None."""
    try:
        data = parse_json_reply(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("action") == "reply" and isinstance(data.get("message"), str):
        return data
    calls = data.get("calls")
    well_formed = isinstance(calls, list) and bool(calls) and all(
        isinstance(c, dict) and isinstance(c.get("tool"), str) and "arguments" in c for c in calls)
    if data.get("action") == "call" and well_formed and isinstance(calls, list):
        return {"action": "call", "calls": calls[:max_calls]}
    return None


def _as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


async def agent_step(
    agent: Agent,
    tools: list[ToolSpec],
    messages: list[dict[str, Any]],
    llm: LLMClient,
    mode: ToolMode,
    *,
    seed: int,
    force_reply: bool = False,
    max_calls: int = 3,
    call_id_prefix: str = "call",
    max_tokens: int | None = None,
    generated: Mapping[int, str] | None = None,
    withheld_tools: frozenset[str] = frozenset(),
    given_ids: Sequence[str] | None = None,
    given_cursors: Sequence[str] = (),
) -> AgentStep:
    """The agent's next step given the canonical conversation (`messages[0]` is its system
    message; `generated`: the constrained actions as generated, see `constrained_view`).
    `force_reply` allows no calls (the step budget of the turn is spent). `withheld_tools` may not
    be called this step (writes awaiting the user's go-ahead): the constrained action grammar
    leaves them out, while the prompt still lists every tool, so the server's cached prefix holds;
    native tool calling ignores it. `given_ids` (the ids the user or a tool gave, `messages.given_ids`)
    are the only values the grammar lets an id argument take, and a tool needing an id nobody gave
    is left out for the step: what the judge would fail as an invented id cannot be generated. So
    with paging cursors and `given_cursors` (`messages.given_cursors`): before a tool returned
    one, an optional cursor is not in the grammar at all.
    Raises `StructuredOutputError` (constrained) or another
    `LLMError` when the model cannot answer."""
    if mode == "native":
        return await _native_step(tools, messages, llm, seed=seed, force_reply=force_reply, max_calls=max_calls,
                                  call_id_prefix=call_id_prefix, max_tokens=max_tokens)
    if mode != "constrained":
        raise ValueError(f"tool mode must be 'constrained' or 'native', got {mode!r}")
    system = render(
        "synth.rollout", "agent_constrained.j2", system_prompt=agent.system_prompt,
        tools=[{"name": t.name, "description": t.description, "params": _params(t)} for t in tools],
    )
    history = constrained_view(messages, generated)
    # The prompt only grows from one step to the next (the same system text, the history
    # appended), so the server reuses its cached prefix; a spent step budget is said after the
    # history, where a change recomputes nothing before it.
    chat = [{"role": "system", "content": system}, *history, *([FORCE_REPLY_NOTE] if force_reply else [])]
    callable_tools = [t for t in tools if t.name not in withheld_tools]
    schema = action_schema(callable_tools, max_calls, allow_calls=not force_reply, given_ids=given_ids,
                           given_cursors=given_cursors)
    salvaged = None
    generated_text: str | None = None
    try:
        reply = await llm.structured_reply("agent", chat, schema, seed=seed, name="agent_action",
                                           **({} if max_tokens is None else {"max_tokens": max_tokens}))
        action, usage, generated_text = reply.value, reply.usage, reply.text
    except StructuredOutputError as exc:
        action = _salvage(exc.raw_text, max_calls)
        if action is None or (force_reply and action.get("action") != "reply"):
            raise
        usage, salvaged = Usage(), exc.reason
    if action.get("action") == "reply":
        text = str(action.get("message") or "").strip()
        same = generated_text is not None and text == action.get("message")
        return AgentStep({"role": "assistant", "content": text}, [], text, usage, salvaged,
                         text=generated_text if same else None)
    known = {t.name for t in callable_tools}
    kept = [c for c in action["calls"][:max_calls] if str(c["tool"]) in known]
    dropped = [str(c["tool"]) for c in action["calls"][:max_calls] if str(c["tool"]) not in known]
    calls = [ParsedCall(f"{call_id_prefix}_{i}", str(c["tool"]), c.get("arguments"), _as_json(c.get("arguments")))
             for i, c in enumerate(kept)]
    if not calls:
        return AgentStep({"role": "assistant", "content": ""}, [], "", usage, salvaged, dropped)
    message = {"role": "assistant", "content": None, "tool_calls": [c.to_openai() for c in calls]}
    same = len(calls) == len(action["calls"]) <= max_calls
    return AgentStep(message, calls, None, usage, salvaged, dropped, text=generated_text if same else None)


async def _native_step(
    tools: list[ToolSpec], messages: list[dict[str, Any]], llm: LLMClient, *, seed: int, force_reply: bool,
    max_calls: int, call_id_prefix: str, max_tokens: int | None,
) -> AgentStep:
    sampling: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
    offered = [t.to_openai() for t in tools] or None
    started = time.perf_counter()
    result = await llm.chat("agent", messages, tools=offered, tool_choice="none" if force_reply and offered else None,
                            seed=seed, **sampling)
    usage = Usage(result.prompt_tokens, result.completion_tokens, time.perf_counter() - started, 1,
                  int(result.cache_hit))
    text = (result.content or "").strip()
    raw_calls = [] if force_reply else result.tool_calls[:max_calls]
    known = {t.name for t in tools}
    calls: list[ParsedCall] = []
    dropped: list[str] = []
    for raw in raw_calls:
        fn = raw.get("function") or {}
        name = str(fn.get("name") or "")
        if name not in known:
            dropped.append(name or "(no name)")
            continue
        calls.append(_native_call(f"{call_id_prefix}_{len(calls)}", name, fn.get("arguments")))
    if calls:
        message = {"role": "assistant", "content": text or None, "tool_calls": [c.to_openai() for c in calls]}
        return AgentStep(message, calls, None, usage, dropped=dropped)
    return AgentStep({"role": "assistant", "content": text}, [], text, usage, dropped=dropped)


def _native_call(call_id: str, name: str, raw_args: Any) -> ParsedCall:
    """A native call's arguments as they came (a JSON string, by the API; some servers send an
    object), normalised to the `ParsedCall` invariant."""
    if not isinstance(raw_args, str):
        args = raw_args if raw_args is not None else {}
        return ParsedCall(call_id, name, args, _as_json(args))
    if not raw_args.strip():
        return ParsedCall(call_id, name, {}, "{}")
    try:
        return ParsedCall(call_id, name, json.loads(raw_args), raw_args)
    except ValueError as exc:
        return ParsedCall(call_id, name, raw_args, _as_json(raw_args), parse_error=f"not valid JSON: {exc}")
