"""The simulated user: states a request, answers what the agent asks, and ends the episode.

A 135M model cannot be trusted to play a user: it answers "12:39 am", introduces itself as an AI
assistant, echoes its own instructions, and never says which order it means. So by default
(`mode="scripted"`) code plays the user the way a real one behaves, and the model only lends its
voice where that is safe:
- **Opening**: the task's request with the facts the user states (`opening_request`). The model may
  rephrase it in the persona's voice (`rephrase=True`), and the rephrasing is used only when it
  keeps every stated value and passes `user_turn_problem`; otherwise the request goes verbatim.
- **Later turns**, after each agent reply: when the world shows the goal done (`goal_reached`: every
  expected call succeeded with its key arguments, and the expected end state holds; for tasks that
  need no tool, the agent has answered), the user ends the episode, satisfied. Otherwise they answer
  what the agent asked: the withheld facts it asked for (`asked_keys`; a value is never given before
  it is asked for), "yes" to a request for confirmation, "that is all I know" to any other
  question; to a reply that neither asks nor finishes, a nudge. After `patience` turns without
  progress (low 1, medium 2, high 3) the user gives up (`stuck`).
- `mode="model"` gives a capable model the whole turn (message, done, reason) under a schema; its
  turns still pass `user_turn_problem` (retried with another seed, then the scripted turn is used),
  and the opening never ends the conversation.

Every turn a model wrote is checked by `user_turn_problem`: empty, not a sentence, role-confused
("I'm an AI assistant"), echoing the prompt, or repeating an earlier user turn is rejected.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from synth.judges.messages import (
    ASSISTANT_VOICE,
    answers,
    asks_go_ahead,
    call_matches,
    is_error_observation,
    iter_tool_calls,
    message_text,
    same_words,
    state_mismatches,
)
from synth.llm import LLMClient, LLMError, Usage
from synth.models import Task
from synth.naming import name_words
from synth.prompts import render
from synth.settings import UserMode

_GENERIC_KEY_WORDS = frozenset({"id", "the", "my", "your", "number", "num", "no", "code", "name", "value", "info"})
_OPENING = "(The assistant is waiting for your first message. State what you need.)"
_DETAILS = re.compile(r"\s*\(Details:\s*(?P<body>.*?)\.?\)\s*$", re.DOTALL)
_PROMPT_ECHO = re.compile(r"\b(?:your (?:next )?message|done\s*=|reason\s*=|the assistant should|one to three "
                          r"(?:short )?sentences|you are \w+, a person|write only)\b", re.IGNORECASE)
_PATIENCE = {"low": 1, "medium": 2, "high": 3}
_NUDGES = (
    "That doesn't look done yet. Could you please take care of it?",
    "I still need this done. Can you do it with the details I gave you?",
    "Please try once more; it's still not done.",
)
_NOTHING_MORE = (
    "I don't have anything more than what I told you. Please go ahead with that.",
    "That's all the information I have. Can you continue with it?",
    "I've told you everything I know about it. Please work with that.",
)
# A stalled user never repeats itself: each list has a line for every turn of the highest patience.
_CONFIRMATIONS = ("Yes, please go ahead.", "Yes, that's right. Please do it.")


class UserTurn(BaseModel):
    """One move of the simulated user."""

    message: str = Field(description="the user's next message to the assistant")
    done: bool = Field(description="true when the conversation should end")
    reason: Literal["continue", "satisfied", "stuck"] = "continue"


# ---------------------------------------------------------------- what the user knows and sees


def key_words(key: str) -> list[str]:
    words = [w for w in re.split(r"[^a-z0-9]+", key.lower()) if w]
    specific = [w for w in words if w not in _GENERIC_KEY_WORDS and len(w) >= 3]
    return specific or words


def _words(text: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", text.lower()))


def asked_keys(task: Task, messages: list[dict[str, Any]]) -> list[str]:
    """The withheld keys some agent reply has asked about (a word of the key, like `order` of
    `order_id`, appears in an agent reply)."""
    said = " ".join(message_text(m) for m in messages if m.get("role") == "assistant")
    said_words = _words(said)
    return [key for key in task.withheld if any(w in said_words for w in key_words(key))]


def user_view(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as the user sees it: roles flipped, tool traffic dropped."""
    view: list[dict[str, Any]] = []
    for m in messages:
        content = message_text(m)
        if m.get("role") == "user":
            view.append({"role": "assistant", "content": content})
        elif m.get("role") == "assistant" and content:
            view.append({"role": "user", "content": content})
    if not view or view[-1]["role"] == "assistant":
        view.append({"role": "user", "content": _OPENING})
    return view


def _humanize(key: str) -> str:
    return " ".join(name_words(key))


def opening_request(task: Task) -> str:
    """The first message: the task's request, its appended details (`(Details: a 1; b 2.)`)
    turned into a sentence."""
    goal = task.goal.strip()
    match = _DETAILS.search(goal)
    if match is None:
        return goal
    head = goal[: match.start()].rstrip()
    details = ", ".join(part.strip() for part in match.group("body").split(";") if part.strip())
    if not head.endswith((".", "!", "?")):
        head += "."
    return f"{head} For reference: {details}."


def stated_values(task: Task) -> list[str]:
    """The key argument values the request states (each must survive a rephrasing)."""
    request = opening_request(task).lower()
    values = {str(v) for call in task.rubric.expected_calls for v in call.arguments.values()
              if isinstance(v, str | int | float) and not isinstance(v, bool) and str(v).lower() in request}
    return sorted(values - set(task.withheld.values()))


def goal_reached(task: Task, messages: list[dict[str, Any]], state: dict[str, Any]) -> bool:
    """Whether the world shows the user's goal done, as a user would see it: for a tool task, every
    expected call succeeded with its key arguments and the expected end state holds; for a task that
    needs no tool, the agent has answered."""
    replied = any(m.get("role") == "assistant" and message_text(m).strip() and not m.get("tool_calls")
                  for m in messages)
    if task.kind != "tool":
        return replied
    at = answers(messages)
    ok = [c for c in iter_tool_calls(messages) if c.id in at and not is_error_observation(messages[at[c.id]])]
    if not all(any(call_matches(c, e) for c in ok) for e in task.rubric.expected_calls):
        return False
    expected = task.rubric.expected_state
    return replied and not (expected and state_mismatches(expected, state, ""))


# ---------------------------------------------------------------- turns a model wrote


def user_turn_problem(message: str, previous: list[str], prompt: str = "") -> str | None:
    """Why `message` cannot be the user's next turn (None when it can): empty; not a sentence
    (fewer than two words of letters: "12:39 am"); role-confused (speaks as the assistant);
    echoes the prompt (its instructions, or six words in a row of it); repeats an earlier user turn."""
    text = message.strip()
    if not text:
        return "empty"
    if len(re.findall(r"[A-Za-z]{2,}", text)) < 2:
        return f"not a sentence: {text[:60]!r}"
    if ASSISTANT_VOICE.search(text):
        return f"role-confused (speaks as the assistant): {text[:60]!r}"
    if _PROMPT_ECHO.search(text):
        return f"echoes the prompt: {text[:60]!r}"
    words = same_words(text).split()
    if prompt and len(words) >= 6:
        prompt_text = f" {same_words(prompt)} "
        if any(f" {' '.join(words[i:i + 6])} " in prompt_text for i in range(len(words) - 5)):
            return f"echoes the prompt: {text[:60]!r}"
    if same_words(text) in {same_words(p) for p in previous}:
        return f"repeats an earlier turn: {text[:60]!r}"
    return None


# ---------------------------------------------------------------- the turn


def _user_messages(messages: list[dict[str, Any]]) -> list[str]:
    return [message_text(m) for m in messages if m.get("role") == "user"]


def _last_reply(messages: list[dict[str, Any]]) -> str:
    return next((message_text(m) for m in reversed(messages)
                 if m.get("role") == "assistant" and message_text(m).strip()), "")


def _pick(options: tuple[str, ...], previous: list[str]) -> str:
    said = {same_words(p) for p in previous}
    return next((o for o in options if same_words(o) not in said), options[-1])


def scripted_turn(task: Task, messages: list[dict[str, Any]], state: dict[str, Any]) -> UserTurn:
    """The user's next turn, decided in code (see the module docstring)."""
    previous = _user_messages(messages)
    if not previous:
        return UserTurn(message=opening_request(task), done=False)
    if goal_reached(task, messages, state):
        return UserTurn(message="Thanks, that's all I needed.", done=True, reason="satisfied")
    reply = _last_reply(messages)
    given = " ".join(previous).lower()
    newly_asked = [k for k in asked_keys(task, [{"role": "assistant", "content": reply}])
                   if str(task.withheld[k]).lower() not in given]
    if newly_asked:
        facts = " and ".join(f"my {_humanize(k)} is {task.withheld[k]}" for k in newly_asked)
        # An answer to a question; offered unasked when the reply only named the record.
        return UserTurn(message=f"Sure, {facts}." if "?" in reply else f"In case you need it, {facts}.", done=False)
    stalled = sum(1 for p in previous if same_words(p) in {same_words(t) for t in (*_NUDGES, *_NOTHING_MORE)})
    if stalled >= _PATIENCE.get(task.persona.patience, 2):
        return UserTurn(message="Never mind, I'll sort it out another way.", done=True, reason="stuck")
    if asks_go_ahead(reply) and task.kind == "tool":
        confirmation = _pick(_CONFIRMATIONS, previous)
        if same_words(confirmation) not in {same_words(p) for p in previous}:
            return UserTurn(message=confirmation, done=False)
    if "?" in reply:
        return UserTurn(message=_pick(_NOTHING_MORE, previous), done=False)
    return UserTurn(message=_pick(_NUDGES, previous), done=False)


async def rephrase_opening(task: Task, request: str, llm: LLMClient, *, seed: int,
                           max_tokens: int) -> tuple[str | None, Usage]:
    """The request in the persona's voice, or None when the model's version loses a stated value,
    drifts off the subject (`keeps_the_subject`) or fails `user_turn_problem`."""
    prompt = render("synth.rollout", "user_rephrase.j2", persona=task.persona, request=request)
    usage = Usage()
    try:
        result = await llm.chat("user", [{"role": "user", "content": prompt}], seed=seed, max_tokens=max_tokens)
    except LLMError:
        return None, usage
    usage.add(Usage(result.prompt_tokens, result.completion_tokens, result.latency_s, 1, int(result.cache_hit)))
    text = " ".join((result.content or "").split()).strip().strip('"')
    if result.cut_off or user_turn_problem(text, [], prompt) is not None:
        return None, usage
    if not all(value.lower() in text.lower() for value in stated_values(task)):
        return None, usage
    if not keeps_the_subject(request, text):
        return None, usage
    return text, usage


_STOPWORDS = frozenset({"need", "want", "would", "like", "please", "with", "then", "that", "this", "have", "when",
                        "what", "your", "from", "into", "about", "could", "tell", "know", "there", "their"})


def keeps_the_subject(request: str, text: str) -> bool:
    """Whether a rephrasing still talks about what the request does: at least half of the
    request's content words (four letters or more, compared by their first five) are in it."""
    def stems(words: str) -> set[str]:
        return {w[:5] for w in re.findall(r"[a-z]{4,}", words.lower()) if w not in _STOPWORDS}

    wanted = stems(request)
    return not wanted or len(wanted & stems(text)) * 2 >= len(wanted)


async def model_turn(task: Task, messages: list[dict[str, Any]], llm: LLMClient, *, seed: int,
                     max_tokens: int, attempts: int = 3) -> tuple[UserTurn | None, Usage]:
    """A turn the model wrote (`mode="model"`), None when no attempt passes `user_turn_problem`.
    Withheld values reach the prompt only once an agent reply asked for them."""
    revealed_keys = asked_keys(task, messages)
    prompt = render(
        "synth.rollout", "user.j2", persona=task.persona, goal=task.goal,
        revealed={k: task.withheld[k] for k in revealed_keys},
        hidden=[_humanize(k) for k in task.withheld if k not in revealed_keys],
    )
    chat = [{"role": "system", "content": prompt}, *user_view([m for m in messages if m.get("role") != "system"])]
    opening = not any(m.get("role") == "user" for m in messages)
    usage = Usage()
    previous = _user_messages(messages)
    for attempt in range(attempts):
        try:
            turn, used = await llm.structured_with_usage("user", chat, UserTurn, seed=seed + attempt * 104729,
                                                         name="user_turn", max_tokens=max_tokens)
        except LLMError:
            return None, usage
        usage.add(used)
        assert isinstance(turn, UserTurn)
        if turn.done and not opening:
            return UserTurn(message=turn.message.strip(), done=True,
                            reason="stuck" if turn.reason == "stuck" else "satisfied"), usage
        if user_turn_problem(turn.message, previous, prompt) is None:
            return UserTurn(message=turn.message.strip(), done=False), usage
    return None, usage


async def simulate_user_turn(
    task: Task,
    messages: list[dict[str, Any]],
    llm: LLMClient,
    *,
    state: dict[str, Any] | None = None,
    mode: UserMode = "scripted",
    rephrase: bool = True,
    seed: int = 0,
    max_tokens: int = 160,
) -> tuple[UserTurn, Usage]:
    """The user's next turn given the conversation so far (the agent's system message is ignored)
    and the world `state` (see the module docstring). Never raises for a bad model reply: the
    scripted turn stands in."""
    state = state or {}
    if mode == "model":
        turn, usage = await model_turn(task, messages, llm, seed=seed, max_tokens=max_tokens)
        return (turn or scripted_turn(task, messages, state)), usage
    turn = scripted_turn(task, messages, state)
    if rephrase and not _user_messages(messages):
        text, usage = await rephrase_opening(task, turn.message, llm, seed=seed, max_tokens=max_tokens)
        return (UserTurn(message=text, done=False) if text else turn), usage
    return turn, Usage()
