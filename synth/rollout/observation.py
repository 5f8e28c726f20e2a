"""What a tool call returned, whoever answered it: the contract every executor returns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from synth.llm import Usage

Executor = Literal["simulated", "mcp", "python", "validator", "fault"]


@dataclass(slots=True)
class ToolObservation:
    """The content of a call's `tool` message plus how it was produced. `state_update` is the
    merge patch the call applied to the simulated world (empty for reads and for real tools
    whose result describes no entity)."""

    content: Any
    executor: Executor
    is_error: bool = False
    fault: str | None = None
    error: str | None = None
    state_update: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)

    def message_content(self) -> str:
        """The `tool` message content: JSON text, or the text itself when the result is a string."""
        if isinstance(self.content, str):
            return self.content
        return json.dumps(self.content, ensure_ascii=False)


def error_observation(kind: str, message: str, executor: Executor, **extra: Any) -> ToolObservation:
    """An error result shaped like a real API's: `{"error": {"type", "message", ...}}`."""
    return ToolObservation({"error": {"type": kind, "message": message, **extra}}, executor, is_error=True,
                           error=f"{kind}: {message}")
