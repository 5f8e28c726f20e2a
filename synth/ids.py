"""Content-hash identifiers.

An id is a hash of what determines the item (its inputs, the config that shapes it, the seed),
so the same work always gets the same id: re-running a run finds its rows already stored and
skips them, and two runs that make the same thing share one row.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def content_id(prefix: str, *parts: Any) -> str:
    """`prefix_` plus 20 hex digits of SHA-256 over the canonical JSON of `parts`."""
    digest = hashlib.sha256(canonical_json(parts).encode()).hexdigest()
    return f"{prefix}_{digest[:20]}"


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed derived from content, for per-item sampling that replays identically."""
    return int(hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF
