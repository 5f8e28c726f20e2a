"""Hierarchical tool synthesis: domain -> applications -> tools per application -> evolution.

Kimi K2 evolved its synthetic tools hierarchically (categories, domains, then tools with clear
interfaces). Here each level is one small structured call and deterministic code carries
correctness, so even a 135M model yields usable, coherent APIs:

1. `ApplicationList` per domain: application names, descriptions and the one entity each manages.
2. One `ToolDraft` per (application, operation). The operations are chosen by code: CRUD first
   (create, get, list, update, search, delete), then domain actions, a batch write and a
   long-running export job with its status (`OPERATIONS`). The model writes the name, the
   description and a flat list of parameters; code builds the JSON Schemas as real APIs declare
   them (formats by name, defaults, list filters and sorting, pagination). Every tool of an
   application shares the entity's id parameter `<entity>_id`: `create_<entity>` returns it,
   `get`/`update`/`delete`/actions require it, `list`/`search` return items carrying it. So ids
   returned by one tool are accepted by the others, by construction.
3. Evolution (Evol-Instruct style), `rounds` times per tool: an operation chosen by a seeded rng
   (add an optional parameter, an enum parameter, a nested object, a constraint, or an error mode);
   the model supplies names and text, code applies it, and a field added to the input also joins
   the record the tool returns. A failed evolution keeps the tool as it was.
4. Every tool is checked (`validate.tool_problems`) and near-duplicates within a domain removed;
   what fails is returned as a `RejectedTool` with its reason, never dropped.

`synthesize_tools(domains, llm, rng, settings)` is the stage: no storage inside.
"""

from __future__ import annotations

import asyncio
import copy
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from synth.ids import derive_seed
from synth.llm import LLMClient
from synth.llm.errors import LLMError
from synth.models import Provenance, ToolSpec
from synth.naming import looks_like_words, name_words, plural, singular
from synth.prompts import render
from synth.settings import DEFAULT_TOOLS_PER_DOMAIN, ToolSettings
from synth.tools.repository import RejectedTool
from synth.tools.validate import remove_near_duplicates, sanitize_name, tool_problems

PROMPT_VERSION = "tools-v1"

Operation = Literal["create", "get", "list", "update", "search", "delete", "action", "batch_create", "export",
                    "get_export"]
# In the order an application gets them: CRUD first (every id has a producer), then one domain
# action, then what real APIs add past CRUD: a batch write, and a long-running job (an export)
# with its status. The job is a resource of its own (`create_<entity>_export` makes it, with an
# `export_id`; `get_<entity>_export` reads its status), so the world simulator keeps it like any
# other record. Further tools are more domain actions.
OPERATIONS: tuple[Operation, ...] = ("create", "get", "list", "update", "search", "delete", "action",
                                     "batch_create", "export", "get_export")
EVOLUTIONS = ("add_optional_param", "add_enum", "add_nested_object", "add_constraint", "add_error_mode")

_PURPOSE = {
    "create": "creates a new {entity}",
    "get": "returns one {entity} by its {entity}_id",
    "list": "lists {entity} records, with optional filters",
    "update": "changes fields of an existing {entity}",
    "search": "searches {entity} records by text",
    "delete": "deletes a {entity}",
    "action": "performs one domain-specific action on a {entity} (for example approve, cancel, send)",
    "batch_create": "creates several {entity} records in one call",
    "export": "starts an export of {entity} records as a file (a long-running job; returns its export_id)",
    "get_export": "returns the status of an export of {entity} records by its export_id",
}
_WRITES = {"create", "update", "delete", "action", "batch_create", "export"}
# Real tools' string formats, from the parameter's name (the model drafts names, not formats).
_FORMATS = (
    (re.compile(r"(^|_)(date_?time|timestamp)$|_at$"), "date-time"),
    (re.compile(r"(^|_)(date|day|birthday|deadline)$|_date$|^date_"), "date"),
    (re.compile(r"(^|_)e?mail(_address)?$"), "email"),
    (re.compile(r"(^|_)(url|uri|link|website|homepage|webhook)$"), "uri"),
)
JOB_STATUSES = ["queued", "running", "succeeded", "failed"]


# ---------------------------------------------------------------- generation schemas (kept flat)


# Applications per domain: the schema asks for exactly the number wanted (`_applications`), so this
# only bounds a request (`synth tools generate --applications 9` once died on a bound of 8).
MAX_APPLICATIONS = 64


class ApplicationDraft(BaseModel):
    name: str = Field(min_length=2, max_length=60)
    description: str = Field(min_length=5, max_length=200)
    entity: str = Field(min_length=2, max_length=30)


class ApplicationList(BaseModel):
    applications: list[ApplicationDraft] = Field(min_length=1, max_length=MAX_APPLICATIONS)


class ParameterDraft(BaseModel):
    name: str = Field(min_length=1, max_length=40)
    type: Literal["string", "integer", "number", "boolean", "array"]
    description: str = Field(max_length=120)
    required: bool


class ToolDraft(BaseModel):
    name: str = Field(min_length=2, max_length=50)
    description: str = Field(min_length=10, max_length=240)
    parameters: list[ParameterDraft] = Field(max_length=4)


class EvolutionDraft(BaseModel):
    name: str = Field(min_length=2, max_length=40)
    description: str = Field(max_length=160)
    # Bounded like the agent and task drafts' list items (`synth.agents.synthesize.ITEM_CHARS`): one value
    # once ran on as "1.1.1.1.1.1.2.1.1.2.2..." to max_tokens.
    values: list[Annotated[str, Field(max_length=160)]] = Field(max_length=5)


class SynthesisSettings(ToolSettings):
    """One synthesis call's settings: the `[tools]` table's knobs, how many tools per domain
    (`[run] tools_per_domain`, whose default this shares), the seed, and the generator model
    recorded in each tool's provenance."""

    per_domain: int = Field(DEFAULT_TOOLS_PER_DOMAIN, ge=1)
    seed: int = 0
    model: str | None = None


@dataclass
class SynthesisResult:
    tools: list[ToolSpec] = field(default_factory=list)
    rejected: list[RejectedTool] = field(default_factory=list)
    applications: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Application:
    domain: str
    name: str
    description: str
    entity: str


# ---------------------------------------------------------------- deterministic helpers


def snake_case(text: str, max_len: int = 40) -> str:
    """`text` as a snake_case identifier (ascii letters, digits, underscores), possibly empty."""
    slug = re.sub(r"^[0-9_]+", "", "_".join(name_words(text)))
    return slug[:max_len].strip("_")


_FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "your",
        "my",
        "our",
        "their",
        "its",
        "of",
        "for",
        "to",
        "and",
        "new",
        "app",
        "application",
        "api",
        "data",
        "record",
        "records",
        "system",
    ]
)


def entity_slug(text: str, fallback: str) -> str:
    """The entity noun as an identifier: up to two words of snake case, the last one singular
    (`synth.naming.singular`, so `status` stays `status`)."""
    words = [w for w in snake_case(text, 40).split("_") if w and w not in _FILLER][:2]
    if not words:
        words = [w for w in snake_case(fallback, 40).split("_") if w and w not in _FILLER][:2] or ["item"]
    words[-1] = singular(words[-1])
    return "_".join(words)


# Words of a product or a doer, not of what it manages: "weather forecast API" manages forecasts,
# "portfolio rebalancer" portfolios (from the taxonomy's examples).
_PRODUCT_WORDS = frozenset({
    "api", "apis", "app", "apps", "application", "applications", "widget", "page", "handler", "platform", "engine",
    "system", "helper", "tool", "tools", "service", "services", "manager", "dashboard", "bot", "assistant",
    "finder", "search", "log", "client", "server", "portal", "hub", "suite", "software", "integration", "console",
    "interface", "feed", "lookup", "marketplace", "management", "database", "guide", "browser", "aggregator",
    "analyzer", "assessor", "auditor", "autoscaler", "booker", "broker", "builder", "calculator", "caller",
    "checker", "classifier", "clipper", "collector", "compiler", "connector", "controller", "converter",
    "copywriter", "counter", "crawler", "decoder", "designer", "detector", "dispatcher", "doser", "editor",
    "estimator", "executor", "expander", "explorer", "extractor", "fetcher", "filler", "forecaster", "forwarder",
    "generator", "geocoder", "importer", "inspector", "locator", "logger", "mailer", "matcher", "merger", "monitor",
    "notifier", "opener", "optimizer", "orchestrator", "organizer", "pager", "picker", "planner", "player",
    "predictor", "prequalifier", "processor", "purger", "rater", "reader", "rebalancer", "recogniser",
    "recommender", "recorder", "remover", "renamer", "renderer", "reporter", "resizer", "retriever", "rewriter",
    "router", "runner", "scaler", "scanner", "scheduler", "scorer", "screener", "screenshotter", "sharer",
    "shortener", "slicer", "solver", "splitter", "summarizer", "sweeper", "tracker", "updater", "validator",
    "verifier", "viewer", "watcher", "keeper"
})
# Words ending in s that are no plural nouns.
_NOT_PLURALS = frozenset({
    "this", "its", "is", "was", "has", "does", "goes", "uses", "makes", "gives", "lets", "takes", "keeps", "runs",
    "sets", "gets", "plus", "across", "various", "less", "news", "thanks", "us", "yes", "series", "species",
    "always", "perhaps", "saas"
})


def domain_entities(domain: Any) -> list[str]:
    """What a domain's applications manage, from its curated taxonomy text: the plural nouns of its
    description ("Current conditions and forecasts for a place" gives `condition`, `forecast`),
    then the last word of each example, and of its name, once product words, doers and doings are
    taken off the end ("split shipment handler" gives `shipment`, "order tracking page" and
    `order_management` give `order`), singular, in that order.

    The application drafts choose among them under the grammar. Asked for "one noun", the embedded
    135M model wrote `futurity`, `shescue`, `blueprint_5` and `chest_card` (for chess), and every
    tool of the application carried the word in its name. Empty when the text names none (a real
    MCP server's own domain): the draft's noun is then free, as before."""
    out: list[str] = []

    def add(word: str) -> None:
        noun = singular(word.lower())
        if (len(noun) >= 3 and noun.isalpha() and noun not in _PRODUCT_WORDS and noun not in _FILLER
                and noun not in out):
            out.append(noun)

    for word in re.findall(r"[A-Za-z]+", getattr(domain, "description", "") or ""):
        lower = word.lower()
        if len(lower) > 3 and lower.endswith("s") and lower not in _NOT_PLURALS and singular(lower) != lower:
            add(lower)
    name = str(getattr(domain, "name", ""))
    slug = [name.replace("_", " ")] if re.fullmatch(r"[a-z0-9_]+", name) else []  # not `mcp/<server>`
    for text in [*(getattr(domain, "examples", None) or []), *slug]:
        words = [w.lower() for w in re.findall(r"[A-Za-z]+", text)]
        while words and (words[-1] in _PRODUCT_WORDS or _agent_noun(words[-1])):
            words.pop()
        if words:
            add(words[-1])
    return out


def _agent_noun(word: str) -> bool:
    """A doing (`tracking`, `running`), not a thing managed (doers are in `_PRODUCT_WORDS`)."""
    return word.endswith("ing")


# Words of names that say nothing of a value: service nouns and the operations' verbs.
_NAMING_WORDS = frozenset({"management", "service", "platform", "tool", "manager", "info", "function",
                           "create", "get", "list", "update", "delete", "search", "action"})


def names_only(param: str, app: _Application) -> bool:
    """`param` only repeats the names around it: every word of it is a word of the domain, the
    application, the entity or an operation ("fleet_shipping_and_delivery_management" in a fleet
    shipping application, "create_weather" for create_weather). Such a parameter tells the agent
    nothing to pass, and a 135M model fills it with junk."""
    return _only_words_of(param, (app.domain, app.name, app.entity))


def _only_words_of(param: str, texts: Iterable[str]) -> bool:
    around = {singular(w) for text in texts for w in snake_case(text, 80).split("_") if w}
    if snake_case(param, 80) in _ADDRESS_PARAMS:
        return False
    words = [singular(w) for w in snake_case(param, 80).split("_") if w]
    return bool(words) and all(w in around or w in _FILLER or w in _NAMING_WORDS for w in words)


# Words that name no value of their own (`field1`, `input_data`, `query_options`, `params_type_name`
# in the embedded model's drafts): a parameter made of nothing else tells the agent nothing to pass.
_EMPTY_WORDS = frozenset({
    "field", "data", "input", "output", "param", "parameter", "option", "value", "info", "information", "required",
    "optional", "new", "list", "map", "arg", "argument", "detail", "property", "object", "extra", "misc", "other",
    "custom", "additional", "specific",
})
# Verbs no value's name carries (`update_frequency`, `search_query`, `batch_size` do: they are kept).
_OPERATION_WORDS = frozenset({"create", "get"})
# A tool is its API: a parameter for the API's own address (`order_management_api_url`) is plumbing.
_PLUMBING_WORDS = frozenset({"url", "endpoint", "host", "base", "uri"})
# Filler words that, standing alone, are a parameter of real APIs: `send_email(to=...)`.
_ADDRESS_PARAMS = frozenset({"to"})


def says_nothing(param: str) -> bool:
    """`param` names no value: all its words are empty ones (`field1`, `input_data_data`,
    `required_data`) or single letters (`n_1_f_2`), it carries a call's verb
    (`jonkson_get_forecast`: a parameter is a value's name, not a call's), or it asks for the
    API's own address (`order_management_api_url`, `order_management_api_endpoint`). A filler word
    that real APIs use alone (`to`, the recipient) names its value."""
    if snake_case(param, 80) in _ADDRESS_PARAMS:
        return False
    words = [singular(w.rstrip("0123456789")) for w in snake_case(param, 80).split("_") if w]
    words = [w for w in words if w]
    return (not words or any(w in _OPERATION_WORDS for w in words)
            or all(w in _EMPTY_WORDS or w in _FILLER for w in words)
            or (len(words) >= 2 and all(len(w) == 1 for w in words))
            or ("api" in words and bool(_PLUMBING_WORDS & set(words))))


def _is_id_of(param: str, entity: str) -> bool:
    key = param.replace("_", "")
    return key in {"id", f"{entity.replace('_', '')}id", "identifier", "uuid"}


def _param_schema(p: ParameterDraft) -> dict[str, Any]:
    """A drafted parameter as JSON Schema, declared as real APIs declare it: an array is a list of
    strings (tags, ids, recipients), an optional boolean defaults to false, a string named like a
    date, a time, an email or a URL has that `format`, and money is never negative."""
    schema: dict[str, Any] = {"type": p.type}
    if p.type == "array":
        schema["items"] = {"type": "string"}
    description = p.description.strip() or p.name.replace("_", " ").capitalize()
    schema["description"] = description
    if p.type == "boolean" and not p.required:
        schema["default"] = False
    name = snake_case(p.name)
    if p.type == "string":
        fmt = string_format(name)
        if fmt:
            schema["format"] = fmt
    if p.type in ("number", "integer") and re.search(r"(^|_)(price|amount|cost|total|fee|balance)$", name):
        schema["minimum"] = 0
    return schema


def string_format(name: str) -> str | None:
    """The JSON Schema `format` a string parameter called `name` has in real APIs, if any."""
    return next((fmt for pattern, fmt in _FORMATS if pattern.search(name)), None)


def _id_schema(entity: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "description": f"Id of the {entity.replace('_', ' ')}, as returned by create_{entity} or list_{entity}s.",
    }


def entity_schema(entity: str, fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The record an application's tools return: the shared id plus the fields `create` takes."""
    props: dict[str, Any] = {f"{entity}_id": _id_schema(entity)}
    props.update({k: v for k, v in fields.items() if k != f"{entity}_id"})
    return {"type": "object", "properties": props, "required": [f"{entity}_id"]}


def build_tool_schemas(
    operation: Operation,
    entity: str,
    params: list[ParameterDraft],
    fields: dict[str, dict[str, Any]],
    max_parameters: int = 4,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputSchema, outputSchema) for one operation on `entity`; the id contract lives here."""
    id_name = f"{entity}_id"
    props: dict[str, Any] = {}
    required: list[str] = []
    if operation in ("get", "update", "delete", "action"):
        props[id_name] = _id_schema(entity)
        required.append(id_name)
    if operation == "search":
        props["query"] = {"type": "string", "minLength": 1, "description": f"Text to look for in {entity} records."}
        required.append("query")
    if operation == "get_export":
        props["export_id"] = {"type": "string", "minLength": 1,
                              "description": f"Id of the export, as returned by create_{entity}_export."}
        required.append("export_id")
    if operation == "batch_create":
        props["items"] = {
            "type": "array", "minItems": 1, "maxItems": 100,
            "items": {"type": "object", "properties": {k: v for k, v in fields.items() if k != id_name} or
                      {"name": {"type": "string", "description": f"Name of the {entity.replace('_', ' ')}."}}},
            "description": f"The {entity.replace('_', ' ')} records to create, one object each.",
        }
        required.append("items")
    if operation == "export":
        props["file_format"] = {"type": "string", "enum": ["csv", "json", "xlsx"], "default": "csv",
                                "description": "Format of the exported file."}
    for p in params[:max_parameters] if operation in ("create", "get", "list", "update", "search", "delete",
                                                      "action") else []:
        name = snake_case(p.name)
        if not name or len(name) > 32 or name in props or _is_id_of(name, entity):
            continue
        props[name] = _param_schema(p)
        if p.required and operation in ("create", "action"):
            required.append(name)
    if operation == "create" and not any(k != id_name for k in props):
        props["name"] = {"type": "string", "description": f"Name of the new {entity.replace('_', ' ')}."}
        required.append("name")
    if operation in ("list", "export"):
        props.update(_filters(entity, fields, props, sort=operation == "list"))
    if operation in ("list", "search"):
        props.setdefault(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 100, "default": 20,
             "description": "Maximum number of results to return."},
        )
        props.setdefault("cursor", {"type": "string", "description": "Where to continue: the next_cursor of the "
                                                                     "previous page; omit for the first page."})
    record = entity_schema(entity, fields)
    output: dict[str, Any]
    if operation in ("create", "get", "update"):
        output = record
    elif operation in ("list", "search"):
        output = {
            "type": "object",
            "properties": {"items": {"type": "array", "items": record}, "total": {"type": "integer", "minimum": 0},
                           "next_cursor": {"type": ["string", "null"],
                                           "description": "Cursor of the next page; null on the last page."}},
            "required": ["items"],
        }
    elif operation == "batch_create":
        output = {
            "type": "object",
            "properties": {
                "created": {"type": "array", "items": record, "description": "The records created, in order."},
                "failed": {"type": "array", "description": "Items that were not created, with why.",
                           "items": {"type": "object", "required": ["index", "error"],
                                     "properties": {"index": {"type": "integer", "minimum": 0},
                                                    "error": {"type": "string"}}}},
            },
            "required": ["created"],
        }
    elif operation in ("export", "get_export"):
        output = {
            "type": "object",
            "properties": {
                "export_id": {"type": "string", "description": "Id of the export job."},
                "status": {"type": "string", "enum": JOB_STATUSES, "description": "Where the job is."},
                "file_format": {"type": "string", "enum": ["csv", "json", "xlsx"]},
            },
            "required": ["export_id", "status"],
        }
        if operation == "get_export":
            output["properties"]["progress"] = {"type": "number", "minimum": 0, "maximum": 100,
                                                "description": "Percent done."}
            output["properties"]["file_url"] = {"type": ["string", "null"], "format": "uri",
                                                "description": "Where to download the file once it succeeded."}
    elif operation == "delete":
        output = {
            "type": "object",
            "properties": {id_name: _id_schema(entity), "deleted": {"type": "boolean"}},
            "required": [id_name, "deleted"],
        }
    else:
        output = {
            "type": "object",
            "properties": {
                id_name: _id_schema(entity),
                "status": {"type": "string", "description": "Outcome of the action."},
            },
            "required": [id_name, "status"],
        }
    return {"type": "object", "properties": props, "required": required}, output


def _filters(entity: str, fields: dict[str, dict[str, Any]], taken: dict[str, Any], *, sort: bool = True
             ) -> dict[str, Any]:
    """Optional filters of a list (or an export) over the entity's own fields, as real list endpoints
    have them: equality on up to two enum, boolean or short string fields, a date range on a date
    field, and `sort_by` / `order` when two fields can be sorted on."""
    noun = entity.replace("_", " ")
    out: dict[str, Any] = {}
    equality = [k for k, v in fields.items()
                if k not in taken and (v.get("enum") or v.get("type") == "boolean"
                                       or (v.get("type") == "string" and not v.get("format")
                                           and not re.search(r"description|notes?|comment|message|body|text", k)))]
    for key in equality[:2]:
        out[key] = {k: v for k, v in fields[key].items() if k not in ("default", "description")}
        out[key]["description"] = f"Only {noun} records whose {key.replace('_', ' ')} equals this."
    dated = next((k for k, v in fields.items() if v.get("format") in ("date", "date-time")), None)
    if dated is not None:
        for bound, word in (("from", "on or after"), ("to", "on or before")):
            out[f"{dated}_{bound}"] = {
                "type": "string", "format": fields[dated]["format"],
                "description": f"Only {noun} records with {dated.replace('_', ' ')} {word} this."}
    sortable = [k for k, v in fields.items()
                if v.get("type") in ("string", "integer", "number") and "enum" not in v]
    if sort and len(sortable) >= 2:
        out["sort_by"] = {"type": "string", "enum": sortable[:6], "description": "Field to sort the results by."}
        out["order"] = {"type": "string", "enum": ["asc", "desc"], "default": "asc", "description": "Sort order."}
    return out


def default_error_modes(operation: Operation, entity: str) -> list[str]:
    noun = entity.replace("_", " ")
    modes = {
        "create": [
            f"invalid_argument: a required field of the {noun} is missing or malformed",
            f"conflict: an equal {noun} already exists",
        ],
        "get": [f"not_found: no {noun} has this {entity}_id"],
        "list": ["invalid_argument: a filter value or limit is out of range"],
        "update": [f"not_found: no {noun} has this {entity}_id", "invalid_argument: a new value is malformed"],
        "search": ["invalid_argument: the query is empty"],
        "delete": [
            f"not_found: no {noun} has this {entity}_id",
            f"permission_denied: the caller may not delete this {noun}",
        ],
        "action": [
            f"not_found: no {noun} has this {entity}_id",
            f"failed_precondition: the {noun} is not in a state that allows this",
        ],
        "batch_create": [
            f"invalid_argument: an item is not a valid {noun}",
            "resource_exhausted: more items than one call may create",
        ],
        "export": ["invalid_argument: a filter value is out of range",
                   "resource_exhausted: too many exports are running"],
        "get_export": ["not_found: no export has this export_id"],
    }
    return modes[operation]


def plan_operations(count: int, applications: int) -> list[list[Operation]]:
    """Operations per application for `count` tools: spread evenly, each list a prefix of
    OPERATIONS (so `create` and `get` come first and every id has a producer)."""
    if applications <= 0 or count <= 0:
        return []
    base, extra = divmod(count, applications)
    plans = []
    for i in range(applications):
        n = base + (1 if i < extra else 0)
        # Past the CRUD set, further tools are more domain actions (each named by the model).
        ops: list[Operation] = [OPERATIONS[j] if j < len(OPERATIONS) else "action" for j in range(n)]
        plans.append(ops)
    return [p for p in plans if p]


def apply_evolution(spec: ToolSpec, operation: str, draft: EvolutionDraft | None, rng: random.Random) -> ToolSpec:
    """`spec` with one evolution applied (see module docstring); unchanged with a note when the
    draft cannot be used."""
    schema = {**spec.input_schema, "properties": dict(spec.input_schema.get("properties", {}))}
    props: dict[str, Any] = schema["properties"]
    notes = list(spec.provenance.notes)
    error_modes = list(spec.error_modes)
    if operation == "add_constraint":
        changed = False
        for name, prop in props.items():
            if not isinstance(prop, dict) or prop.get("minLength") or prop.get("minimum") is not None:
                continue
            if prop.get("type") == "string":
                props[name] = {**prop, "maxLength": rng.choice([64, 120, 256, 1000])}
            elif prop.get("type") in ("integer", "number"):
                props[name] = {**prop, "minimum": 0}
            else:
                continue
            changed = True
            notes.append(f"evolved: add_constraint on {name}")
            break
        if not changed:
            notes.append("evolution add_constraint: nothing to constrain")
    elif draft is None:
        notes.append(f"evolution {operation}: no usable draft")
    elif operation == "add_error_mode":
        code = snake_case(draft.name, 40)
        if code and draft.description.strip():
            error_modes.append(f"{code}: {draft.description.strip()}")
            notes.append("evolved: add_error_mode")
        else:
            notes.append("evolution add_error_mode: empty draft")
    else:
        name = snake_case(draft.name, 40)
        description = draft.description.strip() or name.replace("_", " ").capitalize()
        if not name or name in props:
            notes.append(f"evolution {operation}: parameter name {draft.name!r} unusable or taken")
        elif _only_words_of(name, (spec.name, spec.domain, spec.application)) or says_nothing(name):
            # As for drafted parameters (`names_only`): a main job accepted `create_weather(...,
            # create_weather={...})` and `create_order_management(create_order_management="jsscj...")`,
            # both parameters added here.
            notes.append(f"evolution {operation}: parameter name {name!r} only repeats the tool's names or "
                         "names no value")
        elif operation == "add_optional_param":
            props[name] = {"type": "string", "description": description}
            if string_format(name):
                props[name]["format"] = string_format(name)
            notes.append(f"evolved: add_optional_param {name}")
        elif operation == "add_enum":
            # A main job's tool offered `create_order_management: "jsscjdjcjcjnjjcjcj"`: values no
            # one could say are dropped (`looks_like_words`).
            values = list(dict.fromkeys(v.strip() for v in draft.values if v.strip() and looks_like_words(v)))
            if len(values) >= 2:
                props[name] = {"type": "string", "enum": values, "description": description}
                notes.append(f"evolved: add_enum {name}")
            else:
                notes.append("evolution add_enum: fewer than 2 distinct values")
        elif operation == "add_nested_object":
            fields = [f for f in dict.fromkeys(snake_case(v, 30) for v in draft.values) if f and looks_like_words(f)]
            if fields:
                props[name] = {
                    "type": "object",
                    "description": description,
                    "properties": {
                        f: {"type": "string", "description": f.replace("_", " ").capitalize()} for f in fields
                    },
                }
                notes.append(f"evolved: add_nested_object {name}")
            else:
                notes.append("evolution add_nested_object: no field names")
    output = _deepened_output(spec.output_schema, {k: v for k, v in props.items()
                                                   if k not in spec.input_schema.get("properties", {})})
    prov = spec.provenance.model_copy(update={"notes": notes})
    return spec.model_copy(update={"input_schema": schema, "output_schema": output, "error_modes": error_modes,
                                   "provenance": prov})


def _deepened_output(output: dict[str, Any] | None, added: dict[str, Any]) -> dict[str, Any] | None:
    """`output` with the fields an evolution added to the input also in the record it returns (the
    record itself, or each item of a page), so input and output schemas deepen together: a tool
    that now takes a `priority` returns records that carry one."""
    if not output or not added:
        return output
    output = copy.deepcopy(output)
    items = output.get("properties", {}).get("items")
    record: dict[str, Any] = (items["items"] if isinstance(items, dict) and isinstance(items.get("items"), dict)
                              else output)
    if not isinstance(record.get("properties"), dict):
        return output
    for name, schema in added.items():
        record["properties"].setdefault(name, {k: v for k, v in schema.items() if k != "default"})
    return output


# ---------------------------------------------------------------- the stage


async def _applications(domain: Any, count: int, llm: LLMClient, seed: int) -> list[_Application]:
    entities = domain_entities(domain)
    prompt = render("synth.tools", "applications.j2", domain=domain, count=count, entities=entities)
    # Exactly `count` items: a small model left free stops after one.
    schema = ApplicationList.model_json_schema()
    schema["properties"]["applications"].update(minItems=count, maxItems=count)
    if entities:
        schema["$defs"]["ApplicationDraft"]["properties"]["entity"] = {"type": "string", "enum": entities}
    data = await llm.structured(
        "generator",
        [{"role": "user", "content": prompt}],
        schema,
        name="ApplicationList",
        seed=derive_seed(seed, domain.name, "applications"),
        max_tokens=120 * count + 60,
    )
    drafts = ApplicationList.model_validate(data)
    apps: list[_Application] = []
    used_entities: set[str] = set()
    used_names: set[str] = set()
    for draft in drafts.applications[:count]:
        name = draft.name.strip()
        if not name or name.lower() in used_names:
            continue
        entity = draft.entity if entities else entity_slug(draft.entity, name)
        if entity in used_entities:  # two apps managing "order" would collide on create_order
            entity = (next((e for e in entities if e not in used_entities), "") if entities
                      else entity_slug(f"{snake_case(name, 12).split('_')[0]}_{entity}", name))
        if not entity or entity in used_entities:
            continue
        used_names.add(name.lower())
        used_entities.add(entity)
        apps.append(_Application(domain.name, name, draft.description.strip(), entity))
    return apps


async def _draft_tool(app: _Application, operation: Operation, llm: LLMClient, seed: int, index: int) -> ToolDraft:
    purpose = _PURPOSE[operation].format(entity=app.entity.replace("_", " "))
    example = f"{operation}_{app.entity}" if operation != "action" else f"approve_{app.entity}"
    prompt = render(
        "synth.tools",
        "tool.j2",
        application=app.name,
        application_description=app.description,
        domain=app.domain,
        entity=app.entity.replace("_", " "),
        purpose=purpose,
        example_name=example,
        operation=operation,
    )
    return await llm.structured(
        "generator",
        [{"role": "user", "content": prompt}],
        ToolDraft,
        seed=derive_seed(seed, app.domain, app.name, operation, index),
        max_tokens=500,
    )


def _tool_name(draft_name: str, operation: Operation, entity: str, taken: set[str]) -> str:
    name = sanitize_name(snake_case(draft_name, 60)) or ""
    if operation != "action" or not name:
        # CRUD names are fixed by the id contract; the model names only the domain action. The
        # export job is a resource of its own, so the simulator's CRUD keeps it (`<entity>_exports`).
        many = plural(entity)  # `list_categories`, `list_chesses`: not `list_categorys`
        name = {"list": f"list_{many}", "search": f"search_{many}", "batch_create": f"batch_create_{many}",
                "export": f"create_{entity}_export", "get_export": f"get_{entity}_export"
                }.get(operation, f"{operation}_{entity}")
    if operation == "action" and entity not in name:
        name = f"{name}_{entity}"[:64]
    while name in taken:
        name = f"{name}_2"[:64]
    return name


async def _evolve(spec: ToolSpec, llm: LLMClient, rng: random.Random, seed: int, rounds: int) -> ToolSpec:
    for round_no in range(rounds):
        operation = rng.choice(EVOLUTIONS)
        draft: EvolutionDraft | None = None
        if operation != "add_constraint":
            params = list(spec.input_schema.get("properties", {})) or ["none"]
            prompt = render("synth.tools", "evolve.j2", tool=spec, parameters=params, operation=operation)
            try:
                draft = await llm.structured(
                    "generator",
                    [{"role": "user", "content": prompt}],
                    EvolutionDraft,
                    seed=derive_seed(seed, spec.name, operation, round_no),
                    max_tokens=200,
                )
            except LLMError as exc:
                spec = spec.model_copy(
                    update={
                        "provenance": spec.provenance.model_copy(
                            update={
                                "notes": [*spec.provenance.notes, f"evolution {operation} failed: {str(exc)[:160]}"]
                            }
                        )
                    }
                )
                continue
        spec = apply_evolution(spec, operation, draft, rng)
    return spec


async def _application_tools(
    app: _Application, operations: list[Operation], llm: LLMClient, settings: SynthesisSettings, taken: set[str]
) -> tuple[list[ToolSpec], list[RejectedTool]]:
    seed = settings.seed
    results = await asyncio.gather(
        *(_draft_tool(app, op, llm, seed, i) for i, op in enumerate(operations)), return_exceptions=True
    )
    drafts: list[ToolDraft | None] = [None] * len(operations)
    rejected: list[RejectedTool] = []
    for i, (op, res) in enumerate(zip(operations, results, strict=True)):
        if isinstance(res, ToolDraft):
            drafts[i] = res
        elif isinstance(res, LLMError):
            raw_text = getattr(res, "raw_text", "")
            rejected.append(
                RejectedTool(
                    f"generation failed: {str(res)[:300]}",
                    {"name": f"{op}_{app.entity}", "operation": op, "raw_text": str(raw_text)[:1000], "seed": seed},
                    app.domain,
                    app.name,
                    source="synthetic",
                )
            )
        elif isinstance(res, BaseException):
            raise res
    for i, draft in enumerate(drafts):  # parameters that only repeat the names around them, or name no value, go
        if draft is not None:
            drafts[i] = draft.model_copy(update={"parameters": [p for p in draft.parameters
                                                                if not names_only(p.name, app)
                                                                and not says_nothing(p.name)]})
    fields: dict[str, dict[str, Any]] = {}
    create = drafts[operations.index("create")] if "create" in operations else None
    if create is not None:
        for p in create.parameters[: settings.max_parameters]:
            name = snake_case(p.name)
            if name and not _is_id_of(name, app.entity):
                fields.setdefault(name, _param_schema(p))
    specs: list[ToolSpec] = []
    for op, draft in zip(operations, drafts, strict=True):
        if draft is None:
            continue
        input_schema, output_schema = build_tool_schemas(
            op, app.entity, draft.parameters, fields, settings.max_parameters
        )
        name = _tool_name(draft.name, op, app.entity, taken)
        taken.add(name)
        prov = Provenance(
            model=settings.model, prompt_version=PROMPT_VERSION, notes=[f"operation {op} on entity {app.entity}"]
        )
        specs.append(
            ToolSpec.model_validate(
                {
                    "name": name,
                    "description": draft.description.strip(),
                    "input_schema": input_schema,
                    "output_schema": output_schema,
                    "side_effect": "write" if op in _WRITES else "read",
                    "error_modes": default_error_modes(op, app.entity),
                    "domain": app.domain,
                    "application": app.name,
                    "source": "synthetic",
                    "provenance": prov,
                }
            )
        )
    return specs, rejected


async def synthesize_domain(
    domain: Any, llm: LLMClient, rng: random.Random, settings: SynthesisSettings
) -> SynthesisResult:
    """Tools for one taxonomy domain (`domain.name`, `.description`, `.examples`)."""
    result = SynthesisResult()
    try:
        apps = await _applications(domain, settings.applications_per_domain, llm, settings.seed)
    except LLMError as exc:
        result.rejected.append(
            RejectedTool(
                f"application generation failed: {str(exc)[:300]}",
                {
                    "name": f"{domain.name}_applications",
                    "raw_text": str(getattr(exc, "raw_text", ""))[:1000],
                    "seed": settings.seed,
                },
                domain.name,
                source="synthetic",
            )
        )
        return result
    result.applications[domain.name] = [a.name for a in apps]
    plans = plan_operations(settings.per_domain, len(apps))
    taken: set[str] = set()
    per_app = await asyncio.gather(
        *(_application_tools(app, ops, llm, settings, taken) for app, ops in zip(apps, plans, strict=False))
    )
    drafted: list[ToolSpec] = []
    for specs, rejected in per_app:
        drafted += specs
        result.rejected += rejected
    evolved = await asyncio.gather(
        *(
            _evolve(
                spec,
                llm,
                random.Random(derive_seed(settings.seed, spec.name, rng.random())),
                settings.seed,
                settings.evolution_rounds,
            )
            for spec in drafted
        )
    )
    valid: list[ToolSpec] = []
    for spec in evolved:
        problems = tool_problems(spec)
        if problems:
            result.rejected.append(
                RejectedTool("; ".join(problems), None, spec.domain, spec.application, spec, "synthetic")
            )
        else:
            valid.append(spec)
    kept, dupes = remove_near_duplicates(valid)
    result.tools += kept
    result.rejected += [RejectedTool(reason, None, s.domain, s.application, s, "synthetic") for s, reason in dupes]
    return result


async def synthesize_tools(
    domains: list[Any], llm: LLMClient, rng: random.Random, settings: SynthesisSettings | None = None
) -> SynthesisResult:
    """The stage: tools for every domain (taxonomy `Domain` objects), concurrently."""
    settings = settings or SynthesisSettings()
    seeds = [rng.random() for _ in domains]
    parts = await asyncio.gather(
        *(synthesize_domain(d, llm, random.Random(s), settings) for d, s in zip(domains, seeds, strict=True))
    )
    out = SynthesisResult()
    for part in parts:
        out.tools += part.tools
        out.rejected += part.rejected
        out.applications.update(part.applications)
    return out
