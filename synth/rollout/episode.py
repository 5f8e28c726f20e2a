"""One rollout episode: simulated user <-> agent <-> tools, recorded as a `Trajectory`.

Loop: each turn the user simulator (`user`: scripted by default, the model when configured; it
sees the world state, so it ends the episode when its goal is done) speaks or ends the
conversation; then the agent takes up to
`max_steps_per_turn` steps, each either a batch of tool calls (answered in order, one `tool`
message per call) or a reply to the user, which ends the turn; the last step of a turn may only
reply. The episode ends with one of `Termination`:
- `user_done` / `user_stuck`: the user ended it (satisfied / gave up on the agent); the user's
  closing words are not appended, so a trajectory ends on the agent;
- `agent_gave_up`: the agent replied with nothing;
- `max_turns`: the turn budget ran out, and the user, looking once more, did not end it;
- `error`: a user or agent reply could not be used (`StructuredOutputError`) or the backend
  failed; the reason is the `error` of the last step, and any call left unanswered gets an error
  `tool` message, so the one-answer-per-call invariant holds even then. (A world model that
  cannot produce a result costs one `internal_error` observation, not the episode.)

Calls go to the bound real executor (`executors`, by tool name) after the same argument
validation as simulated calls, else to the `ToolSimulator`. Bad calls never raise: arguments
that are not JSON or break the `inputSchema` get an `invalid_arguments` observation, a failing
real tool a `tool_error` one; calls of tools outside the toolset are dropped by the agent step
(noted in its step's `error`), and `execute_call` answers one that reaches it with `unknown_tool`.
Each step is a `StepRecord` (executor, injected fault, latency, tokens).

An `error_recovery` task gets a transient fault on the first call of a planned tool
(`planned_fault`), so recovering from an error is part of what the episode shows.

Resume: every model request is seeded from (task id, seed, turn, step, role) and the world's
rng from (task id, seed), and call ids from (turn, step, index), so re-running an episode sends
byte-identical requests; with the response cache on, a killed episode replays its finished turns
from the cache at no model cost and carries on where it stopped (a real tool whose result
differs on re-run makes the requests after it differ, and those are sent again).
"""

from __future__ import annotations

from typing import Any

from synth.config import Role
from synth.ids import derive_seed
from synth.judges.messages import (
    given_cursors,
    given_ids,
    is_error_observation,
    message_text,
    same_words,
    writes_awaiting_go_ahead,
)
from synth.llm import LLMClient, LLMError, Usage
from synth.models import Agent, StepRecord, Task, Termination, ToolSpec, Trajectory
from synth.rollout.agent import AgentStep, ParsedCall, agent_step
from synth.rollout.arguments import validate_arguments
from synth.rollout.executors import ToolExecutor
from synth.rollout.faults import TRANSIENT_FAULTS
from synth.rollout.observation import ToolObservation, error_observation
from synth.rollout.user import simulate_user_turn
from synth.rollout.world import ToolSimulator
from synth.settings import RolloutSettings, ToolMode


def _step(turn: int, actor: Any, usage: Usage, **fields: Any) -> StepRecord:
    return StepRecord(turn=turn, actor=actor, latency_s=round(usage.latency_s, 4), prompt_tokens=usage.prompt_tokens,
                      completion_tokens=usage.completion_tokens, **fields)


def _answer_pending(messages: list[dict[str, Any]], reason: str) -> None:
    """Give every unanswered call of the last assistant message an error `tool` message."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            answered = {m.get("tool_call_id") for m in messages[index + 1 :] if m.get("role") == "tool"}
            for call in messages[index].get("tool_calls") or []:
                if call["id"] not in answered:
                    obs = error_observation("internal_error", f"the call was not completed: {reason}", "simulated")
                    messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"],
                                     "content": obs.message_content()})
            return


def degenerate_step(result: AgentStep, messages: list[dict[str, Any]]) -> str | None:
    """Why an agent step only repeats itself (None when it does not): a reply the agent already
    gave in this episode, one call twice in a batch, or the same batch of calls (names and
    arguments) as its last one when that batch got no error back (a retry after an error is
    recovery, not a loop). Such a step is sampled again (`agent_resamples`, another seed); the
    model still writes every step, and the `no_loops` check still judges whatever is kept."""
    earlier = [m for m in messages if m.get("role") == "assistant"]
    if result.reply is not None and not result.calls:
        said = {same_words(message_text(m)) for m in earlier if message_text(m).strip()}
        return "repeats an earlier reply" if same_words(result.reply) in said and result.reply.strip() else None
    batch = [(c.name, c.arguments_json) for c in result.calls]
    if len(set(batch)) < len(batch):
        return "makes the same call twice in one batch"
    if not result.calls or not earlier or not earlier[-1].get("tool_calls"):
        return None
    last = earlier[-1]
    previous = [(c["function"]["name"], c["function"]["arguments"]) for c in last["tool_calls"]]
    if batch != previous:
        return None
    ids = {c["id"] for c in last["tool_calls"]}
    answered = [m for m in messages if m.get("role") == "tool" and m.get("tool_call_id") in ids]
    return None if any(is_error_observation(m) for m in answered) else "repeats its last calls, which succeeded"


def planned_fault(task: Task, seed: int, real_tools: set[str]) -> tuple[frozenset[str], str] | None:
    """(tools, fault kind): an `error_recovery` task's episode injects the fault on the first call of
    any of its planned (simulated) tools, the kind chosen from the task and seed; None for other
    tasks. The fault is transient (`TRANSIENT_FAULTS`), so a retry gets past it and the task stays
    solvable."""
    if task.difficulty != "error_recovery":
        return None
    tools = frozenset(e.tool for e in task.rubric.expected_calls if e.tool not in real_tools)
    if not tools:
        return None
    return tools, TRANSIENT_FAULTS[derive_seed(task.id, seed, "planned_fault") % len(TRANSIENT_FAULTS)]


async def execute_call(
    call: ParsedCall, specs: dict[str, ToolSpec], simulator: ToolSimulator,
    executors: dict[str, ToolExecutor], *, turn: int, seed: int,
) -> ToolObservation:
    """Answer one call: validate once (unknown tool, unparsable or schema-breaking arguments ->
    an error observation), then dispatch to the tool's executor: the bound real one, else the
    simulator. A real tool's result is taken into the simulated world too (`absorb_real`), so a
    real write is seen by later simulated reads."""
    spec = specs.get(call.name)
    if spec is None:
        return error_observation(
            "unknown_tool", f"no tool named {call.name!r}; available: {', '.join(sorted(specs)) or 'none'}",
            "validator")
    if call.parse_error is not None:
        return error_observation("invalid_arguments", f"{call.name}: arguments are {call.parse_error}", "validator",
                                 path="(root)")
    invalid = validate_arguments(spec, call.arguments)
    if invalid is not None:
        return invalid
    executor = executors.get(call.name)
    if executor is None:  # a backend failure of the world model ends the episode (module docstring)
        return await simulator.call(spec, call.arguments, call_id=call.id, turn=turn, seed=seed)
    try:
        obs = await executor.call(spec, call.arguments, call_id=call.id, turn=turn, seed=seed)
    except Exception as exc:  # a real executor that breaks its contract still costs one observation only
        return error_observation("tool_error", f"{call.name}: {type(exc).__name__}: {exc}"[:500],
                                 "mcp" if executor.kind == "mcp" else "python")
    simulator.absorb_real(spec, call.arguments, obs, call_id=call.id, turn=turn)
    return obs


async def run_episode(
    agent: Agent,
    tools: list[ToolSpec],
    task: Task,
    llm: LLMClient,
    seed: int = 0,
    settings: RolloutSettings | None = None,
    executors: dict[str, ToolExecutor] | None = None,
) -> Trajectory:
    """Roll out `task` with `agent` over `tools`; never raises for a bad model reply (see module
    docstring). `executors` binds tool names to real executors; other tools are simulated."""
    settings = settings or RolloutSettings()
    executors = executors or {}
    configured = settings.tool_mode or llm.roles[Role.AGENT].tool_mode
    # A run resolves "auto" against its server before episodes start; an episode run on its own
    # with "auto" unresolved takes the mode that works with any model.
    mode: ToolMode = "constrained" if configured == "auto" else configured
    specs = {t.name: t for t in tools}
    task_id = task.id  # a hash of the task: once, not at every request's seed
    from synth.judges.checks import tool_writes  # here: the checks import the rollout's crud module

    writers = {t.name for t in tools if tool_writes(t)}  # the writes `confirms_writes` holds to the policy
    simulator = ToolSimulator(
        task.initial_state, llm, seed=derive_seed(task_id, seed, "world"), fault_rate=settings.fault_rate,
        fault_kinds=settings.fault_kinds, max_tokens=settings.environment_max_tokens,
        planned_fault=planned_fault(task, seed, set(executors)),
    )
    messages: list[dict[str, Any]] = [{"role": "system", "content": agent.system_prompt}]
    generated: dict[int, str] = {}  # assistant message index -> the action text the model generated
    steps: list[StepRecord] = []
    termination: Termination = "max_turns"
    turn = 0
    actor = "user"
    try:
        for turn in range(settings.max_turns):
            actor = "user"
            user, usage = await simulate_user_turn(
                task, messages, llm, state=simulator.state, mode=settings.user, rephrase=settings.user_rephrase,
                seed=derive_seed(task_id, seed, turn, "user"), max_tokens=settings.user_max_tokens)
            steps.append(_step(turn, "user", usage))
            if user.done:
                termination = "user_stuck" if user.reason == "stuck" else "user_done"
                break
            messages.append({"role": "user", "content": user.message})
            reply: AgentStep | None = None
            for step in range(settings.max_steps_per_turn):
                actor = "agent"
                usage = Usage()
                for attempt in range(settings.agent_resamples + 1):
                    result = await agent_step(
                        agent, tools, messages, llm, mode,
                        seed=derive_seed(task_id, seed, turn, step, "agent", *([attempt] if attempt else [])),
                        force_reply=step == settings.max_steps_per_turn - 1, max_calls=settings.max_calls_per_step,
                        call_id_prefix=f"call_{turn}_{step}", max_tokens=settings.agent_max_tokens,
                        generated=generated, withheld_tools=frozenset(writes_awaiting_go_ahead(messages, writers)),
                        given_ids=given_ids(messages), given_cursors=sorted(given_cursors(messages)),
                    )
                    usage.add(result.usage)
                    if degenerate_step(result, messages) is None:
                        break
                result.usage = usage
                if result.text is not None:
                    generated[len(messages)] = result.text
                messages.append(result.message)
                steps.append(_step(turn, "agent", result.usage, error=result.note))
                if not result.calls:
                    reply = result
                    break
                actor = "tool"
                for index, call in enumerate(result.calls):
                    obs = await execute_call(call, specs, simulator, executors, turn=turn,
                                             seed=derive_seed(task_id, seed, turn, step, index, "environment"))
                    messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                     "content": obs.message_content()})
                    steps.append(_step(turn, "tool", obs.usage, tool=call.name, tool_call_id=call.id,
                                       executor=obs.executor, fault=obs.fault, error=obs.error))
            if reply is not None and not reply.reply:
                termination = "agent_gave_up"
                break
        else:  # the turn budget is spent: the user still sees whether the last turn got it done
            actor = "user"
            user, usage = await simulate_user_turn(
                task, messages, llm, state=simulator.state, mode=settings.user, rephrase=False,
                seed=derive_seed(task_id, seed, settings.max_turns, "user"), max_tokens=settings.user_max_tokens)
            if user.done:
                steps.append(_step(settings.max_turns, "user", usage))
                termination = "user_stuck" if user.reason == "stuck" else "user_done"
    except LLMError as exc:
        reason = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
        _answer_pending(messages, reason)
        termination = "error"
        steps.append(StepRecord(turn=turn, actor=actor, error=reason[:1000]))
    return Trajectory(
        task_id=task_id, agent_id=agent.id, domain=task.domain, messages=messages,
        tools=[t.to_openai() for t in tools], steps=steps, state_log=simulator.state_log,
        final_state=simulator.state, termination=termination, seed=seed,
    )
