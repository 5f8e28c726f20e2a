"""The pydantic models that pass between stages: the pipeline's contracts.

tool repository -> `ToolSpec`; agent synthesis -> `Agent`; task synthesis -> `Task` (with
`Persona`, `Rubric`); rollout -> `Trajectory` (with `StepRecord`); judging -> `Judgment`.
A stage is `async def stage(inputs, llm, rng) -> outputs` over these; storage maps each model to
one DuckDB table row (`to_row`), so the notebook-facing schema and the code cannot drift apart.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from synth.ids import content_id

TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

Status = Literal["accepted", "rejected"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _json_fields(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """`row` with its JSON columns decoded (DuckDB returns JSON as text)."""
    out = dict(row)
    for key in keys:
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out


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
    source: Literal["synthetic", "mcp", "python"] = "synthetic"
    provenance: Provenance = Field(default_factory=Provenance)

    @field_validator("name")
    @classmethod
    def _legal_name(cls, value: str) -> str:
        if not TOOL_NAME_RE.match(value):
            raise ValueError(f"tool name {value!r} is not legal for function calling (^[a-zA-Z0-9_-]{{1,64}}$)")
        return value

    @property
    def annotations(self) -> dict[str, Any]:
        """MCP's tool annotations (`readOnlyHint`, `destructiveHint`, ...) when the tool came with
        them; kept in `provenance.mcp_fields`. `side_effect` is the verdict drawn from them."""
        value = self.provenance.mcp_fields.get("annotations")
        return dict(value) if isinstance(value, dict) else {}

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


# Who wrote a piece of text: the model, or code that stood in when the model's text was rejected.
TextSource = Literal["model", "code"]


class Agent(_Model):
    """A system prompt with a toolset: the agent under synthesis.

    `policy_source`: "code" when none of the model's drafted policies survived screening and the
    prompt's policies are all written in code from the toolset; "model" otherwise. Provenance
    only: not part of `id`."""

    name: str
    domain: str
    system_prompt: str
    tool_ids: list[str]
    traits: list[str] = Field(default_factory=list)
    policy_source: TextSource = "model"

    @property
    def id(self) -> str:
        return content_id("agent", sorted(self.tool_ids), self.system_prompt)

    def to_row(self, run_id: str, status: Status = "accepted", reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "run_id": run_id, "domain": self.domain, "name": self.name,
            "system_prompt": self.system_prompt, "tool_ids": self.tool_ids, "traits": self.traits,
            "policy_source": self.policy_source, "status": status, "reason": reason,
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
    # The world the task should end in, as a subset of the final state (collection -> id -> fields;
    # a null value means the entity is gone): the `final_state` check (tau2-bench's). None: the task
    # states none. Left out of dumps when None, so the ids of tasks stored before it stay the same.
    expected_state: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _omit_unstated_state(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.expected_state is None:
            data.pop("expected_state", None)
        return data


TaskKind = Literal["tool", "no_tool", "unserviceable"]
Difficulty = Literal["single_call", "multi_step", "error_recovery"]


class Task(_Model):
    """What a simulated user wants from an agent, and how to tell whether the agent delivered.

    `kind`: `tool` tasks need the toolset; `no_tool` tasks should be answered without calls;
    `unserviceable` tasks ask for something the toolset cannot do (the agent should say so).
    `initial_state` is the world the tool simulator starts from: collections of entities keyed
    by id, e.g. `{"orders": {"o-17": {...}}}`. `goal_source`: "code" when the model's goal failed
    the request rules and code composed the goal from the task's plan; provenance only, not part
    of `id`.
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
    goal_source: TextSource = "model"

    @property
    def id(self) -> str:
        return content_id("task", self.agent_id, self.goal, self.initial_state, self.rubric.model_dump())

    def to_row(self, run_id: str, status: Status = "accepted", reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "run_id": run_id, "agent_id": self.agent_id, "domain": self.domain,
            "kind": self.kind, "difficulty": self.difficulty, "goal": self.goal,
            "persona": self.persona.model_dump(), "withheld": self.withheld,
            "initial_state": self.initial_state, "rubric": self.rubric.model_dump(),
            "goal_source": self.goal_source, "status": status, "reason": reason,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        """A `tasks` row (as a column -> value dict) back as a Task."""
        data = _json_fields(row, ("persona", "withheld", "initial_state", "rubric"))
        keys = ("agent_id", "domain", "goal", "persona", "withheld", "initial_state", "difficulty", "kind", "rubric",
                "goal_source")
        return cls.model_validate({k: data[k] for k in keys if data.get(k) is not None})


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
    # Which of the task's `[rollout] per_task` rollouts this is (0-based), and the agent role's
    # model: a task's pass rate is counted per agent model over its rollouts.
    rollout_index: int = 0
    agent_model: str | None = None

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
            "final_state": self.final_state, "termination": self.termination, "seed": self.seed,
            "rollout_index": self.rollout_index, "agent_model": self.agent_model,
            "n_turns": self.n_turns, "n_tool_calls": self.n_tool_calls,
            "prompt_tokens": sum(s.prompt_tokens for s in self.steps),
            "completion_tokens": sum(s.completion_tokens for s in self.steps),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Trajectory:
        """A `trajectories` row back as a Trajectory. Rows written before the `seed` column existed
        read back with seed 0, so their `Trajectory.id` may differ from the stored `id`: callers
        that link to the row use the stored id."""
        data = _json_fields(row, ("messages", "tools", "steps", "state_log", "final_state"))
        keys = ("task_id", "agent_id", "domain", "messages", "tools", "steps", "state_log", "final_state",
                "termination", "seed", "rollout_index", "agent_model")
        return cls.model_validate({k: data[k] for k in keys if data.get(k) is not None})


# ---------------------------------------------------------------- judging


class CheckResult(_Model):
    name: str
    passed: bool
    detail: str = ""


class CriterionVerdict(_Model):
    criterion: str
    passed: bool
    evidence: str = ""


# The checks that make a trajectory structurally valid training data whatever its task: every call
# names a tool and has valid arguments, every call is answered in order, the agent gets the last
# word, and it asserts nothing no tool returned. `Judgment.well_formed` is these passing.
WELL_FORMED_CHECKS = ("tools_exist", "arguments_valid", "calls_answered", "final_reply", "no_fabrication")


class Judgment(_Model):
    """One verdict on one trajectory. `accepted`: a correct worked example of its task (every
    deterministic check passed and the LLM judge agreed where it has a vote, see
    `synth.judges.policy`). `well_formed`: the `WELL_FORMED_CHECKS` passed (derived from `checks`
    when not given). `judge` records the policy, the judge model and whether its vote counted."""

    trajectory_id: str
    task_id: str
    accepted: bool
    well_formed: bool | None = None
    score: float
    checks: list[CheckResult] = Field(default_factory=list)
    criteria: list[CriterionVerdict] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    judge: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _derive_well_formed(self) -> Judgment:
        if self.well_formed is None:
            by_name = {c.name: c.passed for c in self.checks}
            self.well_formed = (all(by_name.get(n, False) for n in WELL_FORMED_CHECKS) if by_name
                                else self.accepted)
        return self

    @property
    def id(self) -> str:
        return content_id("judg", self.trajectory_id, self.judge)

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def to_row(self, run_id: str) -> dict[str, Any]:
        return {
            "id": self.id, "run_id": run_id, "trajectory_id": self.trajectory_id, "task_id": self.task_id,
            "accepted": self.accepted, "well_formed": self.well_formed, "score": self.score,
            "checks": [c.model_dump() for c in self.checks], "failed_checks": self.failed_checks,
            "criteria": [c.model_dump() for c in self.criteria], "reasons": self.reasons, "judge": self.judge,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Judgment:
        """A `judgments` row back as a Judgment."""
        data = _json_fields(row, ("checks", "criteria", "reasons", "judge"))
        keys = ("trajectory_id", "task_id", "accepted", "well_formed", "score", "checks", "criteria", "reasons",
                "judge")
        return cls.model_validate({k: data[k] for k in keys if data.get(k) is not None})


# ---------------------------------------------------------------- calibration


class Calibration(_Model):
    """A stored calibration of a judging policy (see `synth.judges.calibrate`): per corruption kind
    the counts, recall and precision (with 95% Wilson intervals) of the policy and of the LLM judge
    alone, and the judge's macro-averaged recall and precision over the kinds, which is what
    decides whether the judge's verdict gets a vote (`synth.judges.policy.vote_of`)."""

    judge_model: str | None = None
    policy: dict[str, Any] = Field(default_factory=dict)
    kinds: list[dict[str, Any]] = Field(default_factory=list)
    n_good: int = 0
    judge_recall: float | None = None
    judge_precision: float | None = None
    run_id: str | None = None
    created_at: datetime | None = None

    @property
    def id(self) -> str:
        return content_id("calib", self.judge_model, self.policy, self.kinds, self.n_good)

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id, "run_id": self.run_id, "judge_model": self.judge_model, "policy": self.policy,
            "kinds": self.kinds, "n_good": self.n_good, "judge_recall": self.judge_recall,
            "judge_precision": self.judge_precision,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Calibration:
        data = _json_fields(row, ("policy", "kinds"))
        keys = ("judge_model", "policy", "kinds", "n_good", "judge_recall", "judge_precision", "run_id", "created_at")
        return cls.model_validate({k: data[k] for k in keys if data.get(k) is not None})
