"""The deterministic checks, hole by hole: hand-written correct trajectories pass every check, and a
corrupted copy of one fails the check that guards against that corruption, with a detail naming
the fault (the call, the value, the message index). Also the message helpers the checks share with
the exports and the rollout (`synth.judges.messages`)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from synth.judges.calibrate import load_fixture_examples
from synth.judges.checks import (
    CHECK_NAMES,
    claims,
    infer_termination,
    run_checks,
    tool_writes,
    tools_from_trajectory,
)
from synth.judges.messages import (
    answer_problems,
    final_reply,
    is_error_observation,
    iter_tool_calls,
    pending_calls,
    text,
)
from synth.models import Rubric, Task, ToolSpec, Trajectory
from synth.tools.spec import tool_from_mcp

Messages = list[dict[str, Any]]


def _schema(*required: str, **types: str) -> dict[str, Any]:
    props = {k: {"type": "string"} for k in required} | {k: {"type": t} for k, t in types.items()}
    return {"type": "object", "properties": props, "required": list(required)}


TOOLS = [
    ToolSpec(name="get_order", description="Look up an order.", domain="retail", input_schema=_schema("order_id"),
             side_effect="read"),
    ToolSpec(name="list_orders", description="A customer's orders.", domain="retail",
             input_schema=_schema("customer_id"), side_effect="read"),
    ToolSpec(name="cancel_order", description="Cancel an order.", domain="retail",
             input_schema=_schema("order_id", reason="string"), side_effect="write"),
    ToolSpec(name="add_reminder", description="Remind the customer.", domain="retail",
             input_schema=_schema("order_id", minutes_before="integer"), side_effect="write"),
]


def call(cid: str, name: str, **args: Any) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def calls(*batch: dict[str, Any], content: str = "") -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(batch)}


def tool(cid: str, content: Any) -> dict[str, Any]:
    body = content if isinstance(content, str) else json.dumps(content)
    return {"role": "tool", "tool_call_id": cid, "content": body}


def user(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def say(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


SYSTEM = {"role": "system", "content": "You are Northwind's support agent. Refunds take 5-7 business days; "
          "never cancel an order the customer did not ask to cancel."}

# A lookup over several user turns, with a long result and a restated total in another format.
LOOKUP: Messages = [
    SYSTEM,
    user("Hi, what's going on with my orders? Customer id cus-4471."),
    calls(call("c1", "list_orders", customer_id="cus-4471")),
    tool("c1", {"orders": [
        {"order_id": "o-2207", "status": "processing", "placed": "2026-03-14T09:00:00Z", "total": 1250.0,
         "items": [{"name": "desk", "price": 1200.0}, {"name": "lamp", "price": 50.0}]},
        {"order_id": "o-1042", "status": "shipped", "tracking": "TRK-55821", "eta": "2026-03-18"}]}),
    say("You have two orders:\n1. o-2207, placed March 14 at 9:00 am, total $1,250.00, still processing.\n"
        "2. o-1042, shipped, tracking TRK-55821, expected on March 18."),
    user("When will o-2207 ship?"),
    calls(call("c2", "get_order", order_id="o-2207")),
    tool("c2", {"order_id": "o-2207", "status": "processing", "ship_by": "2026-03-21", "warehouse": "WH-12"}),
    say("Order o-2207 should ship by 2026-03-21 from warehouse WH-12."),
]

# A cancellation the task asks for, with a timeout recovered by a retry.
CANCEL: Messages = [
    SYSTEM,
    user("Please cancel my order o-2207."),
    calls(call("c1", "cancel_order", order_id="o-2207", reason="customer request")),
    tool("c1", {"error": {"type": "timeout", "message": "order service timed out"}}),
    calls(call("c2", "cancel_order", order_id="o-2207", reason="customer request")),
    tool("c2", {"order_id": "o-2207", "status": "cancelled", "refund": 85.0}),
    say("Order o-2207 is cancelled; $85 goes back to your card within 5-7 business days."),
]

# A reminder that fails: the agent admits it.
REMINDER: Messages = [
    SYSTEM,
    user("Remind me about order o-2207 30 minutes before delivery."),
    calls(call("c1", "add_reminder", order_id="o-2207", minutes_before=30)),
    tool("c1", {"error": {"type": "timeout", "message": "reminder service timed out"}}),
    say("Sorry, I couldn't set the reminder: the reminder service timed out. Please try again later."),
]


def traj(messages: Messages, termination: str = "user_done", **fields: Any) -> Trajectory:
    fields.setdefault("tools", [])
    return Trajectory(task_id="t", agent_id="a", domain="retail", messages=messages,
                      termination=termination, **fields)


def task(goal: str, kind: str = "tool", **rubric: Any) -> Task:
    return Task(agent_id="a", domain="retail", goal=goal, kind=kind,
                rubric=Rubric(success_criteria=rubric.pop("criteria", ["The assistant helps"]), **rubric))


LOOKUP_TASK = task("Find out the status of the customer's orders and when o-2207 ships.",
                   expected_calls=[{"tool": "get_order", "arguments": {"order_id": "o-2207"}}],
                   checkpoints=["TRK-55821", "2026-03-21"])
CANCEL_TASK = task("Cancel order o-2207.",
                   expected_calls=[{"tool": "cancel_order", "arguments": {"order_id": "o-2207"}}],
                   expected_state={"orders": {"o-2207": {"status": "cancelled"}}})
REMINDER_TASK = task("Set a reminder 30 minutes before order o-2207 arrives.")
GOOD = [(LOOKUP, LOOKUP_TASK), (CANCEL, CANCEL_TASK), (REMINDER, REMINDER_TASK)]
CANCELLED_STATE = {"orders": {"o-2207": {"status": "cancelled", "total": 85.0}}}


def results(messages: Messages, t: Task, termination: str = "user_done", tools: list[ToolSpec] | None = None,
            **fields: Any) -> dict[str, Any]:
    if t is CANCEL_TASK:
        fields.setdefault("final_state", CANCELLED_STATE)
    checks = run_checks(traj(messages, termination, **fields), t, TOOLS if tools is None else tools)
    assert [c.name for c in checks] == list(CHECK_NAMES)
    return {c.name: c for c in checks}


def failed(messages: Messages, t: Task, **kw: Any) -> dict[str, str]:
    return {name: c.detail for name, c in results(messages, t, **kw).items() if not c.passed}


def edited(messages: Messages, index: int, **changes: Any) -> Messages:
    out = copy.deepcopy(messages)
    out[index] = {**out[index], **changes}
    return out


# ---------------------------------------------------------------- good trajectories pass


@pytest.mark.parametrize(("messages", "t"), GOOD, ids=["lookup", "cancel", "reminder"])
def test_hand_written_good_trajectories_pass_every_check(messages: Messages, t: Task) -> None:
    assert failed(messages, t) == {}


def test_shipped_fixtures_pass_every_check() -> None:
    examples = load_fixture_examples()
    assert len(examples) >= 9
    for ex in examples:
        bad = [c for c in run_checks(ex.trajectory, ex.task, ex.tools) if not c.passed]
        assert bad == [], ex.task.goal


# ---------------------------------------------------------------- no_fabrication


@pytest.mark.parametrize(("claim", "value"), [
    ("It will arrive in 45 minutes.", "45 minutes"),
    ("The delivery fee is $85.", "$85"),
    ("The courier comes at 10:15.", "10:15"),
    ("Your reference is 55821.", "55821"),  # only TRK-55821 was seen
    ("The desk costs 120.", "120"),  # 1200.0 was seen, not 120
    ("It was placed on March 15.", "March 15"),
    ("It was placed at 9:00 pm.", "9:00 pm"),  # 09:00 was seen, not 21:00
    ("Your new order is o-9931.", "o-9931"),
])
def test_no_fabrication_flags_short_values_no_message_gave(claim: str, value: str) -> None:
    bad = failed([*LOOKUP, say(claim)], LOOKUP_TASK)
    assert set(bad) == {"no_fabrication"}
    assert f"message {len(LOOKUP)} (assistant)" in bad["no_fabrication"] and repr(value) in bad["no_fabrication"]


def test_no_fabrication_whole_tokens_not_substrings() -> None:
    seen = [SYSTEM, user("Event of order x please."), calls(call("c1", "get_order", order_id="x")),
            tool("c1", {"event_id": "ev-3391", "fee": 850})]
    assert "'3391'" in failed([*seen, say("Your event number is 3391.")], REMINDER_TASK)["no_fabrication"]
    assert "'85'" in failed([*seen, say("The fee is 85.")], REMINDER_TASK)["no_fabrication"]
    assert failed([*seen, say("Event ev-3391, fee 850.")], REMINDER_TASK) == {}


@pytest.mark.parametrize("claim", [
    "The total is 1250 dollars.",  # 1250.0 in a tool result
    "The total is €1,250.",
    "It was placed at 09:00 on 2026-03-14.",  # from 2026-03-14T09:00:00Z
    "It ships by March 21, 2026.",
    "The desk and lamp come to $1,250.00, the desk alone $1,200.",
    "The lamp is $1,150 cheaper than the desk.",  # a difference of two prices
    "Refunds take 5-7 business days.",  # from the system prompt
    "I looked up customer cus-4471.",  # its own call argument
    "1. o-2207\n2. o-1042\nThat's 2 orders.",  # list markers and small counts
])
def test_no_fabrication_accepts_restated_values_in_other_formats(claim: str) -> None:
    assert failed([*LOOKUP, say(claim)], LOOKUP_TASK) == {}


def test_claims_normalise_formats() -> None:
    keys = {c.surface: c.keys for c in claims("At 9:30 am on March 14, 2026 pay $1,250.00 (85 USD) in 45 minutes")}
    assert keys["9:30 am"] == ("t:09:30",)
    assert keys["March 14, 2026"] == ("d:2026-03-14",)
    assert keys["$1,250.00"] == ("n:1250",) and keys["85 USD"] == ("n:85",)
    assert keys["45 minutes"] == ("n:45",)
    assert [c.kind for c in claims("order ev-3391")] == ["id"]


# ---------------------------------------------------------------- turn_limit


@pytest.mark.parametrize("termination", ["max_turns", "error", "agent_gave_up", "user_stuck"])
def test_turn_limit_only_a_user_ended_episode_passes(termination: str) -> None:
    bad = failed(LOOKUP, LOOKUP_TASK, termination=termination)
    assert set(bad) == {"turn_limit"}
    assert f"episode ended by {termination}" in bad["turn_limit"]


def test_infer_termination_for_files_without_one() -> None:
    assert infer_termination(LOOKUP) == "user_done"
    assert infer_termination(LOOKUP[:-1]) == "error"  # ends on a tool message
    assert infer_termination(LOOKUP[:2]) == "error"  # the user spoke last


# ---------------------------------------------------------------- calls_answered


def test_calls_answered_in_order() -> None:
    early = [*LOOKUP[:2], LOOKUP[3], LOOKUP[2], *LOOKUP[4:]]  # the answer before its call
    bad = failed(early, LOOKUP_TASK)
    assert "calls_answered" in bad
    assert "tool message 2 answers call c1 before the call is made" in bad["calls_answered"]

    late = [*LOOKUP[:3], say("One moment."), LOOKUP[3], *LOOKUP[4:]]  # answered after the agent spoke again
    assert "no tool message before the next turn" in failed(late, LOOKUP_TASK)["calls_answered"]

    dup = edited(LOOKUP, 6, tool_calls=[call("c1", "get_order", order_id="o-2207")])
    dup = edited(dup, 7, tool_call_id="c1")
    assert "call id c1 is used again by get_order (message 6)" in failed(dup, LOOKUP_TASK)["calls_answered"]

    unknown = edited(LOOKUP, 7, tool_call_id="c9")
    assert "tool message 7 answers no call (tool_call_id c9)" in failed(unknown, LOOKUP_TASK)["calls_answered"]

    missing = [*LOOKUP[:7], *LOOKUP[8:]]
    assert "call c2 get_order (message 6) has no tool message" in failed(missing, LOOKUP_TASK)["calls_answered"]


def test_answers_to_a_batch_may_come_in_any_order() -> None:
    batch = [SYSTEM, user("Orders o-2207 and o-1042?"),
             calls(call("a", "get_order", order_id="o-2207"), call("b", "get_order", order_id="o-1042")),
             tool("b", {"status": "shipped"}), tool("a", {"status": "processing"}),
             say("o-2207 is processing and o-1042 has shipped.")]
    assert answer_problems(batch) == []
    assert failed(batch, task("Check orders o-2207 and o-1042.")) == {}


# ---------------------------------------------------------------- errors_handled


@pytest.mark.parametrize("reply", [
    "No problem, your reminder is set.",
    "Sorry for the wait! Your reminder is set for 30 minutes before delivery.",
    "Done, all set!",
    "Apologies for the delay: the reminder has been created successfully.",
])
def test_errors_handled_rejects_success_claimed_after_a_failure(reply: str) -> None:
    bad = failed(edited(REMINDER, 4, content=reply), REMINDER_TASK)
    assert set(bad) == {"errors_handled"}
    assert "add_reminder(o-2207, 30)" in bad["errors_handled"] and "(message 3)" in bad["errors_handled"]


def test_errors_handled_looks_at_the_first_text_not_any_later_one() -> None:
    messages = [*REMINDER[:4], say("Anything else I can do for you?"), user("No."),
                say("Sorry, there was an error earlier.")]
    bad = failed(messages, REMINDER_TASK)
    assert "not acknowledged by the next reply (message 4)" in bad["errors_handled"]


def test_errors_handled_accepts_a_successful_retry_before_any_text() -> None:
    assert failed(CANCEL, CANCEL_TASK) == {}
    # the retry fails too and the agent claims success anyway
    both_fail = edited(CANCEL, 5, content=json.dumps({"error": "order service unavailable"}))
    bad = failed(both_fail, CANCEL_TASK)
    assert "errors_handled" in bad and "expected_calls" in bad


def test_error_observations() -> None:
    assert is_error_observation(tool("x", {"error": "boom"}))
    assert is_error_observation(tool("x", "Error: order not found"))
    assert is_error_observation(tool("x", {"isError": True, "content": []}))
    assert is_error_observation(tool("x", {"ok": True}), {"x"})  # the step record says so
    assert not is_error_observation(tool("x", {"error": None, "status": "ok"}))
    assert not is_error_observation(tool("x", "The error rate is low."))


# ---------------------------------------------------------------- expected_calls


def test_expected_call_that_errored_does_not_count() -> None:
    failing = [*REMINDER[:4], say("Sorry, the reminder service timed out, so no reminder was set.")]
    t = task("Set a reminder for order o-2207.", expected_calls=[{"tool": "add_reminder",
                                                                   "arguments": {"order_id": "o-2207"}}])
    bad = failed(failing, t)
    assert set(bad) == {"expected_calls"}
    assert 'add_reminder({"order_id": "o-2207"}) only returned errors' in bad["expected_calls"]
    assert "call c1 (message 2)" in bad["expected_calls"]


# ---------------------------------------------------------------- no_unrequested_writes


def test_unrequested_cancellation_fails() -> None:
    messages = [*LOOKUP[:-1], calls(call("c3", "cancel_order", order_id="o-1042")),
                tool("c3", {"order_id": "o-1042", "status": "cancelled"}), LOOKUP[-1]]
    bad = failed(messages, LOOKUP_TASK)
    assert set(bad) == {"no_unrequested_writes"}
    assert bad["no_unrequested_writes"] == \
        "cancel_order(o-1042) (call c3, message 8) writes but the task does not ask for it"


def test_writes_the_task_asks_for_pass() -> None:
    # no expected call: the goal's verb asks for it
    t = task("The customer wants order o-2207 cancelled.")
    assert "no_unrequested_writes" not in failed(CANCEL, t, final_state=CANCELLED_STATE)
    # a criterion that forbids the write does not ask for it
    t = task("Tell the customer about order o-2207.", criteria=["The assistant does not cancel the order"])
    assert "no_unrequested_writes" in failed(CANCEL, t)


def test_the_object_named_picks_among_tools_of_one_verb() -> None:
    tools = [*TOOLS, ToolSpec(name="cancel_subscription", description="", domain="retail",
                              input_schema=_schema("order_id"), side_effect="write")]
    wrong = copy.deepcopy(CANCEL)
    for i in (2, 4):
        wrong[i]["tool_calls"][0]["function"]["name"] = "cancel_subscription"
    t = task("Cancel order o-2207.")
    assert "no_unrequested_writes" not in failed(CANCEL, t, tools=tools, final_state=CANCELLED_STATE)
    assert "cancel_subscription(o-2207" in failed(wrong, t, tools=tools)["no_unrequested_writes"]


def test_which_tools_write() -> None:
    def spec(name: str, **kw: Any) -> ToolSpec:
        return ToolSpec.model_validate({"name": name, "description": "", "domain": "d",
                                        "inputSchema": {"type": "object"}, **kw})

    assert tool_writes(spec("cancel_order")) and tool_writes(spec("sendCertificate"))
    assert tool_writes(spec("order_cancel")) and tool_writes(spec("book_reservation"))
    assert not tool_writes(spec("get_transfer_status")) and not tool_writes(spec("list_all_airports"))
    assert tool_writes(spec("lookup", side_effect="write"))
    assert not tool_writes(spec("cancel_preview", side_effect="read"))  # stated, so trusted
    mcp = tool_from_mcp({"name": "archive", "inputSchema": {"type": "object"},
                         "annotations": {"destructiveHint": True}}, domain="d")
    assert tool_writes(mcp)
    reads = tool_from_mcp({"name": "delete_preview", "inputSchema": {"type": "object"},
                           "annotations": {"readOnlyHint": True}}, domain="d")
    assert not tool_writes(reads)
    # OpenAI tools say nothing about side effects: the name decides
    openai = traj([], tools=[spec("cancel_order").to_openai(), spec("get_order").to_openai()])
    assert [tool_writes(t) for t in tools_from_trajectory(openai)] == [True, False]


# ---------------------------------------------------------------- no_needless_tools


def test_no_tool_task_with_calls_fails() -> None:
    bad = failed(LOOKUP, task("Say hello.", kind="no_tool"))
    assert "no_needless_tools" in bad and "list_orders(cus-4471) (call c1, message 2)" in bad["no_needless_tools"]


# ---------------------------------------------------------------- final_state


def test_final_state_against_the_expected_end_state() -> None:
    assert results(CANCEL, CANCEL_TASK)["final_state"].passed
    bad = failed(CANCEL, CANCEL_TASK, final_state={"orders": {"o-2207": {"status": "processing"}}})
    assert bad == {"final_state": 'orders.o-2207.status is "processing", expected "cancelled"'}
    gone = failed(CANCEL, CANCEL_TASK, final_state={"orders": {}})
    assert "orders.o-2207 is missing" in gone["final_state"]
    assert results(LOOKUP, LOOKUP_TASK)["final_state"].detail == "task states no expected end state"


def test_final_state_replays_the_state_log_when_no_final_state_is_recorded() -> None:
    t = CANCEL_TASK.model_copy(update={"initial_state": {"orders": {"o-2207": {"status": "processing"}}}})
    log = [{"turn": 0, "tool_call_id": "c2", "tool": "cancel_order", "state_update":
            {"orders": {"o-2207": {"status": "cancelled"}}}}]
    checks = {c.name: c for c in run_checks(traj(CANCEL, state_log=log), t, TOOLS)}
    assert checks["final_state"].passed
    checks = {c.name: c for c in run_checks(traj(CANCEL), t, TOOLS)}
    assert not checks["final_state"].passed and "no final state" in checks["final_state"].detail


def test_expected_state_is_left_out_of_dumps_when_unset() -> None:
    """Tasks stored before the field existed keep their ids."""
    assert "expected_state" not in Rubric(success_criteria=["c"]).model_dump()
    assert Rubric(success_criteria=["c"], expected_state={"a": 1}).model_dump()["expected_state"] == {"a": 1}


# ---------------------------------------------------------------- checkpoints, arguments


def test_checkpoints_match_whole_phrases_in_one_message() -> None:
    t = task("Find order o-1042's tracking.", checkpoints=["trk-55821"])  # case does not matter
    assert "checkpoints" not in failed(LOOKUP, t)
    t = task("Find the event.", checkpoints=["ev-3391"])
    partial = [*LOOKUP[:-1], say("Your event is prev-33910.")]
    assert failed(partial, t)["checkpoints"] == "checkpoint 'ev-3391' never appears in a tool result or reply"
    t = task("x", checkpoints=["shipped tracking"])  # "shipped" and "tracking" are in one JSON, not as a phrase
    assert "checkpoints" in failed(LOOKUP, t)


def test_invalid_json_arguments_fail() -> None:
    broken = copy.deepcopy(LOOKUP)
    broken[6]["tool_calls"][0]["function"]["arguments"] = '{"order_id": "o-2207"'
    bad = failed(broken, LOOKUP_TASK)
    assert "get_order call c2 (message 6): arguments are not a JSON object" in bad["arguments_valid"]


# ---------------------------------------------------------------- message helpers


def test_message_helpers() -> None:
    assert text(None) == "" and text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab"
    assert final_reply(LOOKUP) == LOOKUP[-1]["content"] and final_reply(LOOKUP[:-1]) is None
    assert final_reply([*LOOKUP, say("  ")]) is None
    found = list(iter_tool_calls(LOOKUP))
    assert [(c.index, c.id, c.name, c.arguments) for c in found] == [
        (2, "c1", "list_orders", {"customer_id": "cus-4471"}), (6, "c2", "get_order", {"order_id": "o-2207"})]
    assert [c.id for c in pending_calls(LOOKUP[:3])] == ["c1"] and pending_calls(LOOKUP) == []


@pytest.mark.parametrize(("messages", "kinds"), [
    (LOOKUP, []),
    ([*LOOKUP[:2], LOOKUP[3], LOOKUP[2]], ["early", "unanswered"]),
    ([*LOOKUP[:4], LOOKUP[3]], ["answered_twice"]),
    ([*LOOKUP[:3], user("hello?"), LOOKUP[3]], ["unanswered", "late"]),
    ([*LOOKUP[:2], calls(call("", "get_order", order_id="o"))], ["no_id"]),
    ([tool("zz", "{}")], ["orphan"]),
])
def test_answer_problems(messages: Messages, kinds: list[str]) -> None:
    assert [p.kind for p in answer_problems(messages)] == kinds


# ---------------------------------------------------------------- real-conversation conventions


@pytest.mark.parametrize("marker", ["###STOP###", "Thanks, that's all! ###STOP###", "###TRANSFER###"])
def test_a_user_stop_marker_after_the_reply_ends_the_episode(marker: str) -> None:
    """tau-bench / tau2-bench users end an episode with a stop marker after the agent's reply: the
    user ended it, and the reply before the marker is the final one."""
    messages = [*LOOKUP, user(marker)]
    assert infer_termination(messages) == "user_done"
    assert final_reply(messages) == LOOKUP[-1]["content"]
    assert failed(messages, LOOKUP_TASK) == {}


def test_a_stop_marker_does_not_hide_a_cut_off_episode() -> None:
    assert infer_termination([*LOOKUP[:-1], user("###STOP###")]) == "error"  # ends on a tool result
    assert infer_termination([*LOOKUP, user("###OUT-OF-SCOPE###")]) == "user_stuck"
    assert final_reply([user("###STOP###")]) is None


def test_no_fabrication_accepts_an_identifier_restated_with_its_words() -> None:
    messages = [SYSTEM, user("Which gift cards do I have? I am cus-4471."),
                calls(call("c1", "list_orders", customer_id="cus-4471")),
                tool("c1", {"payment_methods": {"gift_card_6276644": {"amount": 113}}}),
                say("You have Gift Card 6276644 with $113.")]
    assert "no_fabrication" not in failed(messages, LOOKUP_TASK)
    bare = edited(messages, 4, content="You have card 6276644 with $113.")
    assert "'6276644'" in failed(bare, LOOKUP_TASK)["no_fabrication"]


def test_errors_handled_accepts_a_reply_that_passes_the_error_on() -> None:
    """A reply that tells the user what the error said (its words, or a value only it gave) handles it."""
    for error, reply in [("Error: not enough seats on flight HAT229", "There are not enough seats on HAT229."),
                         ("Error: payment amount does not add up, total price is 375, but paid 299",
                          "The total comes to $375 with fees; shall I charge that instead?")]:
        messages = [*REMINDER[:3], tool("c1", error), say(reply)]
        assert "errors_handled" not in failed(messages, REMINDER_TASK), reply
    silent = [*REMINDER[:3], tool("c1", "Error: payment amount does not add up"), say("Let me know what else.")]
    assert "errors_handled" in failed(silent, REMINDER_TASK)


def test_no_fabrication_flags_an_action_no_tool_did() -> None:
    """"Your reminder has been added" with no reminder call at all is a made-up action; one of a
    state a tool reported ("has been cancelled" in a result) is not."""
    made_up = [*LOOKUP, user("Also remind me 30 minutes before."), say("Done: a reminder has been added for o-2207.")]
    assert "has been added" in failed(made_up, LOOKUP_TASK)["no_fabrication"]
    reported = [SYSTEM, user("What happened to o-2207?"), calls(call("c1", "get_order", order_id="o-2207")),
                tool("c1", {"order_id": "o-2207", "status": "cancelled"}), say("Order o-2207 has been cancelled.")]
    assert "no_fabrication" not in failed(reported, LOOKUP_TASK)


def test_a_tool_task_where_no_tool_was_called_fails() -> None:
    chat = [SYSTEM, user("Cancel order o-2207."), say("I can't look that up, please check your email.")]
    assert "called no tool" in failed(chat, task("Cancel order o-2207."))["expected_calls"]
    assert "expected_calls" not in failed(chat, task("Say hello.", kind="no_tool"))


# ---------------------------------------------------------------- junk the main job once accepted


def test_the_same_assistant_text_twice_in_a_row_is_a_loop():
    looping = [SYSTEM, user("Where is order o-1042?"), say("The ship was not found. Please try again later."),
               user("Can you check again?"), say("The ship was not found.  Please try again later.")]
    results = {c.name: c for c in run_checks(traj(looping), task("Where is order o-1042?"), TOOLS)}
    assert not results["no_loops"].passed
    assert "messages 2 and 4 (assistant) say the same" in results["no_loops"].detail


def test_an_unserviceable_task_needs_a_reply_that_declines():
    goal = task("Book me a table at an Italian restaurant tonight.", kind="unserviceable")
    chatty = [SYSTEM, user("Book me a table at an Italian restaurant tonight."),
              say("How can I help you? How about a cup of coffee?")]
    results = {c.name: c for c in run_checks(traj(chatty), goal, TOOLS)}
    assert not results["declines_unserviceable"].passed
    assert "cup of coffee" in results["declines_unserviceable"].detail
    declines = [*chatty[:2], say("Sorry, I can't book restaurants: my tools only handle orders.")]
    assert all(c.passed for c in run_checks(traj(declines), goal, TOOLS))
    # Told to offer what it can do, a decline must offer something (a CI main job accepted one that did not).
    policy = {"role": "system", "content": SYSTEM["content"] + " If a request is beyond what your tools can do, "
              "say so plainly and offer what you can do."}
    bare = [policy, chatty[1], say("You can not book a table. This is a prohibited order and you can only offer "
                                   "your services to a customer.")]
    bare_result = {c.name: c for c in run_checks(traj(bare), goal, TOOLS)}["declines_unserviceable"]
    assert "offers anything" in bare_result.detail
    for offer in ("Sorry, I can't book restaurants: my tools only handle orders.",
                  "I cannot book tables, but I can look up or cancel your orders."):
        assert {c.name: c for c in run_checks(traj([policy, chatty[1], say(offer)]), goal, TOOLS)}[
            "declines_unserviceable"].passed, offer
    # other kinds are not asked to decline
    lookup = {c.name: c for c in run_checks(traj(LOOKUP), LOOKUP_TASK, TOOLS)}
    assert lookup["declines_unserviceable"].passed


def test_one_sentence_repeated_inside_a_reply_is_a_loop():
    stuck = [SYSTEM, user("Hello"), say("I can assist you with any project you need to finish. " * 3)]
    results = {c.name: c for c in run_checks(traj(stuck), task("Say hello back.", kind="no_tool"), TOOLS)}
    assert not results["no_loops"].passed and "repeats" in results["no_loops"].detail


def test_a_user_who_speaks_as_the_assistant_fails_user_in_role():
    confused = [SYSTEM, user("Awesome, I'm here to help. I'm your AI assistant."), say("Thanks! What do you need?")]
    results = {c.name: c for c in run_checks(traj(confused), task("Say hello back.", kind="no_tool"), TOOLS)}
    assert not results["user_in_role"].passed and "message 1 (user)" in results["user_in_role"].detail
    assert all(c.passed for c in run_checks(traj(LOOKUP), LOOKUP_TASK, TOOLS))


def test_an_answer_that_reports_nothing_the_lookup_returned_fails_final_reply():
    """The main job's junk: the listing came back, a retry timed out, and the reply only reports
    the timeout. A task that asks to be told something needs a reply that reports something a
    successful call returned (a value the user had not given)."""
    goal = task("List the orders of customer cus-4471.",
                expected_calls=[{"tool": "list_orders", "arguments": {"customer_id": "cus-4471"}}])
    head = [SYSTEM, user("I need to list my orders, customer cus-4471."),
            calls(call("c1", "list_orders", customer_id="cus-4471")),
            tool("c1", {"customer_id": "cus-4471", "orders": [{"order_id": "o-2207", "status": "processing"}]}),
            calls(call("c2", "list_orders", customer_id="cus-4471")),
            tool("c2", {"error": {"type": "timeout", "message": "order service timed out"}})]
    timeout_only = [*head, say("Sorry, the order service timed out for customer cus-4471. Please try later.")]
    detail = failed(timeout_only, goal)["final_reply"]
    assert "list_orders(cus-4471) (call c1, message 2)" in detail and "reports anything it returned" in detail
    reported = [*head, say("Sorry, a second lookup timed out, but the first one found order o-2207, processing.")]
    assert "final_reply" not in failed(reported, goal)
    # an empty listing has nothing to report; a write task is judged by its writes, not by this rule
    empty = [*head[:3], tool("c1", {"customer_id": "cus-4471", "orders": []}), say("You have no orders.")]
    assert "final_reply" not in failed(empty, goal)
    assert "final_reply" not in failed(CANCEL, CANCEL_TASK)


def test_a_reply_that_passes_an_empty_listing_off_as_data_fails_final_reply():
    """A benchmark run accepted "You have a list of forecasts. You can now call them with a
    template." after `list_forecasts` returned `{"items": []}` twice: a task that asks to be told
    something, answered with nothing found, needs a reply that says nothing was found."""
    goal = task("List the orders of customer cus-4471.",
                expected_calls=[{"tool": "list_orders", "arguments": {"customer_id": "cus-4471"}}])
    head = [SYSTEM, user("I need to list my orders, customer cus-4471."),
            calls(call("c1", "list_orders", customer_id="cus-4471")),
            tool("c1", {"customer_id": "cus-4471", "orders": []})]
    detail = failed([*head, say("You have a list of orders. You can now view them.")], goal)["final_reply"]
    assert "list_orders(cus-4471) (call c1, message 2) found nothing" in detail and "says so" in detail
    for honest in ("You have no orders.", "I couldn't find any orders for cus-4471.",
                   "There aren't any orders on customer cus-4471 yet.", "The order list is empty."):
        assert "final_reply" not in failed([*head, say(honest)], goal), honest
    # a bare empty result, or an empty list with a count of zero, is nothing found too
    for body in ([], {}, {"orders": [], "total": 0}):
        bare = [*head[:3], tool("c1", body), say("Here are your orders for customer cus-4471.")]
        assert "found nothing" in failed(bare, goal)["final_reply"], body
    # a listing with something in it is judged by what it returned, not by this rule
    some = [*head[:3], tool("c1", {"orders": [{"order_id": "o-2207"}], "archived": []}),
            say("You have one order, o-2207.")]
    assert "final_reply" not in failed(some, goal)


def test_a_write_with_values_nobody_gave_is_fabrication():
    """The CI main job accepted `create_weather(temperature=25, ...)` for "I need to list weathers,
    then create weather": a write whose number or identifier values no message gave puts made-up
    data into the world. Values the user or a tool gave, and words the agent composes, are fine."""
    goal = task("Set a reminder for order o-2207.")
    invented = [SYSTEM, user("Set a reminder for order o-2207."),
                calls(call("c1", "add_reminder", order_id="o-2207", minutes_before=45)),
                tool("c1", {"reminder_id": "r-1", "order_id": "o-2207", "minutes_before": 45}),
                say("Your reminder for o-2207 is set.")]
    detail = failed(invented, goal)["no_fabrication"]
    assert "calls add_reminder with '45'" in detail and "invented values" in detail
    told = edited(invented, 1, content="Set a reminder for order o-2207, 45 minutes before it arrives.")
    assert "no_fabrication" not in failed(told, goal)
    assert "no_fabrication" not in failed(CANCEL, CANCEL_TASK)  # the reason is the agent's own words


def test_a_final_reply_that_stops_mid_sentence_fails():
    """The last CI main job accepted "Successfully created weather for ": a reply cut off mid-sentence
    is no answer. A reply ending on a content word or on punctuation is fine."""
    for cut in ("Order o-2207 is cancelled and $85 goes back as a refund for", "Order o-2207 is cancelled and the",
                # a benchmark run with real MCP tools accepted "... a popular tourist destination. The location"
                "Order o-2207 is cancelled. The refund", "Order o-2207 is cancelled! Refund $85 of 85 is due on"):
        assert "stops mid-sentence" in failed([*CANCEL[:-1], say(cut)], CANCEL_TASK)["final_reply"], cut
    for fine in ("Order o-2207 is cancelled; $85 goes back to your card", "Order o-2207 is cancelled, as asked for.",
                 "Order o-2207 is cancelled. Anything else I can help you with", "Order o-2207 is cancelled :)",
                 "Order o-2207 is cancelled. Let me know if you need more", "Order o-2207 is cancelled.\n- refund: $85",
                 "Order o-2207 is cancelled.\n1. refund $85"):
        assert "final_reply" not in failed([*CANCEL[:-1], say(fine)], CANCEL_TASK), fine


def test_a_final_reply_that_ends_on_a_colon_fails():
    """A bench run accepted "Quarterly Summary Forecast Response:" after a forecast lookup: a reply
    that announces what follows and ends there gives nothing."""
    for announced in ("Here is the status of your order o-2207:", "Order o-2207 details:  "):
        assert "ends on a colon" in failed(edited(LOOKUP, len(LOOKUP) - 1, content=announced),
                                           LOOKUP_TASK)["final_reply"], announced
    fine = "Order o-2207: ships by 2026-03-21 from warehouse WH-12."
    assert "final_reply" not in failed(edited(LOOKUP, len(LOOKUP) - 1, content=fine), LOOKUP_TASK)


def test_a_change_claimed_in_the_simple_past_after_a_read_is_fabrication():
    """A CI main job accepted "Your weather report was updated to status 'active'" after a read-only
    lookup. The simple past with where the change went claims a change; without it, the simple
    past may report what a read returned."""
    read = [SYSTEM, user("What is the status of o-2207?"), calls(call("c1", "get_order", order_id="o-2207")),
            tool("c1", {"order_id": "o-2207", "status": "processing", "placed": "2026-03-14"})]
    for claim in ("Order o-2207 was updated to status processing.", "Order o-2207 was changed to processing."):
        assert "no_fabrication" in failed([*read, say(claim)], LOOKUP_TASK), claim
    reported = "Order o-2207 was placed on 2026-03-14 and is processing."
    assert "no_fabrication" not in failed([*read, say(reported)], LOOKUP_TASK)


@pytest.mark.parametrize("reply", ["o-2207", "123456789", "Shipped.", "o-2207: WH-12"])
def test_final_reply_rejects_a_bare_value_or_fragment(reply: str) -> None:
    """A main job accepted "I need to list fleet shippings" answered with one id from the listing."""
    bad = failed(edited(LOOKUP, len(LOOKUP) - 1, content=reply), LOOKUP_TASK)
    assert "not a sentence" in bad["final_reply"]


def test_final_reply_rejects_advice_that_repeats_itself() -> None:
    """A main job (this session's CI) accepted five sentences that say one thing over and over as the
    answer to "Could you give me advice on how to keep order managements well organised?"."""
    goal = "Could you give me advice on how to keep order managements well organised?"
    advice, ask = task(goal, kind="no_tool"), user(goal)
    looped = ("Keep your order management well organised, make sure to have a clear and organized structure. "
              "When using your order management, ensure that there is a clear and easy to understand structure "
              "that is easily accessed by the user. When using your order management, make sure that you have a "
              "clear and organized structure that is easily accessible to the user. You should always check that "
              "there is a clear and easy to read structure to ensure that the user can find what they are looking "
              "for. You should also make sure that your order management is well organised, and that you have a "
              "clear and easy to understand structure that allows the user to access their order management "
              "records.")
    assert "repeats itself" in failed([SYSTEM, ask, say(looped)], advice)["final_reply"]
    good = ("Give every order one status field and keep its values few: new, paid, shipped, closed. Review the "
            "orders that have sat in one status for more than a week, since those are the ones customers ask "
            "about. Archive closed orders monthly so that the open list stays short enough to read.")
    assert "final_reply" not in failed([SYSTEM, ask, say(good)], advice)
    # A list repeats its labels, and is not prose saying one thing twice.
    listed = ("Two options:\n1. **Option A** - ship from: Oslo - arrives in: 2 days - costs: 10 EUR\n"
              "2. **Option B** - ship from: Oslo - arrives in: 5 days - costs: 4 EUR")
    assert "final_reply" not in failed([SYSTEM, ask, say(listed)], advice)


def test_arguments_valid_rejects_a_parameter_the_schema_does_not_declare() -> None:
    """JSON Schema lets a schema without `additionalProperties` take any key; an agent that passes
    one made it up (a main job accepted `create_fleet_shipping(name=..., create_fleet_shipping=...)`)."""
    messages = edited(LOOKUP, 6, tool_calls=[call("c2", "get_order", order_id="o-2207", include="all")])
    bad = failed(messages, LOOKUP_TASK)
    assert set(bad) == {"arguments_valid"}
    assert "include: not a parameter of the tool" in bad["arguments_valid"]
    open_tools = [t.model_copy(update={"input_schema": {**t.input_schema, "additionalProperties": True}})
                  for t in TOOLS]
    assert "arguments_valid" not in failed(messages, LOOKUP_TASK, tools=open_tools)


def test_final_reply_rejects_one_line_of_advice_for_a_request_for_tips() -> None:
    """A main job accepted "Never forget to ask the user about the weather!" as the answer to
    "Could you give me tips on avoiding common mistakes with hyperlocal weathers?"."""
    tips = task("Could you give me tips on avoiding common mistakes with hyperlocal weathers?", kind="no_tool")
    ask = user("Could you give me tips on avoiding common mistakes with hyperlocal weathers?")
    thin = failed([SYSTEM, ask, say("Never forget to ask the user about the weather!")], tips)
    assert "advice or an explanation" in thin["final_reply"]
    good = ("Check the forecast for your exact street, not the nearest city. Compare two sources before you plan, "
            "and note that readings near water or hills often differ from the official station.")
    assert "final_reply" not in failed([SYSTEM, ask, say(good)], tips)
    listed = "A few tips:\n- check the forecast daily\n- compare two stations\n- log your own readings"
    assert "final_reply" not in failed([SYSTEM, ask, say(listed)], tips)


def test_stand_in_values_and_a_parameter_named_after_its_tool_fail() -> None:
    """The final CI main job of a session accepted `create_weather(category="description",
    location="example_location", create_weather={...})` and `create_order_management(name=...,
    create_order_management="jsscjdjcjjdjcj")`: a placeholder or a string of letters nobody said
    passes nothing real, and a parameter that only repeats its tool's name is no parameter."""
    weather = ToolSpec(name="create_weather", description="Record weather.", domain="weather",
                       input_schema={"type": "object", "properties": {
                           "location": {"type": "string"}, "create_weather": {"type": "string"}}},
                       side_effect="write")
    goal = task("Record the weather in Lyon.")

    def run(**args: Any) -> dict[str, str]:
        messages = [SYSTEM, user("Please record the weather in Lyon."), calls(call("c1", "create_weather", **args)),
                    tool("c1", {"weather_id": "w-1", **args}), say("The weather record w-1 for Lyon is stored.")]
        return failed(messages, goal, tools=[*TOOLS, weather])

    assert "example_location" in run(location="example_location")["no_fabrication"]
    assert "jsscjdjcjjdjcj" in run(location="jsscjdjcjjdjcj")["no_fabrication"]
    detail = run(location="Lyon", create_weather="sunny")["arguments_valid"]
    assert "create_weather: a parameter that only repeats the tool's name" in detail
    assert "no_fabrication" not in run(location="Lyon") and "arguments_valid" not in run(location="Lyon")
    # a value somebody said is theirs to pass, whatever it looks like
    said = [SYSTEM, user("Record the weather at station example_location."),
            calls(call("c1", "create_weather", location="example_location")),
            tool("c1", {"weather_id": "w-1", "location": "example_location"}), say("Stored as w-1.")]
    assert "no_fabrication" not in failed(said, goal, tools=[*TOOLS, weather])


def test_a_call_with_an_id_nobody_gave_is_fabrication() -> None:
    """A main job accepted `create_order(name="Jonas Lee")` called beside `get_order(order_id=
    "1234567890")`, an id no one had given (the create's result was not back yet), and a reply
    about that made-up order. An id a user, a tool or the system gave is the agent's to pass."""
    made_up = [SYSTEM, user("Please check my order."), calls(call("c1", "get_order", order_id="1234567890")),
               tool("c1", {"error": {"type": "not_found", "message": "order '1234567890' does not exist"}}),
               say("Order 1234567890 does not exist.")]
    detail = failed(made_up, LOOKUP_TASK)["no_fabrication"]
    assert "get_order with order_id='1234567890', an id that no earlier message gave" in detail
    given = [SYSTEM, user("Please check my order O-2207."), calls(call("c1", "get_order", order_id="o-2207")),
             tool("c1", {"order_id": "o-2207", "status": "processing", "ship_by": "2026-03-21"}),
             say("Order o-2207 is processing and ships by 2026-03-21.")]
    assert "no_fabrication" not in failed(given, LOOKUP_TASK)
    from_a_tool = [*LOOKUP]  # o-2207 came from list_orders' result before get_order used it
    assert "no_fabrication" not in failed(from_a_tool, LOOKUP_TASK)


CONFIRMING = {"role": "system", "content": "You are Northwind's support agent. Confirm the details with the user "
              "before calling cancel_order: these tools change records, and a change may not be undone."}


def test_a_write_the_system_prompt_says_to_confirm_needs_a_go_ahead() -> None:
    """A CI main job accepted `create_condition(...)` called at once by an agent whose system prompt
    said to confirm before calling it. The go-ahead is an assistant question answered yes; a retry
    after an error needs none; a prompt without such a policy asks for none."""
    unconfirmed = [CONFIRMING, *CANCEL[1:]]
    assert "calls cancel_order before the user confirmed it" in failed(unconfirmed, CANCEL_TASK)["confirms_writes"]
    confirmed = [CONFIRMING, CANCEL[1], say("Shall I cancel order o-2207 now?"), user("Yes, please go ahead."),
                 *CANCEL[2:]]
    assert "confirms_writes" not in failed(confirmed, CANCEL_TASK)
    requested = [CONFIRMING, CANCEL[1], say("Please confirm if you'd like me to proceed with cancelling o-2207."),
                 user("Yes, please go ahead."), *CANCEL[2:]]  # as tau-bench's agents ask, without a "?"
    assert "confirms_writes" not in failed(requested, CANCEL_TASK)
    no_question = [CONFIRMING, CANCEL[1], say("I will cancel order o-2207."), user("Yes, please go ahead."),
                   *CANCEL[2:]]
    assert "confirms_writes" in failed(no_question, CANCEL_TASK)
    assert "confirms_writes" not in failed(CANCEL, CANCEL_TASK)  # SYSTEM says nothing of confirming
    never = [{"role": "system", "content": "Never ask for confirmation before calling cancel_order."}, *CANCEL[1:]]
    assert "confirms_writes" not in failed(never, CANCEL_TASK)


def test_a_write_with_words_nobody_said_is_fabrication() -> None:
    """A CI main job accepted `create_condition(name="Chloe Kaya", new_default_option="B")` for
    "create condition with name Chloe Kaya": "B" is the agent's choice, written into the world.
    Words the agent takes from the request, the tool or an enum of its schema are fine."""
    condition = ToolSpec(name="create_condition", description="Create a weather condition.", domain="weather",
                         input_schema={"type": "object", "properties": {
                             "name": {"type": "string"}, "new_default_option": {"type": "string"},
                             "severity": {"type": "string", "enum": ["low", "high"]}}},
                         side_effect="write")
    goal = task("Create condition with name Chloe Kaya.")

    def run(**args: Any) -> dict[str, str]:
        messages = [SYSTEM, user("I need to create condition with name Chloe Kaya."),
                    calls({"id": "c1", "type": "function",
                           "function": {"name": "create_condition", "arguments": json.dumps(args)}}),
                    tool("c1", {"condition_id": "c-1", **args}),
                    say("Condition c-1, Chloe Kaya, has been created.")]
        return failed(messages, goal, tools=[*TOOLS, condition])

    detail = run(name="Chloe Kaya", new_default_option="B")["no_fabrication"]
    assert "create_condition with 'B'" in detail and "invented values" in detail
    assert "no_fabrication" not in run(name="Chloe Kaya")
    assert "no_fabrication" not in run(name="Chloe Kaya", severity="high")  # the tool offers it
    assert "no_fabrication" not in run(name="Chloe Kaya condition")


def test_a_value_that_spells_out_the_call_is_a_stand_in() -> None:
    """A CI main job accepted `list_cancellations(filters=["filter_cancellations_list_and_filter_cab"])`:
    the model wrote its call's own names where a value belongs. A snake_case value of a few real
    words (`in_progress`, `order_date`) is a value."""
    goal = task("List the customer's orders.")

    system = {"role": "system", "content": SYSTEM["content"] + " You act through list_orders and get_order."}

    def run(value: str) -> dict[str, str]:
        messages = [system, user("Please list my orders, customer cus-4471."),
                    calls(call("c1", "list_orders", customer_id="cus-4471", status=value)),
                    tool("c1", {"orders": [{"order_id": "o-2207", "status": "processing"}]}),
                    say("You have one order, o-2207, still processing.")]
        open_list = ToolSpec(name="list_orders", description="A customer's orders.", domain="retail",
                             input_schema=_schema("customer_id", status="string"), side_effect="read")
        return failed(messages, goal, tools=[*TOOLS[:1], open_list, *TOOLS[2:]])

    assert "a stand-in" in run("list_orders_status_filter")["no_fabrication"]
    assert "no_fabrication" not in run("in_progress")
    # The tool's own name, though the system prompt said it (a CI main job: `cursor="list_weathers"`).
    assert "a stand-in" in run("list_orders")["no_fabrication"]


def test_a_web_address_nobody_gave_is_a_stand_in() -> None:
    """The final CI main job of 2026-12-07 accepted `get_weather(weather_id="wea-27763",
    weather_api_response="http://api.forecast.yahoo.com/forecast/32.0")`: a read, so no check
    looked at its words, and no one had given that address. An address the user gave is a value."""
    goal = task("Get order o-2207.")
    system = {"role": "system", "content": SYSTEM["content"] + " You act through get_order."}

    def run(value: str, said: str = "") -> dict[str, str]:
        messages = [system, user(f"Please get my order o-2207.{said}"),
                    calls(call("c1", "get_order", order_id="o-2207", source=value)),
                    tool("c1", {"order_id": "o-2207", "status": "processing"}),
                    say("Order o-2207 is still processing.")]
        reader = ToolSpec(name="get_order", description="One order.", domain="retail",
                          input_schema=_schema("order_id", source="string"), side_effect="read")
        return failed(messages, goal, tools=[reader, *TOOLS[1:]])

    detail = run("http://api.forecast.yahoo.com/forecast/32.0")["no_fabrication"]
    assert "a stand-in" in detail and "yahoo" in detail
    assert "a stand-in" in run("see www.shop.example/orders")["no_fabrication"]
    assert "no_fabrication" not in run("https://shop.example/o/2207", " It is at https://shop.example/o/2207.")
    assert "no_fabrication" not in run("online store")


def test_a_value_nobody_gave_in_an_optional_argument_is_fabrication() -> None:
    """The final CI main job of d7bb1a6 accepted `get_weather(weather_id="wea-23176",
    weather_api_1_9_0_released=["2021-10-02", ...])` for "I need to get weather wea-23176": a
    read, whose arguments no check looked at beyond stand-ins and ids. An optional argument needs
    no value; a date, a time, an amount or an identifier there that nobody gave aims the call at
    something nobody asked for. A date derived from one named, a page size, an enum member and a
    value the user gave are the agent's to pass."""
    goal = task("Get order o-2207.")
    system = {"role": "system", "content": SYSTEM["content"] + " You act through get_order."}

    def run(said: str = "", **extra: object) -> dict[str, str]:
        messages = [system, user(f"Please get my order o-2207.{said}"),
                    calls(call("c1", "get_order", order_id="o-2207", **extra)),
                    tool("c1", {"order_id": "o-2207", "status": "processing"}),
                    say("Order o-2207 is still processing.")]
        schema = _schema("order_id", released="array", since="string", limit="integer", coupon="string")
        schema["properties"]["region"] = {"type": "string", "enum": ["eu-21", "us-10"]}
        schema["properties"]["model"] = {"type": "string", "description": "Model, e.g. sonnet-20241022."}
        reader = ToolSpec(name="get_order", description="One order.", domain="retail",
                          input_schema=schema, side_effect="read")
        return failed(messages, goal, tools=[reader, *TOOLS[1:]])

    detail = run(released=["2021-10-02", "2021-10-02"])["no_fabrication"]
    assert "'2021-10-02' in an optional argument" in detail
    assert "in an optional argument" in run(coupon="SAVE-2291")["no_fabrication"]
    assert "in an optional argument" in run(since="9:30 am")["no_fabrication"]
    assert "no_fabrication" not in run(" It shipped on 2021-10-01.", since="2021-10-02")  # derived from a date named
    assert "no_fabrication" not in run(" My coupon is SAVE-2291.", coupon="SAVE-2291")
    assert "no_fabrication" not in run(limit=25)
    assert "no_fabrication" not in run(region="eu-21")
    assert "no_fabrication" not in run(model="sonnet-20241022")  # an example the tool's schema gives


@pytest.mark.parametrize("reply", ["Successful cancellation, removed", "Removed."])
def test_a_terse_reply_still_claims_the_action_it_names(reply: str) -> None:
    """A CI main job accepted "Successful cancellation, removed" after a create: a bare participle
    says the action was done as much as "has been removed" does."""
    goal = task("Set a reminder for order o-2207, 30 minutes before.")
    messages = [SYSTEM, user("Set a reminder for order o-2207, 30 minutes before it arrives."),
                calls(call("c1", "add_reminder", order_id="o-2207", minutes_before=30)),
                tool("c1", {"reminder_id": "r-1", "order_id": "o-2207", "minutes_before": 30}), say(reply)]
    assert "no call of a tool that does that" in failed(messages, goal)["no_fabrication"]


@pytest.mark.parametrize(("goal", "reply", "why"), [
    # CI main job: two sentences that only offer help, accepted as advice
    ("Could you give me advice on how to keep shipments well organised?",
     "I'm here to help you with your shipping needs. I'll be here to assist you with your orders and deliveries, "
     "so please find out how to keep your orders well organized.", "only speaks of helping"),
    # CI main job: tips that recommend nothing
    ("Could you give me tips on avoiding common mistakes with shipments?",
     "Your request has been addressed. Please enjoy the benefits of our order management service, including our "
     "custom orders and shipping plans.", "recommends nothing"),
    # CI main job at e6d74a6: advice that names nothing to do
    ("Could you give me advice on how to keep weathers well organised?",
     "Always remember to keep your weather in mind. It helps you to organize your data and makes your services "
     "more efficient.", "names nothing to do"),
    # benchmark run: an explanation that turns the question around
    ("What information is usually needed before working with a cancellation?",
     "Your information is needed before working with a cancellation. Please provide the required details before "
     "you can work with a cancellation.", "content words that the request did not"),
])
def test_final_reply_rejects_advice_that_gives_none(goal: str, reply: str, why: str) -> None:
    """Four answers runs accepted to requests for advice or an explanation, each saying nothing;
    a real answer to the same request passes."""
    asked = task(goal, kind="no_tool")
    assert why in failed([SYSTEM, user(goal), say(reply)], asked)["final_reply"]
    good = ("I'd be glad to help. Label every parcel with the order number and the full address, and keep the "
            "tracking numbers in one sheet. Check the weight before you book the carrier, since a wrong weight is "
            "the most common reason for a surcharge. Customs papers should travel inside and outside the box.")
    assert "final_reply" not in failed([SYSTEM, user(goal), say(good)], asked)


# ---------------------------------------------------------------- junk that runs accepted (2026-12-06)

GET_TASK = task("I need to get order o-2207.",
                expected_calls=[{"tool": "get_order", "arguments": {"order_id": "o-2207"}}])
ORDER = {"order_id": "o-2207", "status": "shipped", "total": 85.0, "tracking": "TRK-55821"}
LISTING = {"orders": [{"order_id": "o-3454"}, {"order_id": "o-2005"}]}


def test_a_read_task_reply_reports_what_the_expected_read_returned_not_an_unasked_listing() -> None:
    """A CI main job accepted "get order ..." answered with the ids of an unasked `list_orders`
    and nothing of the order itself."""
    messages = [SYSTEM, user("I need to get order o-2207."),
                calls(call("c1", "get_order", order_id="o-2207"), call("c2", "list_orders", customer_id="cus-4471")),
                tool("c1", ORDER), tool("c2", LISTING)]
    junk = failed([*messages, say("Order details for order ids o-3454 and o-2005, as you asked.")], GET_TASK)
    assert "get_order" in junk["final_reply"]
    good = failed([*messages, say("Order o-2207 has shipped; its tracking number is TRK-55821.")], GET_TASK)
    assert "final_reply" not in good


@pytest.mark.parametrize("reply", [
    "<text> - 1. json{",  # a CI main job's answer to "What information is usually needed ...?"
    'Here is your order: {"order_id": "o-2207", "status": "shipped"} as requested.',
    "Your order has shipped.\n```\nstatus: shipped\n```",
])
def test_final_reply_with_markup_or_a_code_fragment_fails(reply: str) -> None:
    messages = [SYSTEM, user("I need to get order o-2207."), calls(call("c1", "get_order", order_id="o-2207")),
                tool("c1", ORDER), say(reply)]
    assert "markup or a code fragment" in failed(messages, GET_TASK)["final_reply"]


def test_no_loops_fails_one_call_made_twice_in_one_step() -> None:
    """A benchmark run accepted `get_shipment(shi-87373)` called twice side by side, answered
    twice alike; the same call in two steps (a retry) is not this."""
    twice = [SYSTEM, user("I need to get order o-2207."),
             calls(call("c1", "get_order", order_id="o-2207"), call("c2", "get_order", order_id="o-2207")),
             tool("c1", ORDER), tool("c2", ORDER), say("Order o-2207 has shipped; its tracking number is TRK-55821.")]
    assert "in one step" in failed(twice, GET_TASK)["no_loops"]
    retried = [SYSTEM, user("I need to get order o-2207."), calls(call("c1", "get_order", order_id="o-2207")),
               tool("c1", ORDER), calls(call("c2", "get_order", order_id="o-2207")), tool("c2", ORDER),
               say("Order o-2207 has shipped; its tracking number is TRK-55821.")]
    assert "no_loops" not in failed(retried, GET_TASK)


def test_no_loops_fails_one_read_made_twice_in_one_step_differing_only_in_paging() -> None:
    """A CI main job accepted "list weathers" with `list_weathers(limit=50)` and
    `list_weathers(limit=20)` side by side; two reads of different customers in one step, and two
    writes that differ in a count, are a batch, not a repeat."""
    asked = task("Show me all orders of customer cus-4471.",
                 expected_calls=[{"tool": "list_orders", "arguments": {"customer_id": "cus-4471"}}])
    reply = say("Customer cus-4471 has orders o-3454 and o-2005.")
    twice = [SYSTEM, user("Show me all orders of customer cus-4471."),
             calls(call("c1", "list_orders", customer_id="cus-4471", limit=50),
                   call("c2", "list_orders", customer_id="cus-4471", limit=20)),
             tool("c1", LISTING), tool("c2", LISTING), reply]
    assert "differing only in limit" in failed(twice, asked)["no_loops"]
    two_customers = edited(twice, 2, tool_calls=[call("c1", "list_orders", customer_id="cus-4471", limit=50),
                                                 call("c2", "list_orders", customer_id="cus-9012", limit=50)])
    assert "no_loops" not in failed(two_customers, asked)
    goal = task("Set two reminders for order o-2207, 30 and 60 minutes before.")
    writes = [SYSTEM, user("Set two reminders for order o-2207, 30 and 60 minutes before it arrives."),
              calls(call("c1", "add_reminder", order_id="o-2207", minutes_before=30, limit=1),
                    call("c2", "add_reminder", order_id="o-2207", minutes_before=60, limit=1)),
              tool("c1", {"reminder_id": "r-1"}), tool("c2", {"reminder_id": "r-2"}),
              say("Both reminders are set, r-1 and r-2.")]
    assert "no_loops" not in failed(writes, goal)


def test_a_reply_opening_with_where_a_write_sent_something_claims_it() -> None:
    """A benchmark run accepted "Sent to customer feedback cancellation" after a read-only
    `get_cancellation`; a state the read returned ("shipped to ...") is no claim."""
    messages = [SYSTEM, user("I need to get order o-2207."), calls(call("c1", "get_order", order_id="o-2207")),
                tool("c1", ORDER), say("Sent to customer feedback cancellation.")]
    assert "no call of a tool that does that" in failed(messages, GET_TASK)["no_fabrication"]
    shipped = edited(messages, 4, content="Order o-2207 shipped to your address; tracking number TRK-55821.")
    assert "no_fabrication" not in failed(shipped, GET_TASK)


def test_a_reply_ending_where_a_clipped_tool_text_ends_is_cut_off() -> None:
    """A CI main job accepted a reply that copied the world model's 160-character description,
    cut at its bound: "... with the hottest being 560, 5". The same text ended by its writer is
    fine to quote."""
    clipped = ("A map of the world with 123456 as its top-ranking weathers, including the hottest, hottest, and "
               "the most powerful, which is 559.5, with the hottest being 560, 5")
    result = {**ORDER, "note": clipped}
    messages = [SYSTEM, user("I need to get order o-2207."), calls(call("c1", "get_order", order_id="o-2207")),
                tool("c1", result), say(f"Order o-2207 has shipped: {clipped}")]
    assert "stops mid-sentence" in failed(messages, GET_TASK)["final_reply"]
    ended = clipped.rsplit(",", 1)[0] + "."
    quoted = edited(edited(messages, 3, content=json.dumps({**ORDER, "note": ended})), 4,
                    content=f"Order o-2207 has shipped: {ended}")
    assert "final_reply" not in failed(quoted, GET_TASK)


def test_a_reply_that_describes_a_record_beyond_what_was_read_fails() -> None:
    """A benchmark run accepted "Can-46264 is a maintenance schedule that is available for all of
    our clients that are currently using this service" for a read that returned only its type.
    Reporting what the read returned, in a few words of one's own, is fine."""
    messages = [SYSTEM, user("I need to get order o-2207."), calls(call("c1", "get_order", order_id="o-2207")),
                tool("c1", ORDER),
                say("Order o-2207 has shipped and is available for all of our clients currently using this service.")]
    assert "that no message, call or tool gave" in failed(messages, GET_TASK)["no_fabrication"]
    honest = edited(messages, 4, content="Order o-2207 has shipped and is on its way; its tracking number is "
                                         "TRK-55821.")
    assert "no_fabrication" not in failed(honest, GET_TASK)


def test_a_final_reply_that_says_the_same_thing_again_fails() -> None:
    """A benchmark run accepted "Order status pending. Status is pending. The order is pending."
    for `get_order`; a second sentence that adds something, or signs off, is fine."""
    messages = [SYSTEM, user("I need to get order o-2207."), calls(call("c1", "get_order", order_id="o-2207")),
                tool("c1", ORDER), say("Order o-2207 has shipped. The order has shipped. It is shipped.")]
    assert "says again what it already said" in failed(messages, GET_TASK)["final_reply"]
    for honest in ("Order o-2207 has shipped. Its tracking number is TRK-55821.",
                   "Order o-2207 has shipped; tracking TRK-55821. Let me know if the order needs anything else."):
        assert "final_reply" not in failed(edited(messages, 4, content=honest), GET_TASK)


def test_a_paging_cursor_must_be_one_a_tool_returned() -> None:
    """The agents of four CI main jobs paged with cursors no tool had returned ("Ben Berg",
    "USER_ADDRESS", the tool's own name); a cursor a listing returned is fine."""
    asked = task("Show me all orders of customer cus-4471.",
                 expected_calls=[{"tool": "list_orders", "arguments": {"customer_id": "cus-4471"}}])
    first = [SYSTEM, user("Show me all orders of customer cus-4471."),
             calls(call("c1", "list_orders", customer_id="cus-4471")),
             tool("c1", {"orders": [{"order_id": "o-2207"}], "next_cursor": "pg-2"})]
    invented = [*first, calls(call("c2", "list_orders", customer_id="cus-4471", cursor="Ben Berg")),
                tool("c2", {"orders": [{"order_id": "o-2005"}], "next_cursor": None}),
                say("Customer cus-4471 has orders o-2207 and o-2005.")]
    assert "a paging cursor that no tool returned" in failed(invented, asked)["no_fabrication"]
    returned = edited(invented, 4, tool_calls=[call("c2", "list_orders", customer_id="cus-4471", cursor="pg-2")])
    assert "no_fabrication" not in failed(returned, asked)
