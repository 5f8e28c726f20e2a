"""Real tools inside runs by config alone: `[[rollout.python_tools]]` and `[[rollout.mcp_servers]]`
with a `domain` are listed at the start of a run, join that domain's pool beside simulated tools,
and their calls run for real (scripted fake model server, in-process run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from synth.config import ConfigError, load_config
from synth.pipeline.run import execute_run
from synth.rollout import McpServerBinding, PythonToolBinding, python_tool_spec

MCP_SERVER = Path(__file__).parent / "mcp_servers" / "rollout_server.py"
TARGET = "tests.tool_functions:convert_currency"


def test_a_python_function_becomes_a_tool_spec_from_its_hints_and_docstring() -> None:
    spec = python_tool_spec(PythonToolBinding(target=TARGET, domain="finance"))
    assert spec.name == "convert_currency" and spec.domain == "finance" and spec.source == "python"
    assert spec.description == "Convert an amount of US dollars into another currency at today's rate."
    props = spec.input_schema["properties"]
    assert props["amount"] == {"type": "number", "description": "The amount in US dollars."}
    assert props["currency"]["enum"] == ["EUR", "GBP", "JPY"] and props["currency"]["default"] == "EUR"
    assert props["note"]["type"] == "string" and props["note"]["default"] is None
    assert spec.input_schema["required"] == ["amount"] and spec.side_effect == "read"
    with pytest.raises(ValueError, match="cannot be loaded"):
        PythonToolBinding(target="tests.tool_functions:nope").load()


def test_mcp_bindings_take_command_and_args_or_one_shell_line_or_a_url() -> None:
    split = McpServerBinding(command=f"{sys.executable} {MCP_SERVER}")
    assert split.command == sys.executable and split.args == [str(MCP_SERVER)]
    assert McpServerBinding(url="http://127.0.0.1:9/mcp").command is None
    with pytest.raises(ValueError, match="exactly one"):
        McpServerBinding(command="x", url="http://127.0.0.1:9/mcp")
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(None, {"rollout": {"mcp_servers": [{"args": ["x"]}]}}, environ={})


def test_bound_python_and_mcp_tools_run_for_real_inside_episodes_beside_simulated_ones(
    fake_server: Any, tmp_path: Path,
) -> None:
    holder: dict[str, Any] = {}

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        """Schema-valid defaults, except that an agent whose toolset has the bound tools calls them
        on its first step (so the test does not hang on the fake's random choices)."""
        text = json.dumps(body.get("response_format") or {})
        first_step = sum(1 for m in body["messages"] if m["role"] == "tool") == 0
        calls = [c for c in ({"tool": "convert_currency", "arguments": {"amount": 12.5, "currency": "GBP"}},
                             {"tool": "convert_temperature", "arguments": {"celsius": 21.5}}) if c["tool"] in text]
        if calls and first_step:
            return {"role": "assistant", "content": json.dumps({"action": "call", "calls": calls})}
        return holder["server"].default_message(body)

    server = holder["server"] = fake_server(seed=4, responder=respond)
    cfg = load_config(None, {
        "llm": {"base_urls": [server.base_url], "max_retries": 20},
        "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
        "run": {"domains": "weather", "db": str(tmp_path / "synth.duckdb"), "trajectories": 10,
                "tools_per_domain": 4},
        "rollout": {"fault_rate": 0.0,
                    "python_tools": [{"target": TARGET, "domain": "weather"}],
                    "mcp_servers": [{"command": sys.executable, "args": [str(MCP_SERVER)], "domain": "weather",
                                     "tools": ["convert_temperature"]}]},
    }, environ={})
    summary = execute_run(cfg, use_ray=False, show_progress=False)  # type: ignore[arg-type]
    assert summary.judged == 10
    con = duckdb.connect(str(tmp_path / "synth.duckdb"), read_only=True)
    sources = dict(con.execute("SELECT name, source FROM tools WHERE domain = 'weather' "
                               "AND source <> 'synthetic'").fetchall())
    rows = con.execute("SELECT messages, steps, tools FROM trajectories").fetchall()
    con.close()
    assert sources == {"convert_currency": "python", "convert_temperature": "mcp"}

    executed: dict[str, int] = {"python": 0, "mcp": 0}
    beside_simulated = 0  # episodes in which a real tool ran and the toolset also had simulated tools
    for messages_json, steps_json, tools_json in rows:
        steps, messages = json.loads(steps_json), json.loads(messages_json)
        names = {t["function"]["name"] for t in json.loads(tools_json)}
        kinds = {s["executor"] for s in steps if s["actor"] == "tool"}
        for kind in ("python", "mcp"):
            if kind in kinds:
                executed[kind] += 1
        # A toolset of the two bound tools alone is one the sampler may draw (a clean-clone CI did,
        # once four agents were synthesised at once), so this is asked of the run, not of every episode.
        if kinds & {"python", "mcp"} and names - {"convert_currency", "convert_temperature"}:
            beside_simulated += 1
        results = [json.loads(m["content"]) for m in messages if m["role"] == "tool" and m.get("name")
                   in ("convert_currency", "convert_temperature") and m["content"].startswith("{")]
        for r in results:  # computed by the function / the server, not simulated
            if "converted" in r:
                assert r["converted"] == round(r["amount"] * {"EUR": 0.5, "GBP": 0.25, "JPY": 100.0}[r["currency"]], 2)
            if "fahrenheit" in r:
                assert r["fahrenheit"] == round(r["celsius"] * 9 / 5 + 32, 2)
    assert executed["python"] >= 1 and executed["mcp"] >= 1, executed
    assert beside_simulated >= 1, "no real tool ran in a toolset with simulated tools"


def test_an_mcp_server_over_streamable_http_is_listed_and_called() -> None:
    import asyncio
    import subprocess
    import time

    import httpx

    from synth.llm.local import free_port
    from synth.rollout import McpExecutor

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(MCP_SERVER), "--http", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def list_and_call() -> Any:
        binding = McpServerBinding(url=f"http://127.0.0.1:{port}/mcp", domain="mcp/units")
        async with McpExecutor(binding) as mcp:
            assert sorted(mcp.tool_names) == ["always_fails", "convert_temperature", "count_words"]
            assert {s.domain for s in mcp.specs} == {"mcp/units"}
            spec = next(s for s in mcp.specs if s.name == "convert_temperature")
            return await mcp.call(spec, {"celsius": 100})

    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        obs = asyncio.run(list_and_call())
        assert obs.content == {"celsius": 100.0, "fahrenheit": 212.0} and obs.executor == "mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def test_mcp_files_named_in_the_config_are_imported_and_an_unplaced_server_is_a_domain_of_its_own(
    fake_server: Any, tmp_path: Path,
) -> None:
    """`[run] mcp_files`: imported at the start of the run; a server that fits no taxonomy domain
    lands in `mcp/<server>`, which `--domains` selects like any other domain."""
    tools = [{"name": f"qqzx_blorp_{i}", "description": f"Qqzx blorping, variant {i}.",
              "inputSchema": {"type": "object", "properties": {"qqzx_id": {"type": "string"}},
                              "required": ["qqzx_id"]},
              "annotations": {"readOnlyHint": True}} for i in range(3)]
    path = tmp_path / "zork.json"
    path.write_text(json.dumps({"tools": tools}))
    server = fake_server()
    cfg = load_config(None, {
        "llm": {"base_urls": [server.base_url], "max_retries": 20},
        "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
        "run": {"domains": "weather,mcp/zork", "db": str(tmp_path / "synth.duckdb"), "trajectories": 6,
                "tools_per_domain": 4, "mcp_files": [str(path)]},
    }, environ={})
    summary = execute_run(cfg, use_ray=False, show_progress=False)  # type: ignore[arg-type]
    assert summary.judged == 6
    con = duckdb.connect(str(tmp_path / "synth.duckdb"), read_only=True)
    placed = con.execute("SELECT name, side_effect FROM tools WHERE domain = 'mcp/zork' ORDER BY name").fetchall()
    agents = con.execute("SELECT count(*) FROM agents WHERE domain = 'mcp/zork'").fetchall()[0][0]
    con.close()
    assert placed == [(f"qqzx_blorp_{i}", "read") for i in range(3)]
    assert agents >= 1  # the toolsets of the run drew on the server's own domain
