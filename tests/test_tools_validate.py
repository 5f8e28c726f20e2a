"""Metaschema checks, schema repair, near-duplicate removal; malformed input never crashes."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synth.models import ToolSpec
from synth.tools.mcp_import import ServerTools, build_spec, import_servers
from synth.tools.validate import (
    name_key,
    normalize_schema,
    remove_near_duplicates,
    sanitize_name,
    schema_problems,
    tool_problems,
)

OBJ = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def spec(name: str = "search_docs", description: str = "Search the docs.", schema: Any = None,
         domain: str = "d") -> ToolSpec:
    return ToolSpec.model_validate({"name": name, "description": description,
                                    "input_schema": OBJ if schema is None else schema, "domain": domain})


def test_both_drafts_are_accepted() -> None:
    draft7 = {**OBJ, "$schema": "http://json-schema.org/draft-07/schema#",
              "definitions": {"a": {"type": "string"}}, "properties": {"q": {"$ref": "#/definitions/a"}}}
    draft2020 = {**OBJ, "$schema": "https://json-schema.org/draft/2020-12/schema",
                 "$defs": {"a": {"type": "string"}}, "properties": {"q": {"$ref": "#/$defs/a"}}}
    assert schema_problems(draft7) == []
    assert schema_problems(draft2020) == []
    # draft-07 only: `items` as a list (tuple form) is not 2020-12, but is fine when declared draft-07
    tuple_items = {"type": "object", "properties": {"p": {"type": "array", "items": [{"type": "string"}]}},
                   "$schema": "http://json-schema.org/draft-07/schema#"}
    assert schema_problems(tuple_items) == []
    assert schema_problems({**tuple_items, "$schema": "https://json-schema.org/draft/2020-12/schema"})


def test_problems_are_named() -> None:
    assert "required names undeclared properties ['x']" in schema_problems({**OBJ, "required": ["q", "x"]})[0]
    assert "not a valid JSON Schema" in schema_problems({"type": "object", "properties": {"a": {"type": "nope"}}})[0]
    assert "does not resolve" in schema_problems({"type": "object", "properties": {"a": {"$ref": "#/$defs/zz"}}})[0]
    assert schema_problems({"type": "object", "properties": {"a": {"type": "string", "pattern": "(["}}})
    assert schema_problems("object") == ["inputSchema is a str, not a JSON object"]
    assert tool_problems(spec(description="  ")) == ["description is empty"]
    assert "must be an object" in tool_problems(spec(schema={"type": "string"}))[-1]


def test_normalize_repairs_and_leaves_legal_things_alone() -> None:
    assert normalize_schema(None)[0] == {"type": "object", "properties": {}}
    assert normalize_schema({})[0] == {"type": "object", "properties": {}}
    fixed, notes = normalize_schema({"properties": {"a": {"type": "number"}}, "required": ["a", "ghost"]})
    assert fixed == {"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]}
    assert len(notes) == 2
    wrapped = {"type": "object", "properties": {"type": "object", "properties": {"g": {"type": "string"}},
                                                "required": ["g"]}}
    assert normalize_schema(wrapped)[0] == {"type": "object", "properties": {"g": {"type": "string"}},
                                            "required": ["g"]}
    legal = {"type": "object", "properties": {"n": {"type": "number"}, "r": {"$ref": "#/definitions/x"}},
             "definitions": {"x": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}
    assert normalize_schema(legal) == (legal, [])
    assert normalize_schema({"type": "object", "properties": {"a": {"type": "integer", "minimum": 0,
                                                                      "exclusiveMinimum": True}}})[0] == {
        "type": "object", "properties": {"a": {"type": "integer", "exclusiveMinimum": 0}}}


def test_names() -> None:
    assert sanitize_name("get status") == "get_status"
    assert sanitize_name("!pg") == "pg"
    assert sanitize_name("script.rename") == "script_rename"
    assert sanitize_name("长亭 IP 情报查询") is None
    assert name_key("fetchUsers") == name_key("get_user")


def test_near_duplicates_within_a_domain_only() -> None:
    a = spec("get_user", "Return a user by id.")
    b = spec("fetchUsers", "Returns users.")
    c = spec("get_users_info", "Return a user by id.")
    d = spec("get_user", "Return a user by id.", domain="other")
    e = spec("create_invoice", "Create an invoice.")
    kept, dropped = remove_near_duplicates([a, b, c, d, e])
    assert kept == [a, d, e]
    assert [s for s, _ in dropped] == [b, c]
    assert all("near-duplicate of 'get_user'" in reason for _, reason in dropped)


# ---------------------------------------------------------------- property tests

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
schema_keys = st.sampled_from(["type", "properties", "required", "items", "$ref", "anyOf", "enum", "definitions",
                               "$defs", "additionalProperties", "minimum", "exclusiveMinimum", "pattern", "$schema",
                               "format", "oneOf", "allOf", "description", "default"])
schema_like = st.recursive(
    st.sampled_from(["object", "string", "integer", "any", "#/definitions/x", "#/$defs/y", "(["]) | json_values,
    lambda children: st.dictionaries(schema_keys | st.text(max_size=6), children, max_size=5)
    | st.lists(children, max_size=3),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_like)
def test_malformed_schemas_never_crash_validation(schema: Any) -> None:
    problems = schema_problems(schema)
    assert isinstance(problems, list)
    fixed, notes = normalize_schema(schema)
    assert all(isinstance(n, str) for n in notes)
    assert isinstance(schema_problems(fixed), list)


tool_like = st.one_of(
    json_values,
    st.fixed_dictionaries({"name": st.text(max_size=12) | json_values}, optional={
        "description": st.text(max_size=20) | json_values, "inputSchema": schema_like,
        "outputSchema": schema_like, "annotations": json_values, "title": json_values}),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(tool_like, max_size=6))
def test_malformed_tools_never_crash_import(tools: list[Any]) -> None:
    result = import_servers([ServerTools(server="s", file="f", tools=tools)], None)
    assert result.imported + len(result.rejected) == len(tools)
    assert all(r.reason for r in result.rejected)
    for accepted in result.tools:
        assert tool_problems(accepted) == []
    for rejected in result.rejected:
        row = rejected.to_row("run")
        assert row["status"] == "rejected" and row["reason"] and row["id"]
    for raw in tools:
        build_spec(raw, domain="d", provenance=result.tools[0].provenance if result.tools else
                   __import__("synth.models", fromlist=["Provenance"]).Provenance(), server="s")
