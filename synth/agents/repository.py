"""Storage of agents and tasks: rows of the `agents` and `tasks` tables.

Rows are keyed by content (`Agent.id`, `Task.id`) and `Dataset` inserts with ON CONFLICT DO
NOTHING, so storing a result twice adds nothing. A rejected task is stored with status
'rejected' and its reason; one that never became a `Task` (generation failed) is stored with what
is known, under a content id of that data.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from synth.agents.synthesize import AgentResult
from synth.ids import content_id
from synth.models import Agent, RejectedItem, Task
from synth.store import Dataset


def rejected_task_row(item: RejectedItem, agent: Agent, run_id: str) -> dict[str, Any]:
    """The `tasks` row of a rejected task: the task itself when the dump is one, else its data."""
    try:
        return Task.model_validate(item.data).to_row(run_id, "rejected", item.reason)
    except ValidationError:
        pass
    data = item.data
    return {
        "id": content_id("task", "rejected", agent.id, data, item.reason),
        "run_id": run_id, "agent_id": data.get("agent_id", agent.id), "domain": data.get("domain", agent.domain),
        "kind": data.get("kind"), "difficulty": data.get("difficulty"), "goal": str(data.get("goal") or ""),
        "persona": data.get("persona"), "withheld": data.get("withheld"),
        "initial_state": data.get("initial_state"), "rubric": data.get("rubric"),
        "status": "rejected", "reason": item.reason,
    }


def store_agent_result(dataset: Dataset, run_id: str, result: AgentResult, *, flush: bool = True) -> None:
    """Add the agent, its accepted tasks and its rejected ones (with reasons), then flush (unless
    the caller batches flushes itself, as the pipeline driver does)."""
    dataset.add("agents", result.agent.to_row(run_id))
    for task in result.tasks:
        dataset.add("tasks", task.to_row(run_id))
    for item in result.rejected:
        dataset.add("tasks", rejected_task_row(item, result.agent, run_id))
    if flush:
        dataset.flush()
