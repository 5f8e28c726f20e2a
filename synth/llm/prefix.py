"""Compute each long shared prompt opening once: the first request with it goes alone.

The episodes of one agent send the same opening (system prompt with policies, toolset) and differ
after it. Started together, each of them makes the server compute that opening, 600 tokens and
more on the embedded model, in a slot of its own, and the server's prefix cache (per slot, and
llama-server's host-memory prompt cache across slots) can only help requests that come after one
has finished. `PrefixWarmup` makes them come after: the first request with a given opening goes
out at once; a request with the same opening that arrives while it is in flight waits until it
has finished (or failed), then goes out and finds the opening cached. Later requests never wait.

It also remembers which endpoint computed each opening, so with several replicas the requests of
one agent's episodes go where their prefix is (`preferred`).

Only openings of at least `min_chars` characters take part: a short system prompt costs less to
recompute than to wait for. Everything is per process (a Ray actor has its own); the driver sends
an agent's episodes to one actor (`synth.pipeline.worker.RayWorkers`) so they meet here.
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
    """Which openings are being computed (their waiters) and which are done (their endpoint)."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._computing: dict[str, asyncio.Event] = {}
        self._computed: OrderedDict[str, str] = OrderedDict()
        self._max = max_remembered
        self.waits = 0  # requests that waited for another to compute their opening

    def preferred(self, key: str | None) -> str | None:
        """The endpoint that computed `key`'s opening, if one did."""
        return self._computed.get(key) if key is not None else None

    def served(self, key: str | None, endpoint: str) -> None:
        """Record that `endpoint` computed `key`'s opening (the first request's reply came back)."""
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
