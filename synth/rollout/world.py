"""The stateful tool simulator: answers tool calls against a world state that stays consistent.

Every simulated call goes through the same steps, each its own module:
1. **Validation** (`arguments`), done once by `episode.execute_call` for every executor: a call
   that breaks the tool's `inputSchema` never reaches one.
2. **Injected fault** (`faults`): a fixed number of draws from the simulator's seeded rng per call;
   with probability `fault_rate` a fault is injected and recorded as such. A `planned_fault`
   (an `error_recovery` task's) hits the first call of one of its tools whatever the roll said.
3. **Deterministic CRUD** (`crud`): where the tool's name says what it does, code answers it.
4. **World model** (`world_model`, LLM role "environment") for everything else; entities its
   results describe join the world (`crud.absorb_entities`), and its `state_update` is applied
   only when it stays in the call's own collection (`crud.check_state_update`); a refused update
   is logged with its reason, never applied. A model that never produces a valid result gives an
   `internal_error` observation, not a failed episode.
5. **State update** applied as a JSON merge patch (RFC 7396) and logged with its call.

`ToolSimulator` implements the executor protocol of `synth.rollout.executors` (`kind`, `call`), so
an episode dispatches every call the same way; it also takes in what real tools did
(`absorb_real`), so a real write is seen by later simulated reads.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from synth.llm import LLMClient, StructuredOutputError, Usage
from synth.models import ToolSpec
from synth.rollout.crud import (
    absorb_entities,
    check_state_update,
    collection_for,
    match_filters,
    merge_patch,
    plan_deterministic,
    real_result_update,
    tool_intent,
)
from synth.rollout.faults import FAULT_KINDS, fault_observation, truncate_result
from synth.rollout.observation import ToolObservation, error_observation
from synth.rollout.world_model import ask_world_model, overlay_entity


async def simulate_tool_call(
    spec: ToolSpec,
    arguments: dict[str, Any],
    state: dict[str, Any],
    llm: LLMClient,
    rng: random.Random,
    fault_rate: float = 0.0,
    *,
    fault_kinds: tuple[str, ...] | list[str] = FAULT_KINDS,
    forced_fault: str | None = None,
    seed: int | None = None,
    max_tokens: int = 320,
) -> tuple[ToolObservation, str | None]:
    """(observation, refusal) of one validated call against `state` (not modified: the update is in
    the observation; `refusal` says why a model's update was refused, None if none was).

    Draws exactly three values per call from `rng` (the fault roll, the fault kind, and a seed for
    the call's own randomness: new ids, retry-after delays), so the fault sequence depends only on
    the seed and the number of calls, whatever the calls were. A `partial_result` fault on a call
    that fails anyway (a deterministic `not_found`) has no effect."""
    roll = rng.random()
    kind = rng.choice(list(fault_kinds)) if fault_kinds else None
    call_rng = random.Random(rng.getrandbits(64))
    fault = forced_fault or (kind if (kind is not None and roll < fault_rate) else None)
    if fault is not None and fault != "partial_result":
        return fault_observation(fault, spec, call_rng), None
    plan = plan_deterministic(spec, arguments, state, call_rng)
    if plan.observation is not None:
        return plan.observation, None
    usage = Usage()
    refusal = None
    if plan.decided:
        result, update = plan.result, plan.state_update
    else:
        try:
            result, model_update, usage = await ask_world_model(spec, arguments, state, llm, seed=seed,
                                                                entity=plan.entity, max_tokens=max_tokens)
        except StructuredOutputError as exc:
            obs = error_observation("internal_error", f"{spec.name} failed with an internal server error",
                                    "simulated")
            obs.error = f"world model failed: {exc.reason}"[:1000]
            return obs, None
        if plan.entity is not None:
            result, update = overlay_entity(result, plan.entity, spec.output_schema), plan.state_update
        else:
            _, resource = tool_intent(spec)
            result, update = absorb_entities(match_filters(result, arguments), resource, state)
            if model_update:
                refusal = check_state_update(model_update, collection_for(state, resource))
                if refusal is None:
                    update = merge_patch(update, model_update)
    obs = ToolObservation(result, "simulated", state_update=update, usage=usage)
    if fault == "partial_result":
        obs.content, obs.executor, obs.fault = truncate_result(result), "fault", "partial_result"
    return obs, refusal


class ToolSimulator:
    """Per-episode world: the state (from `task.initial_state`), its seeded fault rng, and the log of
    every state change with the call that caused it. Calls reach it validated (see module
    docstring)."""

    kind = "simulated"

    def __init__(self, initial_state: dict[str, Any], llm: LLMClient, *, seed: int, fault_rate: float = 0.0,
                 fault_kinds: tuple[str, ...] | list[str] = FAULT_KINDS, max_tokens: int = 320,
                 planned_fault: tuple[frozenset[str], str] | None = None) -> None:
        unknown = [k for k in fault_kinds if k not in FAULT_KINDS]
        if planned_fault is not None and planned_fault[1] not in FAULT_KINDS:
            unknown.append(planned_fault[1])
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be within [0, 1], got {fault_rate}")
        self.state: dict[str, Any] = copy.deepcopy(initial_state)
        self.llm = llm
        self.seed = seed
        self.rng = random.Random(seed)
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.max_tokens = max_tokens
        self.planned_fault = planned_fault
        self.calls = 0
        self.state_log: list[dict[str, Any]] = []

    async def call(self, spec: ToolSpec, arguments: dict[str, Any], *, call_id: str | None = None, turn: int = 0,
                   seed: int | None = None) -> ToolObservation:
        """Simulate one call and apply its state update (merge patch), logging it."""
        self.calls += 1
        forced = None
        if self.planned_fault is not None and spec.name in self.planned_fault[0]:
            forced, self.planned_fault = self.planned_fault[1], None
        obs, refusal = await simulate_tool_call(
            spec, arguments, self.state, self.llm, self.rng, self.fault_rate, fault_kinds=self.fault_kinds,
            forced_fault=forced, seed=seed if seed is not None else self.seed + self.calls,
            max_tokens=self.max_tokens,
        )
        self.apply(obs.state_update, tool=spec.name, arguments=arguments, call_id=call_id, turn=turn,
                   executor=obs.executor, refused=refusal)
        return obs

    def absorb_real(self, spec: ToolSpec, arguments: dict[str, Any], obs: ToolObservation, *,
                    call_id: str | None = None, turn: int = 0) -> None:
        """Take in what a real tool's successful call did (`crud.real_result_update`)."""
        if obs.is_error:
            return
        update = real_result_update(spec, arguments, obs.content, self.state)
        obs.state_update = update
        self.apply(update, tool=spec.name, arguments=arguments, call_id=call_id, turn=turn, executor=obs.executor)

    def apply(self, update: dict[str, Any], *, tool: str, arguments: Any, call_id: str | None, turn: int,
              executor: str, refused: str | None = None) -> None:
        if not update and refused is None:
            return
        if update:
            self.state = merge_patch(self.state, update)
        entry = {"turn": turn, "tool_call_id": call_id, "tool": tool, "arguments": arguments,
                 "executor": executor, "state_update": update}
        if refused is not None:
            entry["refused"] = refused
        self.state_log.append(entry)
