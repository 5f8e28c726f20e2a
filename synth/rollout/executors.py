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
import re
import tempfile
import time
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from pydantic import BaseModel

from synth.llm import Usage
from synth.models import Provenance, ToolSpec
from synth.rollout.observation import ToolObservation, error_observation
from synth.settings import McpServerBinding, PythonToolBinding
from synth.tools.spec import guess_side_effect, tool_from_mcp


class ToolExecutor(Protocol):
    """Answers calls of some tools: for real (MCP, Python) or simulated (`world.ToolSimulator`).
    The arguments it gets have been validated against `spec.input_schema` already; where the
    call sits in the episode (`call_id`, `turn`, `seed`) is for executors that log or sample."""

    kind: str

    async def call(self, spec: ToolSpec, arguments: dict[str, Any], *, call_id: str | None = None,
                   turn: int = 0, seed: int | None = None) -> ToolObservation: ...


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
        self._errlog: Any = None

    async def __aenter__(self) -> McpExecutor:
        from mcp import ClientSession

        stack = contextlib.AsyncExitStack()
        try:
            if self.binding.url is not None:
                from mcp.client.streamable_http import streamable_http_client

                streams = await stack.enter_async_context(streamable_http_client(self.binding.url))
            else:
                from mcp.client.stdio import StdioServerParameters, stdio_client

                params = StdioServerParameters(command=self.binding.command or "", args=self.binding.args,
                                               env=self.binding.env)
                # The server's stderr (its logs) goes to a file of ours: not onto the run's console, and
                # the SDK needs a real file descriptor, which a captured sys.stderr may not have.
                self._errlog = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace"))  # noqa: SIM115
                streams = await stack.enter_async_context(stdio_client(params, errlog=self._errlog))
            self.session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
            await asyncio.wait_for(self.session.initialize(), self.binding.timeout_s)
            listed = await asyncio.wait_for(self.session.list_tools(), self.binding.timeout_s)
        except Exception as exc:
            tail = ""
            if self._errlog is not None:
                self._errlog.seek(0)
                tail = self._errlog.read()[-600:].strip()
            await stack.aclose()
            if tail:
                raise RuntimeError(f"{type(exc).__name__}: {exc}; server stderr: {tail}") from exc
            raise
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        wanted = set(self.binding.tools)
        provenance = Provenance(servers=[self.binding.label])
        # As declared, annotations (readOnlyHint, destructiveHint, ...) included: they decide whether it writes.
        self.specs = [tool_from_mcp(t.model_dump(mode="json", by_alias=True, exclude_none=True),
                                    domain=self.binding.domain or "mcp", provenance=provenance)
                      for t in listed.tools if not wanted or t.name in wanted]
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


_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                               dict: "object", list: "array", tuple: "array"}


def _type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of a type hint: scalars, lists / tuples (with items), dicts, Literal
    (enum), Optional / unions (anyOf); anything else is an unconstrained value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        options = [_type_schema(a) for a in args if a is not type(None)]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin in (list, tuple, set, frozenset):
        return {"type": "array", **({"items": _type_schema(args[0])} if args and args[0] is not Ellipsis else {})}
    if origin is dict:
        return {"type": "object"}
    return {}


def _docstring_parts(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) of a docstring: its text before an `Args:` /
    `Parameters:` section or `:param` lines, and each parameter's line there."""
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    body: list[str] = []
    in_args = False
    for line in lines:
        stripped = line.strip()
        sphinx = re.match(r":param\s+(?:\w+\s+)?(\w+):\s*(.*)", stripped)
        if sphinx:
            params[sphinx.group(1)] = sphinx.group(2)
            continue
        if re.match(r"^(Args|Arguments|Parameters|Params):$", stripped):
            in_args = True
            continue
        if in_args:
            item = re.match(r"(\w+)(?:\s*\([^)]*\))?:\s*(.*)", stripped)
            if item:
                params[item.group(1)] = item.group(2)
                continue
            if re.match(r"^(Returns|Raises|Yields|Examples?):$", stripped) or not stripped:
                in_args = False
            continue
        body.append(line)
    return " ".join(" ".join(body).split()), params


def python_tool_spec(binding: PythonToolBinding, fn: PythonTool | None = None) -> ToolSpec:
    """The ToolSpec of a bound Python function: one property per parameter from its type hint
    (`_type_schema`), required unless it has a default (defaults kept), descriptions from the
    docstring (Google `Args:` or Sphinx `:param x:`), the output schema from the return hint."""
    fn = fn or binding.load()
    hints = typing.get_type_hints(fn)
    description, param_docs = _docstring_parts(fn.__doc__ or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema = _type_schema(hints.get(param.name, Any))
        if param.name in param_docs:
            schema["description"] = param_docs[param.name]
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        elif param.default is None or isinstance(param.default, str | int | float | bool):
            schema["default"] = param.default
        properties[param.name] = schema
    output = _type_schema(hints["return"]) if "return" in hints else None
    name = str(binding.name or getattr(fn, "__name__", None) or binding.target.rpartition(":")[2])
    side_effect = ("write" if binding.writes else "read") if binding.writes is not None else guess_side_effect(
        name, {})
    return ToolSpec.model_validate({
        "name": name, "description": description or name.replace("_", " "),
        "input_schema": {"type": "object", "properties": properties, "required": required},
        "output_schema": output if output and output.get("type") == "object" else None,
        "side_effect": side_effect, "domain": binding.domain, "source": "python",
        "provenance": {"servers": [binding.target]},
    })


async def bound_tool_specs(mcp_servers: list[McpServerBinding],
                           python_tools: list[PythonToolBinding]) -> list[ToolSpec]:
    """The tools the config binds into runs' pools: each MCP server with a `domain`, started,
    listed and stopped (its tools as declared), and every Python tool. Raises RuntimeError naming
    the server that cannot be started or listed, ValueError for a Python target that cannot be
    loaded."""
    specs: list[ToolSpec] = []
    for binding in mcp_servers:
        if binding.domain is None:
            continue
        try:
            async with McpExecutor(binding) as server:
                specs += server.specs
        except Exception as exc:
            raise RuntimeError(f"MCP server {binding.label!r} could not be listed: {type(exc).__name__}: "
                               f"{str(exc)[:200]}") from exc
    specs += [python_tool_spec(b) for b in python_tools]
    return specs


def bind_executors(*executors: McpExecutor | PythonExecutor) -> dict[str, ToolExecutor]:
    """The tool-name -> executor map `run_episode` takes; a later executor wins a name clash."""
    bound: dict[str, ToolExecutor] = {}
    for executor in executors:
        for name in executor.tool_names:
            bound[name] = executor
    return bound
