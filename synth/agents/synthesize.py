"""Agent and task synthesis: a system prompt for a toolset, then tasks with rubrics for it.

Agents (`synthesize_agent`): the model drafts a name, role, policies, constraints, tone and traits
under a schema (`AgentDraft`); code assembles the system prompt from them (`system_prompt.j2`),
adding the policies every agent needs (use tools only when needed, never invent results, say
when a request is out of reach, confirm irreversible changes), so no_tool and unserviceable tasks
have a policy to be judged against. A failed or empty draft falls back to text built from the
toolset: an agent is always returned. `Agent.id` hashes the toolset and the prompt.

Tasks (`synthesize_tasks`): for each task, a seeded draw picks the kind by the configured shares
(`tool`, `no_tool`, `unserviceable`) and, for tool tasks, the difficulty; `plans.plan_task` lays
down the part code can guarantee (calls, schema-valid arguments, the initial state holding every
entity they name, withheld details, checkpoints); the model writes the goal, persona, success
criteria and failure conditions (`TaskDraft`); code assembles the `Task` (stated details missing
from the goal are appended to it, so the agent can know them). Then `rubric_problems` checks it:
a failing task gets `repair_rounds` LLM repair rounds, then is returned as a `RejectedItem` with
its reasons. A generation error rejects the task with the error; nothing raises.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from synth.agents.plans import TOPICS, TaskPlan, plan_task
from synth.agents.toolsets import application_of
from synth.agents.validate import MIN_GOAL_WORDS, rubric_problems
from synth.config import Role
from synth.ids import derive_seed
from synth.llm import LLMClient, LLMError
from synth.models import (
    Agent,
    Difficulty,
    ExpectedCall,
    Persona,
    RejectedItem,
    Rubric,
    Task,
    TaskKind,
    ToolSpec,
)
from synth.prompts import render

PROMPT_VERSION = "agents-v1"
_DESCRIPTION_CHARS = 120
_DIFFICULTY_WEIGHTS: dict[Difficulty, float] = {"single_call": 0.4, "multi_step": 0.4, "error_recovery": 0.2}


# ---------------------------------------------------------------- generation schemas (kept flat)


class AgentDraft(BaseModel):
    name: str = Field(min_length=2, max_length=40)
    role: str = Field(min_length=10, max_length=120)
    policies: list[str] = Field(min_length=1, max_length=3)
    constraints: list[str] = Field(max_length=2)
    tone: str = Field(min_length=2, max_length=30)
    traits: list[str] = Field(min_length=1, max_length=3)


class PersonaDraft(BaseModel):
    name: str = Field(min_length=1, max_length=24)
    communication_style: str = Field(min_length=3, max_length=40)
    expertise: Literal["novice", "intermediate", "expert"]
    patience: Literal["low", "medium", "high"]
    quirks: list[str] = Field(max_length=1)


class TaskDraft(BaseModel):
    goal: str = Field(min_length=10, max_length=200)
    persona: PersonaDraft
    success_criteria: list[str] = Field(min_length=1, max_length=3)
    failure_conditions: list[str] = Field(max_length=2)


@dataclass
class AgentSettings:
    """How many tasks per agent and of which kinds. Shares are probabilities per task (seeded):
    `no_tool_share` of tasks need no tool, `unserviceable_share` ask what the toolset cannot do."""

    tasks_per_agent: int = 2
    no_tool_share: float = 0.15
    unserviceable_share: float = 0.1
    repair_rounds: int = 1
    agent_max_tokens: int = 360
    task_max_tokens: int = 400

    def __post_init__(self) -> None:
        if self.tasks_per_agent < 0:
            raise ValueError(f"AgentSettings.tasks_per_agent must be >= 0, got {self.tasks_per_agent}")
        if self.repair_rounds < 0:
            raise ValueError(f"AgentSettings.repair_rounds must be >= 0, got {self.repair_rounds}")
        shares = (self.no_tool_share, self.unserviceable_share)
        if min(shares) < 0 or sum(shares) > 1:
            raise ValueError(f"AgentSettings shares must be >= 0 and sum to <= 1, got no_tool={shares[0]}, "
                             f"unserviceable={shares[1]}")


@dataclass
class AgentResult:
    """One agent with its accepted tasks and its rejected ones (kind "task", reason, task dump)."""

    agent: Agent
    tasks: list[Task] = field(default_factory=list)
    rejected: list[RejectedItem] = field(default_factory=list)


# ---------------------------------------------------------------- text helpers


def clean_text(text: str, limit: int = 200) -> str:
    """Whitespace collapsed, stripped, cut at `limit`."""
    return re.sub(r"\s+", " ", text).strip()[:limit].strip()


def clean_list(items: list[str], limit: int = 160, most: int = 4) -> list[str]:
    """Non-blank, deduplicated (case-insensitively), at most `most` items."""
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = clean_text(item, limit)
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return out[:most]


_ENUMERATION = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")


def clean_statements(items: list[str], limit: int = 160, most: int = 4) -> list[str]:
    """Like `clean_list`, for criteria and conditions: list markers ("1.", "-") stripped, and
    fragments under three words dropped (a checkable statement needs a subject and a verb)."""
    stripped = [_ENUMERATION.sub("", item) for item in items]
    return [s for s in clean_list(stripped, limit, most * 2) if len(s.split()) >= MIN_GOAL_WORDS][:most]


def _main_domain(toolset: list[ToolSpec]) -> str:
    counts = Counter(t.domain for t in toolset)
    return min(counts, key=lambda d: (-counts[d], d)) if counts else "general"


def _tool_lines(toolset: list[ToolSpec]) -> list[dict[str, str]]:
    return [{"name": t.name, "description": clean_text(t.description, _DESCRIPTION_CHARS)} for t in toolset]


def _humanize(name: str) -> str:
    return re.sub(r"[_\-]+", " ", name).strip()


# ---------------------------------------------------------------- agents


def standard_policies(toolset: list[ToolSpec]) -> list[str]:
    policies = [
        "Use a tool only when the request needs it; answer general questions directly.",
        "Report only what tools return; never invent ids, numbers or results.",
        "If a request is beyond what your tools can do, say so plainly and offer what you can do.",
        "Ask the user for missing details instead of guessing them.",
    ]
    if any(t.side_effect == "write" for t in toolset):
        policies.append("Confirm the details with the user before a change that cannot be undone.")
    return policies


def assemble_agent(toolset: list[ToolSpec], draft: AgentDraft | None) -> Agent:
    """The agent from a draft (or from the toolset alone when `draft` is None or empty)."""
    domain = _main_domain(toolset)
    apps = sorted({application_of(t) for t in toolset if application_of(t)})
    noun = _humanize(apps[0]) if len(apps) == 1 else _humanize(domain)
    name = clean_text(draft.name, 40) if draft else ""
    role = clean_text(draft.role, 160) if draft else ""
    tone = clean_text(draft.tone, 60).rstrip(".") if draft else ""
    policies = clean_statements(draft.policies) if draft else []
    constraints = clean_statements(draft.constraints, most=3) if draft else []
    traits = clean_list(draft.traits, 40) if draft else []
    if name.lower() in {t.name.lower() for t in toolset}:  # a copied tool name is no agent name
        name = ""
    if len(role.split()) < MIN_GOAL_WORDS:  # a role is a phrase, not a token
        role = ""
    if any(len(word) > 20 for word in tone.split()):
        tone = ""
    traits = [t for t in traits if all(len(word) <= 20 for word in t.split())]
    name = name or f"{noun.title()} Assistant"
    role = role or f"an assistant that helps users with {noun} tasks."
    if not role.endswith((".", "!", "?")):
        role += "."
    prompt = render(
        "synth.agents", "system_prompt.j2", name=name, role=role, domain=_humanize(domain),
        tool_names=[t.name for t in toolset], policies=[*policies, *standard_policies(toolset)],
        constraints=constraints, tone=tone or "clear and friendly",
    )
    return Agent(name=name, domain=domain, system_prompt=prompt, tool_ids=[t.id for t in toolset],
                 traits=traits or ["asks for missing details", "reports tool results faithfully"])


async def synthesize_agent(toolset: list[ToolSpec], llm: LLMClient, seed: int,
                           max_tokens: int = 360) -> Agent:
    """An agent (system prompt, traits) for `toolset`; never raises on model failure (falls back
    to a prompt built from the toolset). Raises ValueError on an empty toolset."""
    if not toolset:
        raise ValueError("synthesize_agent needs a non-empty toolset")
    domain = _main_domain(toolset)
    apps = sorted({application_of(t) for t in toolset if application_of(t)})
    prompt = render("synth.agents", "agent.j2", domain=_humanize(domain), applications=apps[:3],
                    tools=_tool_lines(toolset))
    try:
        draft = await llm.structured(Role.GENERATOR, [{"role": "user", "content": prompt}], AgentDraft,
                                     seed=derive_seed(seed, "agent", sorted(t.id for t in toolset)),
                                     max_tokens=max_tokens)
    except LLMError:
        draft = None
    return assemble_agent(toolset, draft)


# ---------------------------------------------------------------- tasks


def choose_kind(settings: AgentSettings, rng: random.Random) -> TaskKind:
    roll = rng.random()
    if roll < settings.no_tool_share:
        return "no_tool"
    if roll < settings.no_tool_share + settings.unserviceable_share:
        return "unserviceable"
    return "tool"


def choose_difficulty(rng: random.Random) -> Difficulty:
    kinds = list(_DIFFICULTY_WEIGHTS)
    return rng.choices(kinds, weights=[_DIFFICULTY_WEIGHTS[k] for k in kinds])[0]


def _mentions(goal: str, value: str) -> bool:
    return value.lower() in goal.lower()


def assemble_task(agent: Agent, plan: TaskPlan, draft: TaskDraft) -> Task:
    """The task from a plan and the model's text; stated details the goal omits are appended."""
    goal = clean_text(draft.goal, 300)
    missing = [(k, v) for k, v in plan.stated.items() if not _mentions(goal, v)]
    if len(goal.split()) >= MIN_GOAL_WORDS and missing:  # a non-request is left for validation to catch
        details = "; ".join(f"{_humanize(k)} {v}" for k, v in missing)
        goal = f"{goal.rstrip()} (Details: {details}.)"
    p = draft.persona
    persona = Persona(
        name=clean_text(p.name, 30) or "user",
        communication_style=clean_text(p.communication_style, 80) or "brief and direct",
        expertise=p.expertise, patience=p.patience, quirks=clean_list(p.quirks, 60, 2),
    )
    criteria = clean_statements([*draft.success_criteria, *plan.criteria], 160, 5)
    failures = clean_statements([*plan.failure_conditions, *draft.failure_conditions], 160, 5)
    rubric = Rubric(
        success_criteria=criteria,
        expected_calls=[ExpectedCall(tool=c.tool.name, arguments=c.key_arguments) for c in plan.calls],
        ordered=plan.ordered, checkpoints=plan.checkpoints, failure_conditions=failures,
        expected_state=plan.expected_state or None,
    )
    return Task(agent_id=agent.id, domain=agent.domain, goal=goal, persona=persona, withheld=plan.withheld,
                initial_state=plan.initial_state, difficulty=plan.difficulty, kind=plan.kind, rubric=rubric)


def _call_lines(plan: TaskPlan) -> list[dict[str, str]]:
    lines = []
    for call in plan.calls:
        shown = {k: v for k, v in call.arguments.items() if k not in plan.withheld}
        text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in shown.items())
        lines.append({"tool": call.tool.name, "arguments": text[:300]})
    return lines


async def _draft_task(agent: Agent, toolset: list[ToolSpec], plan: TaskPlan, llm: LLMClient, seed: int,
                      max_tokens: int) -> TaskDraft:
    prompt = render(
        "synth.agents", "task.j2", agent_name=agent.name, domain=_humanize(agent.domain),
        tools=_tool_lines(toolset), kind=plan.kind, calls=_call_lines(plan), stated=plan.stated,
        withheld=list(plan.withheld), idea=plan.idea,
    )
    return await llm.structured(Role.GENERATOR, [{"role": "user", "content": prompt}], TaskDraft, seed=seed,
                                max_tokens=max_tokens)


async def _repair_task(agent: Agent, plan: TaskPlan, task: Task, problems: list[str], llm: LLMClient, seed: int,
                       max_tokens: int) -> TaskDraft:
    prompt = render(
        "synth.agents", "task_repair.j2", agent_name=agent.name, domain=_humanize(agent.domain),
        problems=problems, goal=task.goal, criteria=task.rubric.success_criteria,
        failures=task.rubric.failure_conditions, kind=plan.kind, calls=_call_lines(plan), stated=plan.stated,
        idea=plan.idea,
    )
    return await llm.structured(Role.GENERATOR, [{"role": "user", "content": prompt}], TaskDraft, seed=seed,
                                max_tokens=max_tokens)


def _rejected(reason: str, task: Task | None, **data: object) -> RejectedItem:
    payload = task.model_dump() if task is not None else {k: v for k, v in data.items()}
    return RejectedItem(kind="task", reason=reason[:1000], data=json.loads(json.dumps(payload, default=str)))


async def synthesize_task(agent: Agent, toolset: list[ToolSpec], llm: LLMClient, settings: AgentSettings,
                          seed: int) -> Task | RejectedItem:
    """One task for `agent` (see the module docstring), or why there is none."""
    rng = random.Random(seed)
    kind = choose_kind(settings, rng)
    difficulty = choose_difficulty(rng) if kind == "tool" else "single_call"
    topic = rng.choice(TOPICS)
    plan = plan_task(toolset, kind, difficulty, rng, topic=topic)
    if plan is None:
        return _rejected(
            "no tool of the toolset got schema-valid arguments: " + ", ".join(t.name for t in toolset), None,
            agent_id=agent.id, domain=agent.domain, kind=kind, difficulty=difficulty,
            tools=[t.name for t in toolset])
    try:
        draft = await _draft_task(agent, toolset, plan, llm, derive_seed(seed, "draft"), settings.task_max_tokens)
    except LLMError as exc:
        return _rejected(f"task generation failed: {exc}", None, agent_id=agent.id, domain=agent.domain,
                         kind=plan.kind, difficulty=plan.difficulty, initial_state=plan.initial_state,
                         raw_text=str(getattr(exc, "raw_text", ""))[:1000])
    task = assemble_task(agent, plan, draft)
    problems = rubric_problems(task, toolset)
    for round_no in range(settings.repair_rounds):
        if not problems:
            break
        try:
            draft = await _repair_task(agent, plan, task, problems, llm, derive_seed(seed, "repair", round_no),
                                       settings.task_max_tokens)
        except LLMError as exc:
            return _rejected(f"{'; '.join(problems)} (repair failed: {str(exc)[:200]})", task)
        task = assemble_task(agent, plan, draft)
        problems = rubric_problems(task, toolset)
    if problems:
        return _rejected("; ".join(problems), task)
    return task


async def synthesize_tasks(agent: Agent, toolset: list[ToolSpec], llm: LLMClient, settings: AgentSettings,
                           seed: int) -> tuple[list[Task], list[RejectedItem]]:
    """`settings.tasks_per_agent` tasks for `agent`, concurrently: (accepted, rejected)."""
    if not toolset:
        raise ValueError("synthesize_tasks needs a non-empty toolset")
    results = await asyncio.gather(*(
        synthesize_task(agent, toolset, llm, settings, derive_seed(seed, agent.id, "task", i))
        for i in range(settings.tasks_per_agent)
    ))
    tasks: list[Task] = []
    rejected: list[RejectedItem] = []
    seen: set[str] = set()
    for result in results:
        if isinstance(result, Task):
            if result.id in seen:
                rejected.append(_rejected("duplicate of another task of this agent", result))
                continue
            seen.add(result.id)
            tasks.append(result)
        else:
            rejected.append(result)
    return tasks, rejected


async def synthesize_agent_and_tasks(toolset: list[ToolSpec], llm: LLMClient, settings: AgentSettings,
                                     seed: int) -> AgentResult:
    """The stage: an agent for `toolset`, then its tasks."""
    agent = await synthesize_agent(toolset, llm, derive_seed(seed, "agent"), settings.agent_max_tokens)
    tasks, rejected = await synthesize_tasks(agent, toolset, llm, settings, derive_seed(seed, "tasks"))
    return AgentResult(agent, tasks, rejected)
