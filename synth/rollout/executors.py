"""Real tools in the loop: executors that run a call for real instead of simulating it.

A rollout binds tool names to executors (`dict[str, ToolExecutor]`); a tool without one is
simulated. Two kinds exist:
- `McpExecutor`: a live MCP server over stdio. It starts the server process, `initialize`s a
  `ClientSession`, and sends the real `tools/call`. Use it as an async context manager, entered
  and left in the same task (the MCP client runs an anyio task group).
- `PythonExecutor`: a registry of Python callables (sync or async) called with the arguments as
  keywords.

Either way the call's arguments are first validated against the tool's `inputSchema` by the
episode (same as for simulated tools), and a failure of the real tool (an exception, MCP
`isError`) becomes an error observation, never a crash. Real executors get no injected faults:
their results are what the tool really did.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from synth.llm import Usage
from synth.models import ToolSpec
from synth.rollout.observation import ToolObservation, error_observation


class ToolExecutor(Protocol):
    """Answers calls of some tools: for real (MCP, Python) or simulated (`world.ToolSimulator`).
    The arguments it gets have been validated against `spec.input_schema` already; where the
    call sits in the episode (`call_id`, `turn`, `seed`) is for executors that log or sample."""

    kind: str

    async def call(self, spec: ToolSpec, arguments: dict[str, Any], *, call_id: str | None = None,
                   turn: int = 0, seed: int | None = None) -> ToolObservation: ...


class McpServerBinding(BaseModel):
    """Config: one stdio MCP server whose tools run for real (`tools`: which; empty means all)."""

    model_config = ConfigDict(extra="forbid")

    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    tools: list[str] = Field(default_factory=list)
    timeout_s: float = Field(30.0, gt=0)


def _mcp_content(result: Any) -> tuple[Any, bool]:
    """(content, is_error) of an MCP CallToolResult: its structured content when it has one, else
    its text blocks joined (other blocks are described by type)."""
    is_error = bool(getattr(result, "is_error", False))
    structured = getattr(result, "structured_content", None)
    if structured is not None and not is_error:
        return structured, False
    parts = []
    for block in getattr(result, "content", None) or []:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')}]")
    text = "\n".join(parts)
    return ({"error": {"type": "tool_error", "message": text}} if is_error else text), is_error


class McpExecutor:
    """A live stdio MCP server. `async with McpExecutor(binding) as ex: await ex.call(...)`."""

    kind = "mcp"

    def __init__(self, binding: McpServerBinding) -> None:
        self.binding = binding
        self.session: Any = None
        self.specs: list[ToolSpec] = []
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> McpExecutor:
        from mcp import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        stack = contextlib.AsyncExitStack()
        try:
            params = StdioServerParameters(command=self.binding.command, args=self.binding.args, env=self.binding.env)
            read, write = await stack.enter_async_context(stdio_client(params))
            self.session = await stack.enter_async_context(ClientSession(read, write))
            await asyncio.wait_for(self.session.initialize(), self.binding.timeout_s)
            listed = await asyncio.wait_for(self.session.list_tools(), self.binding.timeout_s)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        wanted = set(self.binding.tools)
        self.specs = [
            ToolSpec.model_validate({
                "name": t.name, "description": t.description or "", "input_schema": t.input_schema,
                "output_schema": t.output_schema, "domain": "mcp", "source": "mcp",
                "provenance": {"servers": [" ".join([self.binding.command, *self.binding.args])]},
            })
            for t in listed.tools
            if not wanted or t.name in wanted
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    @property
    def tool_names(self) -> list[str]:
        return [s.name for s in self.specs]

    async def call(self, spec: ToolSpec, arguments: dict[str, Any], *, call_id: str | None = None,
                   turn: int = 0, seed: int | None = None) -> ToolObservation:
        name = spec.name
        if self.session is None:
            raise RuntimeError("McpExecutor used outside `async with`")
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.session.call_tool(name, arguments), self.binding.timeout_s)
        except TimeoutError:
            obs = error_observation("timeout", f"{name} did not respond within {self.binding.timeout_s:g} s", "mcp")
        except Exception as exc:
            obs = error_observation("tool_error", f"{name}: {type(exc).__name__}: {exc}", "mcp")
        else:
            content, is_error = _mcp_content(result)
            message = content["error"]["message"] if is_error else ""
            obs = ToolObservation(content, "mcp", is_error=is_error,
                                  error=f"tool_error: {message[:300]}" if is_error else None)
        obs.usage = Usage(latency_s=time.perf_counter() - started)
        return obs


PythonTool = Callable[..., Any] | Callable[..., Awaitable[Any]]


class PythonExecutor:
    """Tools implemented as Python callables, called with the arguments as keywords. The return
    value must be JSON-serialisable (a pydantic model is dumped); an exception becomes an error
    observation."""

    kind = "python"

    def __init__(self, registry: Mapping[str, PythonTool]) -> None:
        self.registry = dict(registry)

    @property
    def tool_names(self) -> list[str]:
        return list(self.registry)

    async def call(self, spec: ToolSpec, arguments: dict[str, Any], *, call_id: str | None = None,
                   turn: int = 0, seed: int | None = None) -> ToolObservation:
        name = spec.name
        fn = self.registry.get(name)
        if fn is None:
            return error_observation("unknown_tool", f"no Python tool named {name!r}", "python")
        started = time.perf_counter()
        try:
            value = fn(**arguments)
            if inspect.isawaitable(value):
                value = await value
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json")
            obs = ToolObservation(value, "python")
        except Exception as exc:
            obs = error_observation("tool_error", f"{name}: {type(exc).__name__}: {exc}", "python")
        obs.usage = Usage(latency_s=time.perf_counter() - started)
        return obs


def bind_executors(*executors: McpExecutor | PythonExecutor) -> dict[str, ToolExecutor]:
    """The tool-name -> executor map `run_episode` takes; a later executor wins a name clash."""
    bound: dict[str, ToolExecutor] = {}
    for executor in executors:
        for name in executor.tool_names:
            bound[name] = executor
    return bound
