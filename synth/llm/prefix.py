"""Long shared prompt openings: where they are cached, and (opt-in) computing each once.

The episodes of one agent send the same opening (system prompt with policies, toolset) and differ
after it; it is 600 tokens and more on the embedded model.

- **Routing** (always, with several replicas): the client remembers which endpoint last served a
  request with each opening (`served`, `preferred`) and sends the next one there, so an episode's
  turns and its siblings find the prefix cached on that replica.
- **Warmup** (`[llm] prefix_warmup`, off by default): the first request with a given opening goes
  out at once; a request with the same opening that arrives while it is in flight waits until it
  has finished (or failed), then goes out and finds the opening cached. Later requests never wait.
  That suits a server with one prefix cache for all requests (vLLM, SGLang). On llama-server, which
  keeps a prefix in the slot that computed it, a released sibling takes that slot and the first
  episode's next turn recomputes everything elsewhere (measured; docs/architecture.md, section 5).

Only openings of at least `min_chars` characters take part: a short system prompt costs less to
recompute than to wait for. Everything is per process (a Ray actor has its own); the driver sends
an agent's episodes to one actor (`synth.pipeline.worker.RayWorkers.call_for`) so they meet here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

# Openings shorter than this are not worth a wait (about 150 tokens of English).
MIN_SHARED_CHARS = 600
# Openings remembered as computed; the oldest are forgotten (then one request goes alone again).
MAX_REMEMBERED = 4096


def opening_key(body: dict[str, Any], min_chars: int = MIN_SHARED_CHARS) -> str | None:
    """The digest of a request's shared opening: its leading system message(s) and its tools (the
    part the episodes of one agent have in common); None when that is shorter than `min_chars`."""
    messages = body.get("messages") or []
    opening: list[Any] = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "system":
            break
        opening.append(message.get("content"))
    if not opening:
        return None
    text = json.dumps([opening, body.get("tools")], sort_keys=True, ensure_ascii=False, default=str)
    if len(text) < min_chars:
        return None
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class PrefixWarmup:
    """Which openings are being computed (their waiters) and where each was last served."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._computing: dict[str, asyncio.Event] = {}
        self._computed: OrderedDict[str, str] = OrderedDict()
        self._max = max_remembered
        self.waits = 0  # requests that waited for another to compute their opening

    def preferred(self, key: str | None) -> str | None:
        """The endpoint that last served `key`'s opening, if one did."""
        return self._computed.get(key) if key is not None else None

    def served(self, key: str | None, endpoint: str) -> None:
        """Record that `endpoint` served a request with `key`'s opening: it holds that prefix now."""
        if key is not None:
            self._computed[key] = endpoint
            self._computed.move_to_end(key)
            if len(self._computed) > self._max:
                self._computed.popitem(last=False)

    @asynccontextmanager
    async def turn(self, key: str | None) -> AsyncIterator[None]:
        """Hold the caller while another request computes `key`'s opening. A first request marks
        it as being computed until its block ends, however it ends; its waiters then go out
        together (the opening is cached, or the first failed and each tries on its own)."""
        if key is None or key in self._computed:
            yield
            return
        event = self._computing.get(key)
        if event is not None:
            self.waits += 1
            await event.wait()
            yield
            return
        event = self._computing[key] = asyncio.Event()
        try:
            yield
        finally:
            del self._computing[key]
            event.set()
            self._computed.setdefault(key, "")
