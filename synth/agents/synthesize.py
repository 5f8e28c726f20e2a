"""Agent and task synthesis: a system prompt for a toolset, then tasks with rubrics for it.

Agents (`synthesize_agent`): the model drafts a name, role, policies, constraints, tone and traits
under a schema (`AgentDraft`); code assembles the system prompt from them (`system_prompt.j2`),
adding the policies every agent needs (`standard_policies`: use tools only when needed, never
invent results, say when a request is out of reach, confirm before calling the toolset's write
tools, named), so no_tool and unserviceable tasks have a policy to be judged against. A 135M model
often writes filler ("Is awesome, is awesome", tone "Beautiful"), so drafted statements are
screened (`screen_statements`): empty, repeated (exactly, by the same words, or one phrase said
twice) and unrelated ones (no word of the toolset, the domain or `POLICY_WORDS`) are dropped, and
a tone needs a word of `TONE_WORDS`. When no drafted policy survives, or the draft failed, the
prompt holds only the code's policies and `Agent.policy_source` is "code". An agent is always
returned. `Agent.id` hashes the toolset and the prompt.

Tasks (`synthesize_tasks`): for each task, a seeded draw picks the kind by the configured shares
(`tool`, `no_tool`, `unserviceable`) and, for tool tasks, the difficulty; `plans.plan_task` lays
down the part code can guarantee (calls, schema-valid arguments, the initial state holding every
entity they name, withheld details, checkpoints); the model writes the goal, persona, success
criteria and failure conditions (`TaskDraft`); code assembles the `Task`. The goal is the
simulated user's opening request, so the model's goal is kept only when it is a request
(`validate.goal_problems`), does not echo the prompt, states every value the user states and
gives away no withheld one (`model_goal_problem`); otherwise the goal is composed in code from the
plan (`compose_goal`, first person, stated values only, `Task.goal_source` "code"). With the
embedded 135M model most goals are composed; a capable model's are kept. The model's criteria
and failure conditions that speak of the assistant join the plan's own (every kind has one); a
statement it wrote as both is dropped. Then `rubric_problems`
checks the task: one whose draft text fails (`validate.text_problems`: its goal or criteria) gets
`repair_rounds` LLM repair rounds, one whose plan fails (`validate.plan_problems`: its calls or
state, which no redraft writes) none; a task still failing is returned as a
`RejectedItem` with its reasons (when only the goal's request rules fail, the composed goal is
used: `goal_fallback`). A generation error rejects the task with the error; nothing raises.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from synth.agents.plans import TOPICS, PlannedCall, TaskPlan, plan_task
from synth.agents.toolsets import application_of
from synth.agents.validate import (
    MIN_GOAL_WORDS,
    goal_problems,
    plan_problems,
    planned_values,
    request_problems,
    rubric_problems,
    text_problems,
)
from synth.config import Role
from synth.ids import derive_seed
from synth.judges.messages import same_words
from synth.llm import LLMClient, LLMError
from synth.models import (
    Agent,
    Difficulty,
    ExpectedCall,
    Persona,
    RejectedItem,
    Rubric,
    Task,
    TaskKind,
    TextSource,
    ToolSpec,
)
from synth.naming import crude_stem, intent_verb, name_words, tool_intent
from synth.prompts import render
from synth.settings import AgentSettings

PROMPT_VERSION = "agents-v2"
_DESCRIPTION_CHARS = 120
# Multi-call tasks (multi_step, error_recovery) are what agentic training data is short of: they
# make up 70% of the draws, so that after the few plans that degrade to one call (a toolset where
# fewer than two tools build) they stay well over half of the tool tasks.
_DIFFICULTY_WEIGHTS: dict[Difficulty, float] = {"single_call": 0.3, "multi_step": 0.45, "error_recovery": 0.25}


# ---------------------------------------------------------------- generation schemas (kept flat)


# The longest list item a draft keeps (`clean_list`, `clean_statements`), and so the longest the grammar
# lets the model write: unbounded, a small model's item ran on ("Founder-Founder-...", "to-be-a-lady-to-be-
# a-lady-...", digits) to max_tokens. 110 recorded agent, task and evolution drafts replayed as sent and
# with items bounded, twice: cut at max_tokens 17-24 -> 13-14, valid 86-94 -> 97, unusable tokens 5.3-8.4k
# -> 3.8-4.3k (docs/architecture.md, section 6 item 10).
ITEM_CHARS = 160
Item = Annotated[str, Field(max_length=ITEM_CHARS)]


class AgentDraft(BaseModel):
    name: str = Field(min_length=2, max_length=40)
    role: str = Field(min_length=10, max_length=120)
    policies: list[Item] = Field(min_length=1, max_length=3)
    constraints: list[Item] = Field(max_length=2)
    tone: str = Field(min_length=2, max_length=30)
    traits: list[Item] = Field(min_length=1, max_length=3)


class PersonaDraft(BaseModel):
    name: str = Field(min_length=1, max_length=24)
    communication_style: str = Field(min_length=3, max_length=40)
    expertise: Literal["novice", "intermediate", "expert"]
    patience: Literal["low", "medium", "high"]
    quirks: list[Item] = Field(max_length=1)


class TaskDraft(BaseModel):
    goal: str = Field(min_length=10, max_length=200)
    persona: PersonaDraft
    success_criteria: list[Item] = Field(min_length=1, max_length=3)
    failure_conditions: list[Item] = Field(max_length=2)


@dataclass
class AgentResult:
    """One agent with its accepted tasks and its rejected ones (kind "task", reason, task dump)."""

    agent: Agent
    tasks: list[Task] = field(default_factory=list)
    rejected: list[RejectedItem] = field(default_factory=list)


# ---------------------------------------------------------------- text helpers


def clean_text(text: str, limit: int = 200) -> str:
    """Whitespace collapsed, stripped, cut at `limit`."""
    return re.sub(r"\s+", " ", text).strip()[:limit].strip()


def clean_list(items: list[str], limit: int = ITEM_CHARS, most: int = 4) -> list[str]:
    """Non-blank, deduplicated (case-insensitively), at most `most` items."""
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = clean_text(item, limit)
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return out[:most]


_ENUMERATION = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")


# A list marker inside an item ("... first. 2. Never ..."): a 135M model writes a numbered list as one string.
_INNER_ENUMERATION = re.compile(r"(?<=[.!?;])\s+\d+[.)]\s+|\s+-\s+(?=[A-Z])")


# What a word may lack and still be a word of its own ("book" beside "books"): a last word missing
# anything else of a word the draft uses ("curren" beside "current") was closed mid-word.
_ENDINGS = frozenset({"s", "es", "ed", "d", "er", "ly", "y", "e"})


def _stutters(word: str, vocabulary: Collection[str]) -> bool:
    """`word` (five letters or more) is a word of the draft (`vocabulary`, lower case) short of its
    last one or two letters, and not one of `_ENDINGS` short: a word the model began again and
    closed. Shorter words are too often words of their own ("use" beside "user")."""
    return len(word) >= 5 and any(len(w) - len(word) in (1, 2) and w.startswith(word) and w[len(word):] not in _ENDINGS
                                  for w in vocabulary)


def _whole_sentences(text: str, limit: int, vocabulary: Collection[str] = ()) -> str:
    """`text` when it fits in `limit` characters; else its leading whole sentences that do, or ""
    (a statement cut mid-word, "... 3. Alway", says nothing checkable). A last word that
    `_stutters` goes: a CI main job's agent had the policy "List the current weather conditions,
    curren" and the constraint "List the weather records, curren"."""
    text = clean_text(text, 10 * limit)
    tail = re.search(r"(?<=[.!?])\s+(\S+(?:\s+\S+)?)$", text)
    if tail and tail.group(1)[-1] not in ".!?":  # "... before calling it. Y": a cut-off last sentence
        text = text[:tail.start()]
    words = text.split()
    if len(words) > 1 and text[-1].isalnum() and _stutters(words[-1].lower(), vocabulary):
        text = text.rsplit(None, 1)[0].rstrip(",;: ")
    if len(text) <= limit:
        return text
    head = text[:limit]
    end = max(head.rfind(". "), head.rfind("! "), head.rfind("? "), head.rfind("; "))
    return head[:end + 1].rstrip(";").strip() if end > 0 else ""


def draft_words(*texts: str | list[str]) -> frozenset[str]:
    """The lower-case words of a draft's texts, for `clean_statements` to tell a stutter by."""
    return frozenset(w for t in texts for s in ([t] if isinstance(t, str) else t) for w in _text_words(s))


def clean_statements(items: list[str], limit: int = ITEM_CHARS, most: int = 4,
                     vocabulary: Collection[str] = ()) -> list[str]:
    """Like `clean_list`, for criteria, conditions and policies: an item holding a numbered list is
    split into its statements, list markers ("1.", "-") stripped, a statement longer than `limit`
    cut back to its whole sentences (or dropped), a last word begun and closed short dropped
    (`_stutters`, against `vocabulary` and the items' own words), and fragments under three words
    dropped (a checkable statement needs a subject and a verb)."""
    split = [part for item in items for part in _INNER_ENUMERATION.split(item)]
    words = draft_words(items) | frozenset(vocabulary)
    stripped = [_whole_sentences(_ENUMERATION.sub("", item), limit, words) for item in split]
    return [s for s in clean_list(stripped, limit, most * 2) if len(s.split()) >= MIN_GOAL_WORDS][:most]


def main_domain(toolset: list[ToolSpec]) -> str:
    """The domain most of `toolset` belongs to (ties: the first by name): the agent's and its tasks' domain."""
    counts = Counter(t.domain for t in toolset)
    return min(counts, key=lambda d: (-counts[d], d)) if counts else "general"


def _tool_lines(toolset: list[ToolSpec]) -> list[dict[str, str]]:
    return [{"name": t.name, "description": clean_text(t.description, _DESCRIPTION_CHARS)} for t in toolset]


def _humanize(name: str) -> str:
    return re.sub(r"[_\-]+", " ", name).strip()


# ---------------------------------------------------------------- agents

FALLBACK_TONE = "clear and friendly"
MAX_NAMED_TOOLS = 4
# Words that make a statement an assistant policy whatever the toolset (`screen_statements`).
POLICY_WORDS = frozenset({
    "confirm", "confirmation", "ask", "verify", "check", "user", "customer", "data", "request", "information",
    "never", "always", "share", "personal", "private", "privacy", "sensitive", "secure", "security", "tool",
    "details", "account", "cancel", "change", "delete", "error", "result", "record", "permission", "consent",
    "approve", "accurate", "invent", "guess", "explain", "report", "escalate", "refund", "update", "create",
})
# Words a tone is described with; a tone with none of them ("Beautiful") is no tone.
TONE_WORDS = frozenset({
    "friendly", "professional", "polite", "courteous", "concise", "clear", "formal", "informal", "casual", "warm",
    "helpful", "patient", "calm", "empathetic", "empathic", "supportive", "direct", "neutral", "precise",
    "respectful", "cheerful", "positive", "informative", "reassuring", "approachable", "efficient",
    "knowledgeable", "encouraging", "upbeat", "confident", "attentive", "thorough", "brief", "kind",
    "considerate", "diplomatic", "straightforward", "transparent", "honest", "accurate", "factual", "objective",
    "relaxed", "enthusiastic", "technical", "plain", "simple", "conversational", "gentle", "firm", "caring",
    "welcoming", "succinct", "tactful", "engaging", "trustworthy", "reliable", "careful", "practical",
})
_STOPWORDS = frozenset({
    "a", "an", "the", "and", "or", "but", "if", "then", "else", "when", "while", "before", "after", "to", "of",
    "in", "on", "at", "by", "for", "from", "with", "without", "into", "onto", "about", "as", "is", "are", "was",
    "were", "be", "been", "being", "am", "do", "does", "did", "done", "have", "has", "had", "it", "its", "this",
    "that", "these", "those", "there", "here", "they", "them", "their", "you", "your", "yours", "we", "our", "us",
    "he", "she", "his", "her", "me", "my", "i", "not", "no", "nor", "so", "than", "too", "very", "can", "could",
    "should", "would", "will", "shall", "may", "might", "must", "all", "any", "each", "every", "some", "such",
    "only", "just", "also", "more", "most", "other", "own", "same", "what", "which", "who", "whom", "whose",
    "how", "why", "where", "up", "down", "out", "over", "under", "again", "once", "both", "few", "get", "make",
    "use", "way", "thing", "things", "lot", "really", "well", "good", "great", "via", "per", "given", "one",
})
_CLAUSE = re.compile(r"[,;.!?]+|\s+-\s+")


def _text_words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _content_stems(text: str) -> set[str]:
    return {crude_stem(w) for w in _text_words(text) if len(w) > 2 and w not in _STOPWORDS}


def policy_vocabulary(toolset: list[ToolSpec], domain: str) -> frozenset[str]:
    """The stems a related policy may use: words of the tools' names and descriptions, of their
    applications and domains, of `domain`, and `POLICY_WORDS`."""
    vocabulary = {crude_stem(w) for w in POLICY_WORDS} | _content_stems(" ".join(name_words(domain)))
    for tool in toolset:
        vocabulary |= _content_stems(" ".join([*name_words(tool.name), *name_words(tool.domain),
                                               *name_words(application_of(tool))]))
        vocabulary |= _content_stems(tool.description)
    return frozenset(vocabulary)


def repeats_a_phrase(statement: str) -> bool:
    """True for filler that says one thing over: every clause the same ("Is awesome, is
    awesome"), or at most half of four or more words distinct."""
    clauses = [" ".join(_text_words(c)) for c in _CLAUSE.split(statement)]
    clauses = [c for c in clauses if c]
    if len(clauses) >= 2 and len(set(clauses)) == 1:
        return True
    words = _text_words(statement)
    return len(words) >= 4 and len(set(words)) * 2 <= len(words)


# Statements that would overrule the code's own policies (`standard_policies`): an agent told to
# "accept all requests" or "never ask for confirmation" is trained to do what its checks reject.
_OVERRULES = re.compile(
    r"\b(?:accept|approve|fulfil+) (?:all|every|any)\b|\bnot limited to\b|\bbeyond (?:your|the) tools\b"
    r"|\b(?:never|not|don't|do not|no need to) (?:ask|confirm|check|verify|wait)"
    r"|\bwithout (?:ask|confirm|check|verif|consent|permission)", re.IGNORECASE)
# A word that names a tool or service in code form: snake_case, dotted, or CamelCase of two parts.
_CODE_NAME = re.compile(r"\b(?:[A-Za-z][A-Za-z0-9]*(?:[_.][A-Za-z0-9]+)+|[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)+)\b")


def names_unknown_tool(statement: str, tool_names: Iterable[str]) -> str | None:
    """The first code-form name in `statement` that is not one of `tool_names` ("Confirm before
    calling update_order" for an agent without `update_order`), else None."""
    names = {n.lower() for n in tool_names}
    for match in _CODE_NAME.finditer(statement):
        if match.group(0).lower().rstrip(".") not in names:
            return match.group(0)
    return None


def screen_statements(statements: list[str], vocabulary: frozenset[str], seen: set[frozenset[str]],
                      tool_names: Iterable[str] = ()) -> list[str]:
    """The statements worth a place in a system prompt, in order. Dropped: empty ones, ones that
    repeat a phrase (`repeats_a_phrase`), ones with no content word in `vocabulary` (unrelated to
    the toolset and the job), ones naming a tool the agent lacks (`names_unknown_tool`), ones
    that overrule the code's policies (`_OVERRULES`), and repeats of an earlier statement or of
    one in `seen` (the same content words, in any order: near duplicates). `seen` is extended
    with the kept ones."""
    kept = []
    tool_names = list(tool_names)
    for statement in statements:
        stems = frozenset(_content_stems(statement))
        if not stems or repeats_a_phrase(statement) or not stems & vocabulary or stems in seen:
            continue
        if names_unknown_tool(statement, tool_names) or _OVERRULES.search(statement):
            continue
        seen.add(stems)
        kept.append(statement)
    return kept


def tone_of(draft_tone: str) -> str:
    """The drafted tone when it describes one (a word of `TONE_WORDS`, no repeated phrase), else
    `FALLBACK_TONE`: one vague word ("Beautiful") or filler is no tone."""
    tone = clean_text(draft_tone, 60).rstrip(".")
    words = _text_words(tone)
    if not words or any(len(w) > 20 for w in tone.split()) or repeats_a_phrase(tone):
        return FALLBACK_TONE
    if not any(w in TONE_WORDS or w.removesuffix("ly") in TONE_WORDS for w in words):
        return FALLBACK_TONE
    return tone


def _named(names: list[str]) -> str:
    shown = names[:MAX_NAMED_TOOLS]
    text = ", ".join(shown[:-1]) + (" or " if len(shown) > 1 else "") + shown[-1]
    return text + (" and the like" if len(names) > MAX_NAMED_TOOLS else "")


def standard_policies(toolset: list[ToolSpec]) -> list[str]:
    """The policies every agent of `toolset` follows, in code: tool use, faithful reporting,
    unserviceable requests, missing details, and (from the toolset) confirming before the write
    tools, named, and looking records up with the read tools before changing them."""
    policies = [
        "Use a tool only when the request needs it; answer general questions directly.",
        "Report only what tools return; never invent ids, numbers or results.",
        "If a request is beyond what your tools can do, say so plainly and offer what you can do.",
        "Ask the user for missing details instead of guessing them.",
    ]
    writes = [t.name for t in toolset if t.side_effect == "write"]
    lookups = [t.name for t in toolset if t.side_effect == "read" and tool_intent(t.name, False)[0] == "get"]
    if writes:
        policies.append(f"Confirm the details with the user before calling {_named(writes)}: "
                        "these tools change records, and a change may not be undone.")
    if writes and lookups:
        policies.append(f"Check the current record with {_named(lookups)} before changing it, "
                        "and tell the user what changed.")
    return policies


def assemble_agent(toolset: list[ToolSpec], draft: AgentDraft | None, tool_ids: list[str] | None = None) -> Agent:
    """The agent from a draft (or from the toolset alone when `draft` is None or empty);
    `tool_ids`, the toolset's ids when the caller has them (each is a hash of the tool's schemas).

    Drafted policies and constraints pass `screen_statements` (against the toolset's vocabulary
    and the code's own policies, so none is said twice); `policy_source` is "code" when none of
    the drafted policies survives (the prompt then holds `standard_policies` only)."""
    domain = main_domain(toolset)
    apps = sorted({application_of(t) for t in toolset if application_of(t)})
    noun = _humanize(apps[0]) if len(apps) == 1 else _humanize(domain)
    name = clean_text(draft.name, 40) if draft else ""
    role = clean_text(draft.role, 160) if draft else ""
    tone = tone_of(draft.tone) if draft else FALLBACK_TONE
    standard = standard_policies(toolset)
    vocabulary = policy_vocabulary(toolset, domain)
    seen = {frozenset(_content_stems(p)) for p in standard}
    names = [t.name for t in toolset]
    policies: list[str] = []
    constraints: list[str] = []
    if draft:
        said = draft_words(draft.name, draft.role, draft.policies, draft.constraints)
        policies = screen_statements(clean_statements(draft.policies, vocabulary=said), vocabulary, seen, names)
        constraints = screen_statements(clean_statements(draft.constraints, most=3, vocabulary=said), vocabulary,
                                        seen, names)
    traits = clean_list(draft.traits, 40) if draft else []
    if name.lower() in {t.name.lower() for t in toolset}:  # a copied tool name is no agent name
        name = ""
    # A role is a phrase about this job: "AI (Artificial Intelligence) Imperative." (a CI main job's
    # agent over cancellation tools) says nothing of it, nor a weather helper's role over orders.
    if len(role.split()) < MIN_GOAL_WORDS or not _content_stems(role) & vocabulary or repeats_a_phrase(role):
        role = ""
    traits = [t for t in traits if all(len(word) <= 20 for word in t.split()) and not repeats_a_phrase(t)]
    name = name or f"{noun.title()} Assistant"
    role = role or f"an assistant that helps users with {noun} tasks."
    if not role.endswith((".", "!", "?")):
        role += "."
    prompt = render(
        "synth.agents", "system_prompt.j2", name=name, role=role, domain=_humanize(domain),
        tool_names=[t.name for t in toolset], policies=[*policies, *standard],
        constraints=constraints, tone=tone,
    )
    source: TextSource = "model" if policies else "code"
    return Agent(name=name, domain=domain, system_prompt=prompt, tool_ids=tool_ids or [t.id for t in toolset],
                 traits=traits or ["asks for missing details", "reports tool results faithfully"],
                 policy_source=source)


async def synthesize_agent(toolset: list[ToolSpec], llm: LLMClient, seed: int,
                           max_tokens: int = 360) -> Agent:
    """An agent (system prompt, traits) for `toolset`; never raises on model failure (falls back
    to a prompt built from the toolset). Raises ValueError on an empty toolset."""
    if not toolset:
        raise ValueError("synthesize_agent needs a non-empty toolset")
    domain = main_domain(toolset)
    apps = sorted({application_of(t) for t in toolset if application_of(t)})
    prompt = render("synth.agents", "agent.j2", domain=_humanize(domain), applications=apps[:3],
                    tools=_tool_lines(toolset))
    tool_ids = [t.id for t in toolset]
    # The instructions are a system message of their own, the same for every agent, so a server
    # with a prefix cache computes them once (the toolset follows, in the user message).
    messages = [{"role": "system", "content": render("synth.agents", "agent_system.j2")},
                {"role": "user", "content": prompt}]
    try:
        draft = await llm.structured(Role.GENERATOR, messages, AgentDraft,
                                     seed=derive_seed(seed, "agent", sorted(tool_ids)),
                                     max_tokens=max_tokens)
    except LLMError:
        draft = None
    return assemble_agent(toolset, draft, tool_ids)


# ---------------------------------------------------------------- tasks


def choose_kind(settings: AgentSettings, rng: random.Random) -> TaskKind:
    roll = rng.random()
    if roll < settings.no_tool_share:
        return "no_tool"
    if roll < settings.no_tool_share + settings.unserviceable_share:
        return "unserviceable"
    return "tool"


def choose_difficulty(rng: random.Random) -> Difficulty:
    kinds = list(_DIFFICULTY_WEIGHTS)
    return rng.choices(kinds, weights=[_DIFFICULTY_WEIGHTS[k] for k in kinds])[0]


def _mentions(goal: str, value: str) -> bool:
    return value.lower() in goal.lower()


def _words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@functools.cache
def _prompt_shingles() -> frozenset[str]:
    """Six-word runs of the task prompts' own text: a goal that repeats one echoes its prompt."""
    words: list[str] = []
    for name in ("task_system.j2", "task.j2", "task_repair.j2"):
        source = (Path(__file__).parent / "prompts" / name).read_text(encoding="utf-8")
        words += _words_of(re.sub(r"{[{%#].*?[}%#]}", " ", source))
    return frozenset(" ".join(words[i:i + 6]) for i in range(len(words) - 5))


def model_goal_problem(goal: str, plan: TaskPlan) -> str | None:
    """Why the model's goal cannot be the user's request (None when it can): it is no request
    (`validate.goal_problems`), echoes the prompt, leaves out a value the user states, or gives
    away a withheld one. The goal is the simulated user's opening, so it must carry the plan."""
    problems = goal_problems(goal, [str(v) for v in (*plan.stated.values(), *plan.withheld.values())])
    if problems:
        return problems[0]
    words = _words_of(goal)
    if any(" ".join(words[i:i + 6]) in _prompt_shingles() for i in range(len(words) - 5)):
        return f"goal echoes the task prompt: {goal!r}"
    missing = [k for k, v in plan.stated.items() if not _mentions(goal, v)]
    if missing:
        return f"goal leaves out the stated {', '.join(_humanize(k) for k in missing)}: {goal!r}"
    told = [k for k, v in plan.withheld.items() if _mentions(goal, v)]
    if told:
        return f"goal gives away the withheld {', '.join(_humanize(k) for k in told)}: {goal!r}"
    return None


def assemble_task(agent: Agent, plan: TaskPlan, draft: TaskDraft) -> Task:
    """The task from a plan and the model's text. The goal is the model's when it carries the plan
    (`model_goal_problem`), else the one `compose_goal` writes from the plan (`goal_source`
    "code"): a user who states the request and its values in plain words, never a broken one."""
    goal = clean_text(draft.goal, 300)
    source: Literal["model", "code"] = "model"
    if model_goal_problem(goal, plan) is not None:
        goal, source = compose_goal(plan), "code"
    p = draft.persona
    persona = Persona(
        name=clean_text(p.name, 30) or "user",
        communication_style=clean_text(p.communication_style, 80) or "brief and direct",
        expertise=p.expertise, patience=p.patience, quirks=clean_list(p.quirks, 60, 2),
    )
    # The model's statements count only when they are about the assistant, as the prompt asks
    # (`about_the_assistant`). A statement it wrote both as a success criterion and as a failure
    # condition says nothing either way: it is dropped from both, and a criterion that repeats one
    # of the plan's failure conditions too (`rubric_problems` still rejects any left). The plan's
    # own statements always stay; each list keeps one statement per wording.
    model_criteria = [c for c in clean_statements(draft.success_criteria, 160, 5) if about_the_assistant(c)]
    model_failures = [f for f in clean_statements(draft.failure_conditions, 160, 5) if about_the_assistant(f)]
    both = {same_words(c) for c in model_criteria} & {same_words(f) for f in model_failures}
    failures = _distinct([*plan.failure_conditions, *(f for f in model_failures if same_words(f) not in both)])[:5]
    failing = {same_words(f) for f in failures} | both
    criteria = _distinct([*(c for c in model_criteria if same_words(c) not in failing), *plan.criteria])[-5:]
    rubric = Rubric(
        success_criteria=criteria,
        expected_calls=[ExpectedCall(tool=c.tool.name, arguments=c.key_arguments) for c in plan.calls],
        ordered=plan.ordered, checkpoints=plan.checkpoints, failure_conditions=failures,
        expected_state=plan.expected_state or None,
    )
    return Task(agent_id=agent.id, domain=agent.domain, goal=goal, persona=persona, withheld=plan.withheld,
                initial_state=plan.initial_state, difficulty=plan.difficulty, kind=plan.kind, rubric=rubric,
                goal_source=source)


_ASSISTANT = re.compile(r"\b(?:assistant|agent)\b", re.IGNORECASE)


def about_the_assistant(statement: str) -> bool:
    """Whether a drafted criterion or failure condition speaks of the assistant, as the task
    prompt asks ("The assistant confirms the date before booking"). The embedded 135M model's
    seldom do, and what it writes instead is no rubric: "I'm looking for help, but I'm not sure
    how to get the help I need.", "Inventory Management System", "success_criteria_2023: [1.2,
    [true,". Such text also reached `checks._asked_writes`, where a clause like "create a forecast"
    counted as the task asking for that write."""
    return _ASSISTANT.search(statement) is not None


def _distinct(statements: Iterable[str]) -> list[str]:
    """`statements` without those that repeat an earlier one's words ("... returned" and "... returned.")."""
    seen: set[str] = set()
    kept = []
    for statement in statements:
        if (words := same_words(statement)) not in seen:
            seen.add(words)
            kept.append(statement)
    return kept


def _call_clause(call: PlannedCall, plan: TaskPlan, said: set[str]) -> str:
    """`update ticket TCK-55210: set status to pending`, `get my order` (its id withheld),
    `search orders with query weekly report`: one planned call in words, with the stated values
    it uses (each non-id value once over the whole goal, in `said`) and no withheld one."""
    kind, resource = tool_intent(call.tool.name, call.tool.side_effect == "write")
    verb = intent_verb(call.tool.name)
    hidden = any(name in plan.withheld for name in call.entities)
    if verb and resource:
        action = f"{verb} {'my ' if hidden else ''}{' '.join(resource)}"
    else:
        action = " ".join(name_words(call.tool.name))
    ids: list[str] = []
    values: list[tuple[str, str]] = []
    for name in call.arguments:
        if name in plan.withheld or name not in plan.stated:
            continue
        if name in call.entities:
            ids.append(plan.stated[name])
        elif name not in said:
            said.add(name)
            values.append((_humanize(name), plan.stated[name]))
    clause = f"{action} {' and '.join(ids)}".rstrip()
    if values and kind == "update":
        clause += ": " + ", ".join(f"set {k} to {v}" for k, v in values)
    elif values:
        clause += " with " + ", ".join(f"{k} {v}" for k, v in values)
    return clause


def _articles(text: str) -> str:
    """`a order` -> `an order` (the plan's ideas put "a" before any noun)."""
    return re.sub(r"\b([Aa]) (?=[aeioAEIO])", r"\1n ", text)  # not before u: a user, a unit


_IDEA_OPENINGS = (("ask the assistant to ", "Can you {}?"), ("ask for ", "Could you give me {}?"),
                  ("ask what ", "What {}?"), ("explain ", "Can you explain {}?"))


def compose_goal(plan: TaskPlan) -> str:
    """A plain first-person goal written in code from `plan`, for when the model's goal is no
    request (`validate.request_problems`). A tool task names each planned call with its stated
    values ("I need to update ticket TCK-55210: set status to pending.") and never a withheld
    value (the user only says they can give it); a no_tool or unserviceable task asks for the
    plan's idea ("Can you phone someone about a order on my behalf?")."""
    if plan.kind != "tool" or not plan.calls:
        idea = plan.idea.strip().rstrip(".") or "understand what you can help me with"
        for opening, template in _IDEA_OPENINGS:
            if idea.startswith(opening):
                rest = re.sub(r"\btheir\b", "my", idea[len(opening):])
                return _articles(template.format(rest))
        return _articles(f"I would like help to {idea}.")
    said: set[str] = set()
    clauses = [_call_clause(call, plan, said) for call in plan.calls]
    goal = f"I need to {', then '.join(clauses)}."
    if plan.withheld:
        goal += f" I can tell you the {' and '.join(_humanize(k) for k in plan.withheld)} when you ask."
    return goal


def _call_lines(plan: TaskPlan) -> list[dict[str, str]]:
    lines = []
    for call in plan.calls:
        shown = {k: v for k, v in call.arguments.items() if k not in plan.withheld}
        text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in shown.items())
        lines.append({"tool": call.tool.name, "arguments": text[:300]})
    return lines


def _task_opening(agent: Agent, toolset: list[ToolSpec]) -> str:
    return render("synth.agents", "task_system.j2", agent_name=agent.name, domain=_humanize(agent.domain),
                  tools=_tool_lines(toolset))


async def _draft_task(agent: Agent, toolset: list[ToolSpec], plan: TaskPlan, llm: LLMClient, seed: int,
                      max_tokens: int) -> TaskDraft:
    """The model's draft of one task. The system message (instructions, then the agent and its
    toolset: `task_system.j2`) is the same for every task of an agent, and only the user message
    (this task's plan: `task.j2`) differs, so a server with a prefix cache computes the opening
    once per agent (`synthesize_tasks` drafts the first task alone)."""
    opening = _task_opening(agent, toolset)
    prompt = render("synth.agents", "task.j2", kind=plan.kind, calls=_call_lines(plan), stated=plan.stated,
                    withheld=list(plan.withheld), idea=plan.idea)
    messages = [{"role": "system", "content": opening}, {"role": "user", "content": prompt}]
    return await llm.structured(Role.GENERATOR, messages, TaskDraft, seed=seed, max_tokens=max_tokens)


async def _repair_task(agent: Agent, toolset: list[ToolSpec], plan: TaskPlan, task: Task, problems: list[str],
                       llm: LLMClient, seed: int, max_tokens: int) -> TaskDraft:
    """The model's rewrite of a task with `problems`, after the drafts' own opening (cached)."""
    prompt = render(
        "synth.agents", "task_repair.j2", agent_name=agent.name,
        problems=problems, goal=task.goal, criteria=task.rubric.success_criteria,
        failures=task.rubric.failure_conditions, kind=plan.kind, calls=_call_lines(plan), stated=plan.stated,
        idea=plan.idea,
    )
    messages = [{"role": "system", "content": _task_opening(agent, toolset)}, {"role": "user", "content": prompt}]
    return await llm.structured(Role.GENERATOR, messages, TaskDraft, seed=seed, max_tokens=max_tokens)


def _rejected(reason: str, task: Task | None, **data: object) -> RejectedItem:
    payload = task.model_dump() if task is not None else {k: v for k, v in data.items()}
    return RejectedItem(kind="task", reason=reason[:1000], data=json.loads(json.dumps(payload, default=str)))


def draw_plan(toolset: list[ToolSpec], settings: AgentSettings,
              seed: int) -> tuple[TaskKind, Difficulty, TaskPlan | None]:
    """The seeded draws of one task: its kind (by the settings' shares), its difficulty (tool
    tasks), its topic, then its plan (`plans.plan_task`; None when no tool gets valid arguments).
    The plan's difficulty may be lower than the drawn one (a multi-step draw that got one call)."""
    rng = random.Random(seed)
    kind = choose_kind(settings, rng)
    difficulty = choose_difficulty(rng) if kind == "tool" else "single_call"
    topic = rng.choice(TOPICS)
    return kind, difficulty, plan_task(toolset, kind, difficulty, rng, topic=topic)


def goal_fallback(task: Task, plan: TaskPlan, problems: list[str], toolset: list[ToolSpec]) -> Task | None:
    """`task` with the goal `compose_goal` writes from `plan` (`goal_source` "code"), when every
    problem left is a request rule of its goal (`validate.request_problems`) and the composed
    goal validates; None otherwise (the task stays rejected)."""
    request = set(request_problems(task.goal, planned_values(task)))
    if not problems or not request or any(p not in request for p in problems):
        return None
    fixed = task.model_copy(update={"goal": compose_goal(plan), "goal_source": "code"})
    return fixed if not rubric_problems(fixed, toolset) else None


async def synthesize_task(agent: Agent, toolset: list[ToolSpec], llm: LLMClient, settings: AgentSettings,
                          seed: int) -> Task | RejectedItem:
    """One task for `agent` (see the module docstring), or why there is none."""
    kind, difficulty, plan = draw_plan(toolset, settings, seed)
    if plan is None:
        return _rejected(
            "no plan: no tool of the toolset got schema-valid arguments, or a planned write got no value "
            "the user gives: " + ", ".join(t.name for t in toolset), None,
            agent_id=agent.id, domain=agent.domain, kind=kind, difficulty=difficulty,
            tools=[t.name for t in toolset])
    try:
        draft = await _draft_task(agent, toolset, plan, llm, derive_seed(seed, "draft"), settings.task_max_tokens)
    except LLMError as exc:
        return _rejected(f"task generation failed: {exc}", None, agent_id=agent.id, domain=agent.domain,
                         kind=plan.kind, difficulty=plan.difficulty, initial_state=plan.initial_state,
                         raw_text=str(getattr(exc, "raw_text", ""))[:1000])
    task = assemble_task(agent, plan, draft)
    unmendable = plan_problems(task, toolset)  # a redraft writes the goal and criteria, never the plan
    problems = text_problems(task) + unmendable
    for round_no in range(0 if unmendable else settings.repair_rounds):
        if not problems:
            break
        try:
            draft = await _repair_task(agent, toolset, plan, task, problems, llm,
                                       derive_seed(seed, "repair", round_no), settings.task_max_tokens)
        except LLMError as exc:
            fixed = goal_fallback(task, plan, problems, toolset)
            if fixed is not None:
                return fixed
            return _rejected(f"{'; '.join(problems)} (repair failed: {str(exc)[:200]})", task)
        task = assemble_task(agent, plan, draft)
        problems = rubric_problems(task, toolset)
    if problems:
        return goal_fallback(task, plan, problems, toolset) or _rejected("; ".join(problems), task)
    return task


async def synthesize_tasks(agent: Agent, toolset: list[ToolSpec], llm: LLMClient, settings: AgentSettings,
                           seed: int) -> tuple[list[Task], list[RejectedItem]]:
    """`settings.tasks_per_agent` tasks for `agent`: (accepted, rejected).

    The first task goes alone and the others after it, concurrently. All share the draft's opening
    (`_draft_task`); started together, each would make the server compute it (on llama-server, one
    slot each), while after the first it is cached. Measured on the embedded model (4 slots, 12
    episodes of `bench_pipeline.py server`): task drafts reused 22% of their prompt tokens when the
    opening came after the plan and the tasks started together; docs/architecture.md, section 7 (server)."""
    if not toolset:
        raise ValueError("synthesize_tasks needs a non-empty toolset")
    seeds = [derive_seed(seed, agent.id, "task", i) for i in range(settings.tasks_per_agent)]
    results = [await synthesize_task(agent, toolset, llm, settings, seeds[0])] if seeds else []
    results += await asyncio.gather(*(synthesize_task(agent, toolset, llm, settings, s) for s in seeds[1:]))
    tasks: list[Task] = []
    rejected: list[RejectedItem] = []
    seen: set[str] = set()
    for result in results:
        if isinstance(result, Task):
            if result.id in seen:
                rejected.append(_rejected("duplicate of another task of this agent", result))
                continue
            seen.add(result.id)
            tasks.append(result)
        else:
            rejected.append(result)
    return tasks, rejected


async def synthesize_agent_and_tasks(toolset: list[ToolSpec], llm: LLMClient, settings: AgentSettings,
                                     seed: int) -> AgentResult:
    """The stage: an agent for `toolset`, then its tasks."""
    agent = await synthesize_agent(toolset, llm, derive_seed(seed, "agent"), settings.agent_max_tokens)
    tasks, rejected = await synthesize_tasks(agent, toolset, llm, settings, derive_seed(seed, "tasks"))
    return AgentResult(agent, tasks, rejected)
