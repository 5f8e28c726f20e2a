"""Issue 12: one world that does not contradict itself, one set of naming rules, users who talk
like users, and error_recovery tasks that meet an error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from synth.agents.plans import plan_task
from synth.agents.validate import entity_reference
from synth.llm.fake_server import FakeOpenAIServer
from synth.models import ExpectedCall, Persona, Rubric, Task
from synth.naming import collection_name, id_key, name_words, plural, singular, tool_intent
from synth.rollout import ParsedCall, PythonExecutor, RolloutSettings, ToolSimulator, execute_call, run_episode
from synth.rollout.crud import absorb_entities, check_state_update, plan_deterministic
from synth.rollout.user import scripted_turn, user_turn_problem
from synth.tools.synthesize import entity_slug
from tests.test_rollout import (
    GET_ORDER,
    ORDERS_STATE,
    SEARCH_ORDERS,
    SHOP_AGENT,
    SHOP_TOOLS,
    Play,
    _call,
    _calls,
    _llm,
    _say,
    _tool,
)

# ---------------------------------------------------------------- one naming module

NAMING = [  # name, writes, expected intent, expected resource
    ("createIssue", True, "create", ["issue"]),
    ("issue-create", True, "create", ["issue"]),
    ("issues_create", True, "create", ["issues"]),
    ("CreateSupportTicket", True, "create", ["support", "ticket"]),
    ("get_order", False, "get", ["order"]),
    ("orderGet", False, "get", ["order"]),
    ("update-user-address", True, "update", ["user", "address"]),
    ("order_cancel", True, "close", ["order"]),
    ("deleteFile", True, "delete", ["file"]),
    ("list_orders", False, None, ["orders"]),
    ("make_forecast", False, None, ["forecast"]),
]
NOUNS = [  # singular, plural
    ("status", "statuses"), ("tie", "ties"), ("address", "addresses"), ("policy", "policies"),
    ("order", "orders"), ("box", "boxes"), ("analysis", "analyses"), ("person", "people"), ("day", "days"),
    ("batch", "batches"), ("category", "categories"), ("bus", "buses"), ("news", "news"),
    ("kubernetes", "kubernetes"), ("mathematics", "mathematics"), ("metric", "metrics"),  # no `kubernete`
]


@pytest.mark.parametrize(("name", "writes", "kind", "resource"), NAMING)
def test_tool_intent_reads_every_naming_style(name: str, writes: bool, kind: str | None, resource: list[str]) -> None:
    assert tool_intent(name, writes) == (kind, resource)


@pytest.mark.parametrize(("one", "many"), NOUNS)
def test_singular_and_plural_round_trip(one: str, many: str) -> None:
    assert singular(many) == one and plural(one) == many
    assert singular(one) == one and plural(many) == many
    assert singular(plural(one)) == one


def test_every_stage_uses_the_same_names() -> None:
    """Tool synthesis, planning, validation and the simulator agree on `status`, `ties`, `addresses`."""
    assert entity_slug("status", "x") == "status" and entity_slug("ties", "x") == "tie"
    assert entity_slug("addresses", "x") == "address"
    assert collection_name(["status"]) == "statuses" and collection_name(["ties"]) == "ties"
    assert id_key(["addresses"]) == "address_id"
    assert name_words("getHTTPStatus") == ["get", "http", "status"]
    get_status = _tool("get_status", "Read a status.", {"status_id": {"type": "string"}}, ["status_id"])
    assert entity_reference("statusId", get_status) == ["status"]
    plan = plan_task([get_status], "tool", "single_call", __import__("random").Random(1))
    assert plan is not None and "statuses" in plan.initial_state
    status_id = plan.calls[0].arguments["status_id"]
    assert plan_deterministic(get_status, {"status_id": status_id}, plan.initial_state,
                              __import__("random").Random(0)).decided


@pytest.mark.parametrize("name", ["createIssue", "issue-create", "issues_create"])
async def test_any_naming_style_reaches_the_deterministic_path(name: str) -> None:
    create = _tool(name, "Open an issue.", {"title": {"type": "string"}}, ["title"], side_effect="write")
    sim = ToolSimulator({}, llm=None, seed=1)  # type: ignore[arg-type]  # never asks the model
    obs = await sim.call(create, {"title": "Crash on start"})
    assert obs.executor == "simulated" and not obs.is_error
    (issue_id, issue), = sim.state["issues"].items()
    assert issue == {"issue_id": issue_id, "title": "Crash on start"}


# ---------------------------------------------------------------- one world


async def test_a_search_result_is_what_a_later_read_finds(fake_server: Callable[..., FakeOpenAIServer]) -> None:
    """The world model's search lists o-999; `get_order(o-999)` then returns that entity, and an
    entity the state already held keeps its stored fields in the search result."""
    found = {"orders": [
        {"order_id": "o-999", "customer": "Ada Lovelace", "items": [{"sku": "PEN-1", "quantity": 3}],
         "status": "delivered"},
        {"order_id": "o-1002", "customer": "Ada Lovelace", "items": [], "status": "lost"},
    ]}
    server = fake_server(responder=Play(environment=lambda body: {"result": found}))
    async with _llm(server) as llm:
        sim = ToolSimulator(ORDERS_STATE, llm, seed=1)
        search = await sim.call(SEARCH_ORDERS, {"customer": "Ada Lovelace"}, call_id="c1")
        read = await sim.call(GET_ORDER, {"order_id": "o-999"}, call_id="c2")
    assert not read.is_error and read.executor == "simulated"
    assert read.content == found["orders"][0]
    assert search.content["orders"][1]["status"] == "shipped"  # the stored o-1002, not the model's "lost"
    assert sim.state_log[0]["tool"] == "search_orders" and list(sim.state_log[0]["state_update"]["orders"]) == ["o-999"]


async def test_a_listing_holds_only_records_that_match_its_filters(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    """One world: `search_orders(customer="Ada")` lists Ada's orders, never Grace's, even when the
    world model writes hers in; an id filter needs the very id, a name filter finds the names that
    contain it, and paging arguments filter nothing. A CI main job accepted
    `list_orders(customer_id="cus-10996")` answered with an order of customer "123456789"."""
    from synth.rollout.crud import match_filters

    found = {"orders": [
        {"order_id": "o-999", "customer": "Ada Lovelace", "items": [{"sku": "PEN-1", "quantity": 3}],
         "status": "delivered"},
        {"order_id": "o-998", "customer": "Grace Hopper", "items": [{"sku": "PEN-1", "quantity": 1}],
         "status": "delivered"},
    ]}
    server = fake_server(responder=Play(environment=lambda body: {"result": found}))
    async with _llm(server) as llm:
        sim = ToolSimulator(ORDERS_STATE, llm, seed=1)
        search = await sim.call(SEARCH_ORDERS, {"customer": "Ada"}, call_id="c1")
    assert [o["order_id"] for o in search.content["orders"]] == ["o-999"]
    assert "o-998" not in sim.state["orders"]  # what was filtered out never entered the world
    listing = {"items": [{"order_id": "1", "customer_id": "123456789"}, {"order_id": "2", "customer_id": "cus-10996"}]}
    kept = match_filters(listing, {"customer_id": "cus-10996", "limit": 20, "order": "desc"})
    assert kept == {"items": [{"order_id": "2", "customer_id": "cus-10996"}]}
    assert match_filters(listing, {"customer_id": "cus-1"})["items"] == []  # an id is not a word to contain
    assert match_filters([{"status": "open"}], {"limit": 1}) == [{"status": "open"}]


async def test_a_state_update_outside_its_collection_is_refused(fake_server: Callable[..., FakeOpenAIServer]) -> None:
    ship = _tool("ship_order", "Ship an order.", {"order_id": {"type": "string"}}, ["order_id"], side_effect="write")
    rogue = {"result": {"ok": True}, "state_update": {"customers": {"c-1": {"name": "Eve"}}, "orders": {}}}
    server = fake_server(responder=Play(environment=lambda body: rogue))
    async with _llm(server) as llm:
        sim = ToolSimulator(ORDERS_STATE, llm, seed=1)
        await sim.call(ship, {"order_id": "o-1001"}, call_id="s1")
    assert "customers" not in sim.state and sim.state["orders"] == ORDERS_STATE["orders"]
    assert "a call of this tool may change only orders" in sim.state_log[-1]["refused"]
    assert check_state_update({"orders": {"o-1": {"status": "shipped"}}}, "orders") is None
    assert check_state_update({"orders": ["o-1"]}, "orders") is not None
    assert check_state_update({"orders": {"o-1": "gone"}}, "orders") is not None


def test_reads_defer_to_the_world_and_real_results_patch_it() -> None:
    stored = {"order_id": "o-1", "status": "open", "customer": "Ada"}
    state = {"orders": {"o-1": stored}}
    result, update = absorb_entities({"order_id": "o-1", "status": "closed"}, ["order"], state)
    assert result == {"order_id": "o-1", "status": "open"} and update == {}
    result, update = absorb_entities({"order_id": "o-1", "status": "closed"}, ["order"], state, authoritative=True)
    assert update == {"orders": {"o-1": {"order_id": "o-1", "status": "closed"}}}


def test_a_simulated_listing_names_each_record_once() -> None:
    """A CI main job's world model listed `cancellation_id "1234567890"` twice: one world has one
    record per id, so the second is dropped (a real tool's listing is left as it came)."""
    listing = {"items": [{"cancellation_id": "123", "reason": "late"}, {"cancellation_id": "123", "reason": "x"},
                         {"cancellation_id": "124", "reason": "early"}]}
    result, update = absorb_entities(listing, ["cancellation"], {})
    assert [i["cancellation_id"] for i in result["items"]] == ["123", "124"]
    assert update["cancellations"]["123"]["reason"] == "late"
    real, _ = absorb_entities(listing, ["cancellation"], {}, authoritative=True)
    assert len(real["items"]) == 3
    bare, _ = absorb_entities({"items": [{"order_id": "ord-3605"}, {"order_id": "ord-3605"}]}, ["order"], {})
    assert bare == {"items": [{"order_id": "ord-3605"}]}


async def test_a_real_tool_write_is_seen_by_later_simulated_reads(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    def cancel_order(order_id: str, reason: str = "") -> dict[str, Any]:
        return {"order_id": order_id, "status": "cancelled", "customer": "Ada Lovelace"}

    server = fake_server(responder=Play())
    async with _llm(server) as llm:
        sim = ToolSimulator(ORDERS_STATE, llm, seed=1)
        specs = {t.name: t for t in SHOP_TOOLS}
        real = {"cancel_order": PythonExecutor({"cancel_order": cancel_order})}
        done = await execute_call(ParsedCall("c1", "cancel_order", {"order_id": "o-1001"}, "{}"), specs, sim,
                                  real, turn=0, seed=1)
        read = await execute_call(ParsedCall("c2", "get_order", {"order_id": "o-1001"}, "{}"), specs, sim,
                                  {}, turn=0, seed=2)
    assert done.executor == "python" and read.executor == "simulated"
    assert read.content["status"] == "cancelled"
    assert server.requests == 0


# ---------------------------------------------------------------- users who talk like users

ROLE_CONFUSED = "Hello, I'm an AI assistant and I'm ready to help you"


@pytest.mark.parametrize(("message", "problem"), [
    ("", "empty"),
    ("12:39 am", "not a sentence"),
    (ROLE_CONFUSED, "role-confused"),
    ("Your next message to the assistant should be in a sentence", "echoes the prompt"),
    ("Please cancel my order o-1001.", "repeats"),
    ("Can you check whether my lamp order shipped?", None),
])
def test_bad_user_turns_are_rejected(message: str, problem: str | None) -> None:
    found = user_turn_problem(message, ["Please cancel my order o-1001."])
    assert (found is None) if problem is None else (found is not None and found.startswith(problem))


WITHHELD_TASK = Task(
    agent_id=SHOP_AGENT.id, domain="retail", goal="Please cancel my order, I ordered the wrong book.",
    persona=Persona(name="Ada", patience="low"), withheld={"order_id": "o-1001"},
    initial_state=ORDERS_STATE, difficulty="single_call",
    rubric=Rubric(success_criteria=["The assistant cancels order o-1001"],
                  expected_calls=[ExpectedCall(tool="cancel_order", arguments={"order_id": "o-1001"})],
                  expected_state={"orders": {"o-1001": {"status": "cancelled"}}}),
)


def test_the_scripted_user_states_answers_confirms_and_ends_on_the_world() -> None:
    system = {"role": "system", "content": "You are a shop assistant."}
    opening = scripted_turn(WITHHELD_TASK, [system], ORDERS_STATE)
    assert opening.message == WITHHELD_TASK.goal and "o-1001" not in opening.message and not opening.done
    talk = [system, {"role": "user", "content": opening.message},
            {"role": "assistant", "content": "Sure. What is your order id?"}]
    answer = scripted_turn(WITHHELD_TASK, talk, ORDERS_STATE)
    assert answer.message == "Sure, my order id is o-1001." and not answer.done
    named = scripted_turn(WITHHELD_TASK, [*talk[:-1], {"role": "assistant", "content": "Your order will be checked."}],
                          ORDERS_STATE)
    assert named.message == "In case you need it, my order id is o-1001."  # not "Sure," to no question
    talk += [{"role": "user", "content": answer.message},
             {"role": "assistant", "content": "Shall I cancel order o-1001 now?"}]
    confirm = scripted_turn(WITHHELD_TASK, talk, ORDERS_STATE)
    assert confirm.message.startswith("Yes") and not confirm.done
    asked_plainly = [*talk[:-1], {"role": "assistant", "content": "Please confirm if you'd like me to proceed."}]
    assert scripted_turn(WITHHELD_TASK, asked_plainly, ORDERS_STATE).message.startswith("Yes")  # no "?" needed
    call = {"id": "c1", "type": "function", "function": {"name": "cancel_order",
                                                         "arguments": json.dumps({"order_id": "o-1001"})}}
    cancelled = {"orders": {**ORDERS_STATE["orders"],
                            "o-1001": {**ORDERS_STATE["orders"]["o-1001"], "status": "cancelled"}}}
    talk += [{"role": "user", "content": confirm.message}, {"role": "assistant", "content": None, "tool_calls": [call]},
             {"role": "tool", "tool_call_id": "c1", "content": json.dumps(cancelled["orders"]["o-1001"])},
             {"role": "assistant", "content": "Order o-1001 is cancelled."}]
    assert not scripted_turn(WITHHELD_TASK, talk, ORDERS_STATE).done  # the world says not yet
    end = scripted_turn(WITHHELD_TASK, talk, cancelled)
    assert end.done and end.reason == "satisfied"


def test_the_scripted_user_gives_up_after_its_patience() -> None:
    talk = [{"role": "system", "content": "x"}, {"role": "user", "content": WITHHELD_TASK.goal},
            {"role": "assistant", "content": "I can help with orders."}]
    nudge = scripted_turn(WITHHELD_TASK, talk, ORDERS_STATE)
    assert not nudge.done and nudge.message != WITHHELD_TASK.goal
    talk += [{"role": "user", "content": nudge.message}, {"role": "assistant", "content": "I can help with orders."}]
    end = scripted_turn(WITHHELD_TASK, talk, ORDERS_STATE)
    assert end.done and end.reason == "stuck"


@pytest.mark.parametrize("patience", ["low", "medium", "high"])
def test_a_stalled_user_never_says_the_same_thing_twice(patience: str) -> None:
    """However patient, the user answers an agent that keeps asking vague questions with a new line
    each time, then gives up: a repeated user turn is a defect of the example."""
    task = WITHHELD_TASK.model_copy(update={"persona": Persona(name="Ada", patience=patience)})
    talk = [{"role": "system", "content": "x"}, {"role": "user", "content": task.goal}]
    for _ in range(6):
        talk.append({"role": "assistant", "content": "Anything else I should know?"})
        turn = scripted_turn(task, talk, ORDERS_STATE)
        if turn.done:
            break
        talk.append({"role": "user", "content": turn.message})
    assert turn.done and turn.reason == "stuck"
    users = [m["content"] for m in talk if m["role"] == "user"]
    assert len(users) == len(set(users))


async def test_an_episode_with_the_scripted_user_ends_when_the_goal_is_done(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    play = Play(agent=[_say("Sure. What is your order id?"), _calls(_call("cancel_order", order_id="o-1001")),
                       _say("Done, o-1001 is cancelled.")])
    server = fake_server(responder=play)
    async with _llm(server) as llm:
        traj = await run_episode(SHOP_AGENT, SHOP_TOOLS, WITHHELD_TASK, llm, seed=6,
                                 settings=RolloutSettings(tool_mode="constrained", fault_rate=0.0,
                                                          user_rephrase=False))
    users = [m["content"] for m in traj.messages if m["role"] == "user"]
    assert users == [WITHHELD_TASK.goal, "Sure, my order id is o-1001."]
    assert traj.termination == "user_done" and traj.final_state["orders"]["o-1001"]["status"] == "cancelled"
    assert play.seen["user"] == 0


# ---------------------------------------------------------------- error_recovery tasks meet an error


async def test_error_recovery_tasks_get_a_fault_on_a_planned_call(
    fake_server: Callable[..., FakeOpenAIServer],
) -> None:
    task = WITHHELD_TASK.model_copy(update={"difficulty": "error_recovery", "withheld": {},
                                            "goal": "Please cancel my order o-1001."})
    play = Play(agent=[_calls(_call("cancel_order", order_id="o-1001")),
                       _calls(_call("cancel_order", order_id="o-1001")), _say("Order o-1001 is cancelled.")])
    server = fake_server(responder=play)
    async with _llm(server) as llm:
        traj = await run_episode(SHOP_AGENT, SHOP_TOOLS, task, llm, seed=2,
                                 settings=RolloutSettings(tool_mode="constrained", fault_rate=0.0,
                                                          user_rephrase=False))
    faults = [s for s in traj.steps if s.actor == "tool" and s.fault]
    assert [(s.tool, s.fault in ("timeout", "rate_limited")) for s in faults] == [("cancel_order", True)]
    assert traj.termination == "user_done" and traj.final_state["orders"]["o-1001"]["status"] == "cancelled"


# ---------------------------------------------------------------- an agent that only repeats itself is sampled again


def test_degenerate_agent_steps_are_named() -> None:
    from synth.rollout.agent import AgentStep
    from synth.rollout.episode import degenerate_step

    call = ParsedCall("c2", "get_order", {"order_id": "o-1"}, json.dumps({"order_id": "o-1"}))
    earlier_call = {"id": "c1", "type": "function", "function": {"name": "get_order",
                                                                 "arguments": json.dumps({"order_id": "o-1"})}}
    talk = [{"role": "user", "content": "Where is o-1?"}, {"role": "assistant", "content": "Let me look.",
                                                              "tool_calls": [earlier_call]},
            {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"order_id": "o-1", "status": "open"})}]
    again = AgentStep(message={}, calls=[call], reply=None)
    assert degenerate_step(again, talk) == "repeats its last calls, which succeeded"
    failed = [*talk[:2], {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"error": {"type": "timeout"}})}]
    assert degenerate_step(again, failed) is None  # a retry after an error is recovery
    said = [*talk, {"role": "assistant", "content": "Order o-1 is open."}, {"role": "user", "content": "And?"}]
    assert degenerate_step(AgentStep(message={}, calls=[], reply="Order o-1 is open."), said) is not None
    assert degenerate_step(AgentStep(message={}, calls=[], reply="It ships on Monday."), said) is None
    twice = AgentStep(message={}, calls=[call, ParsedCall("c3", call.name, call.arguments, call.arguments_json)],
                      reply=None)
    assert degenerate_step(twice, talk[:1]) == "makes the same call twice in one batch"


@pytest.mark.parametrize(("rewording", "kept"), [
    ("Hi! Could you cancel order o-1001 for me? I ordered the wrong book.", True),
    ("Hi! Could you cancel my order? I ordered the wrong book.", False),  # loses the stated id
    ("I'm here to help you cancel order o-1001.", False),  # speaks as the assistant
    ("I'm in the mood for a good old o-1001 day.", False),  # drifts off the subject
])
async def test_the_opening_is_reworded_only_when_nothing_is_lost(
    fake_server: Callable[..., FakeOpenAIServer], rewording: str, kept: bool,
) -> None:
    from synth.rollout.user import simulate_user_turn

    task = WITHHELD_TASK.model_copy(update={"withheld": {}, "goal": "Please cancel order o-1001, I ordered the wrong "
                                                                    "book."})
    server = fake_server(responder=lambda body: {"role": "assistant", "content": rewording})
    async with _llm(server) as llm:
        turn, usage = await simulate_user_turn(task, [{"role": "system", "content": "x"}], llm, rephrase=True, seed=1)
    assert turn.message == (rewording if kept else task.goal) and not turn.done
    assert usage.attempts == 1


# ---------------------------------------------------------------- checks for what the new users expose


def _judge(task: Task, messages: list[dict[str, Any]]) -> dict[str, list[str]]:
    from synth.judges.checks import run_checks
    from synth.models import Trajectory

    traj = Trajectory(task_id=task.id, agent_id=task.agent_id, domain=task.domain, messages=messages,
                      tools=[t.to_openai() for t in SHOP_TOOLS], steps=[], termination="user_done")
    return {r.name: [r.detail] for r in run_checks(traj, task, SHOP_TOOLS) if not r.passed}


def test_a_withheld_value_used_before_anyone_gave_it_was_guessed() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "cancel_order",
                                                         "arguments": json.dumps({"order_id": "o-1001"})}}
    answer = {"role": "tool", "tool_call_id": "c1",
              "content": json.dumps({"order_id": "o-1001", "status": "cancelled"})}
    guessed = [{"role": "system", "content": "x"}, {"role": "user", "content": WITHHELD_TASK.goal},
               {"role": "assistant", "content": None, "tool_calls": [call]}, answer,
               {"role": "assistant", "content": "Order o-1001 is cancelled."}]
    failed = _judge(WITHHELD_TASK, guessed)
    assert "no_fabrication" in failed and "before the user or a tool gave it" in failed["no_fabrication"][0]
    asked = [*guessed[:2], {"role": "assistant", "content": "Which order?"},
             {"role": "user", "content": "It is o-1001."}, *guessed[2:]]
    assert "no_fabrication" not in _judge(WITHHELD_TASK, asked)


def test_a_reply_that_only_echoes_the_question_is_no_answer() -> None:
    task = WITHHELD_TASK.model_copy(update={"kind": "no_tool", "withheld": {}, "rubric": Rubric(
        success_criteria=["The assistant gives tips"])})
    question = "Could you give me tips on avoiding common mistakes with orders?"
    echo = [{"role": "system", "content": "x"}, {"role": "user", "content": question},
            {"role": "assistant", "content": "How to avoid common mistakes with orders"}]
    assert "only restates" in _judge(task, echo)["final_reply"][0]
    answer = [*echo[:2], {"role": "assistant", "content": "Check the address twice and keep every receipt."}]
    assert "final_reply" not in _judge(task, answer)
    ask = "Can you print and post a paper copy of my order?"
    decline = [echo[0], {"role": "user", "content": ask},
               {"role": "assistant", "content": "I can't print and post a paper copy of your order."}]
    assert "final_reply" not in _judge(task.model_copy(update={"kind": "unserviceable"}), decline)
    question = [echo[0], {"role": "user", "content": ask},
                {"role": "assistant", "content": "A paper copy of which order?"}]
    assert "final_reply" not in _judge(task, question)


def test_plans_never_withhold_a_guessable_value() -> None:
    import random

    flag = _tool("create_flag", "Create a flag.", {"label": {"type": "string"}, "active": {"type": "boolean"},
                                                   "color": {"type": "string", "enum": ["red", "blue"]}},
                 ["label", "active", "color"], side_effect="write")
    for seed in range(30):
        plan = plan_task([flag], "tool", "single_call", random.Random(seed))
        assert plan is not None
        assert set(plan.withheld) <= {"label"}, plan.withheld


def test_naming_rules_for_stand_ins() -> None:
    """What the judge and tool synthesis call a stand-in for a name or a value (`synth.naming`)."""
    from synth.naming import looks_like_words, placeholder_value, repeats_tool_name

    assert repeats_tool_name("create_weather", "create_weather")
    assert repeats_tool_name("function_list_order_managements", "list_order_managements")
    assert not repeats_tool_name("email", "send_email") and not repeats_tool_name("search_query", "search")
    assert not repeats_tool_name("send_email_to", "send_email")
    assert not looks_like_words("jsscjdjcjjdjcjdjjjdjjjj")
    assert all(looks_like_words(t) for t in ("rhythm", "GPS", "ORD-88213", "strengths", "Elif Adeyemi"))
    for value, parameter in (("example_location", "location"), ("category_name", "category"),
                             ("location", "location"), ("<name>", "name"), ("your_email", "email")):
        assert placeholder_value(value, parameter), value
    for value, parameter in (("in_progress", "status"), ("order_date", "order_by"), ("Paris", "location"),
                             ("new_york", "city")):
        assert not placeholder_value(value, parameter), value


def test_the_world_model_writes_ids_that_look_like_ids() -> None:
    """A main job's world model listed a record whose id was `");<BAR LOCATED>List order ...`, and
    the agent passed it on: the world model's schema holds every id field to `ID_PATTERN`."""
    import re

    from synth.models import ToolSpec
    from synth.rollout.world_model import ID_PATTERN, world_model_schema

    record = {"type": "object", "properties": {"order_id": {"type": "string"}, "note": {"type": "string"},
                                               "kind_id": {"type": "string", "enum": ["a", "b"]}}}
    spec = ToolSpec(name="list_orders", description="Orders.", domain="retail", side_effect="read",
                    input_schema={"type": "object", "properties": {}},
                    output_schema={"type": "object", "properties": {"items": {"type": "array", "items": record}}})
    item = world_model_schema(spec)["properties"]["result"]["properties"]["items"]["items"]["properties"]
    assert item["order_id"]["pattern"] == ID_PATTERN and "pattern" not in item["note"]
    assert "pattern" not in item["kind_id"]
    assert re.match(ID_PATTERN, "om-28647") and not re.match(ID_PATTERN, '");<BAR LOCATED>List')


def test_the_world_model_writes_a_page_of_a_listing_and_a_field_of_text() -> None:
    """Replayed on the embedded model, 107 recorded world-model requests ran to max_tokens 32-33 times
    as sent (one record listed again and again, ids counted up, a string of digits) and 7-8 times
    with lists and free strings bounded: the grammar closes them. Bounds a schema sets stay."""
    from synth.models import ToolSpec
    from synth.rollout.world_model import MAX_RESULT_CHARS, MAX_RESULT_ITEMS, world_model_schema

    record = {"type": "object", "properties": {
        "order_id": {"type": "string"}, "note": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "status": {"type": "string", "enum": ["open", "shipped"]}, "code": {"type": "string", "maxLength": 8},
        "at": {"type": "string", "format": "date-time"}, "long": {"type": "string", "minLength": 400}}}
    output = {"type": "object", "properties": {
        "items": {"type": "array", "items": record}, "top": {"type": "array", "items": record, "maxItems": 2},
        "many": {"type": "array", "items": {"type": "integer"}, "minItems": 9},
        "cursor": {"type": ["string", "null"]}, "count": {"type": "integer"}}}
    spec = ToolSpec(name="search_orders", description="Orders.", domain="retail", side_effect="read",
                    input_schema={"type": "object", "properties": {}}, output_schema=output)
    result = world_model_schema(spec)["properties"]["result"]["properties"]
    assert result["items"]["maxItems"] == MAX_RESULT_ITEMS and result["top"]["maxItems"] == 2
    assert result["many"]["maxItems"] == 9 and result["cursor"]["maxLength"] == MAX_RESULT_CHARS
    item = result["items"]["items"]["properties"]
    assert item["note"]["maxLength"] == MAX_RESULT_CHARS and item["tags"]["maxItems"] == MAX_RESULT_ITEMS
    assert item["tags"]["items"]["maxLength"] == MAX_RESULT_CHARS and item["code"]["maxLength"] == 8
    assert item["long"]["maxLength"] == 400
    for bounded_elsewhere in ("order_id", "status", "at"):  # a pattern, an enum, a format
        assert "maxLength" not in item[bounded_elsewhere], bounded_elsewhere
    assert "maxLength" not in result["count"] and spec.output_schema == output  # the spec is not changed


def test_a_tool_without_an_output_schema_gets_a_bounded_result() -> None:
    """No real MCP tool in `shared/data/mcp` declares an `outputSchema`. Under a bare object the
    world model nested objects in objects or wrote one string until `max_tokens` (10-16 of 48 sampled
    real tools cut off); its result is now at most three levels, with text and lists bounded."""
    import jsonschema

    from synth.models import ToolSpec
    from synth.rollout.world_model import FREE_RESULT_SCHEMA, MAX_RESULT_CHARS, MAX_RESULT_ITEMS, world_model_schema

    spec = ToolSpec(name="browser_select", description="Select an option.", domain="mcp", side_effect="read",
                    input_schema={"type": "object", "properties": {"selector": {"type": "string"}}})
    schema = world_model_schema(spec)
    assert schema["properties"]["result"] == FREE_RESULT_SCHEMA
    valid = jsonschema.Draft202012Validator(schema).is_valid
    record = {"id": "el-4", "label": "Blue", "selected": True, "price": 4.5, "note": None}
    assert valid({"result": {"status": "ok", "option": record, "options": [record, record], "tags": ["a", 2]}})
    assert valid({"result": {"error": "no element matches #colour"}})
    assert not valid({"result": {"data": {"data": {"data": 1}}}})  # a fourth level
    assert not valid({"result": {"options": [[1, 2]]}})  # a list in a list
    assert not valid({"result": {"text": "x" * (MAX_RESULT_CHARS + 1)}})
    assert not valid({"result": {"options": [1] * (MAX_RESULT_ITEMS + 1)}})


@pytest.mark.integration
async def test_the_embedded_model_writes_world_model_ids_that_follow_the_id_pattern(backend_url: str) -> None:
    """The same pattern through llama-server: its grammar takes the pattern (a schema it could not
    compile would be a 400 on every world-model call) and the ids come back matching. This prompt
    gets clean ids without the pattern too (`12345`, `ad_lovelace_1`), so the unit test above is
    the one that fails when the pattern goes; this one fails when the server stops taking it."""
    import re

    from synth.llm import LLMClient
    from synth.llm.errors import StructuredOutputError
    from synth.models import ToolSpec
    from synth.rollout.world_model import ID_PATTERN, MAX_RESULT_ITEMS, ask_world_model
    from tests.conftest import make_config

    record = {"type": "object", "properties": {"order_id": {"type": "string"}, "status": {"type": "string"}},
              "required": ["order_id", "status"]}
    spec = ToolSpec(name="list_orders", description="List the customer's recent orders.", domain="retail",
                    side_effect="read", input_schema={"type": "object", "properties": {"customer": {"type": "string"}}},
                    output_schema={"type": "object", "properties": {"orders": {"type": "array", "items": record,
                                                                               "minItems": 1}},
                                   "required": ["orders"]})
    ids: list[str] = []
    pages: list[list[Any]] = []
    async with LLMClient(make_config(backend_url)) as llm:
        for seed in range(4):
            try:
                result, _, _ = await ask_world_model(spec, {"customer": "Ada Lovelace"}, {}, llm, seed=seed)
            except StructuredOutputError:
                continue  # no valid reply at all is the episode's error observation, not a bad id
            ids += [order["order_id"] for order in result["orders"]]
            pages.append(result["orders"])
    assert ids, "the model listed no order in four tries"
    assert all(re.match(ID_PATTERN, i) for i in ids), ids
    assert all(len(page) <= MAX_RESULT_ITEMS for page in pages), [len(p) for p in pages]


@pytest.mark.integration
async def test_the_embedded_model_answers_a_tool_without_an_output_schema(backend_url: str) -> None:
    """llama-server compiles the bounded result of a tool that declares no `outputSchema`
    (`FREE_RESULT_SCHEMA`: a schema it could not compile would be a 400 on every such call) and its
    answer conforms to it."""
    import jsonschema

    from synth.llm import LLMClient
    from synth.llm.errors import StructuredOutputError
    from synth.models import ToolSpec
    from synth.rollout.world_model import FREE_RESULT_SCHEMA, ask_world_model
    from tests.conftest import make_config

    spec = ToolSpec(name="get_weather_forecast", description="Get the weather forecast for a city.", domain="mcp",
                    side_effect="read", input_schema={"type": "object", "properties": {"city": {"type": "string"}}})
    results = []
    async with LLMClient(make_config(backend_url)) as llm:
        for seed in range(3):
            try:
                result, _, _ = await ask_world_model(spec, {"city": "Lisbon"}, {}, llm, seed=seed)
            except StructuredOutputError:
                continue
            results.append(result)
    assert results, "no valid answer in three tries"
    for result in results:
        jsonschema.validate(result, FREE_RESULT_SCHEMA)
