"""Per-call accounting of model usage.

One `CallRecord` per logical call (however many HTTP attempts it took), so a report counts each
call once and its retries separately. A `sink` callback lets the pipeline persist records (the
`llm_calls` table) without the client knowing about storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime


@dataclass(slots=True)
class CallRecord:
    call_id: str
    role: str
    model: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    retries: int
    structured_attempts: int
    cache_hit: bool
    ok: bool
    error: str | None = None
    cached_prompt_tokens: int = 0  # of prompt_tokens, those the server's prefix cache supplied
    # Why the reply ended: "stop", "tool_calls", "length" (cut at max_tokens), "repetition" (stopped
    # looping, `synth.llm.repetition`); None for a failed call. So a dataset shows the replies no one could use.
    finish_reason: str | None = None
    # When the call finished (UTC, naive): stored as llm_calls.created_at, so rates over time are
    # measurable even though the driver stores records in batches.
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    def as_dict(self) -> dict[str, object]:
        # Every field is a scalar, so no deep copy (`dataclasses.asdict` copies deeply: ~1% of a
        # fake-backend run's event loop).
        return {name: getattr(self, name) for name in _CALL_RECORD_FIELDS}


_CALL_RECORD_FIELDS = tuple(f.name for f in fields(CallRecord))


@dataclass(slots=True)
class Usage:
    """What one logical model call cost over all its attempts: a trajectory step's metadata."""

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


@dataclass
class RoleUsage:
    calls: int = 0
    failed: int = 0
    cache_hits: int = 0
    retries: int = 0
    structured_retries: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0


@dataclass
class UsageLog:
    """Collects call records; keeps every record unless `keep_records` is False (long runs)."""

    keep_records: bool = True
    sink: Callable[[CallRecord], None] | None = None
    records: list[CallRecord] = field(default_factory=list)
    by_role: dict[str, RoleUsage] = field(default_factory=dict)

    def add(self, record: CallRecord) -> None:
        if self.keep_records:
            self.records.append(record)
        usage = self.by_role.get(record.role)
        if usage is None:
            usage = self.by_role[record.role] = RoleUsage()
        usage.calls += 1
        usage.failed += not record.ok
        usage.cache_hits += record.cache_hit
        usage.retries += record.retries
        usage.structured_retries += record.structured_attempts > 1  # each later attempt is one retry
        usage.prompt_tokens += record.prompt_tokens
        usage.cached_prompt_tokens += record.cached_prompt_tokens
        usage.completion_tokens += record.completion_tokens
        usage.latency_s += record.latency_s
        if self.sink is not None:
            self.sink(record)

    def summary(self) -> dict[str, dict[str, float]]:
        return {role: dict(vars(u)) for role, u in sorted(self.by_role.items())}
