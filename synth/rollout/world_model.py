"""The world model: the environment LLM that answers what code cannot (searches, lists, domain
actions), under a schema.

It returns `{result, state_update}`; `result` is held to the tool's `outputSchema` when it has
one, and `state_update` is only asked of write tools (a read never changes the world). The
simulator then keeps the model honest with code (`synth.rollout.crud`): entities the result
describes join the world, and the update is refused unless it stays in the call's collection.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from synth.llm import LLMClient, Usage
from synth.llm.client import inline_refs
from synth.models import ToolSpec
from synth.naming import name_words
from synth.prompts import render

_STATE_CHARS = 1500


# What an id looks like: `om-28647`, `ORD_17`, `usr.42`. A main job's world model listed a record
# whose `order_management_id` was `");<BAR LOCATED>List order management record ...`, and the
# agent's reply passed it on; under this pattern the grammar cannot write such an id.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$"


# How much of a result the world model may write: a page of a listing, a field's worth of text. A
# small model lists one record again and again, or counts ids up ("2022-11-02T13:23:57.42.34.45",
# ".46", ...), or fills a string with digits until `max_tokens` cuts it off, and the reply is thrown
# away and retried; under these bounds the grammar closes the list or the string instead.
MAX_RESULT_ITEMS = 5
MAX_RESULT_CHARS = 160
_SHAPED = ("pattern", "enum", "const", "format")  # a string these hold is no free text

# The result of a tool that declares no `outputSchema` (every one of the 6,044 real MCP tools in
# `shared/data/mcp`): a JSON object of at most three levels (a field, a list of records, a record's
# field), with the same bounds on text and lists. A bare `{"type": "object"}` let the model nest
# objects in objects or write one string until `max_tokens`: 10-16 of 48 sampled real tools' results
# were cut off, 7-8 under this one (figures in docs/architecture.md section 6, item 10).
_SCALARS: list[dict[str, Any]] = [{"type": "string", "maxLength": MAX_RESULT_CHARS}, {"type": "number"},
                                  {"type": "boolean"}, {"type": "null"}]
_RECORD: dict[str, Any] = {"type": "object", "additionalProperties": {"anyOf": _SCALARS}}
FREE_RESULT_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": {"anyOf": [
    *_SCALARS, _RECORD, {"type": "array", "maxItems": MAX_RESULT_ITEMS, "items": {"anyOf": [*_SCALARS, _RECORD]}}]}}


def _generation_schema(schema: Any, key: str = "") -> Any:
    """`schema` as the world model decodes under it, at any depth: `ID_PATTERN` on every plain
    string property named like an id (`id`, `<thing>_id`, `<thing>Id`); `maxItems`
    (`MAX_RESULT_ITEMS`, or the schema's `minItems` if larger) on every array that has none; and
    `maxLength` (`MAX_RESULT_CHARS`, or its `minLength`) on every other free string. Bounds, patterns,
    enums, consts and formats a schema sets itself stay."""
    if isinstance(schema, list):
        return [_generation_schema(s, key) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (_generation_schema(v, key) if k in ("items", "anyOf", "oneOf", "allOf", "prefixItems") else v)
           for k, v in schema.items()}
    for field in ("properties", "patternProperties"):
        if isinstance(schema.get(field), dict):
            out[field] = {k: _generation_schema(v, k) for k, v in schema[field].items()}
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _generation_schema(schema["additionalProperties"])
    declared = schema.get("type")
    types: list[Any] = declared if isinstance(declared, list) else [declared]
    if "array" in types and "maxItems" not in schema:
        out["maxItems"] = max(MAX_RESULT_ITEMS, int(schema.get("minItems") or 0))
    if "string" in types and not any(k in schema for k in _SHAPED):
        if name_words(key)[-1:] == ["id"] and schema.get("type") == "string":
            out["pattern"] = ID_PATTERN
        elif "maxLength" not in schema:
            out["maxLength"] = max(MAX_RESULT_CHARS, int(schema.get("minLength") or 0))
    return out


def world_model_schema(spec: ToolSpec) -> dict[str, Any]:
    """The schema the world model answers under: the tool's `outputSchema` as `_generation_schema`
    makes it, as `result`, and for a write tool a `state_update`."""
    result_schema = _generation_schema(inline_refs(spec.output_schema)) if spec.output_schema else FREE_RESULT_SCHEMA
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
    data, usage = await llm.structured_with_usage("environment", messages, world_model_schema(spec),
                                                  seed=seed, name="tool_result", max_tokens=max_tokens)
    update = data.get("state_update") if spec.side_effect == "write" else None
    return data["result"], update if isinstance(update, dict) else {}, usage


def overlay_entity(result: Any, entity: Any, output_schema: dict[str, Any] | None) -> Any:
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
