"""The one configuration model, loaded from `synth.toml`, `SYNTH_*` variables and CLI flags.

Precedence, lowest first: built-in defaults, the TOML file, environment variables, CLI flags.
Every model role (generator, user, agent, environment, judge) resolves to a complete
`RoleConfig`: the `[llm]` table gives the defaults, `[llm.roles.<role>]` overrides any key for
one role. A bad file or value raises `ConfigError`, whose message names the key and the file;
the CLI turns it into exit code 2 without a traceback.

Environment variables use `__` for nesting below the `SYNTH_` prefix, e.g.
`SYNTH_LLM__MODEL=qwen3`, `SYNTH_LLM__ROLES__JUDGE__BASE_URLS=http://a:8000/v1,http://b:8000/v1`.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synth.settings import (
    DEFAULT_TASKS_PER_AGENT,
    DEFAULT_TOOLS_PER_DOMAIN,
    AgentSettings,
    JudgePolicy,
    Role,
    RoleConfig,
    RolloutSettings,
    ToolSettings,
)

DEFAULT_CONFIG_FILE = "synth.toml"
ENV_PREFIX = "SYNTH_"


class ConfigError(Exception):
    """A configuration problem a user must fix; the message names the key and the source."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BackendConfig(_Strict):
    """The embedded llama.cpp backend, used by every role that has no base URL."""

    binary: str | None = None
    model_path: str | None = None
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)
    parallel: int = Field(4, ge=1)
    ctx_per_slot: int = Field(4096, ge=512)
    threads: int | None = Field(None, ge=1)
    startup_timeout_s: float = Field(120.0, gt=0)
    log_file: str = "data/llama-server.log"
    # The weights' type the server runs (`synth.llm.local.served_model`). None: Q8_0 for the packaged
    # SmolLM2 (its Q4_1 file converted once and cached; same perplexity, prompts 1.7x faster on a
    # CPU) and any `model_path` as it is; "as_is": the file unchanged; a type: that conversion.
    weights: Literal["as_is", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_K", "Q4_K_M", "Q5_K_M",
                     "F16", "BF16", "F32"] | None = None


class CacheConfig(_Strict):
    enabled: bool = True
    # None: `cache/` beside the run's database file, so a job submitted with an absolute `--db`
    # keeps its cache next to it and a resubmitted job replays it.
    dir: str | None = None


# `[llm] loop_stop_chars` for the roles the embedded backend serves, unless set (`synth.llm.repetition`).
EMBEDDED_LOOP_STOP_CHARS = 80

# Episodes in flight when `run.in_flight` is unset and the servers do not say how many slots they
# have (see `synth.llm.session.episodes_in_flight`).
DEFAULT_IN_FLIGHT = 8


class RunConfig(_Strict):
    """What a run makes: selection, counts, seed, concurrency and budgets (each stage's own knobs
    are in its table, `synth.settings`)."""

    domains: list[str] = Field(default_factory=list)  # names, or "all"
    categories: list[str] = Field(default_factory=list)  # every domain of these categories
    exclude: list[str] = Field(default_factory=list)  # domains, or whole categories, left out
    db: str = "data/synth.duckdb"
    trajectories: int = Field(10, ge=1)
    seed: int = 0
    tools_per_domain: int = Field(DEFAULT_TOOLS_PER_DOMAIN, ge=1)
    # Real MCP tool files (a `tools/list` JSON, or Toucan-style JSONL(.gz)) imported at the start of a
    # run; each server joins the taxonomy domain it fits, else `mcp/<server>`, selectable by that name.
    mcp_files: list[str] = Field(default_factory=list)
    # The tool stage streams: agents start once the first wave of this many domains has tools.
    tool_wave_domains: int = Field(8, ge=1, description="domains per wave of the streamed tool stage")
    tasks_per_agent: int = Field(DEFAULT_TASKS_PER_AGENT, ge=1)
    max_agents: int = Field(10_000, ge=1)
    # Sample toolsets toward the regions of the tool repository that earlier runs' accepted
    # trajectories left empty (`synth.report.coverage.coverage_priors`).
    steer_coverage: bool = Field(False, description="toolsets favour domains and tool clusters with few "
                                                    "accepted trajectories")
    workers: int = Field(2, ge=1, description="Ray actors hosting the stages")
    worker_concurrency: int = Field(64, ge=1, description="items one actor runs at once")
    # None: sized to the server when the run starts (`synth.llm.session.episodes_in_flight`).
    in_flight: int | None = Field(None, ge=1, description="episodes in flight (the backpressure bound)")
    # None: one per two episodes in flight, at least 2 (`agent_syntheses_at_once`).
    agent_concurrency: int | None = Field(None, ge=1, description="agents being synthesised at once")
    # Balance and cost. Neither is part of the run's identity: raising one resumes the same run.
    domain_quota: int | None = Field(None, ge=1, description="at most this many judged trajectories per domain")
    token_budget: int | None = Field(None, ge=1, description="stop cleanly once this run's model calls have used "
                                     "this many tokens (prompt + completion, cache replays not counted)")

    @field_validator("domains", "categories", "exclude", "mcp_files", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [d.strip() for d in value.split(",") if d.strip()]
        return value


def agent_syntheses_at_once(run: RunConfig, in_flight: int) -> int:
    """Agents synthesised at once: `run.agent_concurrency`, else one per two episodes in flight.

    Why so many: the embedded agent's episodes are short (a few turns), so with two syntheses the
    rollouts outran task synthesis and the server's slots idled a quarter of the rollout phase;
    with one per two episodes in flight they were busy 99% of it (docs/architecture.md, sizing).
    """
    return run.agent_concurrency if run.agent_concurrency is not None else max(2, in_flight // 2)


class LLMConfig(RoleConfig):
    """Defaults for every role (RoleConfig's keys), plus `roles.<role>` tables that override any
    subset of those keys for one role."""

    roles: dict[Role, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_roles(self) -> LLMConfig:
        for role in self.roles:
            try:
                self.role(role)
            except ValidationError as exc:
                first = exc.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"roles.{role.value}.{key}: {first['msg']}") from None
        return self

    def role(self, role: Role | str) -> RoleConfig:
        """The complete settings of one role: the defaults with that role's overrides on top."""
        defaults = self.model_dump(exclude={"roles"})
        merged = {**defaults, **self.roles.get(Role(role), {})}
        return RoleConfig.model_validate(merged)


class SynthConfig(_Strict):
    llm: LLMConfig = Field(default_factory=LLMConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    # The stages' own tables (`synth.settings`): every knob of each stage, typed and defaulted.
    tools: ToolSettings = Field(default_factory=ToolSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    judge: JudgePolicy = Field(default_factory=JudgePolicy)

    @model_validator(mode="after")
    def _one_place_per_knob(self) -> SynthConfig:
        if "tasks_per_agent" in self.agents.model_fields_set:
            raise ValueError("agents.tasks_per_agent: set it as run.tasks_per_agent (the [run] table)")
        return self

    def rollout_settings(self) -> RolloutSettings:
        """The `[rollout]` table."""
        return self.rollout

    def judge_policy(self) -> JudgePolicy:
        """The `[judge]` table."""
        return self.judge

    def agent_settings(self) -> AgentSettings:
        """The `[agents]` table, with `[run] tasks_per_agent`."""
        return self.agents.model_copy(update={"tasks_per_agent": self.run.tasks_per_agent})

    def roles(self) -> dict[Role, RoleConfig]:
        return {r: self.llm.role(r) for r in Role}

    def needs_local_backend(self) -> bool:
        """True when some role has no base URL, so the embedded backend must serve it."""
        return any(not rc.base_urls for rc in self.roles().values())

    def with_base_url(self, base_url: str) -> SynthConfig:
        """Point every role without its own endpoint at `base_url` (the embedded backend, once it is
        up). Those roles also stop looping replies unless `loop_stop_chars` is set: the embedded model
        is small and decodes on a CPU, where a loop run to max_tokens holds a slot for seconds, while a
        fast server's client would spend more on streaming every token than loops cost it. They send
        earlier replies as token ids unless `token_prompts` is set: the backend is a llama-server."""
        cfg = self.model_copy(deep=True)
        served = [(role, rc) for role, rc in self.roles().items() if not rc.base_urls]
        if not cfg.llm.base_urls:
            cfg.llm.base_urls = [base_url.rstrip("/")]
        for role, rc in served:
            if rc.loop_stop_chars is None:
                cfg.llm.roles.setdefault(role, {})["loop_stop_chars"] = EMBEDDED_LOOP_STOP_CHARS
            if rc.token_prompts is None:
                cfg.llm.roles.setdefault(role, {})["token_prompts"] = True
        return cfg


def _set_nested(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {key} is not a table")
        node = child
    node[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "SYNTH_CONFIG":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if len(path) < 2:
            continue
        _set_nested(tree, path, _env_value(name, value))
    return tree


def _env_value(name: str, value: str) -> Any:
    """A variable's value as the config reads it: a JSON list or table when it is written as one
    (`SYNTH_RUN__MCP_FILES='["a.jsonl.gz"]'`, `SYNTH_JUDGE__PANEL='[{"model": "m"}]'`), else the
    text, which pydantic converts (numbers, booleans) or a validator splits (comma-separated names,
    URLs and files)."""
    if not value.lstrip().startswith(("[", "{")):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}: a value that starts with '[' or '{{' must be JSON ({exc})") from exc


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        else:
            lines.append(f"{source}: key '{key}': {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> SynthConfig:
    """Build the effective config.

    `path` None means `$SYNTH_CONFIG`, else `./synth.toml` when it exists, else defaults only.
    `overrides` is a nested dict from CLI flags (highest precedence).
    """
    environ = os.environ if environ is None else environ
    explicit = path is not None or "SYNTH_CONFIG" in environ
    file = Path(path or environ.get("SYNTH_CONFIG") or DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    source = "defaults"
    if file.exists():
        source = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc}") from None
    elif explicit:
        raise ConfigError(f"{file}: config file not found")
    try:
        SynthConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    env_tree = _env_overrides(environ)
    if env_tree:
        data = _deep_merge(data, env_tree)
        source = f"{source} + SYNTH_* environment"
    if overrides:
        data = _deep_merge(data, overrides)
        source = f"{source} + command-line flags"
    try:
        cfg = SynthConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    return with_absolute_paths(cfg)


def with_absolute_paths(cfg: SynthConfig, base: Path | None = None) -> SynthConfig:
    """`cfg` with its file paths (database, response cache, backend log) made absolute against
    `base` (the current directory), once, where the config is loaded: a Ray worker on another node,
    or a job's driver in its temporary working directory, then reads and writes the same files as
    the process that started the run, instead of copies relative to its own directory."""
    base = base or Path.cwd()

    def absolute(path: str) -> str:
        return str(path if Path(path).is_absolute() else (base / path).resolve())

    db = absolute(cfg.run.db)
    cache = absolute(cfg.cache.dir) if cfg.cache.dir else str(Path(db).parent / "cache")
    return cfg.model_copy(update={
        "run": cfg.run.model_copy(update={"db": db}),
        "cache": cfg.cache.model_copy(update={"dir": cache}),
        "backend": cfg.backend.model_copy(update={"log_file": absolute(cfg.backend.log_file)}),
    })
