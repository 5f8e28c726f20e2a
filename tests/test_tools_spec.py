"""ToolSpec <-> MCP tools/list and <-> OpenAI function tools, on every captured real snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from synth.tools.spec import tool_from_mcp, tool_from_openai, tool_to_mcp, tool_to_openai, tools_list_entries
from synth.tools.validate import tool_problems

SNAPSHOTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mcp" / "snapshots"
FILES = sorted(SNAPSHOTS.glob("*.json")) if SNAPSHOTS.is_dir() else []


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


@pytest.mark.skipif(not FILES, reason="MCP snapshots not present")
@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_every_snapshot_round_trips_or_is_recognised_as_not_a_tool_list(path: Path) -> None:
    data = json.loads(path.read_text())
    if path.name.endswith("-examples.json"):
        # Example tools/call inputs and outputs: not a tools/list, and said so by name.
        with pytest.raises(ValueError, match="not a list"):
            tools_list_entries(data, path.name)
        return
    entries = tools_list_entries(data, path.name)
    assert entries, f"{path.name} has no tools"
    for raw in entries:
        spec = tool_from_mcp(raw, domain="d")
        assert tool_to_mcp(spec) == raw
        # ... and through storage (JSON row) and back.
        row = json.loads(json.dumps(spec.to_row("r")))
        assert tool_to_mcp(type(spec).from_row(row)) == raw
        openai = tool_to_openai(spec)
        assert openai == {"type": "function", "function": {
            "name": raw["name"], "description": raw["description"], "parameters": raw["inputSchema"]}}
        back = tool_from_openai(json.loads(json.dumps(openai)), domain="d")
        assert (back.name, back.description, back.input_schema) == (spec.name, spec.description, spec.input_schema)
        assert tool_to_openai(back) == openai
        assert tool_problems(spec) == [], raw["name"]


@pytest.mark.skipif(not FILES, reason="MCP snapshots not present")
def test_example_calls_validate_against_round_tripped_schemas() -> None:
    checked = 0
    for examples in SNAPSHOTS.glob("*-examples.json"):
        listing = SNAPSHOTS / examples.name.replace("-examples", "")
        if not listing.exists():
            continue
        specs = {t["name"]: tool_from_mcp(t, domain="d") for t in tools_list_entries(json.loads(listing.read_text()))}
        for name, example in json.loads(examples.read_text())["tools"].items():
            if name in specs and "example_input" in example:
                schema = tool_to_mcp(specs[name])["inputSchema"]
                jsonschema.validate(example["example_input"], schema)
                structured = example.get("example_output", {}).get("structuredContent")
                if structured is not None and specs[name].output_schema is not None:
                    jsonschema.validate(structured, specs[name].output_schema)
                checked += 1
    assert checked >= 10


def test_extra_mcp_fields_survive_and_missing_description_is_empty() -> None:
    raw = {"name": "x", "title": "X", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": False},
           "_meta": {"k": 1}, "execution": {"taskSupport": "optional"}}
    spec = tool_from_mcp(raw, domain="d")
    assert spec.side_effect == "write"
    assert tool_to_mcp(spec) == {**raw, "description": ""}


@pytest.mark.parametrize("raw", [
    [], {"description": "no name"}, {"name": 3, "inputSchema": {}}, {"name": "x", "inputSchema": "object"},
    {"name": "x", "description": 5, "inputSchema": {}}, {"name": "x", "inputSchema": {}, "outputSchema": []},
])
def test_non_tools_raise_value_error_naming_the_problem(raw: object) -> None:
    with pytest.raises(ValueError):
        tool_from_mcp(raw, domain="d")  # type: ignore[arg-type]


def test_tools_list_shapes() -> None:
    tool = {"name": "a", "inputSchema": {}}
    assert tools_list_entries({"tools": [tool]}) == [tool]
    assert tools_list_entries({"jsonrpc": "2.0", "id": 1, "result": {"tools": [tool]}}) == [tool]
    assert tools_list_entries([tool]) == [tool]
    with pytest.raises(ValueError, match="no 'tools' list"):
        tools_list_entries({"servers": []}, "f.json")
