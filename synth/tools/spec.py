"""Conversions between `ToolSpec` and the two wire shapes tools travel in.

- MCP `tools/list`: `{"name", "title"?, "description", "inputSchema", "outputSchema"?,
  "annotations"?, "execution"?, "_meta"?, ...}`. Fields ToolSpec has no slot for are kept verbatim
  in `provenance.mcp_fields`, so `tool_to_mcp(tool_from_mcp(t)) == t` for every well-formed tool
  (a missing `description` and an empty one are the same thing).
- OpenAI function tools: `{"type": "function", "function": {"name", "description", "parameters"}}`.
  `parameters` is the input schema unchanged; OpenAI has no place for an output schema, so
  `tool_from_openai(tool_to_openai(s))` keeps exactly what the OpenAI shape can carry.

These functions convert and nothing else: they never repair a schema (see `validate.py` for
that), so the round trip is exact. A shape that is not a tool raises `ValueError` naming what is
wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from synth.models import Provenance, ToolSpec

MCP_CORE_FIELDS = ("name", "description", "inputSchema", "outputSchema")


def tool_from_mcp(
    raw: Mapping[str, Any],
    *,
    domain: str,
    application: str = "",
    source: Literal["synthetic", "mcp"] = "mcp",
    provenance: Provenance | None = None,
) -> ToolSpec:
    """One MCP tool (as in a `tools/list` result) as a ToolSpec, exactly as declared."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"an MCP tool must be a JSON object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str):
        raise ValueError(f"MCP tool has no string 'name' (got {name!r})")
    description = raw.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise ValueError(f"tool {name!r}: 'description' is a {type(description).__name__}, not a string")
    schema = raw.get("inputSchema")
    if not isinstance(schema, dict):
        raise ValueError(f"tool {name!r}: 'inputSchema' is {type(schema).__name__}, not a JSON object")
    output = raw.get("outputSchema")
    if output is not None and not isinstance(output, dict):
        raise ValueError(f"tool {name!r}: 'outputSchema' is {type(output).__name__}, not a JSON object")
    prov = (provenance or Provenance()).model_copy(deep=True)
    prov.mcp_fields = {k: v for k, v in raw.items() if k not in MCP_CORE_FIELDS}
    annotations = raw.get("annotations")
    side_effect = guess_side_effect(name, annotations if isinstance(annotations, Mapping) else {})
    return ToolSpec.model_validate(
        {
            "name": name,
            "description": description,
            "input_schema": schema,
            "output_schema": output,
            "side_effect": side_effect,
            "domain": domain,
            "application": application,
            "source": source,
            "provenance": prov,
        }
    )


_WRITE_VERBS = re.compile(
    r"(^|[_\-.\s]|(?<=[a-z])(?=[A-Z]))(create|add|insert|update|set|delete|remove|send|post|write|edit|move|"
    r"rename|upload|publish|cancel|book|pay|transfer|execute|run|start|stop|install|save|put|patch|reply|"
    r"submit|approve|assign|close|merge|push|commit|drop|modify|register|schedule|deploy)",
    re.IGNORECASE,
)


def guess_side_effect(name: str, annotations: Mapping[str, Any]) -> Literal["read", "write"]:
    """MCP's hints when the server gave them (`readOnlyHint`, `destructiveHint`), else a guess
    from the verbs in the tool's name (create, delete, send, ... mean write)."""
    if annotations.get("readOnlyHint") is True:
        return "read"
    if annotations.get("readOnlyHint") is False or annotations.get("destructiveHint") is True:
        return "write"
    return "write" if _WRITE_VERBS.search(name) else "read"


def tool_to_mcp(spec: ToolSpec) -> dict[str, Any]:
    """The MCP `tools/list` entry for a ToolSpec (verbatim extra fields included)."""
    out: dict[str, Any] = {"name": spec.name, "description": spec.description, "inputSchema": spec.input_schema}
    if spec.output_schema is not None:
        out["outputSchema"] = spec.output_schema
    for key, value in spec.provenance.mcp_fields.items():
        out.setdefault(key, value)
    return out


def tool_to_openai(spec: ToolSpec) -> dict[str, Any]:
    """The OpenAI Chat Completions function tool (`tools=[...]`)."""
    return spec.to_openai()


def tool_from_openai(
    raw: Mapping[str, Any],
    *,
    domain: str,
    application: str = "",
    source: Literal["synthetic", "mcp"] = "synthetic",
    provenance: Provenance | None = None,
) -> ToolSpec:
    """A ToolSpec from an OpenAI function tool (`{"type": "function", "function": {...}}` or the
    bare function object)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"an OpenAI tool must be a JSON object, got {type(raw).__name__}")
    fn = raw.get("function") if raw.get("type") == "function" else raw
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise ValueError("an OpenAI function tool needs function.name")
    parameters = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise ValueError(f"tool {fn['name']!r}: 'parameters' is not a JSON object")
    return ToolSpec.model_validate(
        {
            "name": fn["name"],
            "description": fn.get("description") or "",
            "input_schema": parameters,
            "domain": domain,
            "application": application,
            "source": source,
            "provenance": provenance or Provenance(),
        }
    )


def tools_list_entries(data: Any, where: str = "input") -> list[Any]:
    """The raw tool entries of a `tools/list`-shaped document: `{"tools": [...]}`, a JSON-RPC
    response `{"result": {"tools": [...]}}`, or a bare list. Anything else (for instance the
    `*-examples.json` snapshots, whose `tools` is a mapping of examples) raises ValueError."""
    if isinstance(data, Mapping) and isinstance(data.get("result"), Mapping):
        data = data["result"]
    if isinstance(data, Mapping):
        tools = data.get("tools")
        if isinstance(tools, list):
            return tools
        if tools is None:
            raise ValueError(f"{where}: no 'tools' list (not an MCP tools/list document)")
        raise ValueError(f"{where}: 'tools' is a {type(tools).__name__}, not a list (not an MCP tools/list document)")
    if isinstance(data, list):
        return data
    raise ValueError(f"{where}: expected a JSON object with a 'tools' list, got {type(data).__name__}")
