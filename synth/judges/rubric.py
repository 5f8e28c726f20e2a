"""The rubric LLM judge: per-criterion verdicts with quoted evidence, a score and a verdict,
generated under a JSON schema, optionally by a panel (several endpoints and/or k samples).

The judge model may be tiny, so the prompt is short and the conversation is rendered compactly
(long messages and tool results truncated) and the schema is flat: one `{passed, evidence}` per
criterion (the array length is fixed by the schema, so criteria line up by position), an integer
score 0..10 (normalised to 0..1) and a verdict "pass"/"fail". A sample whose output stays invalid
after the client's retries is not a vote; it is reported in the reasons. No valid vote at all
means the verdict fails with that reason: a broken judge never lets a trajectory through.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Sequence
from typing import Any

import jsonschema
from pydantic import BaseModel, Field

from synth.config import Role
from synth.llm import LLMClient, LLMError
from synth.models import CriterionVerdict, Task, Trajectory
from synth.prompts import render
from synth.settings import Aggregation, VerdictFormat

MAX_MESSAGE_CHARS = 400
MAX_TOOL_RESULT_CHARS = 240
MAX_CONVERSATION_CHARS = 3500
MAX_EVIDENCE_CHARS = 160
FREE_REASONING_TOKENS = 320  # room for the judge's plain-text reasoning before its JSON block


class LLMVerdict(BaseModel):
    """The (aggregated) opinion of the rubric judge(s) on one trajectory."""

    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    criteria: list[CriterionVerdict] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    votes: list[bool] = Field(default_factory=list)  # one per valid sample
    invalid_samples: int = 0
    repaired: int = 0  # samples whose free-text verdict had to be repaired under the schema
    aggregation: Aggregation = "majority"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_conversation(trajectory: Trajectory, max_chars: int = MAX_CONVERSATION_CHARS) -> str:
    """The trajectory as short labelled lines, e.g. `[assistant calls get_order {"id":"o-1"}]`.
    Over `max_chars`, middle lines are dropped (the opening and the ending matter most)."""
    lines = []
    for msg in trajectory.messages:
        role = msg.get("role")
        content = msg.get("content")
        text = content if isinstance(content, str) else ("" if content is None else json.dumps(content))
        if role == "tool":
            lines.append(f"[tool result] {_clip(text, MAX_TOOL_RESULT_CHARS)}")
            continue
        if role == "system":
            lines.append(f"[system] {_clip(text, 200)}")
            continue
        if text.strip():
            lines.append(f"[{role}] {_clip(text, MAX_MESSAGE_CHARS)}")
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") or {}
            args = fn.get("arguments")
            args_text = args if isinstance(args, str) else json.dumps(args)
            lines.append(f"[assistant calls {fn.get('name')}] {_clip(args_text, 160)}")
    total = sum(len(line) + 1 for line in lines)
    if total <= max_chars:
        return "\n".join(lines)
    head, tail = lines[:2], lines[2:]
    budget = max_chars - sum(len(line) + 1 for line in head) - 30
    kept: list[str] = []
    for line in reversed(tail):
        if budget - len(line) - 1 < 0:
            break
        kept.insert(0, line)
        budget -= len(line) + 1
    return "\n".join([*head, f"[... {len(tail) - len(kept)} message(s) omitted ...]", *kept])


def verdict_schema(n_criteria: int) -> dict[str, Any]:
    """The JSON schema the judge answers under (small and flat for a tiny model)."""
    n = max(n_criteria, 1)
    return {
        "type": "object",
        "properties": {
            "criteria": {
                "type": "array", "minItems": n, "maxItems": n,
                "items": {
                    "type": "object",
                    "properties": {
                        "passed": {"type": "boolean"},
                        "evidence": {"type": "string", "maxLength": MAX_EVIDENCE_CHARS},
                    },
                    "required": ["passed", "evidence"],
                    "additionalProperties": False,
                },
            },
            "score": {"type": "integer", "minimum": 0, "maximum": 10},
            "verdict": {"type": "string", "enum": ["pass", "fail"]},
        },
        "required": ["criteria", "score", "verdict"],
        "additionalProperties": False,
    }


def judge_messages(trajectory: Trajectory, task: Task) -> list[dict[str, Any]]:
    criteria = task.rubric.success_criteria or ["The assistant fully completed the user's task."]
    return [
        {"role": "system", "content": render("synth.judges", "judge_system.j2")},
        {"role": "user", "content": render(
            "synth.judges", "judge_user.j2", goal=task.goal, kind=task.kind, criteria=criteria,
            failure_conditions=task.rubric.failure_conditions, conversation=render_conversation(trajectory),
        )},
    ]


def last_json_object(text: str) -> Any:
    """The last JSON object of a free-text reply: its last ```json block, else the last `{` from
    which a whole object parses; ValueError when there is none."""
    for block in reversed(re.findall(r"```(?:json)?\s*(.*?)```", text, re.S)):
        try:
            return json.loads(block)
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    last: dict[str, Any] | None = None
    start = text.find("{")
    while start >= 0:  # whole objects left to right, so an object nested in the last one is not taken for it
        try:
            value, length = decoder.raw_decode(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            last = value
        start = text.find("{", start + length)
    if last is None:
        raise ValueError("no JSON object in the reply")
    return last


async def _verdict_data(
    trajectory: Trajectory, task: Task, llm: LLMClient, seed: int, role: Role | str, n_criteria: int,
    verdict_format: VerdictFormat,
) -> tuple[Any, str]:
    """The judge's verdict as data valid under `verdict_schema`, and a note when it had to be
    repaired. `free`: the judge reasons in plain text and ends with a JSON block (no grammar on
    its reasoning, which is where a judge model earns its accuracy); a block that is missing or
    invalid is repaired by one schema-constrained call that continues from the judge's own
    reasoning. `schema`: the whole reply is generated under the schema. Raises LLMError."""
    schema = verdict_schema(n_criteria)
    max_tokens = 40 + n_criteria * (MAX_EVIDENCE_CHARS // 2 + 20)
    messages = judge_messages(trajectory, task)
    note = ""
    if verdict_format == "free":  # the format goes in the system prompt; the rubric and conversation stay as they are
        free = [{"role": "system", "content": messages[0]["content"]
                 + render("synth.judges", "judge_free.j2", n=n_criteria)}, *messages[1:]]
        result = await llm.chat(role, free, seed=seed, max_tokens=max_tokens + FREE_REASONING_TOKENS)
        reply = result.content or ""
        try:
            data = last_json_object(reply)
            error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
        except ValueError as exc:
            error, why = None, str(exc)
        else:
            why = f"schema violation: {error.message[:120]}" if error is not None else ""
        if not why:
            return data, ""
        note = f"free-text verdict unreadable ({why}); repaired under the schema"
        messages = [*free, {"role": "assistant", "content": reply},
                    {"role": "user", "content": "Now give only your verdict, as the JSON object."}]
    data = await llm.structured(role, messages, schema, seed=seed, name="rubric_verdict", max_tokens=max_tokens)
    return data, note


async def _sample(
    trajectory: Trajectory, task: Task, llm: LLMClient, seed: int, role: Role | str,
    verdict_format: VerdictFormat = "free",
) -> tuple[LLMVerdict | None, str]:
    criteria = task.rubric.success_criteria or ["The assistant fully completed the user's task."]
    try:
        data, repaired = await _verdict_data(trajectory, task, llm, seed, role, len(criteria), verdict_format)
    except LLMError as exc:
        return None, f"judge output invalid (seed {seed}): {str(exc)[:200]}"
    haystack = " ".join(render_conversation(trajectory, 10**9).lower().split())
    verdicts = []
    notes = []
    unsupported = False
    for text, item in zip(criteria, data["criteria"], strict=False):
        evidence = str(item.get("evidence", ""))
        quote = " ".join(evidence.lower().split()).strip(" .\"'")
        quoted = bool(quote) and quote in haystack
        # A criterion passes only with a quote of the conversation behind it: a judge that cannot
        # point at where the criterion was met has not shown that it was.
        criterion_passed = bool(item["passed"]) and quoted
        if bool(item["passed"]) and not quoted:
            unsupported = True
            notes.append(f"evidence for {text[:40]!r} is not a quote from the conversation")
        verdicts.append(CriterionVerdict(criterion=text, passed=criterion_passed, evidence=evidence))
    # "pass" counts only when every criterion passed with quoted evidence: a verdict of pass whose
    # criteria failed is a contradiction, read as fail.
    passed = data["verdict"] == "pass" and len(verdicts) == len(criteria) and all(v.passed for v in verdicts)
    if data["verdict"] == "pass" and not passed:
        notes.append("judge said pass, but not every criterion passed with a quote from the conversation"
                     + (" (unquoted evidence)" if unsupported else ""))
    if repaired:
        notes.append(repaired)
    return LLMVerdict(passed=passed, score=int(data["score"]) / 10, criteria=verdicts, reasons=notes,
                      votes=[passed], repaired=int(bool(repaired))), ""


def aggregate(samples: Sequence[LLMVerdict], aggregation: Aggregation, threshold: float,
              errors: Sequence[str] = ()) -> LLMVerdict:
    """Combine valid samples: `majority` (more than half pass), `unanimous` (all pass) or `mean`
    (mean score >= threshold). Per criterion, the majority decides and its first evidence is kept."""
    if not samples:
        return LLMVerdict(passed=False, score=0.0, reasons=[*errors, "no valid judge output"],
                          invalid_samples=len(errors), aggregation=aggregation)
    votes = [s.passed for s in samples]
    mean_score = sum(s.score for s in samples) / len(samples)
    if aggregation == "unanimous":
        passed = all(votes)
    elif aggregation == "mean":
        passed = mean_score >= threshold
    else:
        passed = sum(votes) * 2 > len(votes)
    criteria = []
    for i, first in enumerate(samples[0].criteria):
        column = [s.criteria[i] for s in samples if i < len(s.criteria)]
        ok = sum(c.passed for c in column) * 2 > len(column)
        evidence = next((c.evidence for c in column if c.passed == ok), first.evidence)
        criteria.append(CriterionVerdict(criterion=first.criterion, passed=ok, evidence=evidence))
    reasons = [f"judge: criterion failed: {c.criterion} (evidence: {c.evidence[:80]!r})"
               for c in criteria if not c.passed]
    if len(samples) > 1:
        reasons.append(f"judge panel ({aggregation}): {sum(votes)}/{len(votes)} pass, mean score {mean_score:.2f}")
    elif not passed:
        reasons.append(f"judge verdict: fail (score {mean_score:.2f})")
    for s in samples:
        reasons += [r for r in s.reasons if r not in reasons]
    return LLMVerdict(passed=passed, score=round(mean_score, 4), criteria=criteria,
                      reasons=[*reasons, *errors], votes=votes, invalid_samples=len(errors),
                      repaired=sum(s.repaired for s in samples), aggregation=aggregation)


async def judge_panel(
    trajectory: Trajectory,
    task: Task,
    judges: Sequence[LLMClient],
    rng: random.Random,
    *,
    samples: int = 1,
    aggregation: Aggregation = "majority",
    threshold: float = 0.5,
    role: Role | str = Role.JUDGE,
    verdict_format: VerdictFormat = "free",
) -> LLMVerdict:
    """`samples` seeded samples from each judge client (each may point at other models or
    endpoints), aggregated by `aggregation`."""
    seeds = [rng.randrange(2**31) for _ in range(samples * len(judges))]
    jobs = [_sample(trajectory, task, judges[i // samples], seeds[i], role, verdict_format)
            for i in range(len(seeds))]
    results = await asyncio.gather(*jobs)
    valid = [v for v, _ in results if v is not None]
    errors = [e for v, e in results if v is None]
    return aggregate(valid, aggregation, threshold, errors)


async def judge_trajectory(
    trajectory: Trajectory,
    task: Task,
    llm: LLMClient,
    rng: random.Random,
    samples: int = 1,
    *,
    aggregation: Aggregation = "majority",
    threshold: float = 0.5,
    verdict_format: VerdictFormat = "free",
) -> LLMVerdict:
    """The rubric judge on one endpoint: `samples` seeded samples aggregated by `aggregation`."""
    return await judge_panel(trajectory, task, [llm], rng, samples=samples, aggregation=aggregation,
                             threshold=threshold, verdict_format=verdict_format)
