"""Errors raised by the model client, split by what the caller should do about them.

Transient failures (429, 5xx, dropped connections, timeouts) are retried inside the client and
only surface as `RetriesExhaustedError`. Deterministic failures are raised at once with their own
type, because repeating the same request cannot help.
"""

from __future__ import annotations


class LLMError(Exception):
    """Base class of every model-client error."""


class BadRequestError(LLMError):
    """The server rejected the request itself (4xx other than 429); not retried."""

    def __init__(self, status: int, body: str, url: str) -> None:
        super().__init__(f"{url} answered {status}: {body[:500]}")
        self.status = status
        self.body = body
        self.url = url


class ContextLengthError(BadRequestError):
    """The prompt plus `max_tokens` does not fit the model's context; not retried."""


class RetriesExhaustedError(LLMError):
    """A transient failure persisted through every allowed retry."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(f"{message} (gave up after {attempts} attempts)")
        self.attempts = attempts


class StructuredOutputError(LLMError):
    """The model's reply never satisfied the requested schema within the allowed attempts.

    `raw_text` is the last reply exactly as received, so the caller can store it as the reason
    for a rejection instead of losing it.
    """

    def __init__(self, message: str, raw_text: str, attempts: int) -> None:
        super().__init__(f"{message} (after {attempts} attempts); last reply: {raw_text[:300]!r}")
        self.raw_text = raw_text
        self.attempts = attempts
        self.reason = message


class BackendUnavailableError(LLMError):
    """No model endpoint is configured and the embedded backend cannot be started."""
