"""Structured generation that also reports what it cost, for per-step trajectory metadata.

`LLMClient.structured` returns only the validated value; a trajectory step needs its tokens and
latency too. `structured_with_usage` is the same contract (JSON under `response_format:
json_schema`, validated, bounded retries with a new seed per attempt, `StructuredOutputError`
carrying the last raw reply) built on `LLMClient.chat`, so it returns the `ChatResult` usage
summed over attempts. The request bodies are exactly those `structured` would send, so both
share response-cache entries.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import jsonschema
from pydantic import BaseModel, ValidationError

from synth.config import Role
from synth.llm import LLMClient, StructuredOutputError, schema_for

M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class Usage:
    """What one logical model call cost, over all its attempts."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 0
    cache_hits: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency_s += other.latency_s
        self.attempts += other.attempts
        self.cache_hits += other.cache_hits


def parse_json_reply(text: str) -> Any:
    """The JSON value of a reply, tolerating chatter around one object; ValueError when none."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    start = text.find("{")
    if start < 0:
        raise ValueError("reply is not JSON")
    value, _ = json.JSONDecoder().raw_decode(text[start:])
    return value


async def structured_with_usage(
    llm: LLMClient,
    role: Role | str,
    messages: list[dict[str, Any]],
    schema: type[BaseModel] | dict[str, Any],
    *,
    seed: int | None,
    name: str,
    max_tokens: int | None = None,
) -> tuple[Any, Usage]:
    """Generate JSON under `schema`; return (validated value, usage). A pydantic schema gives a
    model instance, a dict schema plain data. Raises `StructuredOutputError` when no attempt
    validates (the caller decides what that means for its item)."""
    role = Role(role)
    json_schema = schema_for(schema)
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": name[:64], "schema": json_schema, "strict": True},
    }
    validator = None if isinstance(schema, type) else jsonschema.Draft202012Validator(json_schema)
    sampling: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
    attempts = llm.roles[role].structured_retries + 1
    usage = Usage()
    raw, reason = "", ""
    for attempt in range(attempts):
        attempt_seed = (seed or 0) + attempt * 7919 if (seed is not None or attempt) else None
        started = time.perf_counter()
        result = await llm.chat(role, messages, response_format=response_format, seed=attempt_seed,
                              structured_attempt=attempt + 1, **sampling)
        usage.add(Usage(result.prompt_tokens, result.completion_tokens, time.perf_counter() - started, 1,
                        int(result.cache_hit)))
        raw = result.content or ""
        if result.finish_reason == "length":
            reason = "reply cut off at max_tokens"
            continue
        try:
            data = parse_json_reply(raw)
        except ValueError:
            reason = "reply is not JSON"
            continue
        if isinstance(schema, type):
            try:
                return schema.model_validate(data), usage
            except ValidationError as exc:
                first = exc.errors()[0]
                reason = f"schema violation at {'/'.join(str(p) for p in first['loc']) or '(root)'}: {first['msg']}"
                continue
        assert validator is not None
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is None:
            return data, usage
        path = "/".join(str(p) for p in error.absolute_path) or "(root)"
        reason = f"schema violation at {path}: {error.message[:200]}"
    raise StructuredOutputError(f"{role.value}: no valid {name}: {reason}", raw, attempts)
