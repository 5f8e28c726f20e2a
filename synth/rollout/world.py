"""The stateful tool simulator: a world model that answers tool calls consistently.

Design (the order every simulated call goes through):
1. **Validation, no model.** Unknown tool name -> an `unknown_tool` error observation. Arguments
   that are not a JSON object, or violate the tool's `inputSchema` (jsonschema, Draft 2020-12),
   -> an `invalid_arguments` error observation naming the path, like a real API's 400.
   Executor `validator`.
2. **Injected fault.** A fixed number of draws from the simulator's seeded rng per validated call; with
   probability `fault_rate` a fault from `FAULT_KINDS` (timeout, rate_limited, not_found,
   permission_denied, partial_result) is injected and recorded as such (`executor="fault"`,
   `fault=<kind>`). `partial_result` runs the call, then truncates its result and marks it
   partial. The same seed gives the same faults, call for call. Real executors (MCP, Python)
   get no injected faults.
3. **Deterministic world, where the call is legible.** A tiny model cannot be trusted to keep a
   database consistent, so code does it whenever the tool's name says what it does:
   `create_x`/`add_x`/... builds the entity from the arguments plus a generated id and writes it
   into the `x` collection; `get_x`/`update_x`/`delete_x`/... with an argument naming an id that
   exists reads/patches/removes that entity (`cancel_x`/`close_x` set its `status`); such a
   call naming its own id (`x_id`, `id`) missing from an existing collection gets a
   deterministic `not_found`. This is what makes read-after-write hold: a
   `create_x` followed by `get_x(x_id)` returns exactly what was created.
4. **World model (LLM, role "environment").** Everything else (searches, lists, domain actions):
   the model returns `{result, state_update}` under a schema whose `result` is the tool's
   `outputSchema` when it has one; `state_update` is only asked of write tools (a read never
   changes the world). When step 3 knows the entity but cannot shape it to the output schema,
   the model shapes the result and the known entity's fields are laid over it. A model that
   never produces a valid result gives an `internal_error` observation, not a failed episode.
5. **State update** is applied as a JSON merge patch (RFC 7396) and logged with its call.

World state is the task's `initial_state`: collections of entities keyed by id,
`{"orders": {"o-17": {...}}}`.
"""

from __future__ import annotations

import copy
import functools
import json
import random
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema
import referencing.exceptions

from synth.ids import canonical_json
from synth.llm import LLMClient, StructuredOutputError
from synth.llm.client import inline_refs
from synth.models import ToolSpec
from synth.prompts import render
from synth.rollout.metered import Usage, structured_with_usage

FAULT_KINDS: tuple[str, ...] = ("timeout", "rate_limited", "not_found", "permission_denied", "partial_result")

Executor = Literal["simulated", "mcp", "python", "validator", "fault"]

_VERBS: dict[str, tuple[str, ...]] = {
    "create": ("create", "add", "new", "register", "book", "place", "open", "insert", "make", "submit",
               "schedule", "post", "save", "upload"),
    "get": ("get", "fetch", "read", "retrieve", "lookup", "show", "view", "describe", "load"),
    "update": ("update", "set", "edit", "modify", "change", "rename", "patch", "assign", "move", "reschedule"),
    "delete": ("delete", "remove", "drop", "unregister"),
    "close": ("cancel", "close", "archive"),
}
_CLOSED_STATUS = {"cancel": "cancelled", "close": "closed", "archive": "archived"}
_STATE_CHARS = 1500


@dataclass(slots=True)
class ToolObservation:
    """What a tool call returned, and how: the content of its `tool` message plus metadata."""

    content: Any
    executor: Executor
    is_error: bool = False
    fault: str | None = None
    error: str | None = None
    state_update: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)

    def message_content(self) -> str:
        """The `tool` message content: JSON text, or the text itself when the result is a string."""
        if isinstance(self.content, str):
            return self.content
        return json.dumps(self.content, ensure_ascii=False)


def error_observation(kind: str, message: str, executor: Executor, **extra: Any) -> ToolObservation:
    return ToolObservation({"error": {"type": kind, "message": message, **extra}}, executor, is_error=True,
                           error=f"{kind}: {message}")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _json_kind(value: Any) -> str:
    """The JSON name of a Python value's type, as an API error message would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


@functools.lru_cache(maxsize=1024)
def _validator_for(schema_json: str) -> jsonschema.Draft202012Validator | None:
    """A compiled validator per distinct input schema (checking a schema against the metaschema
    costs more than validating a call); None for a schema that is not valid JSON Schema."""
    schema = json.loads(schema_json)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError:
        return None
    return jsonschema.Draft202012Validator(schema)


def validate_arguments(spec: ToolSpec, arguments: Any) -> ToolObservation | None:
    """An `invalid_arguments` observation when `arguments` break the tool's input schema, else None.
    A tool whose own schema is not valid JSON Schema is not held against the agent."""
    if not isinstance(arguments, dict):
        return error_observation(
            "invalid_arguments", f"{spec.name}: arguments must be a JSON object, got {_json_kind(arguments)}",
            "validator", path="(root)")
    try:
        validator = _validator_for(canonical_json(spec.input_schema))
        if validator is None:
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except (jsonschema.exceptions.SchemaError, referencing.exceptions.Unresolvable, TypeError, ValueError):
        return None
    if error is None:
        return None
    path = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return error_observation("invalid_arguments", f"{spec.name}: {path}: {error.message[:300]}", "validator",
                             path=path)


# ---------------------------------------------------------------- deterministic world


def tool_intent(spec: ToolSpec) -> tuple[str | None, list[str]]:
    """(verb kind, resource words) from a tool name: `create_support_ticket` -> ("create",
    ["support", "ticket"]). The verb kind is None when the name does not say."""
    words = [w for w in spec.name.lower().replace("-", "_").split("_") if w]
    if len(words) < 2:
        return None, words
    for kind, verbs in _VERBS.items():
        if words[0] in verbs:
            if kind == "create" and spec.side_effect != "write":
                return None, words[1:]
            return kind, words[1:]
    return None, words[1:]


def _plural(word: str) -> str:
    if word.endswith(("ss", "us", "sh", "ch", "x")):
        return word + "es"
    if word.endswith("s"):
        return word
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def find_collection(state: dict[str, Any], resource: list[str]) -> str | None:
    """The state key holding the resource's entities (`ticket` -> `tickets`), if there is one."""
    if not resource:
        return None
    last = _singular(resource[-1])
    candidates = [_plural("_".join(resource)), "_".join(resource), _plural(last), last]
    for key in candidates:
        if isinstance(state.get(key), dict):
            return key
    for key, value in state.items():
        if isinstance(value, dict) and _singular(key.lower()).endswith(last):
            return key
    return None


def _id_key(resource: list[str], spec: ToolSpec) -> str:
    last = _singular(resource[-1]) if resource else "item"
    props = set((spec.output_schema or {}).get("properties") or {})
    props |= set(spec.input_schema.get("properties") or {})
    for key in (f"{last}_id", f"{'_'.join(resource)}_id", "id"):
        if key in props:
            return key
    return f"{last}_id"


def _id_argument(arguments: dict[str, Any], resource: list[str], entities: dict[str, Any]) -> tuple[str, str] | None:
    """(argument name, id) of the argument naming an entity: a known id wins, then an argument
    named as this resource's own id (`order_id`, `id`). Another entity's id (`customer_id` of
    `get_orders`) does not name this one, so such a call is left to the world model."""
    last = _singular(resource[-1]) if resource else ""
    id_names = [f"{last}_id", f"{'_'.join(resource)}_id", f"{_singular('_'.join(resource))}_id", "id"]
    for key, value in arguments.items():
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value) in entities:
            return key, str(value)
    for key in id_names:
        value = arguments.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return key, str(value)
    return None


def shape_result(entity: Any, output_schema: dict[str, Any] | None) -> tuple[bool, Any]:
    """(ok, result): the entity itself, or wrapped in the output schema's one matching property,
    when that conforms to the output schema."""
    if not output_schema:
        return True, entity
    try:
        validator = jsonschema.Draft202012Validator(inline_refs(output_schema))
        if validator.is_valid(entity):
            return True, entity
        if isinstance(entity, dict) and output_schema.get("additionalProperties") is False:
            props = output_schema.get("properties") or {}
            trimmed = {k: v for k, v in entity.items() if k in props}
            if validator.is_valid(trimmed):
                return True, trimmed
        for key in output_schema.get("properties") or {}:
            if validator.is_valid({key: entity}):
                return True, {key: entity}
    except (jsonschema.exceptions.SchemaError, TypeError):
        return True, entity
    return False, None


@dataclass(slots=True)
class _Plan:
    """What code decided about a call before (or instead of) asking the world model."""

    result: Any = None
    decided: bool = False
    entity: Any = None
    state_update: dict[str, Any] = field(default_factory=dict)
    observation: ToolObservation | None = None


def plan_deterministic(spec: ToolSpec, arguments: dict[str, Any], state: dict[str, Any],
                       rng: random.Random) -> _Plan:
    """Step 3 of the module docstring: the part of a call code can answer on its own."""
    kind, resource = tool_intent(spec)
    if kind is None:
        return _Plan()
    collection = find_collection(state, resource)
    if kind == "create":
        collection = collection or _plural("_".join(resource))
        existing = state.get(collection)
        entities: dict[str, Any] = existing if isinstance(existing, dict) else {}
        id_key = _id_key(resource, spec)
        new_id = str(arguments[id_key]) if isinstance(arguments.get(id_key), str | int) else None
        while new_id is None or new_id in entities:
            prefix = "".join(w[0] for w in resource)[:3] or "x"
            new_id = f"{prefix}-{rng.randint(1000, 99999)}"
        entity = {id_key: new_id, **{k: v for k, v in arguments.items() if k != id_key}}
        return _finish(spec, entity, {collection: {new_id: entity}})
    if collection is None:
        return _Plan()
    entities = state[collection]
    named = _id_argument(arguments, resource, entities)
    if named is None:
        return _Plan()
    arg_name, entity_id = named
    if entity_id not in entities:
        obs = error_observation("not_found", f"{_singular(resource[-1])} {entity_id!r} does not exist", "simulated")
        return _Plan(decided=True, observation=obs)
    current = entities[entity_id]
    if kind == "get":
        return _finish(spec, current, {})
    if kind in ("update", "close"):
        patch = {k: v for k, v in arguments.items() if k != arg_name}
        if kind == "close":
            verb = spec.name.lower().replace("-", "_").split("_")[0]
            patch.setdefault("status", _CLOSED_STATUS[verb])
        updated = merge_patch(current, patch)
        return _finish(spec, updated, {collection: {entity_id: patch}} if patch else {})
    # delete
    id_key = _id_key(resource, spec)
    receipt = {id_key: entity_id, "deleted": True}
    return _finish(spec, receipt, {collection: {entity_id: None}})


def _finish(spec: ToolSpec, entity: Any, update: dict[str, Any]) -> _Plan:
    ok, result = shape_result(entity, spec.output_schema)
    return _Plan(result=result, decided=ok, entity=entity, state_update=update)


# ---------------------------------------------------------------- faults


def fault_observation(kind: str, spec: ToolSpec, rng: random.Random) -> ToolObservation:
    """A realistic error payload for an injected fault (not `partial_result`, which needs a result)."""
    if kind == "timeout":
        obs = error_observation("timeout", f"{spec.name} did not respond within 30 seconds", "fault")
    elif kind == "rate_limited":
        wait = rng.randint(2, 60)
        obs = error_observation("rate_limited", f"too many requests to {spec.name}; retry after {wait} seconds",
                                "fault", retry_after_s=wait)
    elif kind == "not_found":
        obs = error_observation("not_found", "no resource matches the given identifiers", "fault")
    elif kind == "permission_denied":
        obs = error_observation("permission_denied", f"the current credentials may not call {spec.name}", "fault")
    else:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    obs.fault = kind
    return obs


def truncate_result(result: Any) -> Any:
    """A partial version of a result: half of a list, half of an object's fields, marked partial."""
    if isinstance(result, list):
        return {"items": result[: len(result) // 2], "partial": True, "warning": "result truncated"}
    if isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, list) and len(value) > 1:
                return {**result, key: value[: len(value) // 2], "partial": True}
        keys = list(result)
        kept = {k: result[k] for k in keys[: max(1, len(keys) // 2)]}
        return {**kept, "partial": True, "warning": "some fields could not be loaded"}
    return {"result": result, "partial": True, "warning": "result may be incomplete"}


# ---------------------------------------------------------------- the world model


def world_model_schema(spec: ToolSpec) -> dict[str, Any]:
    result_schema = inline_refs(spec.output_schema) if spec.output_schema else {"type": "object"}
    props: dict[str, Any] = {"result": result_schema}
    if spec.side_effect == "write":
        props["state_update"] = {"type": "object"}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _compact(value: Any, limit: int) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[:limit] + "...(truncated)"


async def ask_world_model(
    spec: ToolSpec, arguments: dict[str, Any], state: dict[str, Any], llm: LLMClient,
    *, seed: int | None, entity: Any = None, max_tokens: int = 320,
) -> tuple[Any, dict[str, Any], Usage]:
    """(result, state_update, usage) from the environment model. Raises StructuredOutputError."""
    prompt = render(
        "synth.rollout", "environment.j2", name=spec.name, description=spec.description,
        write=spec.side_effect == "write", state=_compact(state, _STATE_CHARS),
        arguments=_compact(arguments, 600), entity=_compact(entity, 600) if entity is not None else "",
        # Without an outputSchema the result may be an error object, so the documented error modes
        # are offered; with one, the result must conform and errors come from fault injection.
        error_modes="" if spec.output_schema else "; ".join(spec.error_modes[:6]),
    )
    messages = [{"role": "system", "content": prompt}, {"role": "user", "content": f"Run {spec.name}."}]
    data, usage = await structured_with_usage(llm, "environment", messages, world_model_schema(spec),
                                              seed=seed, name="tool_result", max_tokens=max_tokens)
    update = data.get("state_update") if spec.side_effect == "write" else None
    return data["result"], update if isinstance(update, dict) else {}, usage


def _overlay(result: Any, entity: Any, output_schema: dict[str, Any] | None) -> Any:
    """The model's result with the known entity's fields laid over it, if that still conforms."""
    if not (isinstance(result, dict) and isinstance(entity, dict)):
        return result
    merged = {**result, **{k: v for k, v in entity.items() if k in result}}
    try:
        if output_schema and not jsonschema.Draft202012Validator(inline_refs(output_schema)).is_valid(merged):
            return result
    except (jsonschema.exceptions.SchemaError, TypeError):
        return result
    return merged


async def simulate_tool_call(
    spec: ToolSpec,
    arguments: Any,
    state: dict[str, Any],
    llm: LLMClient,
    rng: random.Random,
    fault_rate: float = 0.0,
    *,
    fault_kinds: tuple[str, ...] | list[str] = FAULT_KINDS,
    seed: int | None = None,
    max_tokens: int = 320,
) -> ToolObservation:
    """Answer one call against `state` (not modified: the update is returned in the observation).

    Draws exactly three values per validated call from `rng` (the fault roll, the fault kind, and
    a seed for the call's own randomness: new ids, retry-after delays), so the fault sequence
    depends only on the seed and the number of validated calls, whatever the calls were. A
    `partial_result` fault on a call that fails anyway (a deterministic `not_found`) has no effect.
    A world model that never produces a valid result gives an `internal_error` observation (what a
    real backend's 500 looks like), its reason kept in `error`: a weak environment model costs one
    observation, not the episode.
    """
    invalid = validate_arguments(spec, arguments)
    if invalid is not None:
        return invalid
    assert isinstance(arguments, dict)
    roll = rng.random()
    kind = rng.choice(list(fault_kinds)) if fault_kinds else None
    call_rng = random.Random(rng.getrandbits(64))
    fault = kind if (kind is not None and roll < fault_rate) else None
    if fault is not None and fault != "partial_result":
        return fault_observation(fault, spec, call_rng)
    plan = plan_deterministic(spec, arguments, state, call_rng)
    usage = Usage()
    if plan.observation is not None:
        return plan.observation
    if plan.decided:
        result, update = plan.result, plan.state_update
    else:
        try:
            result, update, usage = await ask_world_model(spec, arguments, state, llm, seed=seed,
                                                          entity=plan.entity, max_tokens=max_tokens)
        except StructuredOutputError as exc:
            obs = error_observation("internal_error", f"{spec.name} failed with an internal server error",
                                    "simulated")
            obs.error = f"world model failed: {exc.reason}"[:1000]
            return obs
        if plan.entity is not None:
            result, update = _overlay(result, plan.entity, spec.output_schema), plan.state_update
    obs = ToolObservation(result, "simulated", state_update=update, usage=usage)
    if fault == "partial_result":
        obs.content, obs.executor, obs.fault = truncate_result(result), "fault", "partial_result"
    return obs


class ToolSimulator:
    """Per-episode world: the state (from `task.initial_state`), its seeded fault rng, and the log of
    every state change with the call that caused it."""

    def __init__(self, initial_state: dict[str, Any], llm: LLMClient, *, seed: int, fault_rate: float = 0.0,
                 fault_kinds: tuple[str, ...] | list[str] = FAULT_KINDS, max_tokens: int = 320) -> None:
        unknown = [k for k in fault_kinds if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be within [0, 1], got {fault_rate}")
        self.state: dict[str, Any] = copy.deepcopy(initial_state)
        self.llm = llm
        self.seed = seed
        self.rng = random.Random(seed)
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.max_tokens = max_tokens
        self.calls = 0
        self.state_log: list[dict[str, Any]] = []

    async def call(self, spec: ToolSpec, arguments: Any, *, call_id: str | None = None, turn: int = 0,
                   seed: int | None = None) -> ToolObservation:
        """Simulate one call and apply its state update (merge patch), logging it."""
        self.calls += 1
        obs = await simulate_tool_call(
            spec, arguments, self.state, self.llm, self.rng, self.fault_rate, fault_kinds=self.fault_kinds,
            seed=seed if seed is not None else self.seed + self.calls, max_tokens=self.max_tokens,
        )
        self.apply(obs.state_update, tool=spec.name, arguments=arguments, call_id=call_id, turn=turn,
                   executor=obs.executor)
        return obs

    def apply(self, update: dict[str, Any], *, tool: str, arguments: Any, call_id: str | None, turn: int,
              executor: str) -> None:
        if not update:
            return
        self.state = merge_patch(self.state, update)
        self.state_log.append({"turn": turn, "tool_call_id": call_id, "tool": tool, "arguments": arguments,
                               "executor": executor, "state_update": update})
