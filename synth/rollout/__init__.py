"""Multi-agent rollouts: a simulated user, the agent under synthesis, and a stateful tool
simulator (with real MCP / Python tools in the loop where bound), recorded as `Trajectory`s."""

from synth.rollout.agent import AgentStep, ParsedCall, ToolMode, action_schema, agent_step
from synth.rollout.arguments import validate_arguments
from synth.rollout.crud import merge_patch
from synth.rollout.episode import RolloutSettings, execute_call, run_episode
from synth.rollout.executors import (
    McpExecutor,
    McpServerBinding,
    PythonExecutor,
    PythonToolBinding,
    ToolExecutor,
    bind_executors,
    bound_tool_specs,
    python_tool_spec,
)
from synth.rollout.faults import FAULT_KINDS
from synth.rollout.observation import ToolObservation
from synth.rollout.user import UserTurn, simulate_user_turn
from synth.rollout.world import ToolSimulator, simulate_tool_call

__all__ = [
    "FAULT_KINDS",
    "AgentStep",
    "McpExecutor",
    "McpServerBinding",
    "ParsedCall",
    "PythonExecutor",
    "PythonToolBinding",
    "RolloutSettings",
    "ToolExecutor",
    "ToolMode",
    "ToolObservation",
    "ToolSimulator",
    "UserTurn",
    "action_schema",
    "agent_step",
    "bind_executors",
    "bound_tool_specs",
    "execute_call",
    "merge_patch",
    "python_tool_spec",
    "run_episode",
    "simulate_tool_call",
    "simulate_user_turn",
    "validate_arguments",
]
