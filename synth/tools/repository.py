"""Storage of the tool repository: accepted and rejected tools as rows of the `tools` table.

Rows are keyed by content (`ToolSpec.id`), and `Dataset` inserts with ON CONFLICT DO NOTHING,
so storing the same tools twice adds nothing. A rejected tool is stored with status 'rejected'
and its reason; one that never became a ToolSpec (a malformed entry, a failed generation) is
stored with what is known under a content id of its raw data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from synth.ids import content_id
from synth.models import Provenance, ToolSpec
from synth.store import Dataset


@dataclass
class RejectedTool:
    """A tool that was not accepted, with the reason and whatever could be kept."""

    reason: str
    raw: Any
    domain: str
    application: str = ""
    spec: ToolSpec | None = None
    source: Literal["synthetic", "mcp"] = "mcp"
    server: str = ""
    file: str = ""

    @property
    def name(self) -> str:
        if self.spec is not None:
            return self.spec.name
        if isinstance(self.raw, Mapping) and isinstance(self.raw.get("name"), str):
            return self.raw["name"]
        return "?"

    @property
    def id(self) -> str:
        return self.spec.id if self.spec is not None else content_id("tool", "raw", self.raw)

    def to_row(self, run_id: str) -> dict[str, Any]:
        if self.spec is not None:
            return self.spec.to_row(run_id, "rejected", self.reason)
        raw = self.raw if isinstance(self.raw, Mapping) else {"raw": self.raw}
        description = raw.get("description")
        prov = Provenance(
            servers=[self.server] if self.server else [],
            files=[self.file] if self.file else [],
            notes=["kept as received: it could not become a ToolSpec"],
            mcp_fields={
                k: v for k, v in raw.items() if k not in ("name", "description", "inputSchema", "outputSchema")
            },
        )
        return {
            "id": self.id,
            "run_id": run_id,
            "domain": self.domain,
            "application": self.application,
            "name": str(raw.get("name", "?"))[:200],
            "description": description if isinstance(description, str) else "",
            "input_schema": raw.get("inputSchema"),
            "output_schema": raw.get("outputSchema"),
            "side_effect": None,
            "error_modes": [],
            "source": self.source,
            "provenance": prov.model_dump(),
            "status": "rejected",
            "reason": self.reason,
        }


def store_tools(
    dataset: Dataset, run_id: str, tools: Iterable[ToolSpec], rejected: Iterable[RejectedTool]
) -> dict[str, int]:
    """Add accepted then rejected tools and flush; returns {"accepted": n, "rejected": m, "added": k}
    where `added` counts rows that were new to the file."""
    accepted_n = rejected_n = 0
    for spec in tools:
        dataset.add("tools", spec.to_row(run_id, "accepted"))
        accepted_n += 1
    for item in rejected:
        dataset.add("tools", item.to_row(run_id))
        rejected_n += 1
    added = dataset.flush().get("tools", 0)
    return {"accepted": accepted_n, "rejected": rejected_n, "added": added}
