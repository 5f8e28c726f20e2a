"""Injected faults: the errors a real API gives now and then, so agents learn to recover.

Kinds: timeout, rate_limited, not_found, permission_denied, partial_result. A fault is recorded
as such (`executor="fault"`, `fault=<kind>`). `partial_result` runs the call, then truncates its
result and marks it partial. Faults reach simulated calls only: real executors' results are what
the tool really did.
"""

from __future__ import annotations

import random
from typing import Any

from synth.models import ToolSpec
from synth.rollout.observation import ToolObservation, error_observation
from synth.settings import FAULT_KINDS

# Faults a retry can get past: what an `error_recovery` task's planned call is given, so that
# recovering (retrying, or telling the user) is possible and the task stays solvable.
TRANSIENT_FAULTS: tuple[str, ...] = ("timeout", "rate_limited")


def fault_observation(kind: str, spec: ToolSpec, rng: random.Random) -> ToolObservation:
    """A realistic error payload for an injected fault (not `partial_result`, which needs a result)."""
    if kind == "timeout":
        obs = error_observation("timeout", f"{spec.name} did not respond within 30 seconds", "fault")
    elif kind == "rate_limited":
        wait = rng.randint(2, 60)
        obs = error_observation("rate_limited", f"too many requests to {spec.name}; retry after {wait} seconds",
                                "fault", retry_after_s=wait)
    elif kind == "not_found":
        obs = error_observation("not_found", "no resource matches the given identifiers", "fault")
    elif kind == "permission_denied":
        obs = error_observation("permission_denied", f"the current credentials may not call {spec.name}", "fault")
    else:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    obs.fault = kind
    return obs


def truncate_result(result: Any) -> Any:
    """A partial version of a result: half of a list, half of an object's fields, marked partial."""
    if isinstance(result, list):
        return {"items": result[: len(result) // 2], "partial": True, "warning": "result truncated"}
    if isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, list) and len(value) > 1:
                return {**result, key: value[: len(value) // 2], "partial": True}
        keys = list(result)
        kept = {k: result[k] for k in keys[: max(1, len(keys) // 2)]}
        return {**kept, "partial": True, "warning": "some fields could not be loaded"}
    return {"result": result, "partial": True, "warning": "result may be incomplete"}
