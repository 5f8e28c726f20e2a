"""The pydantic models that pass between stages: the pipeline's contracts.

tool repository -> `ToolSpec`; agent synthesis -> `Agent`; task synthesis -> `Task` (with
`Persona`, `Rubric`); rollout -> `Trajectory` (with `StepRecord`); judging -> `Judgment`.
A stage is `async def stage(inputs, llm, rng) -> outputs` over these; storage maps each model to
one DuckDB table row (`to_row`), so the notebook-facing schema and the code cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from synth.ids import content_id

TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

Status = Literal["accepted", "rejected"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------- tools


class Provenance(_Model):
    """Where a tool came from: the MCP servers/files it was imported from, or the model and
    prompt version that generated it."""

    servers: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)
    model: str | None = None
    prompt_version: str | None = None
    labels: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    # MCP tool fields ToolSpec has no slot for (title, annotations, execution, _meta, icons, ...),
    # kept verbatim so converting back to MCP's tools/list shape loses nothing.
    mcp_fields: dict[str, Any] = Field(default_factory=dict)


class ToolSpec(_Model):
    """One tool with a clear interface. `input_schema`/`output_schema` keep MCP's wire names as
    aliases (`inputSchema`, `outputSchema`)."""

    name: str
    description: str
    input_schema: dict[str, Any] = Field(alias="inputSchema")
    output_schema: dict[str, Any] | None = Field(default=None, alias="outputSchema")
    side_effect: Literal["read", "write"] = "read"
    error_modes: list[str] = Field(default_factory=list)
    domain: str
    application: str = ""
    source: Literal["synthetic", "mcp"] = "synthetic"
    provenance: Provenance = Field(default_factory=Provenance)

    @field_validator("name")
    @classmethod
    def _legal_name(cls, value: str) -> str:
        if not TOOL_NAME_RE.match(value):
            raise ValueError(f"tool name {value!r} is not legal for function calling (^[a-zA-Z0-9_-]{{1,64}}$)")
        return value

    @property
    def id(self) -> str:
        """Content hash of what defines the tool's behaviour (not its provenance), so one tool
        imported from many servers is one row."""
        return content_id("tool", self.name, self.description, self.input_schema, self.output_schema)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI function-tool shape (`tools=[...]` of Chat Completions)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.input_schema},
        }

    def to_row(self, run_id: str, status: Status = "accepted", reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "run_id": run_id, "domain": self.domain, "application": self.application,
            "name": self.name, "description": self.description, "input_schema": self.input_schema,
            "output_schema": self.output_schema, "side_effect": self.side_effect,
            "error_modes": self.error_modes, "source": self.source,
            "provenance": self.provenance.model_dump(), "status": status, "reason": reason,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ToolSpec:
        return cls.model_validate({
            "name": row["name"], "description": row["description"], "input_schema": row["input_schema"],
            "output_schema": row.get("output_schema"), "side_effect": row.get("side_effect") or "read",
            "error_modes": row.get("error_modes") or [], "domain": row["domain"],
            "application": row.get("application") or "", "source": row.get("source") or "synthetic",
            "provenance": row.get("provenance") or {},
        })


class RejectedItem(_Model):
    """Something a stage could not accept, kept with its reason (never silently dropped)."""

    kind: str
    reason: str
    data: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- agents and tasks


class Agent(_Model):
    """A system prompt with a toolset: the agent under synthesis."""

    name: str
    domain: str
    system_prompt: str
    tool_ids: list[str]
    traits: list[str] = Field(default_factory=list)

    @property
    def id(self) -> str:
        return content_id("agent", sorted(self.tool_ids), self.system_prompt)

    def to_row(self, run_id: str, status: Status = "accepted", reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "run_id": run_id, "domain": self.domain, "name": self.name,
            "system_prompt": self.system_prompt, "tool_ids": self.tool_ids, "traits": self.traits,
            "status": status, "reason": reason,
        }


class Persona(_Model):
    name: str = "user"
    communication_style: str = "brief and direct"
    expertise: Literal["novice", "intermediate", "expert"] = "intermediate"
    patience: Literal["low", "medium", "high"] = "medium"
    quirks: list[str] = Field(default_factory=list)


class ExpectedCall(_Model):
    """A tool the agent should call, with the arguments that matter (a subset is fine)."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Rubric(_Model):
    success_criteria: list[str]
    expected_calls: list[ExpectedCall] = Field(default_factory=list)
    ordered: bool = False
    checkpoints: list[str] = Field(default_factory=list)
    failure_conditions: list[str] = Field(default_factory=list)


TaskKind = Literal["tool", "no_tool", "unserviceable"]
Difficulty = Literal["single_call", "multi_step", "error_recovery"]


class Task(_Model):
    """What a simulated user wants from an agent, and how to tell whether the agent delivered.

    `kind`: `tool` tasks need the toolset; `no_tool` tasks should be answered without calls;
    `unserviceable` tasks ask for something the toolset cannot do (the agent should say so).
    `initial_state` is the world the tool simulator starts from: collections of entities keyed
    by id, e.g. `{"orders": {"o-17": {...}}}`.
    """

    agent_id: str
    domain: str
    goal: str
    persona: Persona = Field(default_factory=Persona)
    withheld: dict[str, str] = Field(default_factory=dict)
    initial_state: dict[str, Any] = Field(default_factory=dict)
    difficulty: Difficulty = "single_call"
    kind: TaskKind = "tool"
    rubric: Rubric

    @property
    def id(self) -> str:
        return content_id("task", self.agent_id, self.goal, self.initial_state, self.rubric.model_dump())

    def to_row(self, run_id: str, status: Status = "accepted", reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "run_id": run_id, "agent_id": self.agent_id, "domain": self.domain,
            "kind": self.kind, "difficulty": self.difficulty, "goal": self.goal,
            "persona": self.persona.model_dump(), "withheld": self.withheld,
            "initial_state": self.initial_state, "rubric": self.rubric.model_dump(),
            "status": status, "reason": reason,
        }


# ---------------------------------------------------------------- rollouts

Termination = Literal["user_done", "user_stuck", "max_turns", "agent_gave_up", "error"]


class StepRecord(_Model):
    """Metadata of one step of an episode (a model turn or a tool execution)."""

    turn: int
    actor: Literal["user", "agent", "tool"]
    tool: str | None = None
    tool_call_id: str | None = None
    executor: Literal["simulated", "mcp", "python", "validator", "fault"] | None = None
    fault: str | None = None
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class Trajectory(_Model):
    """One episode in canonical OpenAI chat format: assistant messages carry `tool_calls` with
    JSON-string `arguments`; each call is answered by one `tool` message with its `tool_call_id`."""

    task_id: str
    agent_id: str
    domain: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    steps: list[StepRecord] = Field(default_factory=list)
    state_log: list[dict[str, Any]] = Field(default_factory=list)
    final_state: dict[str, Any] = Field(default_factory=dict)
    termination: Termination
    seed: int = 0

    @property
    def id(self) -> str:
        return content_id("traj", self.task_id, self.seed, self.messages)

    @property
    def n_turns(self) -> int:
        return sum(1 for m in self.messages if m.get("role") == "user")

    @property
    def n_tool_calls(self) -> int:
        return sum(len(m.get("tool_calls") or []) for m in self.messages if m.get("role") == "assistant")

    def to_row(self, run_id: str) -> dict[str, Any]:
        return {
            "id": self.id, "run_id": run_id, "task_id": self.task_id, "agent_id": self.agent_id,
            "domain": self.domain, "messages": self.messages, "tools": self.tools,
            "steps": [s.model_dump() for s in self.steps], "state_log": self.state_log,
            "final_state": self.final_state, "termination": self.termination,
            "n_turns": self.n_turns, "n_tool_calls": self.n_tool_calls,
            "prompt_tokens": sum(s.prompt_tokens for s in self.steps),
            "completion_tokens": sum(s.completion_tokens for s in self.steps),
        }


# ---------------------------------------------------------------- judging


class CheckResult(_Model):
    name: str
    passed: bool
    detail: str = ""


class CriterionVerdict(_Model):
    criterion: str
    passed: bool
    evidence: str = ""


class Judgment(_Model):
    trajectory_id: str
    task_id: str
    accepted: bool
    score: float
    checks: list[CheckResult] = Field(default_factory=list)
    criteria: list[CriterionVerdict] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    judge: dict[str, Any] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        return content_id("judg", self.trajectory_id, self.judge)

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def to_row(self, run_id: str) -> dict[str, Any]:
        return {
            "id": self.id, "run_id": run_id, "trajectory_id": self.trajectory_id, "task_id": self.task_id,
            "accepted": self.accepted, "score": self.score,
            "checks": [c.model_dump() for c in self.checks], "failed_checks": self.failed_checks,
            "criteria": [c.model_dump() for c in self.criteria], "reasons": self.reasons, "judge": self.judge,
        }
