"""A response cache keyed by a hash of the request, shared by every process on one machine.

Re-running identical requests (same messages, schema, sampling and seed) costs no model time,
which is also how a killed episode is replayed up to the point it reached. Entries are one JSON
file each under `dir/ab/abcdef....json`, written to a temporary name and renamed, so concurrent
writers (several Ray workers) never leave a torn entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def request_key(payload: dict[str, Any], base: str = "") -> str:
    """A stable hash of a request body; the endpoint is left out so replicas share entries."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((base + blob).encode()).hexdigest()


class ResponseCache:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data

    def put(self, key: str, response: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(response, fh, ensure_ascii=False)
        os.replace(tmp, path)
