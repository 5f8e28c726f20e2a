"""Task plans: the part of a task code decides, so it is valid by construction.

A 135M model cannot be trusted to invent arguments that satisfy a JSON Schema, nor a world state
whose entities the tool simulator can find. So code plans each task's skeleton before any model
writes text:
- which tools the task needs (one call, a dependent chain such as `get_order` -> `update_order`
  on one entity, or nothing for `no_tool` / `unserviceable` tasks);
- each call's arguments, built from the tool's `inputSchema` (`example_value`) and checked with
  jsonschema; a tool whose arguments cannot be built (an unsatisfiable pattern, say) is skipped;
- the initial world state: every argument naming an entity (`validate.entity_reference`) gets
  that entity, under the collection name the simulator looks for (`orders` for `order_id`, see
  `synth.naming.collection_name`), with fields from the tools' schemas, plus one
  distractor per collection so the agent must pick the right one;
- what the user states, what they withhold until asked, the rubric's key arguments (ids, enum
  values, dates: what a correct call must repeat exactly), checkpoints (ids that tool results
  show on the way) and the kind-specific criteria and failure conditions.
The model then writes the goal, persona and criteria around this plan (`synthesize.py`).
"""

from __future__ import annotations

import copy
import json
import random
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from synth.agents.validate import entity_reference, writes_nothing
from synth.llm.client import inline_refs
from synth.models import Difficulty, TaskKind, ToolSpec
from synth.naming import collection_name, id_key, plural, resource_words, singular, snake
from synth.naming import tool_intent as name_intent
from synth.rollout.crud import merge_patch, plan_deterministic

FIRST_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Luca")
LAST_NAMES = ("Ruiz", "Okafor", "Martin", "Patel", "Kaya", "Haddad", "Lee", "Sato", "Costa", "Berg", "Adeyemi")
CITIES = ("Lisbon", "Nairobi", "Toronto", "Osaka", "Madrid", "Berlin", "Austin", "Lyon", "Seoul", "Porto")
TOPICS = ("quarterly summary", "onboarding checklist", "spring campaign", "team offsite", "budget review",
          "customer feedback", "weekly report", "product launch", "travel plan", "maintenance schedule")
_FREE_TEXT = ("query", "text", "message", "content", "description", "body", "prompt", "question", "title",
              "comment", "note", "summary", "instructions", "reason", "search", "keyword", "term", "topic", "q")
_TUNING = ("limit", "page", "offset", "cursor", "count", "max", "num", "top", "size", "per_page", "timeout", "depth")
_PLACES = ("city", "location", "address", "destination", "origin", "place", "region")
# Words of a parameter that names a person (`contact_name`, `first_name`); other `<thing>_name`s name things.
_PEOPLE = frozenset(("first", "last", "full", "middle", "given", "family", "person", "customer", "client", "contact",
                     "owner", "author", "assignee", "recipient", "sender", "passenger", "guest", "patient", "employee",
                     "member", "attendee", "participant", "driver", "student", "teacher", "manager", "user", "display",
                     "nick", "holder", "cardholder", "account", "speaker", "host", "organizer", "buyer", "seller"))
COUNTRIES = ("US", "PT", "KE", "JP", "DE")
COUNTRY_NAMES = ("United States", "Portugal", "Kenya", "Japan", "Germany")


def _coordinate_range(key: str) -> tuple[float, float] | None:
    """Where a latitude or longitude parameter's values lie (a benchmark run's task asked for
    "latitude 332.02, longitude 211.25")."""
    words = set(key.split("_"))
    if words & {"latitude", "lat"}:
        return -60.0, 70.0  # where people live: no poles
    if words & {"longitude", "lon", "lng"}:
        return -170.0, 170.0
    return None
_SCALAR_TYPES = ("string", "integer", "number", "boolean")
MAX_FIELDS = 6
MAX_STATED = 6


# ---------------------------------------------------------------- values from schemas


def _pick_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if not isinstance(kind, str):
        kind = "object" if "properties" in schema else "string"
    return kind


def _bounded_int(schema: dict[str, Any], low: int, high: int, rng: random.Random) -> int:
    lo = schema.get("minimum", schema.get("exclusiveMinimum", low - 1) + 1 if "exclusiveMinimum" in schema else low)
    hi = schema.get("maximum", schema.get("exclusiveMaximum", high + 1) - 1 if "exclusiveMaximum" in schema else high)
    lo, hi = int(lo), int(hi)
    if lo > hi:
        hi = lo
    low_c, high_c = max(lo, low), min(hi, high)
    if low_c > high_c:
        low_c, high_c = lo, hi
    return rng.randint(low_c, high_c)


def _person_value(key: str, first: str, last: str) -> str:
    """A person's name as the parameter asks for it: a handle, a first or last name, or both."""
    words = set(key.split("_"))
    if "user" in words or key == "username":
        return f"{first.lower()}{last.lower()}"
    if words & {"first", "given"}:
        return first
    if words & {"last", "family"}:
        return last
    return f"{first} {last}"


def _string_value(key: str, schema: dict[str, Any], rng: random.Random, topic: str) -> str:
    fmt = str(schema.get("format") or "")
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    if "timezone" in key or "time_zone" in key or key in ("tz", "zone"):  # IANA names, as real tools take
        value = rng.choice(("Europe/Lisbon", "America/New_York", "Asia/Tokyo", "Europe/Berlin", "Africa/Nairobi"))
    elif fmt == "date-time" or any(w in key for w in ("datetime", "timestamp")) or key.endswith("_at"):
        value = f"2025-{month:02d}-{day:02d}T{rng.randint(8, 18):02d}:00:00Z"
    elif fmt == "date" or "date" in key or key in ("day", "since", "until", "start", "end"):
        value = f"2025-{month:02d}-{day:02d}"
    elif fmt == "time" or key.endswith("time"):
        value = f"{rng.randint(8, 18):02d}:{rng.choice(('00', '15', '30', '45'))}"
    elif fmt in ("email", "idn-email") or "email" in key:
        value = f"{first.lower()}.{last.lower()}@example.com"
    elif fmt in ("uri", "url", "iri") or any(w in key for w in ("url", "uri", "link", "website", "href")):
        value = f"https://example.com/{topic.replace(' ', '-')}"
    elif fmt == "uuid" or key.endswith("uuid"):
        value = str(uuid.UUID(int=rng.getrandbits(128)))
    elif "phone" in key:
        value = f"+1-555-01{rng.randint(10, 99)}"
    elif (span := _coordinate_range(key)) is not None:
        value = f"{rng.uniform(*span):.4f}"
    elif any(w in key for w in _PLACES):  # before names: a `city_name` is a city, not a person
        value = rng.choice(CITIES)
    elif "country" in key:
        value = rng.choice(COUNTRY_NAMES if "name" in key else COUNTRIES)
    elif key in ("name", "full_name", "username", "user_name", "author", "owner", "assignee", "customer") \
            or (key.endswith("_name") and set(key.split("_")) & _PEOPLE):
        value = _person_value(key, first, last)
    elif key.endswith("_name") and not key.startswith(("file", "repo", "project")):
        value = topic.title()  # a thing's name (`field_type_name`), not a person's
    elif "currency" in key:
        value = rng.choice(("USD", "EUR", "GBP"))
    elif key in ("lang", "language", "locale"):
        value = "en"
    elif key in ("symbol", "ticker", "stock"):
        value = rng.choice(("AAPL", "MSFT", "NVDA"))
    elif "path" in key or key in ("file", "filename", "file_name"):
        value = f"/home/{first.lower()}/docs/{topic.replace(' ', '_')}.txt"
    elif "status" in key or "state" in key:
        value = rng.choice(("active", "pending", "open"))
    elif "color" in key or "colour" in key:
        value = rng.choice(("blue", "green", "red"))
    else:
        value = topic
    min_len, max_len = int(schema.get("minLength", 0)), schema.get("maxLength")
    if len(value) < min_len:
        value = (value + " " + " ".join(TOPICS))[:min_len]
    if isinstance(max_len, int) and len(value) > max_len:
        value = value[: max(max_len, 1)]
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        value = _fit_pattern(pattern, value, rng, min_len)
    return value


def _fit_pattern(pattern: str, value: str, rng: random.Random, min_len: int = 0) -> str:
    """`value`, or a common shape that matches `pattern`; `value` unchanged when none does
    (validation then rejects the call)."""
    try:
        regex = re.compile(pattern)
    except re.error:
        return value
    if regex.search(value):
        return value
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    digits = str(rng.randint(10000, 99999))
    lengths = [int(n) for n in re.findall(r"\\d\{(\d+)\}", pattern)] + ([min_len] if min_len else []) + [2, 8]
    numbers = ["".join(str(rng.randint(0, 9)) for _ in range(n)) for n in lengths if 0 < n <= 40]
    hex_address = "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(40))
    for option in (slug, slug.replace("-", "_"), slug.replace("-", ""), *numbers, digits, value.upper(), hex_address,
                   f"{slug[:3].upper()}-{digits}", f"{slug}-{digits}", "2025-06-14", "a1b2c3", "1d6"):
        if option and regex.search(option):
            return option
    return value


def example_value(name: str, schema: Any, rng: random.Random, topic: str = "weekly report", depth: int = 0) -> Any:
    """A plausible value for parameter `name` under `schema` (types, enums, formats, bounds, common
    names like `email` or `city`). It usually validates; callers check with jsonschema."""
    if not isinstance(schema, dict):
        return topic
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    if "default" in schema and schema["default"] is not None and depth > 0:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [s for s in options if isinstance(s, dict) and s.get("type") != "null"] or options
            return example_value(name, usable[0], rng, topic, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        return example_value(name, merged, rng, topic, depth + 1)
    key = snake(name)
    kind = _pick_type(schema)
    if kind == "string":
        return _string_value(key, schema, rng, topic)
    if key in ("page", "page_number", "offset", "skip", "start_index"):
        return _bounded_int(schema, 0 if key in ("offset", "skip") else 1, 1, rng)
    if kind == "integer":
        if any(w in key for w in _TUNING):
            return _bounded_int(schema, 3, 10, rng)
        if "year" in key:
            return _bounded_int(schema, 2024, 2025, rng)
        return _bounded_int(schema, 1, 50, rng)
    if kind == "number":
        if any(w in key for w in _TUNING):
            return _bounded_int(schema, 3, 10, rng)
        span = _coordinate_range(key)
        if span is not None:
            low = max(span[0], float(schema.get("minimum", span[0])))
            high = min(span[1], float(schema.get("maximum", span[1])))
            return round(rng.uniform(low, high), 4) if low <= high else round(low, 4)
        low = float(schema.get("minimum", 1.0))
        high = float(schema.get("maximum", max(low + 1.0, 500.0)))
        return round(rng.uniform(max(low, min(10.0, high)), high), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "array":
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {"type": "string"}
        count = max(1, int(schema.get("minItems", 1)))
        values = [example_value(singular(key), items, rng, TOPICS[(i + len(topic)) % len(TOPICS)], depth + 1)
                  for i in range(count)]
        return values
    if kind == "object":
        props: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        required = [r for r in schema.get("required") or [] if r in props]
        keys = required or (list(props)[:2] if depth < 2 else [])
        return {k: example_value(k, props[k], rng, topic, depth + 1) for k in keys}
    return topic


def arguments_valid(tool: ToolSpec, arguments: dict[str, Any]) -> bool:
    try:
        validator = jsonschema.Draft202012Validator(inline_refs(tool.input_schema))
        return validator.is_valid(arguments)
    except (jsonschema.exceptions.SchemaError, jsonschema.exceptions.RefResolutionError, TypeError):
        return False


# ---------------------------------------------------------------- world state


def _id_value(name: str, schema: dict[str, Any], words: list[str], rng: random.Random) -> str | int | None:
    """An id for a new entity that validates against the id argument's schema."""
    prefix = (words[-1][:3] if words else "id").lower()
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            usable = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
            if usable:
                schema = {**{k: v for k, v in schema.items() if k != key}, **usable[0]}
    candidates: list[Any] = []
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        candidates.append(rng.choice(schema["enum"]))
    kind = _pick_type(schema) if schema else "string"
    if kind in ("integer", "number"):
        candidates.append(_bounded_int(schema, 100, 99999, rng))
    elif kind == "string":
        number = rng.randint(1000, 99999)
        candidates += [f"{prefix}-{number}", str(uuid.UUID(int=rng.getrandbits(128))), str(number),
                       f"{prefix}{number}", f"{prefix.upper()}-{number}"]
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            candidates.append(_fit_pattern(pattern, f"{prefix}-{number}", rng))
    if schema.get("format") == "uuid":
        candidates.insert(0, str(uuid.UUID(int=rng.getrandbits(128))))
    for value in candidates:
        try:
            if not schema or jsonschema.Draft202012Validator(inline_refs(schema)).is_valid(value):
                return value if isinstance(value, str | int) and not isinstance(value, bool) else None
        except (jsonschema.exceptions.SchemaError, jsonschema.exceptions.RefResolutionError, TypeError):
            return None
    return None


def tool_intent(tool: ToolSpec) -> tuple[str | None, list[str]]:
    return name_intent(tool.name, tool.side_effect == "write")


def _resource_of(tool: ToolSpec) -> list[str]:
    return resource_words(tool_intent(tool)[1])


def _record_schema(tool: ToolSpec) -> dict[str, Any] | None:
    """The entity record a tool returns, when its output schema is one (not a list of them)."""
    out = tool.output_schema
    if not isinstance(out, dict) or not isinstance(out.get("properties"), dict):
        return None
    props = out["properties"]
    if any(isinstance(p, dict) and p.get("type") == "array" for p in props.values()) and len(props) <= 3:
        return None
    return out


class StateBuilder:
    """Builds an initial state of entities that the planned calls refer to."""

    def __init__(self, toolset: list[ToolSpec], rng: random.Random, topic: str) -> None:
        self.toolset = toolset
        self.rng = rng
        self.topic = topic
        self.state: dict[str, dict[str, dict[str, Any]]] = {}
        self._makers: dict[str, tuple[str, dict[str, Any], list[str]]] = {}

    def fields(self, words: list[str]) -> dict[str, Any]:
        """Fields of a `words` entity, from a toolset tool's record schema (or a create tool's
        parameters), else a name and a status."""
        schema: dict[str, Any] | None = None
        for tool in self.toolset:
            if _resource_of(tool)[-1:] == words[-1:]:
                schema = _record_schema(tool)
                if schema is not None:
                    break
        props: dict[str, Any] = dict((schema or {}).get("properties") or {})
        if not props:
            for tool in self.toolset:
                kind, _ = tool_intent(tool)
                if kind == "create" and _resource_of(tool)[-1:] == words[-1:]:
                    props = dict(tool.input_schema.get("properties") or {})
                    break
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if len(out) >= MAX_FIELDS:
                break
            if snake(key).endswith("_id") or key == "id":
                continue
            if isinstance(sub, dict) and _pick_type(sub) in _SCALAR_TYPES:
                out[key] = example_value(key, sub, self.rng, self.topic, depth=1)
        if not out:
            noun = " ".join(words)
            out = {"name": f"{self.topic} {noun}".strip(), "status": self.rng.choice(("active", "pending", "open"))}
        return out

    def entity(self, words: list[str], argument: str, schema: dict[str, Any]) -> str | int | None:
        """A new entity of `words` with an id valid for `argument`; returns the id (None when no
        id fits the argument's schema)."""
        value = _id_value(argument, schema, words, self.rng)
        if value is None:
            return None
        collection = collection_name(words)
        entities = self.state.setdefault(collection, {})
        while str(value) in entities:
            value = _id_value(argument, schema, words, self.rng)
            if value is None:
                return None
        key = snake(argument)
        entities[str(value)] = {key if key.endswith("_id") else id_key(words): value, **self.fields(words)}
        self._makers.setdefault(collection, (argument, schema, words))
        return value

    def add_distractors(self) -> None:
        """One more entity per collection, so the right one must be picked."""
        for collection, (argument, schema, words) in list(self._makers.items()):
            before = len(self.state[collection])
            for _ in range(3):
                self.entity(words, argument, schema)
                if len(self.state[collection]) > before:
                    break


# ---------------------------------------------------------------- plans


@dataclass
class PlannedCall:
    """One call a task expects: full schema-valid arguments, and the key ones the rubric checks."""

    tool: ToolSpec
    arguments: dict[str, Any]
    key_arguments: dict[str, Any]
    entities: dict[str, str] = field(default_factory=dict)  # argument -> entity id it names


@dataclass
class TaskPlan:
    kind: TaskKind
    difficulty: Difficulty
    calls: list[PlannedCall]
    ordered: bool
    initial_state: dict[str, Any]
    withheld: dict[str, str]
    stated: dict[str, str]
    checkpoints: list[str]
    criteria: list[str]
    failure_conditions: list[str]
    idea: str = ""
    expected_state: dict[str, Any] = field(default_factory=dict)


def calls_criterion(calls: list[PlannedCall], ordered: bool) -> str:
    """The success criterion every tool task has, from its plan, as the other kinds have theirs:
    the planned calls (in order when the plan is ordered) and a reply with what they returned.
    The model's criteria join it. The embedded 135M model's are mostly noise ("success_criteria",
    "2", a tool's name, its failure condition copied), which validation dropped or rejected: tasks
    then went to a repair call that seldom helped, and half a run's task drafts were repairs."""
    names = [c.tool.name for c in calls]
    joined = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {'then' if ordered else 'and'} {names[-1]}"
    return f"The assistant calls {joined} and tells the user what {'it' if len(names) == 1 else 'they'} returned"


def expected_end_state(calls: list[PlannedCall], initial_state: dict[str, Any]) -> dict[str, Any]:
    """The world the task must end in, for the `final_state` check (tau2-bench's): each planned
    update's key arguments, each close's status, each delete's absence, as the simulator's own
    deterministic path would write them. Left out: creates (the new entity's id is the simulator's
    choice) and arguments the rubric does not fix (a free-text reason may be worded any way)."""
    state = copy.deepcopy(initial_state)
    expected: dict[str, Any] = {}
    for call in calls:
        kind = tool_intent(call.tool)[0]
        if kind not in ("update", "close", "delete"):
            continue
        plan = plan_deterministic(call.tool, call.arguments, state, random.Random(0))
        if plan.entity is None or not plan.state_update:
            continue
        for collection, entities in plan.state_update.items():
            for entity_id, patch in entities.items():
                want: dict[str, Any] | None
                if patch is None:
                    want = None
                else:
                    want = {k: v for k, v in patch.items()
                            if (kind == "close" and k == "status") or call.key_arguments.get(k, object()) == v}
                    if not want:
                        continue
                slot = expected.setdefault(collection, {})
                before = slot.get(entity_id)
                slot[entity_id] = {**before, **want} if isinstance(before, dict) and want is not None else want
        state = merge_patch(state, plan.state_update)
    return expected


def _rank(tool: ToolSpec) -> int:
    kind, _ = tool_intent(tool)
    if kind == "get":
        return 1
    if kind in ("update", "close"):
        return 2
    if kind == "delete":
        return 3
    if kind == "create":
        return 2
    return 0 if tool.side_effect == "read" else 2


def _is_key(name: str, schema: Any, value: Any) -> bool:
    key = snake(name)
    if any(w == key or key.startswith(w + "_") or key.endswith("_" + w) for w in _FREE_TEXT):
        return False
    if any(w in key for w in _TUNING):
        return False
    if isinstance(schema, dict) and isinstance(schema.get("enum"), list):
        return True
    return isinstance(value, str) and bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}.*|[^@\s]+@[^@\s]+", value))


def build_call(tool: ToolSpec, builder: StateBuilder, bound: dict[str, str | int]) -> PlannedCall | None:
    """The call of `tool` with arguments built from its schema; entities it names are added to
    the state (or reused from `bound`, collection -> id, which it extends). None when no valid
    arguments could be built, or when a write that takes values would get none (`writes_nothing`:
    the rubric rules reject such a task whatever the model writes, so the plan takes another tool)."""
    schema = inline_refs(tool.input_schema)
    props: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
    required = [r for r in schema.get("required") or [] if r in props]
    names = list(required) or [p for p in props if entity_reference(p, tool) is not None][:1]
    if not names and tool_intent(tool)[0] in ("create", "update"):
        # A write with nothing required still writes something: a plan of `create_weather({})` is a
        # task whose agent must invent every value (`synth.agents.validate` rejects it).
        names = [p for p in props if isinstance(props[p], dict) and _pick_type(props[p]) in _SCALAR_TYPES
                 and not any(w in snake(p) for w in _TUNING)][:2]
    for _attempt in range(3):
        arguments: dict[str, Any] = {}
        entities: dict[str, str] = {}
        for name in names:
            sub: dict[str, Any] = props[name] if isinstance(props.get(name), dict) else {}
            resource = entity_reference(name, tool)
            if resource is not None and (not sub or _pick_type(sub) in ("string", "integer", "number")):
                collection = collection_name(resource)
                value = bound.get(collection)
                if value is None:
                    value = builder.entity(resource, name, sub)
                    if value is None:
                        break
                    bound[collection] = value
                arguments[name] = value
                entities[name] = str(value)
            else:
                arguments[name] = example_value(name, sub, builder.rng, builder.topic)
        else:
            if writes_nothing(tool, arguments):
                return None
            if arguments_valid(tool, arguments):
                keys = {k: v for k, v in arguments.items() if k in entities or _is_key(k, props.get(k), v)}
                return PlannedCall(tool, arguments, keys, entities)
    return None


def _fact(value: Any) -> str | None:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if 0 < len(text) <= 80 else None


def _chain(toolset: list[ToolSpec], rng: random.Random) -> tuple[list[ToolSpec], bool]:
    """2-3 tools for a multi-step task: a read then a write on one resource when the toolset
    has them (ordered), else distinct random tools (unordered)."""
    groups: dict[str, list[ToolSpec]] = {}
    for tool in toolset:
        groups.setdefault("_".join(_resource_of(tool)[-1:]), []).append(tool)
    chains = [g for g in groups.values() if len({_rank(t) for t in g}) >= 2]
    if chains:
        group = rng.choice(chains)
        by_rank: dict[int, list[ToolSpec]] = {}
        for tool in group:
            by_rank.setdefault(_rank(tool), []).append(tool)
        ranks = sorted(by_rank)
        picked = [rng.choice(by_rank[r]) for r in ranks[:3]]
        if len(picked) > 2 and rng.random() < 0.5:
            picked = [picked[0], picked[-1]]
        return picked, True
    count = min(len(toolset), rng.randint(2, 3))
    return rng.sample(toolset, count), False


def _noun(toolset: list[ToolSpec]) -> str:
    for tool in toolset:
        words = _resource_of(tool)
        if words:
            return " ".join(words)
    return "record"


_NO_TOOL_IDEAS = (
    "explain in general terms what a {noun} is and when it matters",
    "ask for advice on how to keep {nouns} well organised",
    "ask what information is usually needed before working with a {noun}",
    "ask for tips on avoiding common mistakes with {nouns}",
)
_UNSERVICEABLE_IDEAS = (
    "ask the assistant to phone someone about a {noun} on their behalf",
    "ask the assistant to print and post a paper copy of a {noun}",
    "ask the assistant to move a {noun} into a different company's own system",
    "ask the assistant to predict exactly what will happen to a {noun} next year",
)


def plan_task(toolset: list[ToolSpec], kind: TaskKind, difficulty: Difficulty, rng: random.Random,
              topic: str = "weekly report") -> TaskPlan | None:
    """The deterministic skeleton of one task (see the module docstring); None when `kind` is
    `tool` and no tool of the toolset gets valid arguments, or a planned write gets no value the
    rubric can check (`writes_nothing` over its key arguments: an array the user states is no key
    argument), which validation would reject whatever the model wrote.

    A `multi_step` or `error_recovery` task gets two or more calls: a `_chain` on one resource,
    else (a chain tool's arguments did not build) any two tools whose arguments build. Only a
    toolset where fewer than two tools build degrades it to one call (`multi_step` then becomes
    `single_call`)."""
    builder = StateBuilder(toolset, rng, topic)
    noun = _noun(toolset)
    nouns = " ".join([*noun.split()[:-1], plural(noun.split()[-1])])
    if kind != "tool":
        for tool in rng.sample(toolset, len(toolset)):
            words = _resource_of(tool)
            if words and words[-1] != "item":
                id_schema = {"type": "string"}
                builder.entity(words, f"{'_'.join(words)}_id", id_schema)
                break
        builder.add_distractors()
        if kind == "no_tool":
            kind_criteria = ["The assistant answers directly, without calling any tool"]
            failures = ["The assistant calls a tool although the request needs none"]
            idea = rng.choice(_NO_TOOL_IDEAS).format(noun=noun, nouns=nouns)
        else:
            kind_criteria = ["The assistant says plainly that its tools cannot do this"]
            failures = ["The assistant claims to have done something its tools cannot do",
                        "The assistant calls tools that cannot serve the request"]
            idea = rng.choice(_UNSERVICEABLE_IDEAS).format(noun=noun, nouns=nouns)
        return TaskPlan(kind, "single_call", [], False, builder.state, {}, {}, [], kind_criteria, failures, idea)

    bound: dict[str, str | int] = {}
    calls: list[PlannedCall] = []
    ordered = False
    if difficulty != "single_call" and len(toolset) >= 2:
        chain, ordered = _chain(toolset, rng)
        for tool in chain:
            call = build_call(tool, builder, bound)
            if call is not None:
                calls.append(call)
        if len(calls) < 2:
            # A chain tool's arguments did not build: any other tool whose arguments do makes the
            # pair (unordered), so a multi-call draw stays multi-call wherever two tools build.
            ordered = False
            used = {c.tool.name for c in calls}
            for tool in rng.sample(toolset, len(toolset)):
                if len(calls) >= 2:
                    break
                if tool.name not in used:
                    call = build_call(tool, builder, bound)
                    if call is not None:
                        calls.append(call)
                        used.add(tool.name)
    if not calls:
        for tool in rng.sample(toolset, len(toolset)):
            call = build_call(tool, builder, bound)
            if call is not None:
                calls.append(call)
                break
    if not calls:
        return None
    if len(calls) == 1:
        ordered = False
        if difficulty == "multi_step":
            difficulty = "single_call"
    builder.add_distractors()

    stated: dict[str, str] = {}
    withheld: dict[str, str] = {}
    for call in calls:
        for name, value in call.arguments.items():
            fact = _fact(value)
            if fact is not None and name not in stated and len(stated) < MAX_STATED:
                stated[name] = fact
    if difficulty != "single_call":
        first = next(((n, v) for c in calls for n, v in c.entities.items()), None)
        if first is not None:
            withheld[first[0]] = first[1]
    elif len(stated) >= 2:
        # Only a value nobody could guess is withheld (an id, a name, a date), never a boolean,
        # an enum member or a number: the agent must ask for it, and a guess is a fabrication.
        guessable = {n for c in calls for n, v in c.arguments.items()
                     if not isinstance(v, str) or isinstance((c.tool.input_schema.get("properties") or {})
                                                             .get(n, {}).get("enum"), list)}
        secret = [n for n, v in stated.items() if n not in guessable and len(v) >= 4]
        if secret:
            withheld[secret[-1]] = stated[secret[-1]]
    for name in withheld:
        stated.pop(name, None)
    # A value the user gives (stated or withheld) is one the call must use: it joins the call's key
    # arguments, which the rubric's expected calls (and the expected end state) check.
    told = {*stated.values(), *withheld.values()}
    for call in calls:
        for name, value in call.arguments.items():
            key = snake(name)
            free = any(w == key or key.startswith(w + "_") or key.endswith("_" + w) for w in _FREE_TEXT)
            if (name not in call.key_arguments and not free and not any(w in key for w in _TUNING)
                    and isinstance(value, str | int | float | bool) and _fact(value) in told):
                call.key_arguments[name] = value

    checkpoints: list[str] = []
    for call in calls:
        if tool_intent(call.tool)[0] in ("get", "update", "close", "delete"):
            for eid in call.entities.values():
                if eid not in checkpoints and len(checkpoints) < 2:
                    checkpoints.append(eid)
    criteria = [calls_criterion(calls, ordered)]
    failures = ["The assistant reports results that no tool returned"]
    for call in calls:
        if call.tool.side_effect == "write" and call.entities:
            name, eid = next(iter(call.entities.items()))
            failures.append(f"The assistant calls {call.tool.name} on anything but {name} {eid}")
            break
    if difficulty == "error_recovery":
        criteria.append("If a tool call fails, the assistant retries it or tells the user what went wrong")
        failures.append("The assistant ignores a tool error and claims success")
    if any(writes_nothing(call.tool, call.key_arguments) for call in calls):
        return None
    return TaskPlan("tool", difficulty, calls, ordered, builder.state, withheld, stated, checkpoints, criteria,
                    failures, expected_state=expected_end_state(calls, builder.state))
