"""The simulated user: plays the task's persona and pursues its goal, one message per turn.

Contract of `simulate_user_turn`:
- The model sees the conversation from the user's side (its own messages as `assistant`, the
  agent's replies as `user`; tool traffic is the agent's business and stays hidden).
- Withheld information is gated by code, not by trust: a value of `task.withheld` is put in the
  prompt only once an agent reply has asked for it (a word of its key, like `order` of
  `order_id`, appears in an agent reply). Before that the model does not know the value, so it
  cannot leak it.
- The reply is structured (`UserTurn`: message, done, reason) under a schema. Code keeps it
  consistent: the opening turn never ends the conversation, `done` with reason `continue` counts
  as `satisfied`, and an empty message on a continuing turn is replaced by a neutral nudge.
- Raises `StructuredOutputError` when the model never produces a valid turn; the episode turns
  that into termination `error`.
"""

from __future__ import annotations

import random
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from synth.judges.messages import message_text
from synth.llm import LLMClient
from synth.models import Task
from synth.prompts import render
from synth.rollout.metered import Usage, structured_with_usage

_GENERIC_KEY_WORDS = frozenset({"id", "the", "my", "your", "number", "num", "no", "code", "name", "value", "info"})
_OPENING = "(The assistant is waiting for your first message. State what you need.)"


class UserTurn(BaseModel):
    """One move of the simulated user."""

    message: str = Field(description="the user's next message to the assistant")
    done: bool = Field(description="true when the conversation should end")
    reason: Literal["continue", "satisfied", "stuck"] = "continue"


def key_words(key: str) -> list[str]:
    words = [w for w in re.split(r"[^a-z0-9]+", key.lower()) if w]
    specific = [w for w in words if w not in _GENERIC_KEY_WORDS and len(w) >= 3]
    return specific or words


def asked_keys(task: Task, messages: list[dict[str, Any]]) -> list[str]:
    """The withheld keys some agent reply has asked about (see module docstring)."""
    said = " ".join(message_text(m).lower() for m in messages if m.get("role") == "assistant")
    said_words = set(re.split(r"[^a-z0-9]+", said))
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


async def simulate_user_turn(
    task: Task,
    messages: list[dict[str, Any]],
    llm: LLMClient,
    rng: random.Random,
    *,
    seed: int | None = None,
    max_tokens: int = 160,
) -> tuple[UserTurn, Usage]:
    """The user's next turn given the canonical conversation so far (system message included or
    not: it is the agent's and is ignored). `seed` defaults to a draw from `rng`."""
    revealed_keys = asked_keys(task, messages)
    prompt = render(
        "synth.rollout", "user.j2", persona=task.persona, goal=task.goal,
        revealed={k: task.withheld[k] for k in revealed_keys},
        hidden=[k.replace("_", " ") for k in task.withheld if k not in revealed_keys],
    )
    chat = [{"role": "system", "content": prompt}, *user_view([m for m in messages if m.get("role") != "system"])]
    turn, usage = await structured_with_usage(
        llm, "user", chat, UserTurn, seed=seed if seed is not None else rng.randrange(2**31),
        name="user_turn", max_tokens=max_tokens,
    )
    assert isinstance(turn, UserTurn)
    opening = not any(m.get("role") == "user" for m in messages)
    message = turn.message.strip()
    if opening or not turn.done:
        fallback = task.goal if opening else "Please go on."
        return UserTurn(message=message or fallback, done=False, reason="continue"), usage
    return UserTurn(message=message, done=True, reason="stuck" if turn.reason == "stuck" else "satisfied"), usage
