"""Getting a model endpoint for a command: the configured servers, or the embedded backend.

`model_endpoints(cfg)` is the one place that decides whether synth starts llama-server: only when
some role has no base URL. It yields the config with every such role pointed at the backend, and
stops the backend on exit, however the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from synth.config import DEFAULT_IN_FLIGHT, Role, SynthConfig
from synth.llm.local import LocalBackend, stop_on_signals
from synth.settings import ToolMode

# Episodes per decoding slot: while one episode of a slot waits for its tool result or user turn
# (and the client parses, validates and stores), another has a request queued, so no slot idles.
EPISODES_PER_SLOT = 2


@contextmanager
def model_endpoints(cfg: SynthConfig) -> Iterator[tuple[SynthConfig, LocalBackend | None]]:
    if not cfg.needs_local_backend():
        yield cfg, None
        return
    backend = LocalBackend(cfg.backend)
    stop_on_signals(backend)
    backend.start()
    try:
        yield cfg.with_base_url(backend.base_url), backend
    finally:
        backend.stop()


def server_props(base_url: str, timeout_s: float = 3.0) -> dict[str, Any] | None:
    """llama-server's `/props` at `base_url` (slots, chat template and its capabilities); None for
    a server that has none (vLLM, a hosted API) or cannot be reached."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        props = httpx.get(f"{root}/props", timeout=timeout_s).json()
    except (httpx.HTTPError, ValueError):
        return None
    return props if isinstance(props, dict) else None


def server_slots(base_url: str, timeout_s: float = 3.0) -> int | None:
    """The decoding slots of the llama-server at `base_url` (`total_slots` of its `/props`);
    None for a server that does not say (vLLM, a hosted API) or cannot be reached."""
    props = server_props(base_url, timeout_s)
    try:
        slots = int(props["total_slots"]) if props is not None else 0
    except (KeyError, TypeError, ValueError):
        return None
    return slots if slots > 0 else None


def template_supports_tools(props: dict[str, Any]) -> bool | None:
    """Whether the served model's chat template renders tools: llama-server's
    `chat_template_caps.supports_tools` where it reports one, else whether the template mentions
    `tools` at all; None when /props says nothing about the template."""
    caps = props.get("chat_template_caps")
    if isinstance(caps, dict) and "supports_tools" in caps:
        return bool(caps["supports_tools"])
    template = props.get("chat_template")
    if isinstance(template, str) and template:
        return "tools" in template
    return None


def agent_tool_mode(cfg: SynthConfig) -> tuple[ToolMode, str]:
    """The agent's tool mode for a run, and why. A configured "constrained" or "native" stands;
    "auto" asks the agent role's servers: native tool calls when every one's chat template supports
    tools (llama.cpp then constrains a reply only once a call starts), the per-toolset action schema
    when one's does not (SmolLM2's template has no tools: llama.cpp would put the whole reply
    under a generic tool-call grammar), native when no server describes its template (vLLM and
    hosted APIs take `tools=[...]`)."""
    configured = cfg.rollout.tool_mode or cfg.llm.role(Role.AGENT).tool_mode
    if configured != "auto":
        return configured, "configured"
    answers = []
    for url in cfg.llm.role(Role.AGENT).base_urls:
        props = server_props(url)
        answers.append(template_supports_tools(props) if props is not None else None)
    if any(a is False for a in answers):
        return "constrained", "auto: the model's chat template has no tool calling (/props)"
    if answers and all(a is True for a in answers):
        return "native", "auto: the model's chat template supports tools (/props)"
    return "native", "auto: the server does not describe its chat template"


def episodes_in_flight(cfg: SynthConfig) -> tuple[int, str]:
    """How many episodes a run keeps in flight, and why: the configured `run.in_flight`, else
    `EPISODES_PER_SLOT` per decoding slot of the agent role's servers (the role that dominates a
    rollout), else `DEFAULT_IN_FLIGHT` when no server says how many slots it has."""
    if cfg.run.in_flight is not None:
        return cfg.run.in_flight, "run.in_flight"
    counts = [server_slots(url) for url in cfg.llm.role(Role.AGENT).base_urls]
    if counts and all(n is not None for n in counts):
        slots = sum(n for n in counts if n is not None)
        return EPISODES_PER_SLOT * slots, f"{EPISODES_PER_SLOT} per slot of {slots} server slot(s), from /props"
    return DEFAULT_IN_FLIGHT, "the servers do not report their slots"
