"""The shape of the synthetic tool repository against real MCP tools, side by side (issue 14, item 3).

    python bench/bench_tool_shapes.py --db data/synth.duckdb [--mcp ../shared/data/mcp/toucan_mcp_servers.jsonl.gz]

Reads the accepted synthetic tools of a dataset and the real tools of an MCP file (the Toucan corpus
by default) and prints, for each: tools, parameters per tool (mean, median, 90th percentile, max),
schema depth (1 = flat properties), the share of parameters of each JSON type (enums counted apart),
the share of parameters that are required, that carry a `format`, a `default`, or a description, and
the share of tools with an output schema. Asserts nothing: the synthetic column should come to
resemble the real one.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from synth.tools.mcp_import import read_mcp_file

DEFAULT_MCP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mcp" / "toucan_mcp_servers.jsonl.gz"
TYPES = ("string", "integer", "number", "boolean", "array", "object", "enum", "other")


def _depth(schema: Any) -> int:
    """Nesting of object properties and array items: 1 for a flat object of scalars."""
    if not isinstance(schema, dict):
        return 0
    inner = [_depth(p) for p in (schema.get("properties") or {}).values() if isinstance(p, dict)]
    if isinstance(schema.get("items"), dict):
        inner.append(_depth(schema["items"]))
    return 1 + max(inner, default=0) if schema.get("properties") or schema.get("items") else 0


def _kind(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "enum"
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind if kind in TYPES else "other"


def shape(schemas: Iterable[tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    """The figures of (inputSchema, outputSchema) pairs."""
    params: list[int] = []
    depths: list[int] = []
    kinds: Counter[str] = Counter()
    required = formats = defaults = described = outputs = 0
    for schema, output in schemas:
        props = schema.get("properties") if isinstance(schema, dict) else None
        props = props if isinstance(props, dict) else {}
        params.append(len(props))
        depths.append(max(_depth(schema), 1))
        req = set(schema.get("required") or []) if isinstance(schema, dict) else set()
        for name, prop in props.items():
            prop = prop if isinstance(prop, dict) else {}
            kinds[_kind(prop)] += 1
            required += name in req
            formats += "format" in prop
            defaults += "default" in prop
            described += bool(prop.get("description"))
        outputs += isinstance(output, dict) and bool(output)
    n_params = sum(params) or 1
    ordered = sorted(params)
    return {
        "tools": len(params),
        "params mean": round(statistics.fmean(params), 2) if params else 0,
        "params median": statistics.median(params) if params else 0,
        "params p90": ordered[int(0.9 * (len(ordered) - 1))] if ordered else 0,
        "params max": max(params, default=0),
        "depth mean": round(statistics.fmean(depths), 2) if depths else 0,
        "depth max": max(depths, default=0),
        **{f"type {k}": f"{100 * kinds[k] / n_params:.1f}%" for k in TYPES},
        "required": f"{100 * required / n_params:.1f}%",
        "with format": f"{100 * formats / n_params:.1f}%",
        "with default": f"{100 * defaults / n_params:.1f}%",
        "described": f"{100 * described / n_params:.1f}%",
        "output schema": f"{100 * outputs / max(len(params), 1):.1f}%",
    }


def synthetic_schemas(db: Path) -> list[tuple[dict[str, Any], Any]]:
    import json

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT DISTINCT id, input_schema, output_schema FROM tools "
                           "WHERE status = 'accepted' AND source = 'synthetic'").fetchall()
    finally:
        con.close()
    return [(json.loads(i) if isinstance(i, str) else i, json.loads(o) if isinstance(o, str) else o)
            for _, i, o in rows]


def real_schemas(path: Path) -> list[tuple[dict[str, Any], Any]]:
    return [(t.get("inputSchema") or {}, t.get("outputSchema"))
            for server in read_mcp_file(path) for t in server.tools if isinstance(t, dict)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--mcp", type=Path, default=DEFAULT_MCP)
    args = parser.parse_args()
    synthetic, real = shape(synthetic_schemas(args.db)), shape(real_schemas(args.mcp))
    width = max(len(k) for k in synthetic)
    print(f"{'':<{width}}  {'synthetic':>12}  {'real MCP':>12}")
    for key in synthetic:
        print(f"{key:<{width}}  {synthetic[key]!s:>12}  {real[key]!s:>12}")


if __name__ == "__main__":
    main()
