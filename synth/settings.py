"""The settings of each stage, one pydantic model per table of `synth.toml`.

This module sits below both `synth.config` (which composes these models into `SynthConfig`) and
the stages (which take them as arguments), and imports neither, so there is no import cycle and
every knob has one definition, one default and one validation, whichever command reaches it:
`synth run`, `synth tools generate` and `synth config show` read the same models.

    [llm] / [llm.roles.<role>]  RoleConfig      endpoints and sampling of each model role
    [tools]                     ToolSettings    tool synthesis (applications, evolution, parameters)
    [agents]                    AgentSettings   agent and task synthesis (task kinds, repairs)
    [rollout]                   RolloutSettings one episode (turns, steps, faults, user, real tools)
    [judge]                     JudgePolicy     how checks and the LLM judge combine

How many tools per domain and tasks per agent a run makes stay in `[run]` (`tools_per_domain`,
`tasks_per_agent`), where they have always been: moving them would change every existing run's
identity, so no dataset could be resumed after an upgrade.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ToolMode = Literal["constrained", "native"]
# "auto": native where the server's chat template supports tools (llama-server's /props says so),
# constrained where it says not; resolved once at a run's start (`synth.llm.session.agent_tool_mode`).
ToolModeSetting = Literal["constrained", "native", "auto"]
UserMode = Literal["scripted", "model"]
Aggregation = Literal["majority", "unanimous", "mean"]
VerdictFormat = Literal["free", "schema"]

# `[run] tools_per_domain` and `tasks_per_agent`, which `synth tools generate` and the stages share.
DEFAULT_TOOLS_PER_DOMAIN = 8
DEFAULT_TASKS_PER_AGENT = 2

FAULT_KINDS: tuple[str, ...] = ("timeout", "rate_limited", "not_found", "permission_denied", "partial_result")
DEFAULT_MAX_TURNS = 12


class Role(StrEnum):
    """The model roles of the pipeline; each may have its own endpoint and sampling."""

    GENERATOR = "generator"
    USER = "user"
    AGENT = "agent"
    ENVIRONMENT = "environment"
    JUDGE = "judge"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RoleConfig(_Strict):
    """Where one role's requests go and how they are sent."""

    base_urls: list[str] = Field(default_factory=list)
    model: str = "smollm2-135m-instruct"
    api_key_env: str | None = None
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(768, ge=1)
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(8, ge=0)
    structured_retries: int = Field(3, ge=0)
    tool_mode: ToolModeSetting = "constrained"
    # Stream replies and stop one once its last this-many characters are one unit repeated (a small
    # model's loop), instead of decoding it to max_tokens; the caller retries it like a cut-off reply.
    # 0: never (nothing streamed). None: `EMBEDDED_LOOP_STOP_CHARS` for the roles the embedded backend
    # serves (`SynthConfig.with_base_url`), 0 for other servers. `synth.llm.repetition`.
    loop_stop_chars: int | None = Field(None, ge=0)
    # A request whose long opening (system prompt, tools) another request of the process is
    # computing waits for it, so a server with one prefix cache for all requests (vLLM, SGLang)
    # computes it once (`synth.llm.prefix`). Off by default: llama-server keeps a prefix in one slot,
    # and a sibling that takes it there evicts the first episode's next turn (measured).
    prefix_warmup: bool = False
    # Send a conversation's earlier replies as the token ids the model generated, through
    # llama-server's `/apply-template` and `/completion` (`synth.llm.token_prompts`), so the next
    # turn finds them in the slot's cache instead of recomputing them. None: on for the roles the
    # embedded backend serves (`SynthConfig.with_base_url`), off for other servers; a server
    # without `/apply-template` gets chat requests whatever this says.
    token_prompts: bool | None = None

    @field_validator("base_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("base_urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return [u.rstrip("/") for u in value]


# ---------------------------------------------------------------- [tools]


class ToolSettings(_Strict):
    """Tool synthesis: each domain's tools are spread over `applications_per_domain` applications
    (fewer if the model returns fewer), and each tool goes through `evolution_rounds` rounds of
    evolution. How many tools per domain is `[run] tools_per_domain` (and `synth tools generate
    --per-domain`, whose default it is)."""

    applications_per_domain: int = Field(3, ge=1, le=64, description="applications (products) per domain")
    evolution_rounds: int = Field(1, ge=0, le=8, description="evolution rounds per tool (deepen, add params, ...)")
    max_parameters: int = Field(4, ge=1, le=32, description="parameters a drafted tool may have before evolution")


# ---------------------------------------------------------------- [agents]


class AgentSettings(_Strict):
    """Agent and task synthesis, and the toolsets agents get (`toolset_min_tools` to
    `toolset_max_tools` coherent tools, `synth.agents.ToolsetSampler`). Shares are probabilities
    per task (seeded): `no_tool_share` of tasks need no tool, `unserviceable_share` ask what the
    toolset cannot do; the rest use tools.
    A task draft whose text fails validation is repaired up to `repair_rounds` times (one whose plan
    fails is not: no redraft writes the plan). How many tasks per agent
    is `[run] tasks_per_agent`, copied here by the run."""

    tasks_per_agent: int = Field(DEFAULT_TASKS_PER_AGENT, ge=0, description="set from [run] tasks_per_agent")
    no_tool_share: float = Field(0.15, ge=0.0, le=1.0, description="share of tasks that need no tool")
    unserviceable_share: float = Field(0.1, ge=0.0, le=1.0, description="share of tasks the toolset cannot serve")
    repair_rounds: int = Field(1, ge=0, le=8, description="repairs of a task draft whose text fails validation")
    toolset_min_tools: int = Field(2, ge=1, le=64, description="fewest tools in an agent's toolset")
    toolset_max_tools: int = Field(8, ge=1, le=64, description="most tools in an agent's toolset")
    agent_max_tokens: int = Field(360, ge=16)
    task_max_tokens: int = Field(400, ge=16)

    @model_validator(mode="after")
    def _shares(self) -> AgentSettings:
        if self.toolset_min_tools > self.toolset_max_tools:
            raise ValueError(f"toolset_min_tools ({self.toolset_min_tools}) exceeds toolset_max_tools "
                             f"({self.toolset_max_tools})")
        if self.no_tool_share + self.unserviceable_share > 1:
            raise ValueError(f"no_tool_share + unserviceable_share must be <= 1, got {self.no_tool_share} + "
                             f"{self.unserviceable_share}")
        return self


# ---------------------------------------------------------------- [rollout]


class McpServerBinding(BaseModel):
    """Config (`[[rollout.mcp_servers]]`): one live MCP server whose tools run for real, over stdio
    (`command`, `args`; a `command` with spaces and no `args` is split like a shell line) or
    streamable HTTP (`url`). `tools` picks which of its tools (empty: all). With a `domain` (a
    taxonomy domain, or any name such as `mcp/<server>`), the run lists the server's tools at its
    start and adds them to that domain's pool, so agents get them beside simulated tools; without
    one, only tools of that name already in the pool run for real."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    url: str | None = None
    env: dict[str, str] | None = None
    tools: list[str] = Field(default_factory=list)
    domain: str | None = None
    timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerBinding:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server binding needs exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
        if self.command is not None and not self.args and len(shlex.split(self.command)) > 1:
            self.command, *self.args = shlex.split(self.command)
        return self

    @property
    def label(self) -> str:
        """How the server is named in provenance and messages."""
        return self.url or " ".join([self.command or "", *self.args])


class PythonToolBinding(BaseModel):
    """Config (`[[rollout.python_tools]]`): a Python function run as a tool. `target` is
    `package.module:function`; its schema comes from the type hints and its description from
    the docstring (`synth.rollout.python_tool_spec`). `domain` adds it to that domain's pool
    (default `python`); `writes` says whether it changes the world (default: guessed from its name)."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    name: str | None = None
    domain: str = "python"
    writes: bool | None = None

    def load(self) -> Callable[..., Any]:
        """The function, imported from the installed packages or the working directory; raises
        ValueError naming the target when it cannot be imported."""
        module_name, _, attr = self.target.partition(":")
        if os.getcwd() not in sys.path:  # `synth run` is a console script: its cwd is not on the path
            sys.path.append(os.getcwd())
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"python tool {self.target!r} cannot be loaded: {type(exc).__name__}: {exc}") from None
        if not callable(fn):
            raise ValueError(f"python tool {self.target!r} is not callable")
        return fn


class RolloutSettings(BaseModel):
    """One episode: the simulated user, the agent and the tools (simulated, or real by binding)."""

    model_config = ConfigDict(extra="forbid")

    per_task: int = Field(1, ge=1, le=64, description="rollouts of each task, each with its own seed: k > 1 "
                          "gives each task a pass rate and RL preference pairs")
    max_turns: int = Field(4, ge=1, description="user turns per episode")
    max_steps_per_turn: int = Field(4, ge=1, description="agent steps (model replies) per user turn")
    max_calls_per_step: int = Field(3, ge=1, description="tool calls in one agent step")
    fault_rate: float = Field(0.1, ge=0.0, le=1.0, description="share of simulated calls given an injected fault")
    fault_kinds: list[str] = Field(default_factory=lambda: list(FAULT_KINDS))
    tool_mode: ToolModeSetting | None = Field(None, description="None: the agent role's tool_mode")
    user: UserMode = Field("scripted", description="who plays the user: code (scripted) or the user model")
    user_rephrase: bool = Field(False, description="scripted user: the model may rephrase the opening request")
    agent_resamples: int = Field(2, ge=0, description="extra samples of an agent step that only repeats itself")
    user_max_tokens: int = Field(160, ge=16)
    agent_max_tokens: int = Field(384, ge=16)
    environment_max_tokens: int = Field(320, ge=16)
    mcp_servers: list[McpServerBinding] = Field(default_factory=list)
    python_tools: list[PythonToolBinding] = Field(default_factory=list)

    @field_validator("fault_kinds")
    @classmethod
    def _known_faults(cls, kinds: list[str]) -> list[str]:
        unknown = sorted(set(kinds) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}")
        return kinds


# ---------------------------------------------------------------- [judge]

_REMOVED_JUDGE_KEYS = {
    "required_checks": "every check is required: a trajectory is accepted only when all checks pass "
                       "(export structurally valid data with `synth export --select well_formed`)",
    "llm_judge_required": "the LLM judge's vote is earned by its stored calibration "
                          "(see vote_floor_recall / vote_floor_precision and `synth judge calibrate`)",
}


class JudgePolicy(BaseModel):
    """How judges combine into accept/reject (`synth.judges.policy` applies it)."""

    model_config = ConfigDict(extra="forbid")

    llm_judge: bool = True  # ask the rubric LLM judge (its verdict decides only with a vote)
    samples: int = Field(1, ge=1, le=16)
    aggregation: Aggregation = "majority"
    min_score: float = Field(0.5, ge=0.0, le=1.0)  # threshold of the `mean` aggregation
    max_turns: int = Field(DEFAULT_MAX_TURNS, ge=1)
    # "free": the judge reasons in plain text and ends with a JSON verdict (repaired under the
    # schema when broken); "schema": the whole reply is generated under the verdict schema.
    verdict_format: VerdictFormat = "free"
    # Ask the (costly) LLM judge even when a check already rejects the trajectory.
    judge_rejected: bool = False
    # The judge's verdict decides only when its stored calibration reaches both floors.
    vote_floor_recall: float = Field(0.8, ge=0.0, le=1.0)
    vote_floor_precision: float = Field(0.8, ge=0.0, le=1.0)
    # A panel of judge models instead of the judge role alone: each member is a table of the judge
    # role's llm keys to override (`model`, `base_urls`, `api_key_env`, `temperature`, ...). Every
    # member gives `samples` samples; `aggregation` combines them all. The panel is calibrated and
    # earns its vote as one judge (`judge_name`).
    panel: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("panel")
    @classmethod
    def _panel_keys(cls, panel: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, member in enumerate(panel):
            unknown = sorted(set(member) - set(RoleConfig.model_fields))
            if unknown:
                raise ValueError(f"panel[{i}]: unknown llm key(s) {', '.join(unknown)}")
        return panel

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in _REMOVED_JUDGE_KEYS.items():
                if key in data:
                    raise ValueError(f"'{key}' was removed: {why}; delete it from the [judge] table")
        return data

    def describe(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
