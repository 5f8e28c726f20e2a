"""Agents and tasks: coherent toolsets sampled from the tool repository, an agent (system prompt,
traits) per toolset, and tasks with rubrics per agent, validated deterministically."""

from synth.agents.plans import TaskPlan, example_value, plan_task
from synth.agents.repository import rejected_task_row, store_agent_result
from synth.agents.synthesize import (
    AgentResult,
    AgentSettings,
    synthesize_agent,
    synthesize_agent_and_tasks,
    synthesize_task,
    synthesize_tasks,
)
from synth.agents.toolsets import ToolsetSampler, application_of
from synth.agents.validate import entity_reference, rubric_problems

__all__ = [
    "AgentResult",
    "AgentSettings",
    "TaskPlan",
    "ToolsetSampler",
    "application_of",
    "entity_reference",
    "example_value",
    "plan_task",
    "rejected_task_row",
    "rubric_problems",
    "store_agent_result",
    "synthesize_agent",
    "synthesize_agent_and_tasks",
    "synthesize_task",
    "synthesize_tasks",
]
