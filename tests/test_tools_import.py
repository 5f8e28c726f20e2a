"""Real MCP import: the Toucan dump, tools/list files, and a live stdio server via the SDK."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from synth.cli import app
from synth.store import connect_readonly
from synth.tools.mcp_import import ServerTools, import_servers, place_server, read_mcp_file
from synth.tools.validate import schema_problems
from tests.conftest import mcp_data_or_skip

DEMO_SERVER = Path(__file__).parent / "mcp_servers" / "demo_server.py"
runner = CliRunner()


def _rows(db: Path, where: str = "true") -> list[dict[str, Any]]:
    with connect_readonly(db) as con:
        cur = con.execute(f"SELECT * FROM tools WHERE {where} ORDER BY id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _count(db: Path) -> int:
    with connect_readonly(db) as con:
        return con.execute("SELECT count(*) FROM tools").fetchall()[0][0]


def test_toucan_import_covers_95_percent_reports_the_rest_and_is_idempotent(tmp_path: Path) -> None:
    path = mcp_data_or_skip("toucan_mcp_servers.jsonl.gz")
    db = tmp_path / "t.duckdb"
    first = runner.invoke(app, ["tools", "import-mcp", str(path), "--db", str(db), "--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["tools_seen"] == 6044
    assert report["imported"] >= 0.95 * 6044
    assert report["imported"] + report["rejected"] == 6044
    assert len(report["rejections"]) == report["rejected"]
    assert all(r["reason"] for r in report["rejections"])
    rows = _rows(db)
    accepted = [r for r in rows if r["status"] == "accepted"]
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert len(accepted) == report["distinct_tools"]
    assert rejected and all(r["reason"] for r in rejected)
    assert report["merged_duplicates"] == report["imported"] - report["distinct_tools"]
    # Merged duplicates record every server they came from.
    assert any(len(json.loads(r["provenance"])["servers"]) > 1 for r in accepted)
    # Every accepted schema passes the metaschema check; every tool sits in a taxonomy domain.
    from synth.domains import load_taxonomy

    taxonomy = load_taxonomy()
    for row in accepted:
        assert schema_problems(json.loads(row["input_schema"])) == [], row["name"]
        taxonomy.get(row["domain"])
    assert len({r["domain"] for r in accepted}) >= 20
    second = runner.invoke(app, ["tools", "import-mcp", str(path), "--db", str(db), "--json"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["rows_added"] == 0
    assert _count(db) == len(rows)


def test_jsonl_bad_lines_and_bad_tools_are_reported_not_fatal(tmp_path: Path) -> None:
    good = {
        "name": "lookup",
        "description": "Look up a word.",
        "inputSchema": {"properties": {"w": {"type": "string"}}},
    }
    lines = [
        json.dumps(
            {
                "server": "dict",
                "primary_label": "Education",
                "secondary_labels": [],
                "tools": [
                    good,
                    {"name": "!!", "inputSchema": {}},
                    "not a tool",
                    {
                        "name": "bad",
                        "description": "x",
                        "inputSchema": {"type": "object", "properties": {"a": {"type": 7}}},
                    },
                ],
            }
        ),
        "{ this is not json",
        "",
    ]
    path = tmp_path / "servers.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines))
    servers = read_mcp_file(path)
    result = import_servers(servers, None)
    assert [t.name for t in result.tools] == ["lookup"]
    assert result.tools[0].input_schema["type"] == "object"
    assert any("added missing type 'object'" in n for n in result.tools[0].provenance.notes)
    reasons = sorted(r.reason for r in result.rejected)
    assert len(reasons) == 4
    assert any("not valid JSON" in r for r in reasons)
    assert any("no legal function-name form" in r for r in reasons)
    assert any("not a JSON object" in r for r in reasons)
    assert any("not a valid JSON Schema" in r for r in reasons)


def test_not_a_tools_list_is_a_clear_cli_error(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"tools": {"fetch": {}}}))
    result = runner.invoke(app, ["tools", "import-mcp", str(path), "--db", str(tmp_path / "d.duckdb")])
    assert result.exit_code == 2
    assert "not a list" in result.output and "x.json" in result.output


def test_placement_by_labels_then_words() -> None:
    from synth.domains import load_taxonomy

    taxonomy = load_taxonomy()
    weather = ServerTools("Weather Pro", "f", [{"name": "forecast", "description": "Weather forecast"}], "Weather")
    name, how = place_server(weather, taxonomy)
    assert how.startswith("labels") and taxonomy.get(name).name == name
    unlabeled = ServerTools(
        "thermo",
        "f",
        [{"name": "set_thermostat", "description": "Set the thermostat temperature of a smart home heating zone"}],
    )
    name, how = place_server(unlabeled, taxonomy)
    assert how == "shared words"
    assert taxonomy.get(name).name == name


async def _declared_tools() -> list[dict[str, Any]]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=sys.executable, args=[str(DEMO_SERVER)])
    with tempfile.TemporaryFile("w+") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            return [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in listed.tools]


def test_live_stdio_server_is_imported_exactly(tmp_path: Path) -> None:
    db = tmp_path / "live.duckdb"
    command = f"{sys.executable} {DEMO_SERVER}"
    result = runner.invoke(app, ["tools", "import-mcp", "--command", command, "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rejected"] == 0 and report["imported"] == 4
    declared = {t["name"]: t for t in asyncio.run(_declared_tools())}
    rows = {r["name"]: r for r in _rows(db)}
    assert set(rows) == set(declared) == {"create_note", "get_note", "search_notes", "set_reminder"}
    for name, tool in declared.items():
        row = rows[name]
        assert row["description"] == tool["description"]
        assert json.loads(row["input_schema"]) == tool["inputSchema"]
        assert json.loads(row["output_schema"]) == tool.get("outputSchema")
        assert json.loads(row["provenance"])["servers"] == ["demo-notes"]
    assert rows["search_notes"]["side_effect"] == "read" and rows["create_note"]["side_effect"] == "write"
    again = runner.invoke(app, ["tools", "import-mcp", "--command", command, "--db", str(db), "--json"])
    assert json.loads(again.stdout)["rows_added"] == 0


def test_dead_command_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "tools",
            "import-mcp",
            "--command",
            "/nonexistent/server --x",
            "--db",
            str(tmp_path / "d.duckdb"),
            "--timeout",
            "10",
        ],
    )
    assert result.exit_code == 2
    assert "/nonexistent/server" in result.output
