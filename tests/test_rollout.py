"""Multi-agent rollouts (issue 5): simulated user, agent, stateful tool simulator, real tools.

Unit tier: a fake OpenAI server plays every role from the request alone (`Play`), so replies do
not depend on request order and a replayed episode meets the same replies. Integration tier
(`integration`): 20 episodes against the embedded backend, stored in DuckDB and read back.
Fixtures are hand-built order-management and support-desk toolsets with tasks over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from synth.llm import LLMClient
from synth.llm.cache import request_key
from synth.llm.client import ChatResult
from synth.llm.fake_server import FakeOpenAIServer, Scripted, schema_example, status
from synth.models import Agent, ExpectedCall, Persona, Rubric, Task, ToolSpec, Trajectory
from synth.rollout import (
    FAULT_KINDS,
    McpExecutor,
    McpServerBinding,
    ParsedCall,
    PythonExecutor,
    RolloutSettings,
    ToolSimulator,
    bind_executors,
    execute_call,
    merge_patch,
    run_episode,
    validate_arguments,
)
from synth.store import Dataset, connect_readonly
from tests.conftest import make_config

MCP_SERVER = Path(__file__).parent / "mcp_servers" / "rollout_server.py"

# ---------------------------------------------------------------- fixtures: tools, agents, tasks


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str], *,
          side_effect: str = "read", output: dict[str, Any] | None = None, domain: str = "retail",
          application: str = "shop") -> ToolSpec:
    return ToolSpec.model_validate({
        "name": name, "description": description, "side_effect": side_effect, "domain": domain,
        "application": application, "outputSchema": output,
        "inputSchema": {"type": "object", "properties": properties, "required": required,
                        "additionalProperties": False},
    })


ITEM = {"type": "object", "properties": {"sku": {"type": "string", "minLength": 1},
                                         "quantity": {"type": "integer", "minimum": 1}},
        "required": ["sku", "quantity"], "additionalProperties": False}
ORDER = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "customer": {"type": "string"},
                   "items": {"type": "array", "items": ITEM}, "status": {"type": "string"},
                   "reason": {"type": "string"}},
    "required": ["order_id", "customer", "items"],
}
GET_ORDER = _tool("get_order", "Look up one order by its id.", {"order_id": {"type": "string", "minLength": 1}},
                  ["order_id"], output=ORDER)
CREATE_ORDER = _tool("create_order", "Place a new order for a customer.",
                     {"customer": {"type": "string", "minLength": 1},
                      "items": {"type": "array", "items": ITEM, "minItems": 1}},
                     ["customer", "items"], side_effect="write", output=ORDER)
CANCEL_ORDER = _tool("cancel_order", "Cancel an order that has not shipped yet.",
                     {"order_id": {"type": "string", "minLength": 1}, "reason": {"type": "string"}},
                     ["order_id"], side_effect="write", output=ORDER)
SEARCH_ORDERS = _tool("search_orders", "Find the orders of a customer.", {"customer": {"type": "string"}},
                      ["customer"], output={"type": "object", "properties": {
                          "orders": {"type": "array", "items": ORDER, "maxItems": 3}}, "required": ["orders"]})
CONVERT_CURRENCY = _tool("convert_currency", "Convert an amount of US dollars to another currency.",
                         {"amount": {"type": "number", "minimum": 0},
                          "currency": {"type": "string", "enum": ["EUR", "GBP", "JPY"]}},
                         ["amount", "currency"])
ORDER_TOOLS = [GET_ORDER, CREATE_ORDER, CANCEL_ORDER, SEARCH_ORDERS]

TICKET = {"type": "object", "properties": {"ticket_id": {"type": "string"}, "subject": {"type": "string"},
                                           "priority": {"type": "string"}, "status": {"type": "string"},
                                           "comment": {"type": "string"}},
          "required": ["ticket_id", "subject"]}
PRIORITY = {"type": "string", "enum": ["low", "normal", "urgent"]}
CREATE_TICKET = _tool("create_ticket", "Open a support ticket.",
                      {"subject": {"type": "string", "minLength": 3}, "priority": PRIORITY}, ["subject", "priority"],
                      side_effect="write", output=TICKET, domain="customer_support", application="helpdesk")
GET_TICKET = _tool("get_ticket", "Read a support ticket.", {"ticket_id": {"type": "string", "minLength": 1}},
                   ["ticket_id"], output=TICKET, domain="customer_support", application="helpdesk")
UPDATE_TICKET = _tool("update_ticket", "Change a ticket's status and add a comment.",
                      {"ticket_id": {"type": "string", "minLength": 1},
                       "status": {"type": "string", "enum": ["open", "pending", "solved"]},
                       "comment": {"type": "string"}},
                      ["ticket_id", "status"], side_effect="write", output=TICKET, domain="customer_support",
                      application="helpdesk")
TICKET_TOOLS = [CREATE_TICKET, GET_TICKET, UPDATE_TICKET]

ORDERS_STATE = {"orders": {
    "o-1001": {"order_id": "o-1001", "customer": "Ada Lovelace", "items": [{"sku": "BOOK-42", "quantity": 1}],
               "status": "processing"},
    "o-1002": {"order_id": "o-1002", "customer": "Ada Lovelace", "items": [{"sku": "LAMP-7", "quantity": 2}],
               "status": "shipped"},
}}
TICKETS_STATE = {"tickets": {
    "t-7": {"ticket_id": "t-7", "subject": "Cannot log in", "priority": "urgent", "status": "open"},
}}


def _agent(name: str, domain: str, tools: list[ToolSpec], prompt: str) -> Agent:
    return Agent(name=name, domain=domain, system_prompt=prompt, tool_ids=[t.id for t in tools])


SHOP_AGENT = _agent("shop-assistant", "retail", [*ORDER_TOOLS, CONVERT_CURRENCY],
                    "You are the order desk assistant of an online shop. Use the tools to look up, place and "
                    "cancel orders. Ask for the order id when you need it.")
DESK_AGENT = _agent("helpdesk", "customer_support", TICKET_TOOLS,
                    "You are a helpdesk agent. Open, read and update support tickets with the tools.")


def _task(agent: Agent, goal: str, state: dict[str, Any], criteria: list[str], expected: list[ExpectedCall],
          withheld: dict[str, str] | None = None, persona: Persona | None = None) -> Task:
    return Task(agent_id=agent.id, domain=agent.domain, goal=goal, persona=persona or Persona(),
                withheld=withheld or {}, initial_state=copy.deepcopy(state), difficulty="multi_step",
                rubric=Rubric(success_criteria=criteria, expected_calls=expected))


CANCEL_TASK = _task(SHOP_AGENT, "Cancel my order because I ordered the wrong book.", ORDERS_STATE,
                    ["The assistant cancels order o-1001"],
                    [ExpectedCall(tool="cancel_order", arguments={"order_id": "o-1001"})],
                    withheld={"order_id": "o-1001"},
                    persona=Persona(name="Ada", communication_style="polite, a little terse", patience="high"))
STATUS_TASK = _task(SHOP_AGENT, "Find out whether my lamp order o-1002 has shipped.", ORDERS_STATE,
                    ["The assistant reports that o-1002 has shipped"],
                    [ExpectedCall(tool="get_order", arguments={"order_id": "o-1002"})])
NEW_ORDER_TASK = _task(SHOP_AGENT, "Order two copies of the book BOOK-42 for Grace Hopper.", ORDERS_STATE,
                       ["The assistant places an order with 2 x BOOK-42 for Grace Hopper"],
                       [ExpectedCall(tool="create_order", arguments={"customer": "Grace Hopper"})],
                       persona=Persona(name="Grace", expertise="expert", patience="low"))
TICKET_TASK = _task(DESK_AGENT, "Open an urgent ticket: the invoice page shows an error.", TICKETS_STATE,
                    ["The assistant opens an urgent ticket about the invoice page"],
                    [ExpectedCall(tool="create_ticket", arguments={"priority": "urgent"})])
SOLVE_TASK = _task(DESK_AGENT, "Mark my login ticket as solved, it works again.", TICKETS_STATE,
                   ["The assistant sets ticket t-7 to solved"],
                   [ExpectedCall(tool="update_ticket", arguments={"ticket_id": "t-7", "status": "solved"})],
                   withheld={"ticket_id": "t-7"})

SHOP_TOOLS = [*ORDER_TOOLS, CONVERT_CURRENCY]
EPISODES: list[tuple[Agent, list[ToolSpec], Task]] = [
    (SHOP_AGENT, SHOP_TOOLS, CANCEL_TASK), (SHOP_AGENT, SHOP_TOOLS, STATUS_TASK),
    (SHOP_AGENT, SHOP_TOOLS, NEW_ORDER_TASK), (DESK_AGENT, TICKET_TOOLS, TICKET_TASK),
    (DESK_AGENT, TICKET_TOOLS, SOLVE_TASK),
]


def convert_currency(amount: float, currency: str) -> dict[str, Any]:
    """The Python-callable tool: a fixed rate table, so its real result is known."""
    rates = {"EUR": 0.5, "GBP": 0.25, "JPY": 100.0}
    return {"amount": amount, "currency": currency, "converted": round(amount * rates[currency], 2)}


# ---------------------------------------------------------------- the fake backend plays every role


def _role(body: dict[str, Any]) -> str:
    name = str(((body.get("response_format") or {}).get("json_schema") or {}).get("name"))
    return {"user_turn": "user", "agent_action": "agent", "tool_result": "environment"}.get(name, "native_agent")


def _schema(body: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = body["response_format"]["json_schema"]["schema"]
    return schema


def _reply(value: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": json.dumps(value)}


class Play:
    """A responder playing every role from the request body alone.

    user: the n-th scripted turn when the user has spoken n times (then `done`, satisfied);
    agent: the n-th scripted action after n agent steps (constrained: an action dict; native:
    `{"content": ...}` or `{"calls": [(name, arguments dict or raw text), ...]}`), then a reply;
    `agent=None` gives a random schema-valid action seeded by the request; environment: the
    `environment(body)` value, else a schema example seeded by the request.
    """

    def __init__(self, user: list[str] | None = None, agent: list[dict[str, Any]] | None = None,
                 environment: Callable[[dict[str, Any]], Any] | None = None, user_turns: int | None = None) -> None:
        self.user = user or ["I need help with my order."]
        self.user_turns = user_turns if user_turns is not None else len(self.user)
        self.agent = agent
        self.environment = environment
        self.seen: Counter[str] = Counter()
        self.user_prompts: list[str] = []

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        role = _role(body)
        self.seen[role] += 1
        if role == "user":
            self.user_prompts.append(body["messages"][0]["content"])
        messages = body["messages"]
        earlier = sum(1 for m in messages if m["role"] == "assistant")
        # Seeded by the request as the client keys it (streaming is how it is sent, not what it asks).
        rng = random.Random(request_key({k: v for k, v in body.items() if k not in ("stream", "stream_options")}))
        if role == "user":
            if earlier >= self.user_turns:
                return _reply({"message": "Thanks, that is all.", "done": True, "reason": "satisfied"})
            return _reply({"message": self.user[earlier % len(self.user)], "done": False, "reason": "continue"})
        if role == "environment":
            value = self.environment(body) if self.environment else schema_example(_schema(body), rng)
            return _reply(value)
        if self.agent is None:
            if role == "agent":
                return _reply(schema_example(_schema(body), rng))
            return {"role": "assistant", "content": "Here is what I found."}
        entry = self.agent[earlier] if earlier < len(self.agent) else None
        if role == "agent":
            return _reply(entry if entry is not None else {"action": "reply", "message": "All done."})
        entry = entry or {"content": "All done."}
        calls = [{"id": f"model_{i}", "type": "function",
                  "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                 for i, (name, args) in enumerate(entry.get("calls") or [])]
        return {"role": "assistant", "content": entry.get("content"), **({"tool_calls": calls} if calls else {})}


def _call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool": tool, "arguments": arguments}


def _calls(*calls: dict[str, Any]) -> dict[str, Any]:
    return {"action": "call", "calls": list(calls)}


def _say(message: str) -> dict[str, Any]:
    return {"action": "reply", "message": message}


# ---------------------------------------------------------------- invariants


def assert_canonical(messages: list[dict[str, Any]], tool_names: set[str]) -> None:
    """Canonical OpenAI chat: every assistant call names a tool of the toolset, has a unique id and
    JSON-string arguments, and is answered, in order and before anything else, by exactly one
    `tool` message with its `tool_call_id`; no `tool` message answers anything else."""
    assert messages and messages[0]["role"] == "system"
    pending: list[str] = []
    ids: set[str] = set()
    for index, m in enumerate(messages):
        where = f"message {index}: {json.dumps(m)[:300]}"
        if m["role"] == "tool":
            assert pending and m["tool_call_id"] == pending[0], f"tool message answers no pending call; {where}"
            assert isinstance(m["content"], str), where
            pending.pop(0)
            continue
        assert not pending, f"calls {pending} unanswered before {where}"
        assert m["role"] in ("user", "assistant") or (index == 0 and m["role"] == "system"), where
        for call in m.get("tool_calls") or []:
            assert m["role"] == "assistant", where
            assert call["type"] == "function", where
            assert call["function"]["name"] in tool_names, f"call of a tool outside the toolset; {where}"
            arguments = call["function"]["arguments"]
            assert isinstance(arguments, str), where
            json.loads(arguments)
            assert call["id"] not in ids, f"duplicate call id; {where}"
            ids.add(call["id"])
            pending.append(call["id"])
    assert not pending, f"calls {pending} unanswered at the end"


def tool_results(traj: Trajectory) -> list[tuple[str, Any]]:
    """(tool name, parsed content) of every tool message, in order."""
    out = []
    for m in traj.messages:
        if m["role"] == "tool":
            try:
                content = json.loads(m["content"])
            except ValueError:
                content = m["content"]
            out.append((m["name"], content))
    return out


def timeless(traj: Trajectory) -> dict[str, Any]:
    """The trajectory without wall-clock latencies (the only field a replay may change)."""
    data = traj.model_dump()
    for step in data["steps"]:
        step["latency_s"] = 0.0
    return data


def _llm(server: FakeOpenAIServer, cache_dir: Path | None = None, **llm: Any) -> LLMClient:
    return LLMClient(make_config(server.base_url, cache_dir, **llm))


# ---------------------------------------------------------------- 6. merge patch and argument validation

RFC7396_EXAMPLES = [  # RFC 7396, Appendix A
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7396_EXAMPLES)
def test_merge_patch_follows_rfc7396(target: Any, patch: Any, expected: Any) -> None:
    before_target, before_patch = copy.deepcopy(target), copy.deepcopy(patch)
    assert merge_patch(target, patch) == expected
    assert (target, patch) == (before_target, before_patch), "merge_patch must not modify its inputs"


def test_merge_patch_result_shares_no_patch_objects() -> None:
    patch = {"orders": {"o-1": {"items": [{"sku": "A"}]}}}
    merged = merge_patch({}, patch)
    merged["orders"]["o-1"]["items"][0]["sku"] = "changed"
    assert patch["orders"]["o-1"]["items"][0]["sku"] == "A"


@pytest.mark.parametrize(("arguments", "fragment"), [
    ({}, "(root): 'customer' is a required property"),
    ({"customer": "Ada", "items": []}, "items: [] should be non-empty"),
    ({"customer": "Ada", "items": [{"sku": "A", "quantity": 0}]}, "items/0/quantity: 0 is less than the minimum"),
    ({"customer": 7, "items": [{"sku": "A", "quantity": 1}]}, "customer: 7 is not of type 'string'"),
    ({"customer": "Ada", "items": [{"sku": "A", "quantity": 1}], "coupon": "X"}, "coupon"),
    (None, "arguments must be a JSON object, got null"),
    (["Ada"], "arguments must be a JSON object, got array"),
    ("{customer: Ada", "arguments must be a JSON object, got string"),
])
def test_validate_arguments_names_tool_path_and_problem(arguments: Any, fragment: str) -> None:
    obs = validate_arguments(CREATE_ORDER, arguments)
    assert obs is not None and obs.is_error and obs.executor == "validator"
    error = obs.content["error"]
    assert error["type"] == "invalid_arguments"
    assert error["message"].startswith("create_order: ") and fragment in error["message"], error["message"]
    assert obs.error is not None and obs.error.startswith("invalid_arguments: ")
    assert obs.fault is None and obs.state_update == {}


def test_validate_arguments_accepts_valid_and_ignores_a_broken_schema() -> None:
    assert validate_arguments(CREATE_ORDER, {"customer": "Ada", "items": [{"sku": "A", "quantity": 2}]}) is None
    assert validate_arguments(GET_ORDER, {"order_id": "o-1"}) is None
    broken = GET_ORDER.model_copy(update={"input_schema": {"type": "objekt"}})
    assert validate_arguments(broken, {"order_id": "o-1"}) is None
    dangling = GET_ORDER.model_copy(update={"input_schema": {"$ref": "#/$defs/missing"}})
    assert validate_arguments(dangling, {"order_id": "o-1"}) is None


# ---------------------------------------------------------------- 2. injected faults


async def _fault_sequence(llm: LLMClient, seed: int, rate: float, calls: int) -> list[str | None]:
    simulator = ToolSimulator(ORDERS_STATE, llm, seed=seed, fault_rate=rate)
    faults: list[str | None] = []
    for i in range(calls):
        spec, args = ((SEARCH_ORDERS, {"customer": f"customer {i}"}) if i % 2 else
                      (GET_ORDER, {"order_id": "o-1001"}))
        obs = await simulator.call(spec, args, call_id=f"c{i}")
        faults.append(obs.fault)
        if obs.fault is not None:
            assert obs.executor == "fault"
            if obs.fault == "partial_result":
                assert obs.content["partial"] is True and not obs.is_error
            else:
                assert obs.is_error and obs.content["error"]["type"] == obs.fault, obs.content
        else:
            assert obs.executor == "simulated" and not obs.is_error, obs.content
    return faults


@pytest.mark.parametrize("rate", [0.1, 0.3])
async def test_fault_rate_over_500_calls_matches_config_and_seed_reproduces_it(
    fake_server: Callable[..., FakeOpenAIServer], rate: float,
) -> None:
    server = fake_server(responder=Play())
    async with _llm(server) as llm:
        first = await _fault_sequence(llm, seed=11, rate=rate, calls=500)
        model_calls = server.requests
        again = await _fault_sequence(llm, seed=11, rate=rate, calls=500)
        other = await _fault_sequence(llm, seed=12, rate=rate, calls=500)
    observed = sum(f is not None for f in first) / len(first)
    assert abs(observed - rate) <= 0.05, (observed, rate)
    assert first == again, "the same seed must inject the same faults, call for call"
    assert first != other
    assert set(first) - {None} == set(FAULT_KINDS)
    # Faults other than partial results cost no model call; get_order of a known id none at all.
    world_model_calls = sum(1 for i, f in enumerate(first) if i % 2 and f in (None, "partial_result"))
    assert model_calls == world_model_calls


async def test_fault_sequence_does_not_depend_on_what_the_calls_were(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    """Creates draw ids from the call's own rng, so they do not shift the fault sequence."""
    server = fake_server(responder=Play())
    async with _llm(server) as llm:
        reads = ToolSimulator(ORDERS_STATE, llm, seed=5, fault_rate=0.4)
        writes = ToolSimulator(ORDERS_STATE, llm, seed=5, fault_rate=0.4)
        read_faults, write_faults = [], []
        for _ in range(60):
            read_faults.append((await reads.call(GET_ORDER, {"order_id": "o-1001"})).fault)
            obs = await writes.call(CREATE_ORDER, {"customer": "Ada", "items": [{"sku": "A", "quantity": 1}]})
            write_faults.append(obs.fault)
    assert read_faults == write_faults
    assert server.requests == 0


def test_simulator_rejects_unknown_fault_kinds_and_bad_rates() -> None:
    llm = LLMClient(make_config("http://127.0.0.1:9"))
    with pytest.raises(ValueError, match="unknown fault kinds"):
        ToolSimulator({}, llm, seed=1, fault_kinds=["meteor_strike"])
    with pytest.raises(ValueError, match="fault_rate"):
        ToolSimulator({}, llm, seed=1, fault_rate=1.5)


# ---------------------------------------------------------------- 3. read after write


async def test_read_after_write_on_the_deterministic_path(fake_server: Callable[..., FakeOpenAIServer]) -> None:
    server = fake_server(responder=Play())
    async with _llm(server) as llm:
        sim = ToolSimulator(ORDERS_STATE, llm, seed=3)
        order = {"customer": "Grace Hopper", "items": [{"sku": "BOOK-42", "quantity": 2}]}
        created = await sim.call(CREATE_ORDER, order, call_id="c1")
        order_id = created.content["order_id"]
        assert created.content == {"order_id": order_id, "customer": "Grace Hopper",
                                   "items": [{"sku": "BOOK-42", "quantity": 2}]}
        assert order_id not in ORDERS_STATE["orders"]
        read = await sim.call(GET_ORDER, {"order_id": order_id})
        assert read.content == created.content and read.executor == "simulated"

        cancelled = await sim.call(CANCEL_ORDER, {"order_id": order_id, "reason": "duplicate"}, call_id="c3")
        assert cancelled.content["status"] == "cancelled" and cancelled.content["reason"] == "duplicate"
        assert (await sim.call(GET_ORDER, {"order_id": order_id})).content == cancelled.content

        missing = await sim.call(GET_ORDER, {"order_id": "o-404"})
        assert missing.is_error and missing.content["error"]["type"] == "not_found"
        assert "o-404" in missing.content["error"]["message"]

        # No orders at all in this world: an order named by its id is not found, not made up by the
        # world model (a CI main job's `get_forecast(forecast_id="7328378")` came back as a forecast).
        empty = ToolSimulator(TICKETS_STATE, llm, seed=3)
        nowhere = await empty.call(GET_ORDER, {"order_id": "7328378"})
        assert nowhere.is_error and nowhere.content["error"]["type"] == "not_found"
        assert "orders" not in empty.state and empty.state_log == []

        desk = ToolSimulator(TICKETS_STATE, llm, seed=3)
        ticket = await desk.call(CREATE_TICKET, {"subject": "Invoice page error", "priority": "urgent"})
        ticket_id = ticket.content["ticket_id"]
        await desk.call(UPDATE_TICKET, {"ticket_id": ticket_id, "status": "pending", "comment": "looking"})
        assert (await desk.call(GET_TICKET, {"ticket_id": ticket_id})).content == {
            "ticket_id": ticket_id, "subject": "Invoice page error", "priority": "urgent", "status": "pending",
            "comment": "looking"}
    assert server.requests == 0, "legible create/get/update/cancel calls need no model"
    assert [(e["tool"], e["tool_call_id"]) for e in sim.state_log] == [("create_order", "c1"), ("cancel_order", "c3")]
    assert sim.state["orders"][order_id]["status"] == "cancelled"
    assert ORDERS_STATE["orders"].keys() == {"o-1001", "o-1002"}, "the task's initial state is never modified"


async def test_read_after_a_world_model_write(fake_server: Callable[..., FakeOpenAIServer]) -> None:
    """A write the code cannot read (`ship_order`) is the world model's `state_update`, applied as
    a merge patch; a later read sees it."""
    ship = _tool("ship_order", "Hand an order to the carrier.", {"order_id": {"type": "string"}}, ["order_id"],
                 side_effect="write")

    def environment(body: dict[str, Any]) -> Any:
        assert "state_update" in _schema(body)["properties"]
        return {"result": {"order_id": "o-1001", "carrier": "DHL"},
                "state_update": {"orders": {"o-1001": {"status": "in_transit", "carrier": "DHL"}}}}

    server = fake_server(responder=Play(environment=environment))
    async with _llm(server) as llm:
        sim = ToolSimulator(ORDERS_STATE, llm, seed=1)
        shipped = await sim.call(ship, {"order_id": "o-1001"}, call_id="s1", turn=2)
        assert shipped.content == {"order_id": "o-1001", "carrier": "DHL"}
        read = await sim.call(GET_ORDER, {"order_id": "o-1001"})
    assert read.content == {**ORDERS_STATE["orders"]["o-1001"], "status": "in_transit", "carrier": "DHL"}
    assert sim.state_log == [{"turn": 2, "tool_call_id": "s1", "tool": "ship_order",
                              "arguments": {"order_id": "o-1001"}, "executor": "simulated",
                              "state_update": {"orders": {"o-1001": {"status": "in_transit", "carrier": "DHL"}}}}]
    assert server.requests == 1


async def test_another_entitys_id_is_not_taken_for_this_ones(fake_server: Callable[..., FakeOpenAIServer]) -> None:
    """`get_customer_orders(customer_id=...)` is a search over orders, not a lookup of order
    `c-1`: it goes to the world model instead of a made-up `not_found`."""
    by_customer = _tool("get_customer_orders", "List a customer's orders.", {"customer_id": {"type": "string"}},
                        ["customer_id"])
    server = fake_server(responder=Play(environment=lambda body: {"result": {"orders": ["o-1001"]}}))
    async with _llm(server) as llm:
        obs = await ToolSimulator(ORDERS_STATE, llm, seed=1).call(by_customer, {"customer_id": "c-1"})
    assert obs.content == {"orders": ["o-1001"]} and not obs.is_error
    assert server.requests == 1


async def test_a_world_model_that_never_answers_validly_costs_one_observation(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    server = fake_server(responder=lambda body: {"role": "assistant", "content": "I am not JSON"})
    async with _llm(server) as llm:
        obs = await ToolSimulator(ORDERS_STATE, llm, seed=1).call(SEARCH_ORDERS, {"customer": "Ada"})
    assert obs.is_error and obs.content["error"]["type"] == "internal_error"
    assert obs.error is not None and obs.error.startswith("world model failed")
    assert server.requests == 4  # one try and the role's three structured retries


# ---------------------------------------------------------------- 1. episodes: invalid calls never crash


async def test_constrained_episode_answers_invalid_arguments_with_error_observations(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    """The model's action breaks the schema on every attempt (an integer id, an empty item list):
    it is salvaged, and the validator answers each bad call; the episode goes on."""
    agent_script = [
        _calls(_call("get_order", order_id=1001), _call("create_order", customer="Ada", items=[])),
        _calls(_call("get_order", order_id="o-1001")),
        _say("Your order o-1001 is being processed."),
    ]
    play = Play(user=["Where is my order o-1001?"], agent=agent_script)
    server = fake_server(responder=play)
    async with _llm(server) as llm:
        traj = await run_episode(SHOP_AGENT, SHOP_TOOLS, STATUS_TASK, llm, seed=1,
                                 settings=RolloutSettings(tool_mode="constrained", fault_rate=0.0, user="model"))
    assert_canonical(traj.messages, {t.name for t in SHOP_TOOLS})
    assert traj.termination == "user_done"
    results = tool_results(traj)
    assert [name for name, _ in results] == ["get_order", "create_order", "get_order"]
    assert results[0][1]["error"]["message"] == "get_order: order_id: 1001 is not of type 'string'"
    assert results[1][1]["error"]["type"] == "invalid_arguments" and "items" in results[1][1]["error"]["message"]
    assert results[2][1] == ORDERS_STATE["orders"]["o-1001"]
    tool_steps = [s for s in traj.steps if s.actor == "tool"]
    assert [s.executor for s in tool_steps] == ["validator", "validator", "simulated"]
    first_agent_step = next(s for s in traj.steps if s.actor == "agent")
    assert first_agent_step.error is not None and first_agent_step.error.startswith("salvaged invalid action")
    assert traj.messages[-1] == {"role": "assistant", "content": "Your order o-1001 is being processed."}
    call = traj.messages[2]["tool_calls"][0]
    assert call["id"] == "call_0_0_0" and json.loads(call["function"]["arguments"]) == {"order_id": 1001}


async def test_native_episode_handles_broken_json_wrong_types_and_unknown_tools(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    agent_script: list[dict[str, Any]] = [
        {"calls": [("get_order", '{"order_id": "o-1001"'), ("refund_everything", {}),
                   ("cancel_order", {"order_id": ["o-1001"]})]},
        {"content": "Checking.", "calls": [("cancel_order", {"order_id": "o-1001", "reason": "wrong book"})]},
        {"content": "Order o-1001 is cancelled."},
    ]
    server = fake_server(responder=Play(user=["Cancel my order o-1001 please."], agent=agent_script))
    async with _llm(server) as llm:
        traj = await run_episode(SHOP_AGENT, SHOP_TOOLS, CANCEL_TASK, llm, seed=2,
                                 settings=RolloutSettings(tool_mode="native", fault_rate=0.0))
    assert_canonical(traj.messages, {t.name for t in SHOP_TOOLS})
    assert traj.termination == "user_done"
    first = traj.messages[2]
    assert [c["function"]["name"] for c in first["tool_calls"]] == ["get_order", "cancel_order"]
    assert json.loads(first["tool_calls"][0]["function"]["arguments"]) == '{"order_id": "o-1001"'
    results = tool_results(traj)
    assert "not valid JSON" in results[0][1]["error"]["message"]
    assert results[1][1]["error"]["message"] == "cancel_order: order_id: ['o-1001'] is not of type 'string'"
    assert results[2][1]["status"] == "cancelled"
    agent_step = next(s for s in traj.steps if s.actor == "agent")
    assert agent_step.error is not None and "refund_everything" in agent_step.error
    assert traj.final_state["orders"]["o-1001"]["status"] == "cancelled"
    assert traj.messages[5]["content"] == "Checking."
    # The native request offered the toolset as OpenAI function tools.
    assert traj.tools == [t.to_openai() for t in SHOP_TOOLS]


async def test_execute_call_turns_every_bad_call_into_an_observation(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    called: list[dict[str, Any]] = []

    def tracked(amount: float, currency: str) -> dict[str, Any]:
        called.append({"amount": amount, "currency": currency})
        return convert_currency(amount, currency)

    def broken(amount: float, currency: str) -> Any:
        raise RuntimeError("exchange rate service down")

    class Rogue:
        kind = "python"

        async def call(self, spec: ToolSpec, arguments: dict[str, Any], **context: Any) -> Any:
            raise OSError("socket closed")

    server = fake_server(responder=Play())
    specs = {t.name: t for t in SHOP_TOOLS}
    async with _llm(server) as llm:
        sim = ToolSimulator(ORDERS_STATE, llm, seed=1)
        bound = bind_executors(PythonExecutor({"convert_currency": tracked}))

        async def run(call: ParsedCall, executors: Any = None) -> Any:
            return await execute_call(call, specs, sim, executors if executors is not None else bound, turn=0, seed=1)

        unknown = await run(ParsedCall("c1", "drop_tables", {}, "{}"))
        assert unknown.content["error"]["type"] == "unknown_tool" and "get_order" in unknown.content["error"]["message"]
        bad_json = await run(ParsedCall("c2", "get_order", "{order", '"{order"', parse_error="not valid JSON: x"))
        assert bad_json.executor == "validator" and "not valid JSON" in bad_json.content["error"]["message"]
        bad_type = await run(ParsedCall("c3", "convert_currency", {"amount": -5, "currency": "EUR"}, "{}"))
        assert bad_type.executor == "validator" and "minimum" in bad_type.content["error"]["message"]
        bad_enum = await run(ParsedCall("c4", "convert_currency", {"amount": 5, "currency": "BTC"}, "{}"))
        assert bad_enum.executor == "validator"
        assert called == [], "invalid arguments never reach a real tool"
        good = await run(ParsedCall("c5", "convert_currency", {"amount": 10, "currency": "GBP"}, "{}"))
        assert good.executor == "python" and good.content == {"amount": 10, "currency": "GBP", "converted": 2.5}
        failing = await run(ParsedCall("c6", "convert_currency", {"amount": 1, "currency": "EUR"}, "{}"),
                            bind_executors(PythonExecutor({"convert_currency": broken})))
        assert failing.is_error and failing.executor == "python"
        assert "exchange rate service down" in failing.content["error"]["message"]
        rogue = await run(ParsedCall("c7", "convert_currency", {"amount": 1, "currency": "EUR"}, "{}"),
                          {"convert_currency": Rogue()})
        assert rogue.is_error and "socket closed" in rogue.content["error"]["message"]
        simulated_bad = await run(ParsedCall("c8", "get_order", {"order": "o-1001"}, "{}"))
        assert simulated_bad.executor == "validator" and simulated_bad.is_error
    assert server.requests == 0


async def test_a_failing_backend_ends_the_episode_with_every_call_answered(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    """The backend rejects the world model's request mid-batch: the episode ends in `error` and
    the batch's unanswered calls still get a `tool` message each."""
    user = _reply({"message": "Find Ada's orders; one of them is o-1001.", "done": False, "reason": "continue"})
    action = _reply(_calls(_call("search_orders", customer="Ada"), _call("get_order", order_id="o-1001")))
    server = fake_server(script=[Scripted("message", message=user), Scripted("message", message=action),
                                 status(400, body='{"error": "bad request"}')])
    async with _llm(server) as llm:
        traj = await run_episode(SHOP_AGENT, SHOP_TOOLS, STATUS_TASK, llm, seed=3,
                                 settings=RolloutSettings(tool_mode="constrained", fault_rate=0.0, user="model"))
    assert traj.termination == "error"
    assert_canonical(traj.messages, {t.name for t in SHOP_TOOLS})
    assert len([m for m in traj.messages if m["role"] == "tool"]) == 2
    assert traj.steps[-1].error is not None and "BadRequestError" in traj.steps[-1].error


async def test_agent_with_nothing_to_say_gives_up(fake_server: Callable[..., FakeOpenAIServer]) -> None:
    server = fake_server(responder=Play(agent=[{"content": ""}]))
    async with _llm(server) as llm:
        traj = await run_episode(SHOP_AGENT, SHOP_TOOLS, STATUS_TASK, llm, seed=4,
                                 settings=RolloutSettings(tool_mode="native"))
    assert traj.termination == "agent_gave_up"


async def test_user_learns_withheld_details_only_once_the_agent_asks(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    play = Play(user=["Please cancel my order.", "It is o-1001."],
                agent=[_say("Sure. What is your order id?"), _calls(_call("cancel_order", order_id="o-1001")),
                       _say("Done, o-1001 is cancelled.")])
    server = fake_server(responder=play)
    async with _llm(server) as llm:
        traj = await run_episode(SHOP_AGENT, SHOP_TOOLS, CANCEL_TASK, llm, seed=6,
                                 settings=RolloutSettings(tool_mode="constrained", fault_rate=0.0, user="model"))
    first, second = play.user_prompts[:2]
    assert "o-1001" not in first and "order id" in first and "share it only when the assistant asks" in first
    assert "order_id = o-1001" in second and "Ada" in second
    assert traj.termination == "user_done" and traj.n_turns == 2
    assert traj.final_state["orders"]["o-1001"]["status"] == "cancelled"
    assert [s.actor for s in traj.steps] == ["user", "agent", "user", "agent", "tool", "agent", "user"]


# ---------------------------------------------------------------- 4. real tools in the loop


@pytest.mark.parametrize("mode", ["constrained", "native"])
async def test_real_mcp_and_python_tools_run_inside_an_episode_beside_simulated_ones(
    fake_server: Callable[..., FakeOpenAIServer], mode: str,
) -> None:
    binding = McpServerBinding(command=sys.executable, args=[str(MCP_SERVER)],
                               tools=["convert_temperature", "count_words", "always_fails"])
    async with McpExecutor(binding) as mcp:
        assert sorted(mcp.tool_names) == ["always_fails", "convert_temperature", "count_words"]
        tools = [*SHOP_TOOLS, *mcp.specs]
        executors = bind_executors(mcp, PythonExecutor({"convert_currency": convert_currency}))
        steps: list[list[tuple[str, dict[str, Any]]]] = [
            [("convert_temperature", {"celsius": 100}), ("get_order", {"order_id": "o-1002"})],
            [("count_words", {"text": "one two three"}), ("convert_currency", {"amount": 8, "currency": "EUR"}),
             ("always_fails", {"reason": "maintenance"})],
            [("convert_temperature", {"celsius": "hot"})],
        ]
        if mode == "constrained":
            script: list[dict[str, Any]] = [_calls(*(_call(n, **a) for n, a in s)) for s in steps]
            script.append(_say("100 C is 212 F; your lamp order has shipped."))
        else:
            script = [{"calls": s} for s in steps] + [{"content": "100 C is 212 F; your lamp order has shipped."}]
        server = fake_server(responder=Play(user=["Convert 100 C to F, and did o-1002 ship?"], agent=script))
        async with _llm(server) as llm:
            traj = await run_episode(SHOP_AGENT, tools, STATUS_TASK, llm, seed=5, executors=executors,
                                     settings=RolloutSettings(tool_mode=mode, max_steps_per_turn=5, fault_rate=0.0))
    assert_canonical(traj.messages, {t.name for t in tools})
    assert traj.termination == "user_done"
    assert tool_results(traj) == [
        ("convert_temperature", {"celsius": 100.0, "fahrenheit": 212.0}),  # computed by the real server
        ("get_order", ORDERS_STATE["orders"]["o-1002"]),
        ("count_words", {"result": "3 words"}),
        ("convert_currency", {"amount": 8, "currency": "EUR", "converted": 4.0}),
        ("always_fails", {"error": {"type": "tool_error",
                                    "message": "Error executing tool always_fails: backend unavailable: maintenance"}}),
        ("convert_temperature", {"error": {"type": "invalid_arguments", "path": "celsius",
                                           "message": "convert_temperature: celsius: 'hot' is not of type 'number'"}}),
    ]
    tool_steps = [(s.tool, s.executor) for s in traj.steps if s.actor == "tool"]
    assert tool_steps == [("convert_temperature", "mcp"), ("get_order", "simulated"), ("count_words", "mcp"),
                          ("convert_currency", "python"), ("always_fails", "mcp"),
                          ("convert_temperature", "validator")]
    failed = next(s for s in traj.steps if s.tool == "always_fails")
    assert failed.error is not None and "backend unavailable" in failed.error
    assert traj.state_log == [], "real tools do not write the simulated world"


# ---------------------------------------------------------------- 5. resume inside an episode


@pytest.mark.parametrize("mode", ["constrained", "native"])
async def test_rerun_replays_the_episode_from_the_cache_at_no_model_cost(
    fake_server: Callable[..., FakeOpenAIServer], tmp_path: Path, mode: str,
) -> None:
    script: list[dict[str, Any]]
    if mode == "constrained":
        script = [_calls(_call("search_orders", customer="Ada")), _say("You have two orders."),
                  _calls(_call("cancel_order", order_id="o-1001")), _say("Cancelled.")]
    else:
        script = [{"calls": [("search_orders", {"customer": "Ada"})]}, {"content": "You have two orders."},
                  {"calls": [("cancel_order", {"order_id": "o-1001"})]}, {"content": "Cancelled."}]
    server = fake_server(responder=Play(user=["What are my orders?", "Cancel o-1001."], agent=script))
    settings = RolloutSettings(tool_mode=mode, fault_rate=0.3)
    async with _llm(server, tmp_path) as llm:
        first = await run_episode(SHOP_AGENT, SHOP_TOOLS, CANCEL_TASK, llm, seed=9, settings=settings)
    sent = server.requests
    assert sent > 0
    async with _llm(server, tmp_path) as llm:
        second = await run_episode(SHOP_AGENT, SHOP_TOOLS, CANCEL_TASK, llm, seed=9, settings=settings)
        assert all(r.cache_hit for r in llm.usage.records)
    assert server.requests == sent, "a re-run sends no request"
    assert timeless(second) == timeless(first) and second.id == first.id
    assert first.n_tool_calls >= 2 and first.termination == "user_done"


async def test_a_killed_episode_resumes_from_the_cache_where_it_stopped(
    fake_server: Callable[..., FakeOpenAIServer], tmp_path: Path,
) -> None:
    """Kill an episode halfway, run it again: the finished part comes from the cache, only the
    rest is sent, and the result is the episode an uninterrupted run gives."""
    play = Play(user=["Help me with my orders.", "And the other one?", "Anything else?"], agent=None)
    answered = 0
    halfway = threading.Event()
    cancelled = threading.Event()
    kill_after: int | None = None

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal answered
        answered += 1
        if answered == kill_after:
            halfway.set()
        elif kill_after is not None and answered == kill_after + 1:
            # The killed episode's next request waits for the kill: on a loaded machine the episode
            # had finished before the cancel reached it (done_before == total, a flaky failure).
            cancelled.wait(30)
        return play(body)

    server = fake_server(responder=responder)
    settings = RolloutSettings(tool_mode="constrained", max_turns=3, max_steps_per_turn=3, fault_rate=0.2)

    async def episode(cache: Path) -> Trajectory:
        async with _llm(server, cache) as llm:
            return await run_episode(SHOP_AGENT, SHOP_TOOLS, CANCEL_TASK, llm, seed=23, settings=settings)

    def entries(cache: Path) -> int:
        return len(list(cache.rglob("*.json")))

    whole = await episode(tmp_path / "whole")
    total = server.requests
    assert total >= 6 and entries(tmp_path / "whole" / "cache") == total

    answered, kill_after = 0, total // 2
    killed = asyncio.create_task(episode(tmp_path / "killed"))
    try:
        assert await asyncio.to_thread(halfway.wait, 30)
        killed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killed
    finally:
        cancelled.set()
    done_before = entries(tmp_path / "killed" / "cache")
    assert 0 < done_before < total, (done_before, total)

    sent_before = server.requests
    resumed = await episode(tmp_path / "killed")
    assert server.requests - sent_before == total - done_before, "finished requests are not sent again"
    assert timeless(resumed) == timeless(whole)


# ---------------------------------------------------------------- 1. integration: 20 real episodes


class InjectingClient(LLMClient):
    """The real backend, except the first agent step of the episode: it calls `get_order` (or
    `get_ticket`) with arguments that break the schema, as a weak model might."""

    def __init__(self, *args: Any, bad_call: tuple[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bad_call = bad_call

    async def chat(self, role: Any, messages: list[dict[str, Any]], **kwargs: Any) -> ChatResult:
        if str(role) != "agent" or len(messages) != 2:
            return await super().chat(role, messages, **kwargs)
        name, arguments = self.bad_call
        if kwargs.get("response_format"):
            content: str | None = json.dumps({"action": "call", "calls": [{"tool": name,
                                                                         "arguments": json.loads(arguments)}]})
            calls: list[dict[str, Any]] = []
        else:
            content, calls = None, [{"id": "x", "type": "function", "function": {"name": name,
                                                                               "arguments": arguments}}]
        return ChatResult(content=content, tool_calls=calls, finish_reason="stop", prompt_tokens=0,
                          completion_tokens=0, latency_s=0.0, retries=0, cache_hit=False, raw={})


@pytest.mark.integration
async def test_episodes_on_the_embedded_backend_are_stored_canonical(
    backend_url: str, tmp_path: Path,
) -> None:
    config = make_config(backend_url, tmp_path)
    bad_calls = {"retail": ("get_order", '{"order_id": 1001}'), "customer_support": ("get_ticket", '{"ticket": "t-7"}')}
    plan = [(agent, tools, task, mode, seed)
            for seed in (0,) for mode in ("constrained", "native") for agent, tools, task in EPISODES]
    assert len(plan) == 2 * len(EPISODES)
    settings = {mode: RolloutSettings(tool_mode=mode, max_turns=2, max_steps_per_turn=2, max_calls_per_step=2,
                                      fault_rate=0.2, user_max_tokens=96, agent_max_tokens=192,
                                      environment_max_tokens=256)
                for mode in ("constrained", "native")}
    gate = asyncio.Semaphore(4)
    injected: set[int] = set()

    async def one(index: int, agent: Agent, tools: list[ToolSpec], task: Task, mode: str, seed: int) -> Trajectory:
        async with gate:
            inject = index % 4 == 0
            client: LLMClient = (InjectingClient(config, bad_call=bad_calls[agent.domain]) if inject
                                 else LLMClient(config))
            if inject:
                injected.add(index)
            executors = bind_executors(PythonExecutor({"convert_currency": convert_currency}))
            async with client:
                return await run_episode(agent, tools, task, client, seed=seed, settings=settings[mode],
                                         executors=executors if agent is SHOP_AGENT else None)

    trajectories = await asyncio.gather(*(one(i, *p) for i, p in enumerate(plan)))
    assert len(trajectories) == len(plan) and len(injected) == (len(plan) + 3) // 4

    dataset = Dataset(tmp_path / "synth.duckdb")
    dataset.add_many("trajectories", (t.to_row("run_test") for t in trajectories))
    assert dataset.flush() == {"trajectories": len(plan)}
    with connect_readonly(tmp_path / "synth.duckdb") as con:
        rows = con.execute("SELECT id, messages, tools, steps, termination, n_tool_calls FROM trajectories").fetchall()
    assert len(rows) == len(plan)
    stored = {row[0]: row for row in rows}
    terminations: Counter[str] = Counter()
    for index, traj in enumerate(trajectories):
        _, messages_json, tools_json, steps_json, termination, n_tool_calls = stored[traj.id]
        messages, tools, steps = json.loads(messages_json), json.loads(tools_json), json.loads(steps_json)
        names = {t["function"]["name"] for t in tools}
        assert names == {t.name for t in plan[index][1]}
        assert_canonical(messages, names)
        assert messages == traj.messages and termination == traj.termination
        assert n_tool_calls == traj.n_tool_calls
        terminations[termination] += 1
        if index in injected:
            # The injected bad call is the first call of the episode, answered by the validator.
            first_tool = next(m for m in messages if m["role"] == "tool")
            assert json.loads(first_tool["content"])["error"]["type"] == "invalid_arguments", first_tool
            assert next(s for s in steps if s["actor"] == "tool")["executor"] == "validator"
            assert any(m["role"] == "assistant" for m in messages[messages.index(first_tool):]), \
                "the episode goes on after the error observation"
    assert sum(t.n_tool_calls for t in trajectories) >= len(injected)
    print("terminations:", dict(terminations))


async def test_the_constrained_agent_sees_its_own_actions_as_it_generated_them(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    """The server's cache holds the tokens the agent generated; showing the action back re-rendered
    (other whitespace) made it recompute them and the rest of the turn at every step. Each later
    agent request carries the earlier actions byte for byte, except one that code changed (salvaged)."""
    script = [_calls(_call("get_order", order_id="o-1001")), _say("Your order o-1001 is being processed.")]
    play = Play(user=["Where is my order o-1001?"], agent=script)
    agent_bodies: list[dict[str, Any]] = []

    def pretty(body: dict[str, Any]) -> dict[str, Any]:
        message = play(body)
        if _role(body) == "agent":
            agent_bodies.append(body)
            message = {**message, "content": json.dumps(json.loads(message["content"]), indent=2)}
        return message

    server = fake_server(responder=pretty)
    async with _llm(server) as llm:
        traj = await run_episode(SHOP_AGENT, SHOP_TOOLS, STATUS_TASK, llm, seed=1,
                                 settings=RolloutSettings(tool_mode="constrained", fault_rate=0.0, user="model"))
    assert traj.termination == "user_done" and len(agent_bodies) == 2
    shown = [m["content"] for m in agent_bodies[1]["messages"] if m["role"] == "assistant"]
    assert shown == [json.dumps(script[0], indent=2)]
    assert traj.messages[2]["tool_calls"][0]["function"]["name"] == "get_order"  # stored canonical all the same


@pytest.mark.parametrize("stated", [True, False], ids=["side_effect_write", "side_effect_unstated"])
async def test_a_write_to_confirm_is_out_of_the_grammar_until_the_user_agrees(
    fake_server: Callable[..., FakeOpenAIServer], stated: bool,
) -> None:
    """An agent told to confirm before calling cancel_order cannot generate that call before the
    user has said yes to its question: the constrained action grammar leaves the tool out (the
    prompt still lists it), and puts it back once the user agrees. A CI main job accepted a write
    called at once by an agent told to confirm it first. A tool imported without `side_effect` is
    held back by its name's verb, as `confirms_writes` judges it."""
    tools = SHOP_TOOLS if stated else [
        ToolSpec.model_validate(t.model_dump(by_alias=True, exclude={"side_effect"})) if t.name == "cancel_order"
        else t for t in SHOP_TOOLS]
    assert stated or "side_effect" not in next(t for t in tools if t.name == "cancel_order").model_fields_set
    agent = _agent("careful-shop", "retail", tools,
                   "You are the order desk assistant of an online shop. Confirm the details with the user "
                   "before calling cancel_order.")
    task = CANCEL_TASK.model_copy(update={"agent_id": agent.id, "withheld": {}})
    play = Play(user=["Please cancel my order o-1001.", "Yes, please go ahead."],
                agent=[_say("Shall I cancel order o-1001?"), _calls(_call("cancel_order", order_id="o-1001")),
                       _say("Order o-1001 is cancelled.")])
    offered: list[bool] = []

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        if _role(body) == "agent":
            offered.append('"const": "cancel_order"' in json.dumps(_schema(body)))
        return play(body)

    server = fake_server(responder=responder)
    async with _llm(server) as llm:
        traj = await run_episode(agent, tools, task, llm, seed=1,
                                 settings=RolloutSettings(tool_mode="constrained", fault_rate=0.0, user="model"))
    assert offered[:3] == [False, True, False]  # before the yes; after it; after the write succeeded
    assert tool_results(traj)[0][1]["status"] == "cancelled"


def test_id_arguments_take_only_ids_the_user_or_a_tool_gave() -> None:
    """The grammar's side of `no_fabrication`'s invented ids: an id argument is held to the ids
    given so far (a token with a digit in user or tool text, or a tool result's id-named value;
    never the system's or the agent's own), an optional one with none left is dropped, and a tool
    that needs one nobody gave is out of the action grammar. Six of a local main job's eight
    `no_fabrication` failures were the first call's made-up id (`cancellation_id='1234567890'`)."""
    from synth.judges.messages import given_ids
    from synth.rollout.agent import action_schema, offer_given_ids

    messages = [
        {"role": "system", "content": "Ids look like o-9999."},
        {"role": "user", "content": "Where is my order o-1001? I live at 12 Elm St."},
        {"role": "assistant", "content": "Is it o-5555?"},
        {"role": "tool", "tool_call_id": "c", "content": json.dumps(
            {"order_id": "ord-3605", "customer_id": "alice", "lines": [{"id": 7}], "shipped": True})},
    ]
    assert given_ids(messages) == ["o-1001", "12", "ord-3605", "7", "alice"]
    quantities = {"role": "user", "content": "It was 387.98 degrees on 2025-05-18 at 14:30, ticket t-9."}
    assert given_ids([quantities]) == ["t-9"]  # a decimal, a date and a time are no ids
    schema = {"type": "object", "properties": {
        "order_id": {"type": "string", "pattern": "^o"}, "note": {"type": "string"},
        "line_id": {"type": "integer"}, "store_id": {"type": "string", "minLength": 9},
        "status": {"type": "string", "enum": ["open"]}}, "required": ["order_id"]}
    narrowed = offer_given_ids(schema, given_ids(messages))
    assert narrowed is not None
    assert narrowed["properties"]["order_id"] == {"enum": ["o-1001", "ord-3605"]}  # what its pattern admits
    assert narrowed["properties"]["line_id"] == {"enum": [12, 7]}
    assert "store_id" not in narrowed["properties"]  # optional, and no given id is long enough
    assert narrowed["properties"]["note"] == {"type": "string"} and narrowed["required"] == ["order_id"]
    assert offer_given_ids(schema, []) is None  # the order id is required and nobody gave one
    for broken in ({"type": "string", "pattern": "(["}, {"type": "string", "minLength": "x"}):  # never raises
        assert offer_given_ids({"properties": {"order_id": broken}}, ["o-1"]) == {
            "properties": {"order_id": {"enum": ["o-1"]}}}
    schema_of = {t.name: t for t in SHOP_TOOLS}
    offered = json.dumps(action_schema([schema_of["get_order"], schema_of["search_orders"]], given_ids=[]))
    assert '"const": "search_orders"' in offered and '"const": "get_order"' not in offered


def test_paging_cursors_take_only_cursors_a_tool_returned() -> None:
    """The grammar's side of `no_fabrication`'s paging cursors: the agents of four CI main jobs
    paged with "Ben Berg", "USER_ADDRESS" or the tool's own name. Before any tool returned a
    cursor, an optional one is not in the grammar; after, it takes only those returned."""
    from synth.judges.messages import given_cursors, is_cursor_name
    from synth.rollout.agent import offer_given_ids

    assert all(map(is_cursor_name, ["cursor", "next_cursor", "pageToken", "next_page_token", "continuation_token"]))
    assert not any(map(is_cursor_name, ["token", "page", "api_token", "order_id"]))
    listing = {"role": "tool", "tool_call_id": "c", "content": json.dumps(
        {"orders": [{"order_id": "ord-1"}], "next_cursor": "pg-2", "pageToken": None})}
    assert given_cursors([{"role": "user", "content": "cursor: Ben Berg"}, listing]) == {"pg-2"}
    schema = {"type": "object", "properties": {"customer_id": {"type": "string"}, "cursor": {"type": "string"}},
              "required": ["customer_id"]}
    before = offer_given_ids(schema, ["alice"], [])
    assert before is not None and set(before["properties"]) == {"customer_id"}
    after = offer_given_ids(schema, ["alice"], ["pg-2"])
    assert after is not None and after["properties"]["cursor"] == {"enum": ["pg-2"]}


async def test_the_agent_cannot_call_with_an_id_before_the_user_gives_it(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    """Asked about "my order" with its id withheld, the constrained agent cannot call get_order
    until the user has said which: the first grammar has no get_order, the one after the user's
    answer offers it with that id only."""
    task = STATUS_TASK.model_copy(update={
        "goal": "Find out whether my lamp order has shipped.", "withheld": {"order_id": "o-1002"}})
    play = Play(user=["Has my lamp order shipped?", "It is o-1002."],
                agent=[_say("Which order number is it?"), _calls(_call("get_order", order_id="o-1002")),
                       _say("Order o-1002 has shipped.")])
    schemas: list[str] = []

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        if _role(body) == "agent":
            schemas.append(json.dumps(_schema(body)))
        return play(body)

    server = fake_server(responder=responder)
    async with _llm(server) as llm:
        traj = await run_episode(SHOP_AGENT, SHOP_TOOLS, task, llm, seed=1,
                                 settings=RolloutSettings(tool_mode="constrained", fault_rate=0.0, user="model"))
    assert '"const": "get_order"' not in schemas[0]
    assert '"const": "get_order"' in schemas[1] and '"enum": ["o-1002"]' in schemas[1]
    assert tool_results(traj)[0][1]["status"] == "shipped"
