"""The deterministic world: what code answers about collections of entities, with no model.

World state is collections of entities keyed by id, `{"orders": {"o-17": {...}}}` (the task's
`initial_state` to begin with). A tiny model cannot be trusted to keep a database consistent, so
code does it wherever it can:
- **CRUD by name.** When a tool's name says what it does (`synth.naming.tool_intent`, any naming
  style), `plan_deterministic` answers it: `create_x` builds the entity from the arguments plus a
  generated id; `get_x` / `update_x` / `delete_x` / `cancel_x` naming an existing id read, patch,
  remove it or set its `status`; such a call naming an id missing from an existing collection gets
  a deterministic `not_found`. Read-after-write holds: `create_x` then `get_x(x_id)` returns
  exactly what was created.
- **Reads enter the world.** Entities that a world-model read returns (`absorb_entities`) are
  written into their collection, and entities already there are laid over what the model said,
  so a search listing `o-999` is followed by a `get_order(o-999)` that finds it, with the same
  fields.
- **Updates stay in their lane.** A model's `state_update` may touch only the collection of the
  call that produced it, and must be a merge patch of entity objects keyed by id
  (`check_state_update`); anything else is refused and logged, never applied.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from synth.llm.client import inline_refs
from synth.models import ToolSpec
from synth.naming import CLOSED_STATUS, collection_name, intent_verb, name_words, plural, resource_words, singular
from synth.naming import tool_intent as name_intent
from synth.rollout.observation import ToolObservation, error_observation

_ABSORB_DEPTH = 4


def tool_intent(spec: ToolSpec) -> tuple[str | None, list[str]]:
    """`synth.naming.tool_intent` of a tool: its verb kind and (singular) resource words."""
    kind, words = name_intent(spec.name, spec.side_effect == "write")
    return kind, resource_words(words)


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


def find_collection(state: dict[str, Any], resource: list[str]) -> str | None:
    """The state key holding the resource's entities (`ticket` -> `tickets`), if there is one."""
    if not resource:
        return None
    words = resource_words(resource)
    last = words[-1]
    for key in (collection_name(words), "_".join(words), plural(last), last):
        if isinstance(state.get(key), dict):
            return key
    for key, value in state.items():
        if isinstance(value, dict) and "_".join(resource_words(name_words(key))).endswith(last):
            return key
    return None


def collection_for(state: dict[str, Any], resource: list[str]) -> str:
    """The collection a resource's entities live in: the existing one, else the canonical name."""
    return find_collection(state, resource) or collection_name(resource or ["item"])


def _id_keys(resource: list[str]) -> list[str]:
    words = resource_words(resource) or ["item"]
    return list(dict.fromkeys([f"{words[-1]}_id", f"{'_'.join(words)}_id", "id"]))


def _id_key(resource: list[str], spec: ToolSpec) -> str:
    props = set((spec.output_schema or {}).get("properties") or {})
    props |= set(spec.input_schema.get("properties") or {})
    keys = _id_keys(resource)
    return next((k for k in keys if k in props), keys[0])


def _scalar_id(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    return None


def _id_argument(arguments: dict[str, Any], resource: list[str], entities: dict[str, Any]) -> tuple[str, str] | None:
    """(argument name, id) of the argument naming an entity: a known id wins, then an argument
    named as this resource's own id (`order_id`, `orderId`, `id`). Another entity's id
    (`customer_id` of `get_orders`) does not name this one, so such a call is left to the world
    model."""
    for key, value in arguments.items():
        text = _scalar_id(value)
        if text is not None and text in entities:
            return key, text
    wanted = set(_id_keys(resource))
    for key, value in arguments.items():
        text = _scalar_id(value)
        if text is not None and "_".join(name_words(key)) in wanted:
            return key, text
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
class CrudPlan:
    """What code decided about a call before (or instead of) asking the world model."""

    result: Any = None
    decided: bool = False
    entity: Any = None
    state_update: dict[str, Any] = field(default_factory=dict)
    observation: ToolObservation | None = None


def plan_deterministic(spec: ToolSpec, arguments: dict[str, Any], state: dict[str, Any],
                       rng: random.Random) -> CrudPlan:
    """The part of a call code can answer on its own (see the module docstring)."""
    kind, resource = tool_intent(spec)
    if kind is None:
        return CrudPlan()
    collection = find_collection(state, resource)
    if kind == "create":
        collection = collection or collection_name(resource)
        existing = state.get(collection)
        entities: dict[str, Any] = existing if isinstance(existing, dict) else {}
        id_key = _id_key(resource, spec)
        new_id = _scalar_id(arguments.get(id_key))
        while new_id is None or new_id in entities:
            prefix = "".join(w[0] for w in resource)[:3] or "x"
            new_id = f"{prefix}-{rng.randint(1000, 99999)}"
        entity = {id_key: new_id, **{k: v for k, v in arguments.items() if k != id_key}}
        return _finish(spec, entity, {collection: {new_id: entity}})
    # No such collection in the world: a record named by its own id is not there either. Reads
    # bring the records they return into the world (`absorb_entities`), so an id a tool gave is in
    # it; the world model had answered `get_forecast(forecast_id="7328378")`, an id the agent made
    # up, with an invented forecast.
    entities = state[collection] if collection is not None else {}
    named = _id_argument(arguments, resource, entities)
    if named is None:
        return CrudPlan()
    arg_name, entity_id = named
    if collection is None or entity_id not in entities:
        noun = singular(resource[-1]) if resource else "item"
        obs = error_observation("not_found", f"{noun} {entity_id!r} does not exist", "simulated")
        return CrudPlan(decided=True, observation=obs)
    current = entities[entity_id]
    if kind == "get":
        return _finish(spec, current, {})
    if kind in ("update", "close"):
        patch = {k: v for k, v in arguments.items() if k != arg_name}
        if kind == "close":
            patch.setdefault("status", CLOSED_STATUS.get(intent_verb(spec.name) or "close", "closed"))
        updated = merge_patch(current, patch)
        return _finish(spec, updated, {collection: {entity_id: patch}} if patch else {})
    receipt = {_id_key(resource, spec): entity_id, "deleted": True}
    return _finish(spec, receipt, {collection: {entity_id: None}})


def _finish(spec: ToolSpec, entity: Any, update: dict[str, Any]) -> CrudPlan:
    ok, result = shape_result(entity, spec.output_schema)
    return CrudPlan(result=result, decided=ok, entity=entity, state_update=update)


# ---------------------------------------------------------------- reads enter the world


def _own_id(entity: dict[str, Any], resource: list[str]) -> tuple[list[str], str] | None:
    """(resource, id) an object describes: the call's resource by its id key (`order_id`, `id`),
    else the one `<thing>_id` key the object has."""
    for key in _id_keys(resource):
        text = _scalar_id(entity.get(key))
        if text is not None:
            return resource, text
    id_keys = [k for k in entity if name_words(k)[-1:] == ["id"] and len(name_words(k)) > 1]
    if len(id_keys) == 1:
        text = _scalar_id(entity[id_keys[0]])
        if text is not None:
            return resource_words(name_words(id_keys[0])[:-1]), text
    return None


def _distinct_entities(items: list[Any], resource: list[str]) -> list[Any]:
    """`items` without the entities whose id an earlier item of the list already has: one world has
    one record per id, and a listing of a made-up collection had given `cancellation_id
    "1234567890"` twice (accepted by a CI main job), another `{"order_id": "ord-3605"}` twice."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for item in items:
        own = _own_id(item, resource) if isinstance(item, dict) else None
        key = (*own[0], own[1]) if own else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen.add(key)
        out.append(item)
    return out


# Arguments that shape a listing (paging, sorting) rather than say which records it holds.
_SHAPING_ARGUMENTS = frozenset({"sort_by", "sort", "order", "order_by", "limit", "cursor", "page", "offset",
                                "page_size", "per_page", "page_token", "max_results", "fields"})


def match_filters(result: Any, arguments: dict[str, Any]) -> Any:
    """A world model's `result` without the listed records that contradict the call's own filters:
    an item with a field named like a scalar argument (`customer_id`) but another value. One world
    answers `list_orders(customer_id="cus-10996")` with that customer's orders only; a CI main job
    accepted a listing of it whose one order had `customer_id "123456789"`. Lists of objects at
    the top of the result or one level down (`{"items": [...]}`) are filtered; nothing else changes.
    An id filter needs the same id; another (a name, a status) needs one value to contain the other."""
    filters = {k: str(v).strip().lower() for k, v in arguments.items()
               if k not in _SHAPING_ARGUMENTS and isinstance(v, str | int | float) and not isinstance(v, bool)}
    if not filters:
        return result

    def agrees(key: str, wanted: str, value: Any) -> bool:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            return True
        have = str(value).strip().lower()
        # An id is one value; a name or a word filter finds the records that contain it ("Ada" finds "Ada Lovelace").
        return have == wanted if name_words(key)[-1:] == ["id"] else (wanted in have or have in wanted)

    def keep(item: Any) -> bool:
        return not isinstance(item, dict) or all(agrees(k, v, item[k]) for k, v in filters.items() if k in item)

    if isinstance(result, list):
        return [item for item in result if keep(item)]
    if isinstance(result, dict):
        return {k: [item for item in v if keep(item)] if isinstance(v, list) else v for k, v in result.items()}
    return result


def absorb_entities(result: Any, resource: list[str], state: dict[str, Any], *,
                    authoritative: bool = False) -> tuple[Any, dict[str, Any]]:
    """(result, update): every entity object in a `result` (an object with its id and at least one
    other field) joins its collection via `update`. Where the state already holds that entity, a
    world model's read defers to it (its stored fields replace the model's in the returned result,
    so a read never contradicts the world, and a list of them names each id once); an
    `authoritative` result (a real tool's) is the truth instead, and patches the stored entity."""
    update: dict[str, Any] = {}

    def visit(value: Any, depth: int) -> Any:
        if depth > _ABSORB_DEPTH:
            return value
        if isinstance(value, list):
            return [visit(v, depth + 1) for v in (value if authoritative else _distinct_entities(value, resource))]
        if not isinstance(value, dict):
            return value
        value = {k: visit(v, depth + 1) for k, v in value.items()}
        own = _own_id(value, resource) if len(value) >= 2 else None
        if own is None:
            return value
        words, entity_id = own
        collection = collection_for(state, words)
        known = (state.get(collection) or {}).get(entity_id) if isinstance(state.get(collection), dict) else None
        if isinstance(known, dict) and not authoritative:
            return {**value, **{k: v for k, v in known.items() if k in value}}
        if known != value:
            update.setdefault(collection, {})[entity_id] = value
        return value

    return visit(result, 0), update


def check_state_update(update: Any, collection: str) -> str | None:
    """Why a model's state update may not be applied (None when it may): it must be a merge patch
    on `collection` only (the call's own), of entity objects (or null, a deletion) keyed by id."""
    if not isinstance(update, dict):
        return "state_update is not an object"
    foreign = sorted(k for k in update if k != collection)
    if foreign:
        return f"state_update touches {', '.join(foreign)}; a call of this tool may change only {collection}"
    entities = update.get(collection)
    if entities is None:
        return None
    if not isinstance(entities, dict):
        return f"state_update[{collection!r}] is not an object of entities keyed by id"
    bad = [eid for eid, entity in entities.items() if entity is not None and not isinstance(entity, dict)]
    if bad:
        return f"state_update[{collection!r}] entries {bad[:3]} are not entity objects"
    return None


def real_result_update(spec: ToolSpec, arguments: dict[str, Any], result: Any,
                       state: dict[str, Any]) -> dict[str, Any]:
    """The update a real tool's successful result makes to the simulated world, so simulated calls
    after it see what the real system did: a delete or close of a known entity as code would
    apply it, and every entity the result describes (`absorb_entities`, authoritative)."""
    kind, resource = tool_intent(spec)
    update: dict[str, Any] = {}
    collection = find_collection(state, resource)
    if kind in ("delete", "close") and collection is not None:
        named = _id_argument(arguments, resource, state[collection])
        if named is not None and named[1] in state[collection]:
            plan = plan_deterministic(spec, arguments, state, random.Random(0))
            update = plan.state_update
    _, described = absorb_entities(result, resource, state, authoritative=True)
    return merge_patch(update, described) if described else update
