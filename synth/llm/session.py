"""Getting a model endpoint for a command: the configured servers, or the embedded backend.

`model_endpoints(cfg)` is the one place that decides whether synth starts llama-server: only when
some role has no base URL. It yields the config with every such role pointed at the backend, and
stops the backend on exit, however the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from synth.config import SynthConfig
from synth.llm.local import LocalBackend, stop_on_signals


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
