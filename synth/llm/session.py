"""Getting a model endpoint for a command: the configured servers, or the embedded backend.

`model_endpoints(cfg)` is the one place that decides whether synth starts llama-server: only when
some role has no base URL. It yields the config with every such role pointed at the backend, and
stops the backend on exit, however the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from synth.config import DEFAULT_IN_FLIGHT, Role, SynthConfig
from synth.llm.local import LocalBackend, stop_on_signals

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


def server_slots(base_url: str, timeout_s: float = 3.0) -> int | None:
    """The decoding slots of the llama-server at `base_url` (`total_slots` of its `/props`);
    None for a server that does not say (vLLM, a hosted API) or cannot be reached."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        props = httpx.get(f"{root}/props", timeout=timeout_s).json()
        slots = int(props["total_slots"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return slots if slots > 0 else None


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
