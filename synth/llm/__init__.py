"""The model layer: an async OpenAI-compatible client and the embedded llama.cpp backend."""

from synth.llm.client import ChatResult, LLMClient, RetryPolicy, parse_json_reply, schema_for
from synth.llm.errors import (
    BackendUnavailableError,
    BadRequestError,
    ContextLengthError,
    LLMError,
    RetriesExhaustedError,
    StructuredOutputError,
)
from synth.llm.usage import CallRecord, Usage, UsageLog

__all__ = [
    "BackendUnavailableError",
    "BadRequestError",
    "CallRecord",
    "ChatResult",
    "ContextLengthError",
    "LLMClient",
    "LLMError",
    "RetriesExhaustedError",
    "RetryPolicy",
    "StructuredOutputError",
    "Usage",
    "UsageLog",
    "parse_json_reply",
    "schema_for",
]
