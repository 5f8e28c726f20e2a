"""Deterministic checks of a trajectory: the part of judging a model cannot talk its way past.

`run_checks(trajectory, task, tools)` returns one `CheckResult` per check, always in the order of
`CHECK_NAMES`, so a stored judgment lists every check (passed or not) and the dataset can count
failures per check. A check that does not apply (e.g. `expected_calls` for a rubric without
expected calls) passes with a detail saying why; a failed check's detail names the fault (the
call, its id, the message index, the value), so one line of a judgment says what went wrong.

The trajectory is the canonical OpenAI chat format (see `synth.judges.messages`). A tool
observation is an error when its step record has `error` or `fault` set, when its content is
JSON with an `error` key (or `"isError": true`), or when its text starts with "error".

What each check accepts, in short (the function docstrings say why):
- `calls_answered`: every call answered once, after its call and before the next turn;
- `turn_limit`: ended by the user (`user_done`), within `max_turns` user turns;
- `expected_calls`: the rubric's calls were made and did not return errors;
- `checkpoints`: each checkpoint appears as a whole phrase in one tool result or assistant text;
- `no_fabrication`: every value the agent asserts was seen earlier (whole-token match);
- `errors_handled`: the first text after an error acknowledges it, no text claims it worked;
- `no_unrequested_writes`: every call of a writing tool is one the task asks for;
- `final_state`: the world ends in the task's expected state, where it states one.
A conversation read from a file without a termination gets one from `infer_termination`.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import jsonschema

from synth.judges.messages import (
    ASSISTANT_VOICE,
    ToolCall,
    answer_problems,
    answers,
    call_matches,
    confirmation_policy,
    given_cursors,
    go_ahead,
    is_cursor_name,
    is_error_observation,
    is_id_name,
    iter_tool_calls,
    message_text,
    state_mismatches,
    stop_marker,
)
from synth.judges.messages import final_reply as _final_reply_of
from synth.judges.messages import json_leaves as _leaves
from synth.models import CheckResult, ExpectedCall, Task, Termination, ToolSpec, Trajectory
from synth.naming import looks_like_words, name_words, placeholder_value, repeats_tool_name
from synth.rollout.crud import merge_patch
from synth.settings import DEFAULT_MAX_TURNS

__all__ = [
    "CHECK_NAMES", "DEFAULT_MAX_TURNS", "ToolCall", "claims", "final_reply", "infer_termination",
    "is_error_observation", "iter_tool_calls", "run_checks", "tool_writes", "tools_from_trajectory",
]

LOOP_THRESHOLD = 3

CHECK_NAMES = (
    "tools_exist",
    "arguments_valid",
    "calls_answered",
    "no_loops",
    "turn_limit",
    "expected_calls",
    "checkpoints",
    "final_reply",
    "no_fabrication",
    "errors_handled",
    "no_needless_tools",
    "final_state",
    "no_unrequested_writes",
    "confirms_writes",
    "declines_unserviceable",
    "user_in_role",
)

# The only termination that means the task ran its course: the user ended the conversation
# satisfied. `user_stuck` (the user gave up), `agent_gave_up`, `max_turns` and `error` do not.
USER_ENDED: frozenset[str] = frozenset({"user_done"})


def final_reply(trajectory: Trajectory) -> str | None:
    """The text of the trajectory's last message when it is an assistant reply without calls."""
    return _final_reply_of(trajectory.messages)


def infer_termination(messages: list[dict[str, Any]]) -> Termination:
    """The termination to record for a conversation read from a file that gives none: `user_done`
    when it ends normally (an assistant reply without calls after the last user message, every
    call answered), else `error`. A missing field must not make a cut-off conversation look
    finished, nor a finished one look cut off. The tau-bench convention of a user ending the
    episode with a stop marker after the agent's reply (`messages.STOP_MARKERS`) is read as the
    user ending it: `###STOP###` and `###TRANSFER###` (handed to a human) as `user_done`,
    `###OUT-OF-SCOPE###` (the user's scenario cannot go on) as `user_stuck`."""
    if _final_reply_of(messages) is None or answer_problems(messages):
        return "error"
    if messages and stop_marker(messages[-1]) == "###OUT-OF-SCOPE###":
        return "user_stuck"
    return "user_done"


# ---------------------------------------------------------------- words


# A word of letters (an apostrophe inside allowed), not part of an id like `o-1001` or `ev3391`.
_WORD = re.compile(r"(?<![\w-])[^\W\d_]{1,}(?:'[^\W\d_]+)?(?![\w-])")
_NEGATION = re.compile(r"\b(not|never|no longer|without|avoid|refrain|don't|doesn't|shouldn't|mustn't|nor)\b|n't\b",
                       re.I)


@functools.lru_cache(maxsize=65536)  # pure, and called for every word of every judged message
def _stem(word: str) -> str:
    """A crude English stem, enough to match a tool's verb or noun to the words of a goal
    (`cancel`, `cancelled`, `cancellation`; `reminder`, `reminders`; `create`, `creation`)."""
    w = word.lower()
    w = {"paid": "pay", "sent": "send", "bought": "buy", "made": "make"}.get(w, w)
    stripped = False
    for suffix, repl in (("ifications", "ify"), ("ification", "ify"), ("ations", ""), ("ation", ""),
                         ("ions", ""), ("ion", ""), ("ments", ""), ("ment", ""), ("ings", ""), ("ing", ""),
                         ("ied", "y"), ("ies", "y"), ("ed", ""), ("es", "e"), ("al", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= (4 if suffix.startswith("ation") else 3):
            w, stripped = w[: -len(suffix)] + repl, True
            break
    else:
        if w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
            w = w[:-1]
    if stripped and len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiou":
        w = w[:-1]  # cancell(ed) -> cancel, transferr(ed) -> transfer, but address stays
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]  # create -> creat, to meet creation -> creat
    if w.endswith("i") and len(w) > 3:
        w = w[:-1] + "y"  # modifi -> modify
    return w


def _word_stems(text: str) -> set[str]:
    """The `_stem`s of the words of `text`, lowercased: what the checks compare texts by."""
    return {_stem(w) for w in _WORD.findall(text.lower())}


def _content_stems(text: str) -> set[str]:
    """`_word_stems` of the words of three letters or more: what an answer says, for the advice rules."""
    return {_stem(w) for w in _WORD.findall(text.lower()) if len(w) >= 3}


# Verbs that name reading when they lead a tool's name; the first word wins over any later one
# (`get_transfer_status` reads).
_READ_VERBS = frozenset({
    "get", "list", "search", "find", "read", "fetch", "retrieve", "lookup", "look", "show", "view", "describe",
    "query", "check", "count", "calculate", "compute", "estimate", "validate", "verify", "preview", "browse",
    "load", "think", "inspect", "summarize", "download", "export",
})
# Groups of verbs that ask for the same kind of write: a goal saying "schedule" calls for
# `create_event`, "change" for `modify_address`, "cancel" for `delete_booking`.
_WRITE_GROUPS: tuple[frozenset[str], ...] = tuple(frozenset(g.split()) for g in (
    "create add new register book place open insert make submit schedule post save upload reserve setup",
    "update set edit modify change rename patch assign move reschedule switch upgrade downgrade replace adjust",
    "delete remove drop unregister cancel close archive unsubscribe revoke",
    "send email message notify share forward invite reply publish",
    "pay charge purchase buy checkout",
    "transfer wire",
    "return refund",
    "exchange swap",
    "approve reject grant complete mark enable disable toggle reset apply redeem subscribe",
    "execute run start stop deploy install merge push commit write",
))
_WRITE_VERBS = frozenset().union(*_WRITE_GROUPS)


def _tool_verbs(name: str) -> list[str]:
    """The write verbs in a tool's name (none when its first word is a read verb)."""
    words = name_words(name)
    if not words or words[0] in _READ_VERBS:
        return []
    return [w for w in words if w in _WRITE_VERBS]


def _tool_nouns(name: str) -> list[str]:
    """Stems of the non-verb words of a tool's name: what it acts on."""
    return [_stem(w) for w in name_words(name)
            if w not in _WRITE_VERBS and w not in _READ_VERBS and len(w) > 2 and w not in ("by", "for", "all")]


def tool_writes(tool: ToolSpec) -> bool:
    """Whether calling `tool` changes the world. MCP annotations decide when present
    (`readOnlyHint`, `destructiveHint`); then `side_effect` when the tool states it (`"write"`
    always counts; `"read"` only when set explicitly, since it is the model's default); else the
    verbs of its name: a read verb first (`get_`, `list_`, `search_`) reads, a write verb anywhere
    (`cancel_order`, `order_cancel`, `send_certificate`) writes."""
    annotations = tool.annotations
    if annotations.get("readOnlyHint") is True:
        return False
    if annotations.get("readOnlyHint") is False or annotations.get("destructiveHint") is True:
        return True
    if tool.side_effect == "write":
        return True
    if "side_effect" in tool.model_fields_set:
        return False
    return bool(_tool_verbs(tool.name))


# ---------------------------------------------------------------- claims and known values

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_MONTH_RE = (r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
             r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_ISO_DATE = re.compile(r"(?<![\w-])(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?!\d)")
_US_DATE = re.compile(r"(?<![\w/.-])(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})(?![\w/])")
_MONTH_DAY = re.compile(rf"\b{_MONTH_RE}\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(\d{{4}})\b)?", re.I)
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH_RE}\b(?:,?\s+(\d{{4}})\b)?", re.I)
_CLOCK = re.compile(r"(?<![\d:.])(\d{1,2}):(\d{2})(?::\d{2}(?:\.\d+)?)?(?:\s*([ap])\.?\s?m\b\.?)?(?![\d:])", re.I)
_HOUR = re.compile(r"(?<![\d:.])(\d{1,2})\s*([ap])\.?\s?m\b\.?", re.I)
_MONEY = re.compile(
    rf"[$€£¥]\s?({_NUM})|\b(?:usd|eur|gbp)\s?({_NUM})|(?<![\w.])({_NUM})\s?(?:usd|eur|gbp|dollars?|euros?|pounds?|bucks)\b",
    re.I)
_DURATION = re.compile(
    rf"(?<![\w.])({_NUM})(?:\s?-\s?|\s)?(?:business\s+|working\s+|calendar\s+)?"
    r"(seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|nights?|weeks?|months?|years?)\b", re.I)
_LIST_MARKER = re.compile(r"(?m)^\s*(?:\d{1,2}[.)]|[-*•])\s+")
_TOKEN = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d])|[A-Za-z0-9]+(?:[-_.#/][A-Za-z0-9]+)*")
_ORDINAL = re.compile(r"^\d+(?:st|nd|rd|th)$", re.I)
_NUMBER_UNIT = re.compile(r"^(\d+(?:\.\d+)?)([a-z]{1,3})$", re.I)
_DIGIT_GROUPS = re.compile(r"^[\d.,]+(?:[-/][\d.,]+)+$")


@dataclass(frozen=True)
class Claim:
    """A value asserted in a text: `kind` (number, money, duration, time, date, id), the words as
    written, and the normalised keys any one of which, seen earlier, supports it."""

    kind: str
    surface: str
    keys: tuple[str, ...]
    amount: Decimal | None = None  # numbers and money: the value, for sums of known amounts


def _number(raw: str) -> Decimal | None:
    try:
        return Decimal(raw.replace(",", ""))
    except InvalidOperation:
        return None


def _num_key(value: Decimal) -> str:
    """`1,250.00` and `1250` -> `n:1250`; `12.50` -> `n:12.5`."""
    if value == value.to_integral_value():
        return f"n:{int(value)}"
    return "n:" + format(value.normalize(), "f")


def _date_claim(surface: str, year: str | None, month: int, day: int) -> Claim | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    key = f"d:{month:02d}-{day:02d}"
    if year is None:
        return Claim("date", surface, (key,))
    y = int(year) + (2000 if len(year) == 2 else 0)
    return Claim("date", surface, (f"d:{y}-{month:02d}-{day:02d}",))


def _time_claim(surface: str, hour: int, minute: int, half: str | None) -> Claim | None:
    if half:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half.lower() == "p" else 0)
        return Claim("time", surface, (f"t:{hour:02d}:{minute:02d}",)) if minute < 60 else None
    if hour > 23 or minute > 59:
        return None
    keys = [f"t:{hour:02d}:{minute:02d}"]
    if 1 <= hour <= 11:  # "9:00" may be the 21:00 of a tool result
        keys.append(f"t:{hour + 12:02d}:{minute:02d}")
    return Claim("time", surface, tuple(keys))


def _amount_claim(kind: str, surface: str, raw: str) -> Claim | None:
    value = _number(raw)
    return None if value is None else Claim(kind, surface, (_num_key(value),), value)


def _month(name: str) -> int:
    return _MONTHS[name[:3].lower()]


_EXTRACTORS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], Claim | None]], ...] = (
    (_ISO_DATE, lambda m: _date_claim(m[0], m[1], int(m[2]), int(m[3]))),
    (_US_DATE, lambda m: _date_claim(m[0], m[3], int(m[1]), int(m[2]))),
    (_MONTH_DAY, lambda m: _date_claim(m[0], m[3], _month(m[1]), int(m[2]))),
    (_DAY_MONTH, lambda m: _date_claim(m[0], m[3], _month(m[2]), int(m[1]))),
    (_CLOCK, lambda m: _time_claim(m[0], int(m[1]), int(m[2]), m[3])),
    (_HOUR, lambda m: _time_claim(m[0], int(m[1]), 0, m[2])),
    (_MONEY, lambda m: _amount_claim("money", m[0], m[1] or m[2] or m[3])),
    (_DURATION, lambda m: _amount_claim("duration", m[0], m[1])),
)


def _token_claims(token: str) -> list[Claim]:
    """Claims of one plain token: a number, digit groups (`5-7`, `555-0123`), a number with a unit
    (`100GB`), or an identifier (letters and digits: `ev-3391`, `#W2378156`, `ZFA04Y`)."""
    has_digit = any(ch.isdigit() for ch in token)
    if not has_digit or _ORDINAL.match(token):
        return []
    if re.fullmatch(_NUM, token):
        claim = _amount_claim("number", token, token)
        return [claim] if claim else []
    if _DIGIT_GROUPS.match(token):
        return [c for part in re.split(r"[-/]", token) if part.strip(".,")
                for c in _token_claims(part.strip(".,"))]
    unit = _NUMBER_UNIT.match(token)
    if unit:
        claim = _amount_claim("number", token, unit[1])
        return [claim] if claim else []
    return [Claim("id", token, ("id:" + re.sub(r"[-_.#/]", "", token.lower()),))]


def claims(text: str) -> list[Claim]:
    """Every value `text` asserts: dates, times, money, durations (each normalised: "9:30 am" is
    `t:09:30`, "March 14" is `d:03-14`, "$1,250.00" is `n:1250`), then numbers and identifiers
    among the remaining whole tokens. The digits of an identifier are not a number of their own
    (`ev-3391` does not assert 3391), and list markers ("1.", "- ") are not claims."""
    return list(_claims(text))


@functools.lru_cache(maxsize=512)
def _claims(text: str) -> tuple[Claim, ...]:
    """`claims`, remembered: the checks ask for the claims of one conversation's messages again
    and again (every earlier message, at each failed call), which was ~8% of a run's CPU on the
    fake backend. Claims are frozen, so sharing them is safe."""
    out: list[Claim] = []
    rest = _LIST_MARKER.sub(" ", text)
    for pattern, build in _EXTRACTORS:
        pieces: list[str] = []
        last = 0
        for m in pattern.finditer(rest):
            claim = build(m)
            if claim is None:
                continue
            out.append(claim)
            pieces += [rest[last:m.start()], " " * (m.end() - m.start())]
            last = m.end()
        rest = "".join(pieces) + rest[last:]
    for m in _TOKEN.finditer(rest):
        out += _token_claims(m[0].rstrip("."))
    return tuple(out)


def _is_asserted(claim: Claim) -> bool:
    """Which claims the agent must back: dates, times and money always; numbers, durations and
    identifiers with two digits or more. A single digit is a count, a list marker or a rating that
    a reply may restate in its own words ("2 items", "step 3"): too weak to tell fabrication from
    paraphrase, and the cost of flagging it is rejecting correct trajectories."""
    if claim.kind in ("date", "time", "money"):
        return True
    if claim.kind == "id":
        return sum(ch.isdigit() for ch in claim.surface) >= 2
    return len(re.sub(r"\D", "", claim.keys[0]).lstrip("0")) >= 2


def _json_values(body: str) -> list[str]:
    """The keys and scalar values of a JSON tool result as text, one item each (so escaped unicode
    and `1250.0` read as written); none when `body` is not JSON."""
    try:
        data = json.loads(body)
    except ValueError:
        return []
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                parts.append(str(k))
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif value is not None and not isinstance(value, bool):
            parts.append(str(value))

    walk(data)
    return parts


def _json_text(body: str) -> str:
    """A tool result's text followed by its decoded JSON values, one per line."""
    return "\n".join([body, *_json_values(body)])


def _column_totals(body: str) -> set[Decimal]:
    """Sums of the numbers under one key of a JSON tool result (the prices of an order's items):
    a reply may state their total."""
    try:
        data = json.loads(body)
    except ValueError:
        return set()
    columns: dict[str, list[Decimal]] = defaultdict(list)

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            columns[key].append(Decimal(str(value)))

    walk(data, "")
    return {sum(v, Decimal(0)) for v in columns.values() if len(v) >= 2}


class _Known:
    """What the agent could legitimately know at a point of the conversation: every key claimed by
    the system, user and tool messages so far and by the arguments of its own calls, the date and
    time parts as numbers, and the amounts a reply may derive (a sum or difference of two amounts,
    a column total of one tool result)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.amounts: set[Decimal] = set()
        self.id_words: dict[str, set[str]] = defaultdict(set)  # digits -> words of identifiers ending in them
        self.kinds: set[str] = set()  # the kinds of value seen: a date may be derived only where one was

    def add(self, text: str, *, tool_result: bool = False) -> None:
        body = _json_text(text) if tool_result else text
        for m in _WORDED_ID.finditer(body):
            self.id_words[m[2]].add(" ".join(name_words(m[1])))
        for claim in claims(body):
            self.kinds.add(claim.kind)
            self.keys.update(claim.keys[:1] if claim.kind == "time" else claim.keys)  # "9:00" seen is not 21:00
            if claim.kind == "date":
                self.keys.update(f"n:{int(p)}" for p in re.findall(r"\d+", claim.keys[0]))
                self.keys.add("d:" + claim.keys[0][-5:])
            elif claim.kind == "time":
                self.keys.update(f"n:{int(p)}" for p in re.findall(r"\d+", claim.keys[0]))
            elif claim.amount is not None:
                self.amounts.add(claim.amount)
        if tool_result:
            totals = _column_totals(text)
            self.amounts |= totals
            self.keys.update(_num_key(v) for v in totals)

    def supports(self, claim: Claim, text: str = "") -> bool:
        if any(k in self.keys for k in claim.keys):
            return True
        if claim.kind == "number" and self._restates_id(claim, text):
            return True
        if claim.kind == "date" and len(claim.keys[0]) > 7:  # a year the texts give apart from the day
            key = claim.keys[0]
            return f"d:{key[-5:]}" in self.keys and f"n:{int(key[2:6])}" in self.keys
        if claim.amount is not None and (claim.kind == "money" or claim.amount != claim.amount.to_integral_value()):
            return any(claim.amount - a in self.amounts or a - claim.amount in self.amounts for a in self.amounts)
        return False

    def backs(self, claim: Claim, text: str) -> bool:
        """A value a call may pass: seen (`supports`) or derived from amounts seen (`derives`)."""
        return self.supports(claim, text) or self.derives(claim)

    def derives(self, claim: Claim) -> bool:
        """`claim` is an amount that is the sum or difference of two amounts seen (a payment of two
        flights' prices): a call may pass it on, whatever its kind."""
        value = claim.amount
        return value is not None and any(value - a in self.amounts or a - value in self.amounts
                                         for a in self.amounts)

    def _restates_id(self, claim: Claim, text: str) -> bool:
        """`text` names an identifier seen earlier by its words and digits, the separator written
        out ("Gift Card 6276644" for `gift_card_6276644`, "certificate #7504069"): the words must
        stand right before the number, so a bare `3391` is still not backed by `ev-3391`."""
        digits = claim.surface.replace(",", "")
        for words in self.id_words.get(digits, ()):
            sep = r"[\s_-]+"
            pattern = (r"(?<![\w-])" + sep.join(re.escape(w) for w in words.split())
                       + r"[\s_-]*(?:#|no\.?|number|id)?[\s:#-]*" + re.escape(claim.surface) + r"(?![\w-])")
            if re.search(pattern, text, re.I):
                return True
        return False


# An identifier made of words and a digit group (`gift_card_6276644`, `ev-3391`, `Order #123`):
# group 1 its words, group 2 its digits.
_WORDED_ID = re.compile(r"(?<![\w-])((?:[A-Za-z]+[_-])*[A-Za-z]+)[_-](\d{2,})(?![\w-])")


# ---------------------------------------------------------------- the checks


class _Context:
    """What several checks need, computed once."""

    def __init__(self, trajectory: Trajectory, task: Task, tools: list[ToolSpec], max_turns: int) -> None:
        self.trajectory = trajectory
        self.task = task
        self.tools = {t.name: t for t in tools}
        self.max_turns = max_turns
        self.messages = trajectory.messages
        self.calls = list(iter_tool_calls(self.messages))
        step_errors = {s.tool_call_id for s in trajectory.steps
                       if s.actor == "tool" and s.tool_call_id and (s.error or s.fault)}
        self.answer_at = answers(self.messages)
        self.errors = {cid for cid, i in self.answer_at.items()
                       if is_error_observation(self.messages[i], step_errors)}

    def succeeded(self, call: ToolCall) -> bool:
        """The call was answered, and not with an error."""
        return call.id in self.answer_at and call.id not in self.errors

    def where(self, call: ToolCall) -> str:
        return f"{call.describe()} (call {call.id or 'without id'}, message {call.index})"


def _result(name: str, problems: list[str], ok_detail: str = "") -> CheckResult:
    if problems:
        return CheckResult(name=name, passed=False, detail="; ".join(problems))
    return CheckResult(name=name, passed=True, detail=ok_detail)


def _check_tools_exist(ctx: _Context) -> CheckResult:
    problems = [f"{c.name!r} is not in the toolset: {ctx.where(c)}" for c in ctx.calls if c.name not in ctx.tools]
    return _result("tools_exist", problems, f"{len(ctx.calls)} call(s), all in the toolset")


def _check_arguments_valid(ctx: _Context) -> CheckResult:
    problems = []
    for c in ctx.calls:
        where = f"{c.name} call {c.id or 'without id'} (message {c.index})"
        if c.arguments is None:
            problems.append(f"{where}: arguments are not a JSON object: {c.arguments_text[:60]!r}")
            continue
        tool = ctx.tools.get(c.name)
        if tool is None:
            continue  # tools_exist reports it
        try:
            validator_cls = jsonschema.validators.validator_for(tool.input_schema)
            error = jsonschema.exceptions.best_match(validator_cls(tool.input_schema).iter_errors(c.arguments))
        except jsonschema.exceptions.SchemaError as exc:
            problems.append(f"{where}: the tool's inputSchema is invalid: {exc.message[:80]}")
            continue
        if error is not None:
            path = "/".join(str(p) for p in error.absolute_path) or "(root)"
            problems.append(f"{where}: {path}: {error.message[:120]}")
            continue
        problems += [f"{where}: {path}: not a parameter of the tool" for path in _undeclared(tool.input_schema,
                                                                                            c.arguments)]
        problems += [f"{where}: {key}: a parameter that only repeats the tool's name is no parameter a real API "
                     "has, and its value says nothing" for key in c.arguments if repeats_tool_name(key, c.name)]
    return _result("arguments_valid", problems)


def _undeclared(schema: Any, value: Any, path: str = "(root)") -> list[str]:
    """Paths of the keys in `value` that `schema` does not declare, where it declares properties
    and says nothing of others. JSON Schema lets such a schema take any extra key, but an agent
    that passes one has made up a parameter ("create_fleet_shipping": "name:john,..." beside
    `name`), and the tool would ignore it or fail. An explicit `additionalProperties` or
    `patternProperties` is obeyed as written (the validator has already checked it)."""
    if not isinstance(schema, dict) or not isinstance(value, dict):
        return []
    props = schema.get("properties")
    if not isinstance(props, dict):
        return []
    out: list[str] = []
    open_ = "additionalProperties" in schema or "patternProperties" in schema
    for key, item in value.items():
        where = key if path == "(root)" else f"{path}/{key}"
        if key in props:
            out += _undeclared(props[key], item, where)
        elif not open_:
            out.append(where)
    return out


def _check_calls_answered(ctx: _Context) -> CheckResult:
    """Each call is answered by one `tool` message after its assistant message and before the next
    assistant or user message (`messages.answer_problems`): an answer placed before its call, or
    after the agent spoke again, is not an observation the agent acted on."""
    return _result("calls_answered", [p.detail for p in answer_problems(ctx.messages)])


def _check_no_loops(ctx: _Context) -> CheckResult:
    """No call repeated `LOOP_THRESHOLD` times with the same arguments, no read asked twice in one
    step, and no assistant text said twice in a row (an agent stuck on one sentence is not a worked
    example)."""
    by_call: dict[tuple[str, str], list[ToolCall]] = defaultdict(list)
    for c in ctx.calls:
        args = json.dumps(c.arguments, sort_keys=True) if c.arguments is not None else c.arguments_text
        by_call[(c.name, args)].append(c)
    loops = [f"{same[0].describe()} made {len(same)} times (messages {', '.join(str(c.index) for c in same)})"
             for same in by_call.values() if len(same) >= LOOP_THRESHOLD]
    for same, paging in _repeated_in_one_step(ctx):
        if len(same) >= LOOP_THRESHOLD and not paging:
            continue  # reported above
        how = f", differing only in {', '.join(paging)}" if paging else ""
        loops.append(f"{same[0].describe()} made {len(same)} times in one step (message {same[0].index}){how}")
    previous: tuple[int, str] | None = None
    for i, msg in enumerate(ctx.messages):
        if msg.get("role") != "assistant":
            continue
        said = " ".join(message_text(msg).lower().split())
        if not said:
            continue
        if previous is not None and previous[1] == said:
            loops.append(f"messages {previous[0]} and {i} (assistant) say the same: {said[:60]!r}")
        previous = (i, said)
        sentences = Counter(x for x in (" ".join(part.split()) for part in _SENTENCE_SPLIT.split(said))
                            if len(x.split()) >= 4)
        stuck = [x for x, n in sentences.items() if n >= LOOP_THRESHOLD]
        if stuck:
            loops.append(f"message {i} (assistant) repeats {stuck[0][:60]!r} {sentences[stuck[0]]} times")
    return _result("no_loops", loops)


_SENTENCE_SPLIT = re.compile(r"[.!?\n]+")
# Arguments that only say how much of one answer to return (compared lower-case without "_"):
# two reads in one step that differ in nothing else ask the same question twice.
_PAGING_ARGUMENTS = frozenset({"limit", "maxresults", "pagesize", "perpage", "numresults", "maxitems", "topk",
                               "offset", "page", "cursor", "pagetoken"})


def _repeated_in_one_step(ctx: _Context) -> list[tuple[list[ToolCall], list[str]]]:
    """(calls, the paging arguments they differ in) for each set of calls of one tool made twice or
    more in one assistant message with the same arguments, or, for a read, arguments that differ
    only in `_PAGING_ARGUMENTS`: a batch that asks the same thing twice side by side teaches
    nothing but the repeat. A benchmark run accepted "get shipment shi-87373" with
    `get_shipment(shi-87373)` called twice in one step and answered twice alike, and a CI main job
    "list weathers" with `list_weathers(limit=50)` and `list_weathers(limit=20)` side by side."""
    groups: dict[tuple[int, str, str], list[ToolCall]] = defaultdict(list)
    for c in ctx.calls:
        tool = ctx.tools.get(c.name)
        args: Any = c.arguments if c.arguments is not None else c.arguments_text
        if isinstance(args, dict) and tool is not None and not tool_writes(tool):
            args = {k: v for k, v in args.items() if k.lower().replace("_", "") not in _PAGING_ARGUMENTS}
        groups[(c.index, c.name, json.dumps(args, sort_keys=True))].append(c)
    out = []
    for calls in groups.values():
        if len(calls) < 2:
            continue
        differ = sorted({k for c in calls for k, v in (c.arguments or {}).items()
                         if any((o.arguments or {}).get(k) != v for o in calls)})
        out.append((calls, differ))
    return out


def _check_turn_limit(ctx: _Context) -> CheckResult:
    """The user ended the episode (`USER_ENDED`) within `max_turns` user turns. Any other end
    (the turn budget ran out, a model failed, the agent or the user gave up) means the task did
    not run its course, however tidy the last message looks."""
    n = ctx.trajectory.n_turns
    problems = []
    if n > ctx.max_turns:
        problems.append(f"{n} user turns > limit {ctx.max_turns}")
    termination = ctx.trajectory.termination
    if termination not in USER_ENDED:
        problems.append(f"episode ended by {termination}, not by the user ending it (user_done)")
    return _result("turn_limit", problems, f"{n} user turn(s), ended by {termination}")


def _describe_expected(e: ExpectedCall) -> str:
    return f"{e.tool}({json.dumps(e.arguments, sort_keys=True, ensure_ascii=False)})"


def _check_expected_calls(ctx: _Context) -> CheckResult:
    """Each expected call matches a call that succeeded: a call answered with an error did not do
    what the task needs, whatever the agent said next. A `tool` task without expected calls still
    needs one call: a conversation that never tried a tool is no worked example of a task that
    needs tools, however polite its refusals (one whose calls failed may be, when it says so)."""
    rubric = ctx.task.rubric
    if not rubric.expected_calls:
        if ctx.task.kind == "tool" and not ctx.calls:
            return _result("expected_calls", ["a tool task, but the agent called no tool"])
        return CheckResult(name="expected_calls", passed=True, detail="rubric expects no particular call")
    ok = [c for c in ctx.calls if ctx.succeeded(c)]
    problems = []
    for e in rubric.expected_calls:
        if any(call_matches(c, e) for c in ok):
            continue
        failed = [c for c in ctx.calls if call_matches(c, e)]
        if failed:
            problems.append(f"{_describe_expected(e)} only returned errors or no answer: "
                            + ", ".join(f"call {c.id} (message {c.index})" for c in failed))
        else:
            problems.append(f"missing: {_describe_expected(e)}")
    if problems:
        return _result("expected_calls", problems)
    if rubric.ordered:  # greedy in-order matching over the successful calls
        pos = 0
        for e in rubric.expected_calls:
            found = next((k for k in range(pos, len(ok)) if call_matches(ok[k], e)), None)
            if found is None:
                order = " -> ".join(x.tool for x in rubric.expected_calls)
                return _result("expected_calls", [f"calls out of order: {_describe_expected(e)} comes too early "
                                                  f"(want {order})"])
            pos = found + 1
    return _result("expected_calls", [])


def _phrase(text: str) -> re.Pattern[str]:
    """A whole-token, case-insensitive pattern of a phrase (any whitespace between its words)."""
    words = [re.escape(w) for w in text.split()]
    return re.compile(r"(?<![\w-])" + r"\s+".join(words) + r"(?![\w-])", re.I)


def _check_checkpoints(ctx: _Context) -> CheckResult:
    """Each checkpoint appears as a whole phrase in one tool result or assistant text (`ev-3391`
    is not found in `prev-33910`, nor across two messages)."""
    points = ctx.task.rubric.checkpoints
    if not points:
        return CheckResult(name="checkpoints", passed=True, detail="rubric has no checkpoints")
    texts = [t for m in ctx.messages if m.get("role") in ("tool", "assistant")
             for t in [message_text(m), *(_json_values(message_text(m)) if m.get("role") == "tool" else [])]]
    missing = [p for p in points if p.strip() and not any(_phrase(p).search(t) for t in texts)]
    return _result("checkpoints", [f"checkpoint {p!r} never appears in a tool result or reply" for p in missing])


def _check_final_reply(ctx: _Context) -> CheckResult:
    """The episode ends on an assistant reply, and, unless a call succeeded, one that says more
    than the user's own words (`_only_restates`)."""
    if final_reply(ctx.trajectory) is None:
        messages = ctx.messages[:-1] if ctx.messages and stop_marker(ctx.messages[-1]) else ctx.messages
        if not messages:
            return _result("final_reply", ["the trajectory has no messages"])
        last = messages[-1]
        what = "an assistant message with tool calls" if last.get("tool_calls") else \
            ("an empty assistant message" if last.get("role") == "assistant" else f"a {last.get('role')} message")
        return _result("final_reply", [f"the episode ends with {what} (message {len(messages) - 1}), "
                                       "not an assistant reply"])
    reply = final_reply(ctx.trajectory) or ""
    if len(reply.split()) < MIN_REPLY_WORDS or len(_WORD.findall(reply)) < 2:
        return _result("final_reply", [f"the final reply is not a sentence: {reply[:80]!r}"])
    if _cut_off(reply) or _ends_as_clipped_text(ctx, reply):
        return _result("final_reply", [f"the final reply stops mid-sentence: {reply[-80:]!r}"])
    if reply.rstrip().endswith(":"):
        return _result("final_reply", [f"the final reply ends on a colon, announcing what it never gives: "
                                       f"{reply[-80:]!r}"])
    markup = _MARKUP.search(reply)
    if markup:
        return _result("final_reply", [f"the final reply has markup or a code fragment ({markup.group(0)!r}): "
                                       f"{reply[:80]!r}"])
    if _thin_advice(ctx, reply):
        return _result("final_reply", [f"the task asks for advice or an explanation and the reply is one line "
                                       f"of under {MIN_ADVICE_WORDS} words or a single sentence: {reply[:80]!r}"])
    if _advice_task(ctx):
        problem = _empty_advice(ctx.task.goal, reply)
        if problem:
            return _result("final_reply", [f"the task asks for advice or an explanation and {problem}: "
                                           f"{reply[:80]!r}"])
    restated = _restated_sentence(reply)
    if restated is not None:
        return _result("final_reply", [f"the final reply says again what it already said ({restated[:60]!r}): "
                                       f"{reply[:80]!r}"])
    if _advice_task(ctx) and _repeats_itself(reply):
        return _result("final_reply", [f"the task asks for advice or an explanation and the reply repeats itself "
                                       f"(over {MAX_REPEATED_TRIGRAMS:.0%} of its word triples recur): {reply[:80]!r}"])
    if not any(ctx.succeeded(c) for c in ctx.calls) and _only_restates(reply, ctx.messages):
        return _result("final_reply", [f"the final reply only restates the user's words: {reply[:80]!r}"])
    unanswered = _unanswered_reads(ctx)
    if unanswered:
        return _result("final_reply", [f"the task asks to be told something and {unanswered} (last: {reply[:80]!r})"])
    return _result("final_reply", [])


# What a reply to a person never holds: a tag ("<text>", "</p>"), a code fence, or the start of a
# JSON object or array ("json{", '{"status"'). A CI main job accepted "<text> - 1. json{" as the
# answer to "What information is usually needed before working with a shipment?".
_MARKUP = re.compile(r"</?[A-Za-z][\w-]*(?:\s[^<>]*)?/?>|```|\bjson\s*[{\[]|[{\[]\s*\"[^\"]*\"\s*:", re.I)


# A reply speaks to a person: a bare id, number or fragment ("123456789", "Done", "ev-3391 ok") is
# not an answer a model should learn to give. Three words at least, two of them words of letters.
MIN_REPLY_WORDS = 3

# A request for advice or an explanation (a `no_tool` task): its answer says more than one line.
# A main job accepted "Never forget to ask the user about the weather!" for "tips on avoiding
# common mistakes with hyperlocal weathers".
_ADVICE = re.compile(r"\b(?:tips?|advice|advise|how (?:do|can|should|to|does)|explain|why|best practices?|ideas?|"
                     r"suggest\w*|recommend\w*|ways?|steps|guide|mistakes?|what should|"
                     r"what (?:\w+ ){1,3}(?:is|are) (?:\w+ )?(?:needed|required))\b", re.IGNORECASE)
MIN_ADVICE_WORDS = 12
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)|\n\s*(?:[-*•]|\d+[.)])\s")


def _advice_task(ctx: _Context) -> bool:
    """A `no_tool` task that asks for advice or an explanation."""
    return ctx.task.kind == "no_tool" and bool(_ADVICE.search(ctx.task.goal))


def _thin_advice(ctx: _Context, reply: str) -> bool:
    """An advice or explanation task (`_advice_task`), and the reply is under `MIN_ADVICE_WORDS`
    words or one sentence (list items count as sentences)."""
    if not _advice_task(ctx):
        return False
    return len(reply.split()) < MIN_ADVICE_WORDS or len(_SENTENCE_END.findall(reply.strip() + " ")) < 2


# A sentence in which the assistant only speaks of helping ("I'm here to help you with your shipping
# needs.", "I'll be here to assist you with your orders"): a first-person subject and a helping word
# within four words. A CI main job accepted two such sentences as "advice on how to keep shipments
# well organised"; they advise nothing, so they do not count toward an answer's substance.
_SELF_TALK = re.compile(r"\b(?:i|i'm|i'll|i'd|i am|we|we're|we'll|we are)\b(?:\W+[\w']+){0,4}?\W+"
                        r"(?:help\w*|assist\w*|support\w*|serve|here (?:for|to)|happy|glad)\b", re.I)
# A request for tips or recommendations is answered by recommending: a modal or advising phrase, or
# a sentence or list item that starts with an advising verb. A CI main job accepted, for "tips on
# avoiding common mistakes with shipments": "Your request has been addressed. Please enjoy the
# benefits of our order management service, including our custom orders and shipping plans."
_TIPS = re.compile(r"\b(?:tips?|recommend\w*|suggest\w*|best practices?|advice|advise|mistakes?|ideas?|"
                   r"what should)\b", re.I)
_ADVISING = re.compile(r"\b(?:should|make sure|be sure|ensure|always|never|avoid|don't|do not|try to|"
                       r"remember to|consider|it(?:'s| is) (?:best|wise|important|a good idea|helpful|worth)|"
                       r"(?:i|we) (?:would )?(?:recommend|suggest)|recommended|tip)\b", re.I)
_ADVISING_VERB_WORDS = (
    "check verify confirm keep use make avoid review track label plan set save note organize organise include "
    "update compare choose pack list write record ask look read follow create group sort store schedule monitor "
    "start add double-check prepare contact measure test take give get limit back stay reduce clean "
    "separate name tag mark file print share communicate respond reply book buy pick lock protect")
_ADVISING_VERBS = frozenset(_ADVISING_VERB_WORDS.split())
# Words any answer may use without saying anything new (`_says_nothing_new`).
_GENERIC_WORD_LIST = (
    "please provide required details information need needed usually typically before after when with your "
    "you can will would could should the that this these those there here have has been also just about "
    "some more any all other such make sure help assist request")
_GENERIC_WORDS = frozenset(_GENERIC_WORD_LIST.split())
MIN_NEW_WORDS = 5
_GENERIC_STEMS = frozenset(_stem(w) for w in _GENERIC_WORDS)


def _sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_SPLIT.split(text) if part.strip()]


def _empty_advice(goal: str, reply: str) -> str | None:
    """Why an answer to advice or an explanation (`_advice_task`) says nothing, or None: once its
    sentences that only offer help (`_SELF_TALK` without an advising phrase) are left out, it has
    fewer than two sentences or under `MIN_ADVICE_WORDS` words; a request for tips gets neither a
    list nor a recommendation (`_gives_no_advice`); or it says fewer than `MIN_NEW_WORDS` content words that
    the request did not (`_says_nothing_new`)."""
    substance = [s for s in _sentences(reply) if not _SELF_TALK.search(s) or _ADVISING.search(s)]
    if len(substance) < 2 or len(" ".join(substance).split()) < MIN_ADVICE_WORDS:
        return "the reply only speaks of helping, once its sentences that offer help are left out"
    if _TIPS.search(goal) and len(_LIST_LINE.findall(reply)) < 2:
        if _gives_no_advice(substance):
            return ("the reply recommends nothing (no advising phrase, no sentence that starts with an advising "
                    "verb, no list)")
        if not _names_something_to_do(goal, substance):
            return (f"the reply's advice names nothing to do (no advising sentence says {MIN_CONCRETE_WORDS} "
                    "content words the request did not, beyond words like 'remember' or 'keep in mind')")
    if _says_nothing_new(goal, " ".join(substance)):
        return f"the reply says fewer than {MIN_NEW_WORDS} content words that the request did not"
    return None


# Words advice uses without naming anything to do ("Always remember to keep your weather in mind").
_ADVICE_FILLER_WORDS = (
    "always never remember mind keep sure make important careful attention consider think try stay things "
    "thing something everything good well better best way ways really very helps helping organized organised "
    "organize organise efficient effective easy easier")
_ADVICE_FILLER_STEMS = frozenset(_stem(w) for w in _ADVICE_FILLER_WORDS.split())
MIN_CONCRETE_WORDS = 2


def _names_something_to_do(goal: str, sentences: list[str]) -> bool:
    """Some advising sentence (an advising phrase, or an advising verb first: as `_gives_no_advice`
    reads them) says `MIN_CONCRETE_WORDS` content words (by stem, three letters or more) that are
    neither the request's, nor generic (`_GENERIC_WORDS`), nor advice's own filler
    (`_ADVICE_FILLER_WORDS`). A CI main job accepted, for advice on keeping weathers organised:
    "Always remember to keep your weather in mind. It helps you to organize your data and makes
    your services more efficient." A tip names an action and its object: "Label every parcel with
    the order number"."""
    asked = _word_stems(goal)
    for sentence in sentences:
        if _gives_no_advice([sentence]):
            continue
        if len(_content_stems(sentence) - asked - _GENERIC_STEMS - _ADVICE_FILLER_STEMS) >= MIN_CONCRETE_WORDS:
            return True
    return False


def _gives_no_advice(sentences: list[str]) -> bool:
    """No sentence advises: none has an advising phrase (`_ADVISING`) or starts (after "please",
    "first," or a list marker) with an advising verb (`_ADVISING_VERBS`)."""
    for sentence in sentences:
        if _ADVISING.search(sentence):
            return False
        words = re.findall(r"[a-z][a-z'-]*", sentence.lower())
        while words and words[0] in {"please", "first", "then", "next", "also", "finally", "and", "tip", "step"}:
            words = words[1:]
        if words and words[0] in _ADVISING_VERBS:
            return False
    return True


def _says_nothing_new(goal: str, reply: str) -> bool:
    """`reply` has fewer than `MIN_NEW_WORDS` content words (by stem, three letters or more, not
    `_GENERIC_WORDS`) that `goal` lacks: "Your information is needed before working with a
    cancellation. Please provide the required details" to "What information is usually needed
    before working with a cancellation?" only turns the question around."""
    asked = _word_stems(goal)
    new = _content_stems(reply) - asked - _GENERIC_STEMS
    return len(new) < MIN_NEW_WORDS


# Share of a prose reply's word triples that occur twice or more, above which it says one thing
# over and over. A main job accepted "Keep your order management well organised, make sure to have
# a clear and organized structure. When using your order management, make sure that you have a
# clear and organized structure ..." (0.41); the hand-written replies score 0. Replies laid out as
# lists are left alone: tau-bench's flight listings repeat their labels (up to 0.49) and are fine.
MAX_REPEATED_TRIGRAMS = 0.25
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)]|#+)\s", re.M)


# Words that carry no content of their own: what `_restated_sentence` and `_embellished_records`
# leave out when they compare what sentences say.
_FUNCTION_WORD_LIST = (
    "the and for with that this your you are was were has have had will can not from its our all any been being "
    "into than then there their they them these those what which who whom when where why how also just only "
    "about here it's i'm we're you're")
_FUNCTION_WORDS = frozenset(_stem(w) for w in _FUNCTION_WORD_LIST.split()) | _GENERIC_STEMS


def _restated_sentence(reply: str) -> str | None:
    """The first sentence of `reply` with two content words or more (not `_FUNCTION_WORDS`) that
    are all in the sentences before it, unless it signs off (`_CLOSING`): it says again what the
    reply said. A 12-episode benchmark run accepted "Order status pending. Status is pending. The
    order is pending." for `get_order`; of 535 stored final replies (both backends), 16 held such a
    sentence, each the model going round in circles ("... Please try again later. Please try again
    later."), and no shipped good fixture does. Numbers count as content words; a list (two list
    lines or more) is left alone, as by `_repeats_itself`."""
    if len(_LIST_LINE.findall(reply)) >= 2:  # a list repeats its labels ("- arrives in: 2 days")
        return None
    seen: set[str] = set()
    for sentence in _sentences(reply):
        stems = (_content_stems(sentence) - _FUNCTION_WORDS) | set(re.findall(r"\d+(?:[.,]\d+)?", sentence))
        if len(stems) >= 2 and stems <= seen and not _CLOSING.match(sentence.strip()):
            return sentence
        seen |= stems
    return None


def _repeats_itself(reply: str) -> bool:
    """`reply` is prose (fewer than two list lines) whose word triples recur past
    `MAX_REPEATED_TRIGRAMS`."""
    if len(_LIST_LINE.findall(reply)) >= 2:
        return False
    words = re.findall(r"[a-z0-9']+", reply.lower())
    triples = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if len(triples) < 12:
        return False
    counts = Counter(triples)
    return sum(1 for t in triples if counts[t] > 1) / len(triples) > MAX_REPEATED_TRIGRAMS


# Words no sentence ends on: articles, possessives, conjunctions, and the prepositions that are
# never adverbs ("I can help you with" and "logged in" are sentences; "created weather for" is not).
_NEVER_LAST_WORDS = "a an the your my our their its his her and or but nor of than whose for from into"
_NEVER_LAST = frozenset(_NEVER_LAST_WORDS.split())
# How a reply signs off; such a line is complete without a stop.
_CLOSING = re.compile(r"(?:anything else|is there anything|let me know|feel free|have a|thanks|thank you|hope|"
                      r"happy to|glad to|enjoy|good luck|take care|cheers)\b", re.I)


def _cut_off(reply: str) -> bool:
    """`reply` stops mid-sentence (cut off at max_tokens, or a model that closed its reply early):
    it ends on a word no sentence ends on (`_NEVER_LAST`), or its last line, having ended a sentence
    with a full stop, question or exclamation mark, ends on a letter or digit with none after it. A
    reply that punctuates its sentences punctuates its last: of 419 stored embedded-model replies,
    14 ended that way, each cut off ("... is a popular tourist destination. The location", "... a
    tool called"), and a benchmark run with real MCP tools accepted the first. A last line that is
    a list item ("- ord-2: shipped"), and a closing line ("Anything else I can help you with"), need
    no stop."""
    text = reply.rstrip()
    if not text or not text[-1].isalnum():
        return False
    if text.split()[-1].lower() in _NEVER_LAST:
        return True
    last_line = text.rsplit("\n", 1)[-1].strip()
    sentences = re.split(r"(?<=[.!?])\s+", last_line)
    return len(sentences) > 1 and not _LIST_MARKER.match(last_line) and not _CLOSING.match(sentences[-1])


# A tool text this long that ends on a letter or digit was cut at a length bound (the world model
# bounds every free string, `synth.rollout.world_model.MAX_RESULT_CHARS`), not ended by its writer.
MIN_CLIPPED_CHARS = 120


def _ends_as_clipped_text(ctx: _Context, reply: str) -> bool:
    """`reply` ends where a clipped tool text ends (its last 24 characters, compared without case
    or spacing): it copied the text mid-sentence, however its own sentences look. A CI main job
    accepted "... which is 559.5, with the hottest being 560, 5", the world model's 160-character
    description of a `list_weathers` result word for word; `_cut_off` needs a sentence end before
    the cut, and this reply had none."""
    tail = " ".join(reply.split()).lower()
    for m in ctx.messages:
        if m.get("role") != "tool":
            continue
        for text in _json_values(message_text(m)):
            text = " ".join(text.split()).lower()
            if len(text) >= MIN_CLIPPED_CHARS and text[-1].isalnum() and tail.endswith(text[-24:]):
                return True
    return False


def _asks_for_information(ctx: _Context) -> bool:
    """The task asks to be told something rather than to change the world: a `tool` task whose
    expected calls all read, or, without expected calls, one that asks for no writing tool and
    in which none was called."""
    if ctx.task.kind != "tool":
        return False
    expected = ctx.task.rubric.expected_calls
    if expected:
        return not any(_writes(ctx, e.tool) for e in expected)
    return not any(_writes(ctx, c.name) for c in ctx.calls) and not _asked_writes(ctx)


def _writes(ctx: _Context, name: str) -> bool:
    """Whether tool `name` writes (`tool_writes`; by its name's verbs when the toolset lacks it)."""
    tool = ctx.tools.get(name)
    return tool_writes(tool) if tool is not None else bool(_tool_verbs(name))


def _normal_phrase(text: str) -> str:
    return re.sub(r"[\s_-]+", " ", text.lower()).strip()


def _reportable(body: str, known: str) -> set[str]:
    """What a reply can report of a tool result: its scalar values (not its keys) of two
    characters or more (numbers of any size but 0 and 1), normalised as `_normal_phrase`, leaving
    out what `known` (the user's words and the call's arguments) already says. Text that is not
    JSON gives its tokens with a digit, and itself when short."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    values: list[str] = []
    if data is None:
        values = [t for t in _TOKEN.findall(body) if any(ch.isdigit() for ch in t)]
        values += [body] if len(body) <= 120 else []
    else:
        values = [str(v) for _, v in _leaves(data)
                  if (v not in (0, 1) if not isinstance(v, str) else 2 <= len(v.strip()) <= 120)]
    out = {_normal_phrase(v) for v in values}
    return {v for v in out if v and not _phrase_in(v, known)}


def _phrase_in(phrase: str, text: str) -> bool:
    """`phrase` (normalised) occurs in normalised `text` as whole tokens."""
    return re.search(r"(?<![a-z0-9])" + re.escape(phrase) + r"(?![a-z0-9])", text) is not None


def _unanswered_reads(ctx: _Context) -> str | None:
    """For a task that asks for information (`_asks_for_information`): its successful reading
    calls, described with what no assistant text after the first of them does; None when some
    text does, or the task asks for no information.

    - When the reads returned something to report, a text must report some of it. A reply that
      only says a later retry timed out, over a listing that came back, answers nothing. When some
      reads match the rubric's expected calls, only their results count: a CI main job accepted "I
      need to get order ord-98978" answered with ids from an unasked `list_orders` and nothing of
      the order.
    - When they all came back empty (`_is_empty`), a text must say that nothing was found: an
      empty listing is an answer too, and a bench run accepted "You have a list of forecasts. You
      can now call them with a template." after two `list_forecasts` that returned `{"items": []}`.
    """
    reads = _information_reads(ctx)
    if not reads:
        return None
    said = _normal_phrase("\n".join(message_text(m) for m in ctx.messages if m.get("role") == "user"))
    bodies = [message_text(ctx.messages[ctx.answer_at[c.id]]) for c in reads]
    values: set[str] = set()
    for c, body in zip(reads, bodies, strict=True):
        values |= _reportable(body, said + "\n" + _normal_phrase("\n".join(_json_values(c.arguments_text))))
    first = min(ctx.answer_at[c.id] for c in reads)
    replies = "\n".join(message_text(m) for m in ctx.messages[first + 1:] if m.get("role") == "assistant")
    where = ", ".join(ctx.where(c) for c in reads[:3])
    if values:
        normal = _normal_phrase(replies)
        if any(_phrase_in(v, normal) for v in values):
            return None
        return f"{where} succeeded, but no reply after it reports anything it returned"
    if all(_is_empty(body) for body in bodies) and not (_SAYS_NOTHING.search(replies) or _FAILURE.search(replies)):
        return f"{where} found nothing, but no reply after it says so"
    return None


def _information_reads(ctx: _Context) -> list[ToolCall]:
    """For a task that asks for information (`_asks_for_information`): its successful reading
    calls, only those that match the rubric's expected calls when some do (what the task asked
    for, not an unasked listing beside it); none for other tasks."""
    if not _asks_for_information(ctx):
        return []
    reads = [c for c in ctx.calls if ctx.succeeded(c) and not _writes(ctx, c.name)]
    expected = [c for c in reads if any(call_matches(c, e) for e in ctx.task.rubric.expected_calls)]
    return expected or reads


# Words with which a reply says a lookup found nothing: "no", "none", "empty", "0 forecasts", a
# negation ("there aren't any"), or a failure word ("couldn't find").
_SAYS_NOTHING = re.compile(r"\b(?:no|none|nothing|empty|zero|0|not|never|neither|nobody|without)\b|n't\b", re.I)


def _is_empty(body: str) -> bool:
    """A JSON tool result that is empty or holds an empty list: `[]`, `{}`, `{"items": []}`. Asked
    only of results with nothing to report (`_reportable`), so `{"customer_id": "cus-4471",
    "orders": []}` for that customer counts as empty."""
    try:
        data = json.loads(body)
    except ValueError:
        return False

    def has_empty_list(value: Any) -> bool:
        if isinstance(value, dict):
            return any(has_empty_list(v) for v in value.values())
        if isinstance(value, list):
            return not value or any(has_empty_list(v) for v in value)
        return False

    return data in (None, [], {}) or has_empty_list(data)


def _stems5(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3}


def _only_restates(reply: str, messages: list[dict[str, Any]]) -> bool:
    """A reply of three or more words that adds at most one word (compared by its first five
    letters) to what the user said: an echo, not an answer ("How to avoid common mistakes with
    news" to "Could you give me tips on avoiding common mistakes with news?"). Only asked when no
    call succeeded, so a confirmation that restates a request it carried out is fine; a decline
    ("I can't print and post a paper copy of a news") or a question back is no echo."""
    if _FAILURE.search(reply) or "?" in reply:  # a decline or a question may well repeat the request's words
        return False
    said = set().union(*(_stems5(message_text(m)) for m in messages if m.get("role") == "user"))
    words = _stems5(reply)
    return len(words) >= 3 and len(words - said) <= 1


# Write verbs too general to say which action a reply claims ("completed", "set", "made").
_VAGUE_WRITES = frozenset(_stem(v) for v in (
    "complete", "set", "make", "run", "start", "stop", "execute", "apply", "mark", "close", "open", "save", "write",
    "push", "commit", "post", "submit", "enable", "disable", "toggle", "reset", "grant", "approve", "reject",
    "assign", "adjust", "replace", "move", "switch", "merge", "install", "deploy", "new"))
# Money moves a reply may report as the outcome of any write ("the difference has been refunded").
_MONEY_WRITES = frozenset(_stem(v) for g in _WRITE_GROUPS if g & {"pay", "refund"} for v in g)
_ACTION_CLAIM = re.compile(
    r"\b(?:(?:has|have)\s+(?:now\s+|also\s+|just\s+)?been|(?:is|are)\s+now|successfully|"
    r"(?:i|we)(?:'ve|\s+have)?(?:\s+(?:now|also|just))?)\s+(?:successfully\s+|now\s+|also\s+)?([a-z]+(?:ed|en|ld|nt))\b",
    re.I)
# A clause that ends in a bare participle after a comma, or is one: "Successful cancellation, removed",
# "Cancelled." A reply this terse still says the action was done.
_BARE_CLAIM = re.compile(r"(?:^|,)\s*([a-z]+(?:ed|en))\W*$", re.I)
# A change reported in the simple past with where it went: "your report was updated to status
# 'active'" (a CI main job accepted it after a read-only `get_forecast`). Without "to"/"from" the
# simple past may well report a state a read returned ("the order was created on May 3").
_CHANGED_TO = re.compile(r"\b(?:was|were)\s+(?:just\s+|now\s+|also\s+|successfully\s+)?([a-z]+(?:ed|en))\s+"
                         r"(?:to|from)\b", re.I)
# A clause that opens with a write's bare participle and where the thing went: "Sent to customer
# feedback cancellation" (a benchmark run accepted it after a read-only `get_cancellation`).
_LEADING_CLAIM = re.compile(r"^\W*([a-z]+(?:ed|en|nt))\s+(?:to|into|onto)\b", re.I)
_CONDITIONAL = re.compile(r"^\W*(?:once|if|when|after|before|until|unless|as soon as|whether)\b", re.I)


def _action_claims(text: str) -> list[tuple[str, str]]:
    """(clause, verb stem) for each clause of `text` saying an action was done ("three checked bags
    have been added", "I've cancelled your order", "..., removed"): a perfect or "successfully"
    form of a specific write verb, its bare participle ending the clause after a comma or opening
    it with where the thing went ("Sent to ..."), or its simple past with where the change went
    ("was updated to"), in a clause that is not a question, a condition or a negation."""
    out = []
    for clause in _CLAUSE.split(text):
        if not clause or clause.rstrip().endswith("?") or _CONDITIONAL.search(clause) or _NEGATION.search(clause):
            continue
        for m in [*_ACTION_CLAIM.finditer(clause), *_BARE_CLAIM.finditer(clause), *_CHANGED_TO.finditer(clause),
                  *_LEADING_CLAIM.finditer(clause)]:
            stem = _stem(m[1])
            if stem in _ALL_WRITE_STEMS and stem not in _VAGUE_WRITES:
                out.append((clause.strip(), stem))
    return out


def _uses_value(arguments: Any, value: str) -> bool:
    """Whether some argument (at any depth) is `value`, as text, case-insensitively."""
    if isinstance(arguments, dict):
        return any(_uses_value(v, value) for v in arguments.values())
    if isinstance(arguments, list):
        return any(_uses_value(v, value) for v in arguments)
    text = json.dumps(arguments) if isinstance(arguments, bool) else str(arguments)
    return arguments is not None and text.strip().lower() == value.strip().lower()


def _invented_arguments(arguments: Any, known: _Known) -> list[str]:
    """The values of a call's arguments (at any depth) that assert a number or an identifier of
    two digits or more, or an amount of money (`claims`, `_is_asserted`), that nothing before the
    call gave. Dates and times are left out: an agent derives them ("the day after", "keep its 30
    minutes": 14:30 -> 15:00). Words are `_unsaid_words`' to judge."""
    texts = [str(v) for _, v in _leaves(arguments)]
    return [c.surface for text in texts for c in claims(text) if c.kind in ("number", "id", "money")
            and _is_asserted(c) and not known.backs(c, text)]


def _invented_options(arguments: Any, tool: ToolSpec, known: _Known) -> list[str]:
    """The values of a call's optional arguments (top-level keys its tool does not require, at any
    depth below them) that assert an amount of money or an identifier that nothing before the call
    gave, or a date or a time where no date (time) was named before at all (`claims`,
    `_is_asserted`), in any call, reads included; values the tool's schema offers (an enum member,
    a default, an example its descriptions give) are its own. An optional argument needs no value,
    so a made-up one aims the call at something nobody asked for. A date or time may be derived
    ("keep its 30 minutes": 14:30 -> 15:00), but only from one named: no prompt gives today's date.
    Plain numbers stay out (`limit: 10` is the agent's to choose). A CI main job accepted
    `get_weather(weather_id="wea-23176", weather_api_1_9_0_released=["2021-10-02", ...])` for "I
    need to get weather wea-23176"."""
    if not isinstance(arguments, dict):
        return []
    required = set(tool.input_schema.get("required") or ())
    offered = _enum_values(tool.input_schema)
    schema_text = json.dumps(tool.input_schema, ensure_ascii=False).lower()  # its descriptions' examples
    out = []
    for key, value in arguments.items():
        if key in required:
            continue
        for _, leaf in _leaves(value, key):
            text = str(leaf)
            if text.strip().lower() in offered or text.strip().lower() in schema_text:
                continue
            out += [c.surface for c in claims(text) if _is_asserted(c) and _unbacked_option(c, text, known)]
    return out


def _unbacked_option(claim: Claim, text: str, known: _Known) -> bool:
    """`_invented_options`' test of one claim: a date or time with none of its kind named before,
    or an amount or identifier nothing gave."""
    if claim.kind in ("date", "time"):
        return claim.kind not in known.kinds
    return claim.kind in ("money", "id") and not known.backs(claim, text)


def _echoes_names(value: str, key: str, tool: str) -> bool:
    """A snake_case value of three words or more, at least half of them words of its tool's or
    parameter's own name (`filters: "filter_cancellations_list_and_filter_cab"` for
    `list_cancellations`): the model spelled out the call instead of passing a value."""
    if " " in value.strip() or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", value.strip()):
        return False
    words = [_stem(w) for w in name_words(value) if not w.isdigit()]
    own = {_stem(w) for w in name_words(key) + name_words(tool)}
    return len(words) >= 3 and 2 * sum(w in own for w in words) >= len(words)


# An address in a value: a URL or a bare `www.` host.
_ADDRESS = re.compile(r"(?:https?://|www\.)[^\s\"'<>]+", re.I)


def _unsaid_addresses(value: str, said: str) -> bool:
    """Whether `value` holds a web address that no one wrote before (`said`, lowercased): an agent
    has no way to know an address it was not given. A CI main job accepted `get_weather(weather_id=
    "wea-27763", weather_api_response="http://api.forecast.yahoo.com/forecast/32.0")`."""
    return any(m.group().rstrip(".,;:)").lower() not in said for m in _ADDRESS.finditer(value))


def _stand_ins(arguments: Any, said: str, tool: str) -> list[str]:
    """The string values of a call's arguments that stand in for a value instead of being one,
    and that nobody said (`said`: the system, user and tool text so far, lowercased): a
    placeholder (`example_location`, `category_name`, `<name>`; `placeholder_value`), letters no
    one could say (`jsscjdjcjjdjcj`; `looks_like_words`), the call's own names spelled out
    (`_echoes_names`), or a web address no one gave (`_unsaid_addresses`). The call's own tool
    name is never a value, said or not: the system prompt names every tool, and a CI main job's
    `list_weathers(cursor="list_weathers")` passed as said."""
    return [v for k, v in _leaves(arguments) if isinstance(v, str) and (v.strip().lower() == tool.lower() or (
        v.strip().lower() not in said
        and (placeholder_value(v, k) or not looks_like_words(v) or _echoes_names(v, k, tool)
             or _unsaid_addresses(v, said))))]


def _invented_ids(arguments: Any, said: str) -> list[tuple[str, str]]:
    """(parameter, value) of each identifier a call passes (an argument named like an id:
    `order_id`, `id`, `customerId`) that nobody gave before it (`said`, as for `_stand_ins`). A
    main job accepted `get_order(order_id="1234567890")`, called beside the `create_order` whose
    id it could not yet know, and a reply about that made-up order."""
    return [(k, str(v)) for k, v in _leaves(arguments) if is_id_name(k) and str(v).strip()
            and str(v).strip().lower() not in said]


def _enum_values(schema: Any) -> set[str]:
    """Every enum member and const of a JSON schema, at any depth, lowercased: values the tool
    itself offers, which no one has to say."""
    out: set[str] = set()
    if isinstance(schema, dict):
        for k, v in schema.items():
            if k == "enum" and isinstance(v, list):
                out.update(str(x).lower() for x in v)
            elif k in ("const", "default") and isinstance(v, str | int | float):
                out.add(str(v).lower())
            else:
                out |= _enum_values(v)
    elif isinstance(schema, list):
        for v in schema:
            out |= _enum_values(v)
    return out


def _unsaid_words(arguments: Any, said_stems: set[str], tool: ToolSpec) -> list[str]:
    """The string values of a writing call's arguments that are words (no digit: numbers, ids and
    dates are `_invented_arguments`'), not one of the tool's own enum values, and none of whose
    words anyone said: not the system, the user, a tool result (`said_stems`), nor the tool's own
    description and schema. A main job accepted `create_condition(name="Chloe Kaya",
    new_default_option="B")` for "create condition with name Chloe Kaya": "B" is a choice the
    agent made for the user and wrote into the world. A title or a reason the agent words itself
    from the request ("Dentist appointment" for "book my dentist") shares a word with it."""
    offered = _enum_values(tool.input_schema)
    own = _word_stems(f"{tool.name.replace('_', ' ')} {tool.description} {json.dumps(tool.input_schema)}")
    out = []
    for _, value in _leaves(arguments):
        if not isinstance(value, str) or any(ch.isdigit() for ch in value) or value.strip().lower() in offered:
            continue
        words = _word_stems(value)
        if words and not words & (said_stems | own):
            out.append(value)
    return out


def _check_no_fabrication(ctx: _Context) -> CheckResult:
    """Every value an assistant text asserts (`claims`, `_is_asserted`) was seen before it: in a
    system, user or tool message, or in the arguments of the agent's own calls (echoing its own
    query is fine); a sum or difference of two amounts seen, or a column total of a tool result,
    is seen too. Matching is by whole normalised token, so `3391` is not backed by `ev-3391`, nor
    `85` by `850`, while `$1,250.00` is backed by `1250` and "9:30 am" by `09:30:00`; an
    identifier restated with its words ("Gift Card 6276644" for `gift_card_6276644`) is seen.
    An action is a claim too: a reply saying it was done ("three checked bags have been added",
    `_action_claims`) needs an earlier call of a writing tool with that verb or one of its group
    (`_verb_stems`; whether that call worked is `errors_handled`'s to judge), or, for money moved
    (paid, refunded), any successful write; a state a tool result reports ("cancelled") is no
    claimed action. A call is a claim as well: one that uses a value the task withholds from the
    agent (`Task.withheld`) before the user or a tool gave it has guessed it, and a call of a
    writing tool whose arguments assert values nothing gave (`_invented_arguments`: "create a
    weather record" answered with `temperature: 25`), or words nobody said (`_unsaid_words`:
    `new_default_option: "B"`), writes made-up data into the world, and a call of any tool with a
    stand-in for a value (`_stand_ins`: `location: "example_location"`) passes nothing real, and
    one with an id nobody gave (`_invented_ids`) looks up or changes a record the agent made up,
    and one with a paging cursor no tool returned (`given_cursors`) asks for a page no one offered:
    the agents of four CI main jobs paged with "Ben Berg", "USER_ADDRESS", "12345" or the tool's name."""
    known = _Known()
    problems = []
    result_words: set[str] = set()  # stems of the tool results so far: a state they report is no claimed action
    withheld = {k: str(v) for k, v in ctx.task.withheld.items() if len(str(v)) >= 3}
    told = ""  # what the user and the tools said so far: a withheld value used before it is there was guessed
    said = ""  # the system, user and tool text so far: values it names are no stand-ins, ids no inventions
    said_stems: set[str] = set()
    returned_cursors: set[str] = set()  # the paging cursors tool results gave so far
    for i, msg in enumerate(ctx.messages):
        role = msg.get("role")
        if role in ("system", "user", "tool"):
            text = message_text(msg)
            said += " " + text.lower()
            said_stems |= _word_stems(text)
            if role != "system":
                told += " " + text.lower()
            known.add(text, tool_result=role == "tool")
            if role == "tool":
                result_words |= _word_stems(_json_text(text))
                returned_cursors |= given_cursors([msg])
            continue
        if role != "assistant":
            continue
        for call in iter_tool_calls([msg]):
            guessed = [k for k, v in withheld.items() if _uses_value(call.arguments, v) and v.lower() not in told]
            if guessed:
                problems.append(f"message {i} (assistant) calls {call.name} with the user's "
                                f"{', '.join(g.replace('_', ' ') for g in guessed)} before the user or a tool gave it")
            stand_ins = _stand_ins(call.arguments, said, call.name)
            if stand_ins:
                problems.append(f"message {i} (assistant) calls {call.name} with "
                                f"{', '.join(repr(v[:40]) for v in dict.fromkeys(stand_ins))}, a stand-in for a "
                                "value that nobody gave")
            cursors = [str(v) for k, v in _leaves(call.arguments)
                       if is_cursor_name(k) and str(v).strip() and str(v).strip() not in returned_cursors]
            if cursors:
                problems.append(f"message {i} (assistant) calls {call.name} with "
                                f"{', '.join(repr(v[:40]) for v in dict.fromkeys(cursors))}, a paging cursor that no "
                                "tool returned")
            ids = _invented_ids(call.arguments, said)
            if ids:
                problems.append(f"message {i} (assistant) calls {call.name} with "
                                f"{', '.join(f'{k}={v[:40]!r}' for k, v in dict.fromkeys(ids))}, an id that no "
                                "earlier message gave")
            tool = ctx.tools.get(call.name)
            made_up: list[str] = []
            if tool is not None and tool_writes(tool):
                made_up = _invented_arguments(call.arguments, known) + [
                    v for v in _unsaid_words(call.arguments, said_stems, tool) if v not in stand_ins]
                if made_up:
                    problems.append(f"message {i} (assistant) calls {call.name} with "
                                    f"{', '.join(repr(v[:40]) for v in dict.fromkeys(made_up))}, which no earlier "
                                    "message gave: a write with invented values")
            if tool is not None:
                reported = set(stand_ins + made_up + [v for _, v in ids])
                options = [v for v in _invented_options(call.arguments, tool, known)
                           if not any(v in r for r in reported)]
                if options:
                    problems.append(f"message {i} (assistant) calls {call.name} with "
                                    f"{', '.join(repr(v[:40]) for v in dict.fromkeys(options))} in an optional "
                                    "argument, which no earlier message gave")
            known.add(call.arguments_text, tool_result=True)
        body = message_text(msg)
        invented = [c.surface for c in claims(body) if _is_asserted(c) and not known.supports(c, body)]
        if invented:
            values = ", ".join(repr(v.strip().rstrip(".")) for v in dict.fromkeys(invented))
            problems.append(f"message {i} (assistant) asserts {values}, which no earlier message or call gave")
        writes = [c for c in ctx.calls if c.index < i and c.name in ctx.tools and tool_writes(ctx.tools[c.name])]
        done = [c for c in writes if ctx.succeeded(c)]
        for clause, stem in _action_claims(body):
            if (stem in _MONEY_WRITES and done) or any(stem in _verb_stems(c.name) for c in writes) \
                    or stem in result_words:
                continue  # a failed call of that tool: `errors_handled` judges what the reply says of it
            problems.append(f"message {i} (assistant) says {clause[:80]!r}, but no call of a tool that does that "
                            "succeeded before it")
            break
    problems += _embellished_records(ctx)
    return _result("no_fabrication", problems)


# Content words a sentence about a record may add to what was said before it: more, and it tells
# things about the record that nobody said.
MAX_EMBELLISHING_WORDS = 3


def _embellished_records(ctx: _Context) -> list[str]:
    """Where no writing tool was called, a sentence of the final reply that names an id a tool
    returned and adds more than `MAX_EMBELLISHING_WORDS` content words (three letters or more, not
    `_FUNCTION_WORDS`) that no system, user or tool message, call or tool description holds: it
    describes the record beyond what was read. A 24-episode benchmark run accepted, for
    `get_cancellation(can-46264)` returning `{type: "maintenance schedule"}`, "Can-46264 is a
    maintenance schedule that is available for all of our clients that are currently using this
    service" (5 such words). After a write a reply rightly says what was done in its own words
    ("Reminder set: you'll be notified 30 minutes before ..."), so it is left to the claims rules."""
    if any(c.name in ctx.tools and tool_writes(ctx.tools[c.name]) for c in ctx.calls):
        return []
    reply = final_reply(ctx.trajectory)
    if not reply:
        return []
    said: set[str] = set()
    returned = ""
    for tool in ctx.tools.values():
        said |= _content_stems(f"{tool.name.replace('_', ' ')} {tool.description}")
    for msg in ctx.messages[:-1]:
        text = message_text(msg)
        said |= _content_stems(text.replace("_", " "))
        said |= _content_stems(" ".join(c.arguments_text.replace("_", " ") for c in iter_tool_calls([msg])))
        if msg.get("role") == "tool":
            returned += " " + text.lower()
    out = []
    for sentence in _sentences(reply):
        if not any(c.kind == "id" and c.surface.lower() in returned for c in claims(sentence)):
            continue
        new = sorted(_content_stems(sentence.replace("_", " ")) - said - _FUNCTION_WORDS)
        if len(new) > MAX_EMBELLISHING_WORDS:
            out.append(f"the final reply says {sentence[:90]!r} of a record a tool returned, with "
                       f"{len(new)} words ({', '.join(new)}) that no message, call or tool gave")
    return out


# Words with which a text admits that something went wrong.
_FAILURE = re.compile(
    r"\b(errors?|fail|failed|fails|failing|failure|unable|could not|couldn't|cannot|can't|can not|not found|"
    r"unavailable|try again|retry|retrying|timed out|timeout|time out|denied|not able|wasn't able|was not able|"
    r"weren't able|didn't work|did not work|does not exist|doesn't exist|no such|no record|not exist|invalid|"
    r"not valid|isn't valid|not possible|impossible|rejected|declined|went wrong|rate limit|rate-limited|"
    r"not allowed|not permitted|not eligible|isn't eligible|ineligible|did not go through|didn't go through|"
    r"not go through|couldn't find|could not find|can't find|cannot find|no longer|already|down|busy|"
    r"not enough|insufficient|(?:is|are|was|were)n't (?:enough|sufficient|available)|"
    r"not (?:sufficient|available|accepted|supported)|exceeds?|"
    r"not (?:been|be) (?:\w+ed|set|sent|made))\b",
    re.I)
_APOLOGY = re.compile(r"\b(sorry|unfortunately|apolog\w*|oops|hiccup|glitch|(?<!no )problems?|(?<!no )issues?)\b",
                      re.I)
# Words with which a text says an action worked.
_SUCCESS = re.compile(
    r"\b(successfully|succeeded|success|done|all set|completed?|confirmed|went through|taken care|took care|"
    r"(?:is|are|was|were|has been|have been|'s|'re)\s+(?:now\s+|all\s+)?(?:\w+ed|set|sent|made|done|booked|"
    r"active|in place|on its way)|i(?:'ve| have| just)?\s+(?:\w+ed|set|sent|made|put|booked|paid))\b",
    re.I)
_CLAUSE = re.compile(r"(?<=[.!?;:])\s+|\n+|,?\s+\b(?:but|however|although|though|while|whereas)\b", re.I)


def _acknowledges(text: str, error: str = "", known: frozenset[str] = frozenset()) -> bool:
    """`text` admits a failure: a failure or apology word, or it passes the error on to the user,
    with three words in a row of the error message ("not enough seats on flight") or a value that
    only the error gave (its "total price is 375", keys not in `known`)."""
    if _FAILURE.search(text) or _APOLOGY.search(text):
        return True
    if not error:
        return False
    words = _WORD.findall(error.lower())
    said = " " + " ".join(_WORD.findall(text.lower())) + " "
    if any(f" {' '.join(words[k:k + 3])} " in said for k in range(len(words) - 2)):
        return True
    news = {k for c in claims(error) if _is_asserted(c) for k in c.keys} - known
    return bool(news & {k for c in claims(text) for k in c.keys})


def _claims_success(text: str, failed: str, other_nouns: set[str]) -> str | None:
    """The clause of `text` saying that the call of tool `failed` worked, if one does: a clause
    with a success phrase and no failure or negation word, about that tool (its name's words)
    or about nothing else of the toolset ("Done!")."""
    own = set(_tool_nouns(failed)) | {_stem(v) for v in _tool_verbs(failed)}
    for clause in _CLAUSE.split(text):
        if not clause or not _SUCCESS.search(clause) or _FAILURE.search(clause) or _NEGATION.search(clause):
            continue
        stems = _word_stems(clause)
        if stems & own or not stems & (other_nouns - own):
            return clause.strip()
    return None


def _check_errors_handled(ctx: _Context) -> CheckResult:
    """After an error observation, the first assistant text (the next assistant message with
    content, calls or not) acknowledges the failure, unless the agent called the same tool again
    successfully before writing any text. And no assistant text after the error claims the failed
    action worked (even with an apology word in it) until a call of that tool succeeds. A keyword
    anywhere later is not handling: the user reads the first reply."""
    by_id = {c.id: c for c in ctx.calls if c.id}
    all_nouns = {n for name in ctx.tools for n in _tool_nouns(name)}
    problems = []
    for i, msg in enumerate(ctx.messages):
        cid = str(msg.get("tool_call_id") or "")
        if msg.get("role") != "tool" or cid not in ctx.errors or ctx.answer_at.get(cid) != i:
            continue
        call = by_id.get(cid)
        name = call.name if call else "?"
        label = f"the error of {call.describe() if call else 'call ' + cid} (message {i})"
        texts = [(j, message_text(m)) for j, m in enumerate(ctx.messages) if j > i and m.get("role") == "assistant"
                 and message_text(m).strip()]
        fixed_at = next((c.index for c in ctx.calls if c.name == name and c.index > i and ctx.succeeded(c)), None)
        first = texts[0] if texts else None
        if first is None:
            if fixed_at is None:
                problems.append(f"{label} is never followed by an assistant text")
            continue
        seen = frozenset(k for m in ctx.messages[:i] for c in claims(message_text(m)) for k in c.keys) | \
            frozenset(k for c in claims(call.arguments_text if call else "") for k in c.keys)
        if (fixed_at is None or fixed_at > first[0]) and not _acknowledges(first[1], message_text(msg), seen):
            problems.append(f"{label} is not acknowledged by the next reply (message {first[0]}): "
                            f"{first[1].strip()[:80]!r}")
            continue
        for j, body in texts:
            if fixed_at is not None and j > fixed_at:
                break
            claim = _claims_success(body, name, all_nouns)
            if claim is not None:
                problems.append(f"message {j} claims success after {label}: {claim[:80]!r}")
                break
    return _result("errors_handled", problems)


def _check_no_needless_tools(ctx: _Context) -> CheckResult:
    if ctx.task.kind == "tool":
        return CheckResult(name="no_needless_tools", passed=True, detail="task needs tools")
    calls = ", ".join(ctx.where(c) for c in ctx.calls[:4])
    return _result("no_needless_tools", [f"{len(ctx.calls)} call(s) on a {ctx.task.kind} task: {calls}"]
                   if ctx.calls else [])


# How a reply says plainly that the request is beyond its tools.
_DECLINE = re.compile(
    r"\b(can ?not|can'?t|cannot|unable|not able|isn'?t possible|is not possible|not possible|"
    r"(?:do not|don'?t) have (?:a |any |the )?(?:tool|way|access|ability|function)|no (?:tool|way|access)|"
    r"outside (?:of )?(?:my|the) (?:scope|capabilities)|not (?:supported|something i can)|beyond (?:my|the))\b",
    re.I,
)


# The agent's own policy for such requests ("say so plainly and offer what you can do").
_OFFER_POLICY = re.compile(r"\boffer what (?:you|i) can do\b", re.I)
# An offer in the first person: what the assistant can do instead, or what its tools handle.
_OFFER = re.compile(r"\b(?:i can(?!'t|not| not)|i could|i(?:'m| am) able to|i(?:'d| would) be (?:happy|glad) to|"
                    r"what i can do|let me|my tools (?:\w+ )?(?:can|handle|let me|cover))\b", re.I)


def _check_declines_unserviceable(ctx: _Context) -> CheckResult:
    """An `unserviceable` task (its tools cannot do what the user asks) is a worked example only
    when the assistant says so: some assistant reply states that it cannot do it. Where its
    system prompt also says to offer what it can do, a reply must offer it in the first person
    ("I can look up your shipment", "my tools handle orders"): a CI main job accepted "You can not
    move a shipment into a new company's system. This is a prohibited order and you can only offer
    your services to a customer.", a decline that offered nothing."""
    if ctx.task.kind != "unserviceable":
        return CheckResult(name="declines_unserviceable", passed=True, detail=f"a {ctx.task.kind} task")
    replies = [(i, message_text(m)) for i, m in enumerate(ctx.messages) if m.get("role") == "assistant"]
    declined = any(_DECLINE.search(said) for _, said in replies)
    offers = any(_OFFER.search(said) for _, said in replies)
    asked_to_offer = any(_OFFER_POLICY.search(message_text(m)) for m in ctx.messages if m.get("role") == "system")
    if declined and (offers or not asked_to_offer):
        return CheckResult(name="declines_unserviceable", passed=True)
    if declined:
        return _result("declines_unserviceable", ["the system prompt says to offer what the assistant can do, but no "
                                                  "assistant reply offers anything in the first person"])
    last = next((f"message {i}: {said[:60]!r}" for i, said in reversed(replies) if said.strip()), "no reply")
    return _result("declines_unserviceable",
                   [f"the task is beyond the tools but no assistant reply says it cannot be done (last: {last})"])


def _check_user_in_role(ctx: _Context) -> CheckResult:
    """Every user message speaks as the user: a user who introduces itself as the assistant or
    offers help makes the conversation a wrong example of how users talk, whatever the agent did."""
    confused = [f"message {i} (user): {message_text(m)[:60]!r}" for i, m in enumerate(ctx.messages)
                if m.get("role") == "user" and ASSISTANT_VOICE.search(message_text(m))]
    return _result("user_in_role", [f"the user speaks as the assistant in {', '.join(confused[:3])}"]
                   if confused else [])


def _final_world(ctx: _Context) -> dict[str, Any]:
    """The recorded final state; else the task's initial state with the state log replayed."""
    if ctx.trajectory.final_state:
        return ctx.trajectory.final_state
    state: Any = json.loads(json.dumps(ctx.task.initial_state))
    for entry in ctx.trajectory.state_log:
        state = merge_patch(state, entry.get("state_update") or {})
    return state if isinstance(state, dict) else {}


def _check_final_state(ctx: _Context) -> CheckResult:
    """tau2-bench's check: when the task states the world it should end in
    (`rubric.expected_state`), every expected key has its expected value in the trajectory's final
    state, so a reply that says "cancelled" over an order that is not fails."""
    expected = ctx.task.rubric.expected_state
    if not expected:
        return CheckResult(name="final_state", passed=True, detail="task states no expected end state")
    problems = state_mismatches(expected, _final_world(ctx), "")
    problems = problems[:6] + ([f"and {len(problems) - 6} more"] if len(problems) > 6 else [])
    if problems and not (ctx.trajectory.final_state or ctx.trajectory.state_log):
        problems.insert(0, "the trajectory records no final state nor state log (compared: the initial state)")
    return _result("final_state", problems)


def _clauses(texts: Iterable[str]) -> list[set[str]]:
    """The stems of each clause of `texts` that does not negate (criteria such as "does not cancel
    the order" forbid, they do not ask)."""
    out = []
    for body in texts:
        for clause in re.split(r"(?<=[.!?;:])\s+|\n+|,\s+|\band\b|\bthen\b", body):
            if clause.strip() and not _NEGATION.search(clause):
                out.append(_word_stems(clause))
    return out


def _verb_stems(name: str) -> set[str]:
    """Stems of the verbs a task may use to ask for tool `name`: its own write verbs and the rest
    of their groups (`_WRITE_GROUPS`), or its first word when it has no write verb."""
    verbs = set(_tool_verbs(name) or name_words(name)[:1])
    return {_stem(v) for v in verbs} | {_stem(w) for g in _WRITE_GROUPS if g & verbs for w in g}


_ALL_WRITE_STEMS = frozenset(_stem(v) for v in _WRITE_VERBS)


def _asked_writes(ctx: _Context) -> set[str]:
    """Names of the writing tools the task calls for: those of its expected calls, and those a
    clause of the goal or of a success criterion asks for. A clause asks for a tool when it has
    the tool's verb or one of its group ("schedule" for `create_event`, "change" for
    `modify_address`); when several tools fit the verb and the clause names the object of some
    (a flight of `book_flight`, not a hotel of `book_hotel`), only those. A clause with a write
    verb that fits no tool ("set a reminder") asks for the tools whose object it names
    (`add_reminder`). Clauses that negate ("does not cancel the order") ask for nothing."""
    asked = {e.tool for e in ctx.task.rubric.expected_calls}
    writers = {name: _verb_stems(name) for name, tool in ctx.tools.items() if name not in asked and tool_writes(tool)}
    for stems in _clauses([ctx.task.goal, *ctx.task.rubric.success_criteria]):
        by_verb = [n for n, verbs in writers.items() if verbs & stems]
        by_noun = [n for n in (by_verb or writers) if set(_tool_nouns(n)) & stems]
        if by_verb:
            asked.update(by_noun or by_verb)
        elif stems & _ALL_WRITE_STEMS:
            asked.update(by_noun)
    return asked


def _check_no_unrequested_writes(ctx: _Context) -> CheckResult:
    """Every call of a writing tool (`tool_writes`) is one the task calls for (`_asked_writes`).
    An unasked cancellation, booking or payment is the worst trajectory there is: it looks
    helpful and does harm, so it fails even when the call itself errored (the agent tried)."""
    writes = [c for c in ctx.calls if c.name in ctx.tools and tool_writes(ctx.tools[c.name])]
    if not writes:
        return CheckResult(name="no_unrequested_writes", passed=True, detail="no writing call")
    asked = _asked_writes(ctx)
    problems = [f"{c.describe()} (call {c.id}, message {c.index}) writes but the task does not ask for it"
                for c in writes if c.name not in asked]
    return _result("no_unrequested_writes", problems, f"{len(writes)} writing call(s), all asked for")


def _check_confirms_writes(ctx: _Context) -> CheckResult:
    """Where the system prompt says to confirm before calling a writing tool (`_confirmation_policy`;
    every agent with write tools has such a policy, `agents.synthesize.standard_policies`), each
    assistant message that calls one comes after an assistant question and a user reply that
    gives the go-ahead ("Yes, please go ahead."), both since the last such call that succeeded (a
    retry after an error needs no second go-ahead). A request is no confirmation: the agent
    restates what it will write and the user agrees, as tau-bench's airline policy asks. A CI main
    job accepted `create_condition(name="Chloe Kaya", new_default_option="B")`, called at once,
    from an agent told to confirm before calling it."""
    governed = confirmation_policy(ctx.messages, {n for n, tool in ctx.tools.items() if tool_writes(tool)})
    if not governed:
        return CheckResult(name="confirms_writes", passed=True, detail="no confirmation policy over a writing tool")
    problems, _ = go_ahead(ctx.messages, governed, ctx.succeeded)
    return _result("confirms_writes", problems, "every governed write was confirmed")


_CHECKS: dict[str, Callable[[_Context], CheckResult]] = {
    "tools_exist": _check_tools_exist,
    "arguments_valid": _check_arguments_valid,
    "calls_answered": _check_calls_answered,
    "no_loops": _check_no_loops,
    "turn_limit": _check_turn_limit,
    "expected_calls": _check_expected_calls,
    "checkpoints": _check_checkpoints,
    "final_reply": _check_final_reply,
    "no_fabrication": _check_no_fabrication,
    "errors_handled": _check_errors_handled,
    "no_needless_tools": _check_no_needless_tools,
    "final_state": _check_final_state,
    "no_unrequested_writes": _check_no_unrequested_writes,
    "confirms_writes": _check_confirms_writes,
    "declines_unserviceable": _check_declines_unserviceable,
    "user_in_role": _check_user_in_role,
}
assert tuple(_CHECKS) == CHECK_NAMES


def run_checks(
    trajectory: Trajectory, task: Task, tools: list[ToolSpec], *, max_turns: int = DEFAULT_MAX_TURNS
) -> list[CheckResult]:
    """Every deterministic check, in `CHECK_NAMES` order. Never raises on odd trajectories: a
    malformed message fails the check it breaks."""
    ctx = _Context(trajectory, task, tools, max_turns)
    return [check(ctx) for check in _CHECKS.values()]


def tools_from_trajectory(trajectory: Trajectory) -> list[ToolSpec]:
    """The toolset recorded in a trajectory, as ToolSpecs. `trajectory.tools` may hold OpenAI
    function tools (`{"type": "function", "function": {...}}`) or ToolSpec dumps. OpenAI tools
    say nothing of side effects, so their `side_effect` is left unset (`tool_writes` reads the
    name)."""
    out = []
    for raw in trajectory.tools:
        fn = raw.get("function") if isinstance(raw.get("function"), dict) else None
        if fn is not None:
            out.append(ToolSpec.model_validate({
                "name": fn["name"], "description": fn.get("description") or "",
                "inputSchema": fn.get("parameters") or {"type": "object"}, "domain": trajectory.domain,
            }))
        else:
            data = {"domain": trajectory.domain, **raw}
            if "input_schema" not in data and "inputSchema" not in data:
                data["inputSchema"] = {"type": "object"}
            data.setdefault("description", "")
            data.pop("id", None)
            out.append(ToolSpec.model_validate(data))
    return out
