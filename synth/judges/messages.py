"""Message helpers over the canonical OpenAI chat format, one home for what the judges, the exports
and the rollout each need to read out of a conversation.

The format (see `synth.models.Trajectory`): `{"role": "system" | "user" | "assistant" | "tool",
"content": ...}`; assistant messages may carry `tool_calls` (`{"id", "type": "function",
"function": {"name", "arguments"}}` with JSON-string `arguments`); every call is answered by one
`tool` message with its `tool_call_id`, after the assistant message that made it and before the
next assistant or user message (the answers to one batch may come in any order). Every helper
tolerates broken input (missing keys, `None` content, decoded arguments, OpenAI content parts),
because judging a malformed conversation must report the fault, not raise.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from synth.models import ExpectedCall
from synth.naming import name_words

Message = dict[str, Any]


def text(content: Any) -> str:
    """A message's content as plain text. Content may be None, a string, or OpenAI content parts
    (joined as the model reads them, without a separator); anything else is dumped as JSON."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return json.dumps(content, ensure_ascii=False)


def message_text(message: Message) -> str:
    """`text` of a message's `content`."""
    return text(message.get("content"))


@dataclass(frozen=True)
class ToolCall:
    """One call made by the agent, flattened out of an assistant message. `arguments` is None when
    the arguments are not a JSON object (invalid JSON, a list, a string), so checks can say so;
    an empty argument string counts as `{}`, as OpenAI servers send it for argument-less tools."""

    index: int  # position of the assistant message in the conversation
    id: str
    name: str
    arguments_text: str
    arguments: dict[str, Any] | None

    def describe(self) -> str:
        """`name(arguments)` as a person reads it in a failed check's detail."""
        if self.arguments is None:
            return f"{self.name}({self.arguments_text[:60]!r})"
        args = ", ".join(str(v) if isinstance(v, str | int | float) else json.dumps(v) for v in self.arguments.values())
        return f"{self.name}({args[:80]})"


def tool_calls(message: Message, index: int = 0) -> list[ToolCall]:
    """The tool calls of one message (none unless it is an assistant message)."""
    if message.get("role") != "assistant":
        return []
    out = []
    for call in message.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        fn = call.get("function") or {}
        raw = fn.get("arguments")
        args: dict[str, Any] | None
        if isinstance(raw, dict):  # tolerate decoded arguments, judge the content
            arguments_text, args = json.dumps(raw, ensure_ascii=False), raw
        else:
            arguments_text = raw if isinstance(raw, str) else ""
            try:
                parsed = json.loads(arguments_text) if arguments_text.strip() else {}
            except ValueError:
                parsed = None
            args = parsed if isinstance(parsed, dict) else None
        out.append(ToolCall(index, str(call.get("id") or ""), str(fn.get("name") or ""), arguments_text, args))
    return out


def same_words(text: str) -> str:
    """`text` reduced to its lowercase words and digits: two messages that give the same value say
    the same thing, whatever their case, punctuation and spacing (a repeated reply or user turn)."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def iter_tool_calls(messages: list[Message]) -> Iterator[ToolCall]:
    """Every tool call of a conversation, in order."""
    for i, msg in enumerate(messages):
        yield from tool_calls(msg, i)


# The markers with which a simulated user ends an episode (tau-bench, tau2-bench): the user is done,
# was handed to a human agent, or was asked for something its scenario does not cover. A final
# user message ending with one closes the conversation; it is not a turn the agent must answer.
STOP_MARKERS: tuple[str, ...] = ("###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###")


def stop_marker(message: Message) -> str | None:
    """The stop marker (`STOP_MARKERS`) a user message ends with ("Thanks! ###STOP###"), if any."""
    if message.get("role") != "user":
        return None
    body = message_text(message).strip()
    return next((m for m in STOP_MARKERS if body.endswith(m)), None)


def final_reply(messages: list[Message]) -> str | None:
    """The text of the last message when it is an assistant reply without tool calls: what the
    user was left with. A final user message ending with a stop marker (`stop_marker`) closes the
    conversation without asking for more, so the reply before it is the final one. None when the
    conversation ends on anything else."""
    if messages and stop_marker(messages[-1]) is not None:
        messages = messages[:-1]
    if not messages:
        return None
    last = messages[-1]
    if last.get("role") != "assistant" or last.get("tool_calls"):
        return None
    reply = message_text(last).strip()
    return reply or None


def is_error_observation(message: Message, step_errors: Collection[str] = frozenset()) -> bool:
    """True when a `tool` message reports a failure: its call id is in `step_errors` (the ids the
    rollout's step records mark with `error` or `fault`), its text starts with "error" (tau-bench's
    `Error: ...`), or it is a JSON object with a truthy `error` key or `"isError": true` (MCP)."""
    if message.get("tool_call_id") in step_errors:
        return True
    body = message_text(message).strip()
    if body.lower().startswith("error"):
        return True
    if not body.startswith("{"):
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and (bool(data.get("error")) or data.get("isError") is True)


# ---------------------------------------------------------------- calls and their answers

ProblemKind = Literal["no_id", "duplicate_id", "unanswered", "answered_twice", "early", "late", "orphan"]


@dataclass(frozen=True)
class AnswerProblem:
    """One break of the one-answer-per-call rule, at message `index` (where it shows: the call for
    `no_id`/`duplicate_id`/`unanswered`, the tool message otherwise)."""

    kind: ProblemKind
    index: int
    call_id: str
    detail: str


def answer_problems(messages: list[Message]) -> list[AnswerProblem]:
    """Every break of the answering rule (module docstring), in the order they show up.

    A call is open from its assistant message until answered; the next assistant or user message
    closes the batch, and an open call then is `unanswered`. A tool message answering a closed
    call is `late` (its call was already reported unanswered), one answering a call made further
    on is `early`, a second answer is `answered_twice`, one whose id no call has is `orphan`."""
    all_ids = {c.id for c in iter_tool_calls(messages) if c.id}
    problems: list[AnswerProblem] = []
    open_calls: dict[str, ToolCall] = {}
    made: set[str] = set()
    answered: set[str] = set()

    def close() -> None:
        for call in open_calls.values():
            problems.append(AnswerProblem(
                "unanswered", call.index, call.id,
                f"call {call.id} {call.name} (message {call.index}) has no tool message before the next turn"))
        open_calls.clear()

    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role in ("assistant", "user"):
            close()
            for call in tool_calls(msg, i):
                if not call.id:
                    problems.append(AnswerProblem("no_id", i, "", f"a {call.name} call (message {i}) has no id"))
                elif call.id in made:
                    problems.append(AnswerProblem("duplicate_id", i, call.id,
                                                  f"call id {call.id} is used again by {call.name} (message {i})"))
                else:
                    made.add(call.id)
                    open_calls[call.id] = call
        elif role == "tool":
            cid = str(msg.get("tool_call_id") or "")
            if cid in open_calls:
                del open_calls[cid]
                answered.add(cid)
            elif cid in answered:
                problems.append(AnswerProblem("answered_twice", i, cid, f"tool message {i} answers call {cid} again"))
            elif cid in made:
                problems.append(AnswerProblem("late", i, cid,
                                              f"tool message {i} answers call {cid} after a later turn began"))
            elif cid in all_ids:
                problems.append(AnswerProblem("early", i, cid,
                                              f"tool message {i} answers call {cid} before the call is made"))
            else:
                problems.append(AnswerProblem("orphan", i, cid,
                                              f"tool message {i} answers no call (tool_call_id {cid or 'missing'})"))
    close()
    return problems


def pending_calls(messages: list[Message]) -> list[ToolCall]:
    """The calls of the last assistant message that no later `tool` message answers yet: what a
    rollout must still answer before the conversation can go on."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            answered = {m.get("tool_call_id") for m in messages[index + 1:] if m.get("role") == "tool"}
            return [c for c in tool_calls(messages[index], index) if c.id not in answered]
    return []


def answers(messages: list[Message]) -> dict[str, int]:
    """Call id -> index of the first `tool` message answering it (wherever it stands)."""
    out: dict[str, int] = {}
    for i, msg in enumerate(messages):
        if msg.get("role") == "tool":
            out.setdefault(str(msg.get("tool_call_id") or ""), i)
    return out


# An agent asking for the go-ahead ("Shall I cancel it?", "Please confirm if you'd like me to proceed.").
_GO_AHEAD = re.compile(r"\b(?:confirm|proceed|go ahead|shall i|should i|do you want|would you like|is that (?:right|"
                       r"correct|ok)|are you sure|can i|may i|ok(?:ay)? to)\b", re.IGNORECASE)
_ASKS_WITHOUT_MARK = re.compile(r"\b(?:please confirm|confirm (?:if|whether|that)|let me know if)\b", re.IGNORECASE)


def asks_go_ahead(text: str) -> bool:
    """Whether an assistant text asks the user to let it act: a question of the go-ahead kind, or a
    request for it without a question mark ("Please confirm if you'd like me to proceed", as
    tau-bench's agents write). The simulated user says yes to it; `confirms_writes` needs it."""
    return bool(_GO_AHEAD.search(text)) and ("?" in text or bool(_ASKS_WITHOUT_MARK.search(text)))


# A system sentence asking the agent to get the user's go-ahead before it acts: a confirm word and
# "before" ("Confirm the details with the user before calling create_order", tau-bench's "Before taking
# any actions that update the booking database ... obtain explicit user confirmation (yes)").
_CONFIRM_WORD = re.compile(r"\b(?:confirm|confirmation|consent|approval)\b(?!\s+(?:number|code|id|email)\b)", re.I)
_BEFORE = re.compile(r"\b(?:before|prior to|first)\b", re.I)
_NO_CONFIRM = re.compile(r"\b(?:never|don't|do not|no need to|without)\b[^.]*\b(?:confirm|confirmation|consent|ask)",
                         re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# A user message that gives the go-ahead.
_AFFIRM = re.compile(r"\b(?:yes|yeah|yep|yup|sure|correct|confirm(?:ed)?|go ahead|proceed|please do|"
                     r"that's right|that is right|sounds good|absolutely|of course|ok(?:ay)?)\b", re.I)


def confirmation_policy(messages: list[Message], writers: Collection[str]) -> set[str]:
    """The tools of `writers` (the toolset's writing tools) that the system prompt asks the agent to
    confirm before calling: those its confirming sentences name, or all of them when one names
    none. Negated sentences ("never ask for confirmation") ask for nothing."""
    system = tuple(message_text(m) for m in messages if m.get("role") == "system")
    return set(_confirmation_policy(system, frozenset(writers)))


@functools.lru_cache(maxsize=1024)
def _confirmation_policy(system: tuple[str, ...], writers: frozenset[str]) -> frozenset[str]:
    # Remembered: the rollout asks at every agent step and the judge again, of one unchanging
    # system prompt (~2% of a fake-backend run's event loop).
    named: set[str] = set()
    every = False
    for text in system:
        for sentence in _SENTENCE.split(text):
            if not _CONFIRM_WORD.search(sentence) or not _BEFORE.search(sentence) or _NO_CONFIRM.search(sentence):
                continue
            found = {n for n in writers if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", sentence)}
            named |= found
            every = every or not found
    return writers if every else frozenset(named)


def go_ahead(messages: list[Message], governed: Collection[str],
             succeeded: Callable[[ToolCall], bool]) -> tuple[list[str], bool]:
    """(problems, whether the agent has the user's go-ahead now) over a conversation: a call of a
    `governed` tool needs, since the last such call that `succeeded` (a retry after an error needs
    no second go-ahead), an assistant question or request for the go-ahead (`asks_go_ahead`)
    followed by a user message that gives it ("Yes, please go ahead."). A problem names each
    assistant message that calls one without it."""
    problems = []
    asked = confirmed = False
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role == "user" and asked and _AFFIRM.search(message_text(msg)):
            confirmed = True
        if role != "assistant":
            continue
        writes = [c for c in iter_tool_calls([msg]) if c.name in governed]
        if writes and not confirmed:
            problems.append(f"message {i} (assistant) calls {', '.join(dict.fromkeys(c.name for c in writes))} "
                            "before the user confirmed it, which the system prompt requires")
        if any(succeeded(c) for c in writes):
            asked = confirmed = False
        if "?" in message_text(msg) or asks_go_ahead(message_text(msg)):
            asked = True
    return problems, confirmed


def writes_awaiting_go_ahead(messages: list[Message], writers: Collection[str]) -> set[str]:
    """The tools of `writers` the agent may not call yet: those its system prompt says to confirm
    first (`confirmation_policy`) while the user has not given the go-ahead (`go_ahead`). The
    rollout leaves them out of the constrained agent's action grammar, so every write it
    generates is one the user agreed to; `confirms_writes` judges the same rule."""
    governed = confirmation_policy(messages, writers)
    if not governed:
        return set()
    at = answers(messages)
    _, confirmed = go_ahead(messages, governed,
                            lambda c: c.id in at and not is_error_observation(messages[at[c.id]]))
    return set() if confirmed else governed


# ---------------------------------------------------------------- ids the conversation has given

# An id as people and APIs write it: letters, digits and `_.:-`, at least one digit ("o-1001", "42").
_GIVEN_ID = re.compile(r"(?<![\w.:-])(?=[\w.:-]*\d)[A-Za-z0-9][\w.:-]{0,39}")
# Tokens of text that are quantities, not ids: a decimal, a date, a time ("387.98", "2025-05-18",
# "14:30"). A benchmark run offered a temperature the user gave as `weather_id`, and the agent
# looked up weather "387.98" three times. A tool's value under an id-named key stays an id.
_NOT_AN_ID = re.compile(r"\d+\.\d+|\d{4}-\d{1,2}-\d{1,2}(?:[T ][\d:.]+Z?)?|\d{1,2}:\d{2}(?::\d{2})?")
# Ids offered to the agent's grammar at most (the most recent first go).
MAX_GIVEN_IDS = 24


def is_id_name(name: str) -> bool:
    """`name` names an id: its last word is "id" (`order_id`, `customerId`, `id`), as
    `no_fabrication` reads argument names."""
    return name_words(name)[-1:] == ["id"]


def given_ids(messages: list[Message], limit: int = MAX_GIVEN_IDS) -> list[str]:
    """The ids the user or a tool has given so far, each once, in the order they came (at most
    `limit`, the latest): a token with a digit in their text that is no decimal, date or time
    (`_NOT_AN_ID`), and any value a tool result holds under an id-named key. An id argument may
    take these and no other: `no_fabrication` fails a call with an id nobody gave, or with the
    user's withheld value before the user or a tool said it. The rollout offers only these to the
    constrained agent's grammar (`agent_step`)."""
    found: dict[str, None] = {}
    for msg in messages:
        if msg.get("role") not in ("user", "tool"):
            continue
        text = message_text(msg)
        for token in _GIVEN_ID.findall(text):
            if not _NOT_AN_ID.fullmatch(token.rstrip(".:-_")):
                found.setdefault(token.rstrip(".:-_"), None)
        if msg.get("role") == "tool":
            try:
                result = json.loads(text)
            except ValueError:
                continue
            for key, value in json_leaves(result):
                text = str(value).strip()
                if is_id_name(key) and not isinstance(value, float) and 0 < len(text) <= 40:
                    found.setdefault(text, None)
    ids = [v for v in found if v]
    return ids[-limit:]


def is_cursor_name(name: str) -> bool:
    """`name` names a paging cursor: `cursor`, `next_cursor`, `pageToken`, `next_page_token`,
    `continuation_token`. Its value is opaque: only a tool can give one."""
    words = name_words(name)
    return "cursor" in words or "continuation" in words or (
        "token" in words and bool({"page", "next"} & set(words)))


def given_cursors(messages: list[Message]) -> set[str]:
    """The paging cursors that tool results returned so far (a string or integer under a
    cursor-named key, `is_cursor_name`): the only values a cursor argument may take."""
    found: set[str] = set()
    for msg in messages:
        if msg.get("role") != "tool":
            continue
        try:
            result = json.loads(message_text(msg))
        except ValueError:
            continue
        found |= {str(v).strip() for k, v in json_leaves(result)
                  if is_cursor_name(k) and not isinstance(v, float) and str(v).strip()}
    return found


def json_leaves(value: Any, key: str = "") -> Iterator[tuple[str, str | int | float]]:
    """(key, value) of each string and number (not boolean) of a JSON value, at any depth: the
    key is that of the nearest object holding it (a list's items take their list's key), "" at
    the top. The one walk over a call's arguments or a tool's result that the checks and
    `given_ids` share."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from json_leaves(v, str(k))
    elif isinstance(value, list):
        for v in value:
            yield from json_leaves(v, key)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        yield key, value


# ---------------------------------------------------------------- what a task asked for

# A simulated user who speaks as the assistant ("I'm your AI assistant", "How can I help you?").
ASSISTANT_VOICE = re.compile(
    r"\b(?:i'?m|i am) (?:an? |your |the )?(?:ai |virtual |digital |helpful )?(?:assistant|language model|chatbot)\b"
    r"|\bas an ai\b|\bhow (?:can|may) i (?:help|assist) you\b"
    r"|\b(?:i'?m|i am) (?:here|ready|happy|glad|always happy|more than happy) to (?:help|assist)\b"
    r"|\b(?:i'?m|i am) (?:unable|not able) to (?:help|assist)\b|\bhow can i be of (?:help|assistance)\b"
    r"|\blet me know (?:what|how) (?:i|we) can (?:do|help)\b",
    re.I,
)


def call_matches(call: ToolCall, expected: ExpectedCall) -> bool:
    """`call` is the expected call: same tool, every key argument equal (strings case- and
    space-insensitively)."""
    if call.name != expected.tool:
        return False
    args = call.arguments or {}
    for key, want in expected.arguments.items():
        if key not in args:
            return False
        got = args[key]
        if isinstance(want, str) and isinstance(got, str):
            if want.strip().lower() != got.strip().lower():
                return False
        elif want != got:
            return False
    return True


def state_mismatches(expected: Any, actual: Any, path: str) -> list[str]:
    """Where `actual` falls short of `expected`: every key of an expected object is present with a
    matching value (extra keys are fine); a null expected value means the key must be gone (JSON
    merge-patch's delete); other values compare equal (1 == 1.0)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path or '(root)'} is {json.dumps(actual)[:60]}, expected an object"]
        out = []
        for key, want in expected.items():
            where = f"{path}.{key}" if path else str(key)
            if want is None:
                if actual.get(key) is not None:
                    out.append(f"{where} still exists, expected it gone")
            elif key not in actual:
                out.append(f"{where} is missing (expected {json.dumps(want, ensure_ascii=False)[:60]})")
            else:
                out += state_mismatches(want, actual[key], where)
        return out
    if expected != actual:
        return [f"{path} is {json.dumps(actual, ensure_ascii=False)[:60]}, "
                f"expected {json.dumps(expected, ensure_ascii=False)[:60]}"]
    return []
