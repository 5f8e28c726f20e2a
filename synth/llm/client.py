"""An async OpenAI-compatible Chat Completions client, one per process, shared by all stages.

Contract:
- `chat(role, messages, ...)` sends one request to the role's endpoint(s) and returns a
  `ChatResult`; transient failures (429, 5xx, dropped connections, timeouts) are retried with
  exponential backoff and full jitter, honouring `Retry-After`; deterministic ones raise
  `BadRequestError` / `ContextLengthError` at once.
- `structured(role, messages, schema)` asks for JSON under `response_format: json_schema`
  (accepted by llama.cpp, vLLM, SGLang and OpenAI), validates the reply with pydantic or
  jsonschema, retries invalid replies with a new seed up to the role's `structured_retries`, and
  raises `StructuredOutputError` carrying the raw text when none is valid.
- Native tool calls pass through: `tools=[...]` in, `ChatResult.tool_calls` out.
- Concurrency is bounded per endpoint; several base URLs for a role are load-balanced by the
  fewest requests in flight.
- Every logical call is recorded once in the `UsageLog` (tokens, latency, retries, cache hit).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import aiohttp
import jsonschema
from pydantic import BaseModel, ValidationError

from synth.config import Role, RoleConfig, SynthConfig
from synth.ids import canonical_json
from synth.llm import token_prompts
from synth.llm.cache import ResponseCache, request_key
from synth.llm.errors import (
    BadRequestError,
    ContextLengthError,
    LLMError,
    RetriesExhaustedError,
    StructuredOutputError,
)
from synth.llm.prefix import PrefixWarmup, opening_key
from synth.llm.repetition import looping_unit
from synth.llm.usage import CallRecord, Usage, UsageLog

M = TypeVar("M", bound=BaseModel)

ROLE_HEADER = "x-synth-role"
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_CONTEXT_MARKERS = ("context length", "context_length", "exceed_context", "maximum context", "too long")


@dataclass(slots=True)
class ChatResult:
    """One assistant reply, with what it cost."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    retries: int
    cache_hit: bool
    raw: dict[str, Any] = field(repr=False)
    # Prompt tokens the server took from its prefix cache instead of computing them (OpenAI's
    # `usage.prompt_tokens_details.cached_tokens`, llama.cpp's `timings.cache_n`); 0 when unknown.
    cached_prompt_tokens: int = 0

    @property
    def cut_off(self) -> bool:
        """The reply did not end by itself: it ran to max_tokens, or it was stopped looping."""
        return self.finish_reason in ("length", "repetition")

    def message(self) -> dict[str, Any]:
        """The reply as an OpenAI chat message, ready to append to a conversation."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = self.tool_calls
        return msg


def _cached_prompt_tokens(data: dict[str, Any]) -> int:
    """Prompt tokens served from the server's prefix cache, from whichever field the server sends."""
    details = (data.get("usage") or {}).get("prompt_tokens_details") or {}
    for value in (details.get("cached_tokens"), (data.get("timings") or {}).get("cache_n")):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return 0


@dataclass(slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a server's `Retry-After` wins (capped, so a bogus
    header cannot park a run for hours)."""

    base_delay_s: float = 0.25
    max_delay_s: float = 20.0
    max_retry_after_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * (2**attempt)))


@dataclass(slots=True)
class StructuredReply:
    """A validated structured reply: the value, what its attempts cost, and its text as generated."""

    value: Any
    usage: Usage
    text: str


class _Endpoint:
    """One base URL: its connection pool and its concurrency bound.

    aiohttp directly, not httpx: httpx over aiohttp's pool (what this client used before) spent
    ~0.35 ms of the event loop per call against aiohttp's ~0.15 (a 3 KB request to the instant
    fake server on one core), and a fake-backend run spends its loop on little else but calls and
    their checks. httpx's own pool is slower still: it serialises on a lock (~150 calls/s at 64
    concurrent requests on one core). The session is made at the first call, on the loop that
    makes it: aiohttp binds a session to a running loop."""

    def __init__(self, base_url: str, limit: int, timeout_s: float) -> None:
        self.base_url = base_url
        self.url = base_url + "/chat/completions"
        self.root = base_url.removesuffix("/v1")  # llama-server's own endpoints live beside /v1
        # Earlier replies' token ids for `/completion` (`token_prompts`); None once the server has
        # shown it has no `/apply-template`.
        self.replies: token_prompts.ReplyTokens | None = token_prompts.ReplyTokens()
        self.sem = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.limit = limit
        # Like httpx's Timeout(t, connect=...): the connect bound, then at most t between reads.
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, timeout_s), sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit), timeout=self.timeout)
        return self._session

    async def post(
        self, body: dict[str, Any], headers: dict[str, str], loop_stop_chars: int = 0, use_tokens: bool = False,
    ) -> tuple[int, bytes, str | None]:
        """(status, body bytes, Retry-After header) of one POST of `body` as JSON. With
        `loop_stop_chars` (and no native `tools`, whose streamed calls are not reassembled here) the
        reply is streamed and stopped once it loops (`_read_stream`); the bytes are then the
        reply reassembled as one non-streamed chat completion. The streaming fields are added
        here, not to `body`, so the response cache's key stays the request's. With `use_tokens`
        (and no native `tools`) a llama-server gets it as `/completion` with earlier replies as
        their token ids (`synth.llm.token_prompts`), answered as the same chat completion; a server
        without `/apply-template` gets the chat request from then on."""
        if use_tokens and self.replies is not None and not body.get("tools"):
            sent = await self._post_completion(body, headers, loop_stop_chars)
            if sent is not None:
                return sent
        stream = loop_stop_chars > 0 and not body.get("tools")
        headers = {**headers, **_JSON_HEADERS}
        if stream:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
            # A streamed reply's connection is not reused: llama-server closes it after the reply
            # although it answers keep-alive, and every next request on it failed (measured).
            headers["connection"] = "close"
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        async with self.session().post(self.url, data=data, headers=headers) as response:
            if stream and response.status == 200 and response.content_type == "text/event-stream":
                try:
                    reply = await _read_stream(response, loop_stop_chars)
                except ValueError as exc:
                    return 200, f"malformed stream event: {exc}".encode(), None
                finally:
                    response.close()  # a stopped reply: the hang-up makes the server free the slot
                return 200, json.dumps(reply.completion(), ensure_ascii=False).encode(), None
            return response.status, await response.read(), response.headers.get("retry-after")

    async def _post_completion(
        self, body: dict[str, Any], headers: dict[str, str], loop_stop_chars: int,
    ) -> tuple[int, bytes, str | None] | None:
        """`post` through llama-server's `/apply-template` and `/completion`; None when the server
        has no `/apply-template` (not llama-server, or an old one)."""
        assert self.replies is not None
        headers = {**headers, **_JSON_HEADERS}
        messages = body.get("messages") or []
        template = json.dumps({"messages": messages}, ensure_ascii=False, separators=(",", ":")).encode()
        async with self.session().post(self.root + "/apply-template", data=template, headers=headers) as response:
            raw = await response.read()
            if response.status in (404, 405, 501):
                self.replies = None
                return None
            if response.status != 200:
                return response.status, raw, response.headers.get("retry-after")
        try:
            rendered = json.loads(raw)["prompt"]
        except (ValueError, KeyError, TypeError):
            rendered = None
        if not isinstance(rendered, str):
            self.replies = None
            return None
        pieces = self.replies.prompt(messages, rendered)
        stream = loop_stop_chars > 0
        if stream:
            headers["connection"] = "close"  # as for a streamed chat reply
        data = json.dumps(token_prompts.completion_body(body, pieces, stream),
                          ensure_ascii=False, separators=(",", ":")).encode()
        async with self.session().post(self.root + "/completion", data=data, headers=headers) as response:
            if response.status != 200:
                return response.status, await response.read(), response.headers.get("retry-after")
            reply = StreamedReply()
            streamed = stream and response.content_type == "text/event-stream"
            try:
                if streamed:
                    reply = await _read_stream(response, loop_stop_chars)
                else:
                    reply.add_event(json.loads(await response.read()))
            except ValueError as exc:
                return 200, f"malformed completion: {exc}".encode(), None
            finally:
                response.close()
        if reply.stop_type is None and reply.finish_reason != "repetition":
            return 200, b"malformed completion: no final event", None
        if reply.stop_type == "eos":
            self.replies.remember(messages, rendered, pieces, reply.text,
                                  token_prompts.reply_tokens(reply.tokens, streamed, reply.silent_tail))
        return 200, json.dumps(reply.completion(), ensure_ascii=False).encode(), None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_JSON_HEADERS = {"content-type": "application/json"}
# How often (in characters of reply) a streamed reply is checked for a loop.
_LOOP_CHECK_EVERY = 16


@dataclass(slots=True)
class StreamedReply:
    """A streamed reply (server-sent events) taken in line by line, and the non-streamed chat
    completion it stands for (`completion`): the content joined, the last finish reason, and the usage
    and llama.cpp timings of the final event. It reads chat completion chunks and llama-server's
    `/completion` events alike (those also carry the generated token ids, kept in `tokens`, and the
    final one says why it stopped: `stop_type`). A reply cut short (`stop`) never got that event, so
    its usage counts a token per content event (llama-server streams one token an event) and no
    prompt tokens. Shared by the client and `bench_pipeline.py server`'s recording proxy."""

    parts: list[str] = field(default_factory=list)
    chars: int = 0
    events: int = 0
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    done: bool = False
    tokens: list[int] = field(default_factory=list)
    stop_type: str | None = None
    silent_tail: bool = False  # the last event with token ids had no text (an end-of-turn token)

    def add(self, line: bytes) -> None:
        """Take one line of the stream; raises ValueError for an event that is not a JSON object
        or that carries an error."""
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        self.add_event(json.loads(payload))

    def add_event(self, event: Any) -> None:
        """Take one event (a chat completion chunk, or a `/completion` event or whole response);
        raises ValueError for one that is not a JSON object or that carries an error."""
        if not isinstance(event, dict) or "error" in event:
            raise ValueError(f"stream error: {json.dumps(event, default=str)[:200]}")
        if "choices" not in event and "content" in event:
            self._add_completion_event(event)
            return
        self.usage = event.get("usage") or self.usage
        self.timings = event.get("timings") or self.timings
        for choice in event.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                self._add_text(piece)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def _add_text(self, piece: str) -> None:
        self.parts.append(piece)
        self.chars += len(piece)
        self.events += 1

    def _add_completion_event(self, event: dict[str, Any]) -> None:
        if event.get("content"):
            self._add_text(event["content"])
        ids = [t for t in event.get("tokens") or () if isinstance(t, int)]
        if ids:
            self.tokens.extend(ids)
            self.silent_tail = not event.get("content")
        if event.get("stop"):
            self.stop_type = event.get("stop_type")
            self.finish_reason = token_prompts.finish_reason(self.stop_type) or "stop"
            self.timings = event.get("timings") or self.timings
            prompt, completion = int(event.get("tokens_evaluated") or 0), int(event.get("tokens_predicted") or 0)
            self.usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            self.done = True

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def stop(self) -> None:
        """The reply ends here, stopped looping (`synth.llm.repetition`)."""
        self.finish_reason, self.usage, self.timings, self.stop_type = "repetition", None, None, None

    def completion(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text},
                         "finish_reason": self.finish_reason}],
            "usage": self.usage or {"prompt_tokens": 0, "completion_tokens": self.events,
                                    "total_tokens": self.events},
        }
        if self.timings:
            data["timings"] = self.timings
        return data


async def _read_stream(response: aiohttp.ClientResponse, loop_stop_chars: int) -> StreamedReply:
    """The streamed reply, read to its end or until it loops: once the reply's last
    `loop_stop_chars` or more characters are one unit repeated (`looping_unit`), reading stops and
    the caller closes the connection, which makes llama-server free the slot, and the reply ends
    there with finish reason `"repetition"`. Raises ValueError for an event that is not JSON or
    carries an error, which the caller retries like any malformed reply."""
    reply = StreamedReply()
    checked = 0
    async for line in response.content:
        reply.add(line)
        if reply.done:
            break
        if loop_stop_chars and reply.chars - checked >= _LOOP_CHECK_EVERY:
            checked = reply.chars
            if looping_unit(reply.text, loop_stop_chars) is not None:
                reply.stop()
                break
    return reply


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return parsed.timestamp() - time.time() if parsed else None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def parse_json_reply(text: str) -> Any:
    """The JSON value of a reply that should be JSON, tolerating code fences and chatter around one
    object; ValueError when there is none."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        try:
            return json.loads(fenced.group(1))
        except ValueError:
            pass
    start = text.find("{")
    if start >= 0:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
            return obj
        except ValueError:
            pass
    raise ValueError("reply is not JSON")


def schema_for(schema: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    """The JSON schema to send for a pydantic model or a raw schema, with local `$ref`s inlined
    (some servers' grammar converters handle `$defs` poorly). Read-only: it may be a cached schema
    or `schema` itself."""
    if isinstance(schema, type):
        return _model_schema(schema)
    return inline_refs(schema)


@functools.lru_cache(maxsize=256)
def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    # Building a pydantic model's JSON schema costs ~100 us; every structured call asks for it.
    return inline_refs(model.model_json_schema())


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its local `$ref`s replaced by the definitions they name (`$defs`,
    `definitions`), at most 12 deep. Read-only, like its input: a schema without definitions has
    nothing to inline and comes back as it is, uncopied (agents' and tools' schemas mostly: the
    copy was ~2% of a fake-backend run's event loop)."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    if not defs:
        return schema

    def walk(node: Any, depth: int) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/") and depth < 12:
                target = defs.get(ref.rsplit("/", 1)[-1])
                if target is not None:
                    rest = {k: v for k, v in node.items() if k != "$ref"}
                    return walk({**target, **rest}, depth + 1)
            return {k: walk(v, depth) for k, v in node.items() if k not in ("$defs", "definitions")}
        if isinstance(node, list):
            return [walk(v, depth) for v in node]
        return node

    out = walk(schema, 0)
    assert isinstance(out, dict)
    return out


class LLMClient:
    """Shared by every stage of a process. Use as an async context manager, or call `aclose()`."""

    def __init__(
        self,
        config: SynthConfig,
        *,
        usage: UsageLog | None = None,
        cache: ResponseCache | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self.roles: dict[Role, RoleConfig] = config.roles()
        self.usage = usage or UsageLog()
        if cache is None and config.cache.enabled:
            cache = ResponseCache(config.cache.dir or Path(config.run.db).parent / "cache")
        self.cache = cache
        self.retry = retry or RetryPolicy()
        self._endpoints: dict[str, _Endpoint] = {}
        self._derived: dict[str, LLMClient] = {}
        self.prefixes = PrefixWarmup()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for ep in self._endpoints.values():
            await ep.aclose()
        self._endpoints.clear()
        for derived in self._derived.values():
            await derived.aclose()
        self._derived.clear()

    def with_role(self, role: Role | str, overrides: dict[str, Any]) -> LLMClient:
        """A client whose `role` settings are this one's with `overrides` on top (another model or
        endpoint: a judge panel's member), sharing this client's usage log, cache and retry
        policy; made once per distinct override and closed with this client."""
        key = canonical_json([Role(role).value, overrides])
        if key not in self._derived:
            config = self.config.model_copy(deep=True)
            config.llm.roles[Role(role)] = {**config.llm.roles.get(Role(role), {}), **overrides}
            self._derived[key] = LLMClient(config, usage=self.usage, cache=self.cache, retry=self.retry)
            self._derived[key].prefixes = self.prefixes
        return self._derived[key]

    def _endpoints_for(self, role: Role, rc: RoleConfig) -> list[_Endpoint]:
        if not rc.base_urls:
            raise LLMError(
                f"role '{role.value}' has no base URL: pass --base-url, set llm.base_urls in synth.toml, "
                "or let synth start the embedded backend"
            )
        eps = []
        for url in rc.base_urls:
            ep = self._endpoints.get(url)
            if ep is None:
                limit = max(r.max_concurrency for r in self.roles.values() if url in r.base_urls)
                ep = self._endpoints[url] = _Endpoint(url, limit, rc.timeout_s)
            eps.append(ep)
        return eps

    def _headers(self, rc: RoleConfig) -> dict[str, str]:
        if rc.api_key_env:
            key = os.environ.get(rc.api_key_env)
            if key:
                return {"authorization": f"Bearer {key}"}
        return {}

    def payload(
        self,
        role: Role | str,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        **sampling: Any,
    ) -> dict[str, Any]:
        """The request body exactly as sent (and hashed for the cache)."""
        rc = self.roles[Role(role)]
        body: dict[str, Any] = {
            "model": rc.model,
            "messages": messages,
            "temperature": sampling.pop("temperature", rc.temperature),
            "top_p": sampling.pop("top_p", rc.top_p),
            "max_tokens": sampling.pop("max_tokens", rc.max_tokens),
        }
        if seed is not None:
            body["seed"] = seed
        if tools:
            body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        if response_format is not None:
            body["response_format"] = response_format
        body.update(sampling)
        return body

    async def chat(
        self,
        role: Role | str,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        use_cache: bool = True,
        structured_attempt: int = 0,
        **sampling: Any,
    ) -> ChatResult:
        """One call. `structured_attempt` (1-based) marks the call as attempt N of a caller's own
        structured-output loop, so `llm_calls.structured_attempts` means the same for every caller."""
        role = Role(role)
        body = self.payload(
            role, messages, tools=tools, tool_choice=tool_choice,
            response_format=response_format, seed=seed, **sampling,
        )
        return await self._send(role, body, use_cache=use_cache, structured_attempts=structured_attempt)

    async def _send(
        self, role: Role, body: dict[str, Any], *, use_cache: bool, structured_attempts: int
    ) -> ChatResult:
        rc = self.roles[role]
        key = request_key(body) if (self.cache is not None and use_cache) else None
        started = time.perf_counter()
        if key is not None and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                result = self._result(hit, 0.0, 0, True)
                self._record(role, rc, "cache", result, structured_attempts, True, None)
                return result
        endpoints = self._endpoints_for(role, rc)
        # The role travels in a header, so a proxy or a server log can tell the roles' requests apart
        # (bench/bench_pipeline.py server records them to replay the run's own work).
        headers = {**self._headers(rc), ROLE_HEADER: role.value}
        opening = opening_key(body) if len(endpoints) > 1 or rc.prefix_warmup else None
        if not rc.prefix_warmup:  # no turn to take (the common case: no context manager per call)
            return await self._post(role, rc, body, endpoints, headers, key, opening, started, structured_attempts)
        async with self.prefixes.turn(opening):
            return await self._post(role, rc, body, endpoints, headers, key, opening, started, structured_attempts)

    async def _post(
        self, role: Role, rc: RoleConfig, body: dict[str, Any], endpoints: list[_Endpoint], headers: dict[str, str],
        key: str | None, opening: str | None, started: float, structured_attempts: int,
    ) -> ChatResult:
        """Send `body` until it succeeds, fails for good or runs out of retries; the endpoint is the
        least busy one, or the one that computed the request's opening (`PrefixWarmup`) unless it is
        two requests busier than the least busy."""
        attempt = 0
        last_error = ""
        while True:
            ep = endpoints[0]
            if len(endpoints) > 1:
                ep = min(endpoints, key=lambda e: e.in_flight)
                home = self.prefixes.preferred(opening)
                ep = next((e for e in endpoints if e.base_url == home and e.in_flight < ep.in_flight + 2), ep)
            retry_after: float | None = None
            ep.in_flight += 1
            try:
                async with ep.sem:
                    status, raw, retry_header = await ep.post(body, headers, rc.loop_stop_chars or 0,
                                                             bool(rc.token_prompts))
            except (aiohttp.ClientError, TimeoutError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if status == 200:
                    try:
                        data = json.loads(raw)
                        data["choices"][0]["message"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        last_error = f"malformed 200 response: {_text(raw)[:200]!r}"
                    else:
                        result = self._result(data, time.perf_counter() - started, attempt, False)
                        if key is not None and self.cache is not None:
                            self.cache.put(key, data)
                        self.prefixes.served(opening, ep.base_url)
                        self._record(role, rc, ep.base_url, result, structured_attempts, True, None)
                        return result
                elif status in RETRYABLE_STATUS:
                    last_error = f"HTTP {status}: {_text(raw)[:200]}"
                    retry_after = _retry_after(retry_header)
                else:
                    text = _text(raw)
                    err_cls = (
                        ContextLengthError
                        if status == 400 and any(m in text.lower() for m in _CONTEXT_MARKERS)
                        else BadRequestError
                    )
                    error = err_cls(status, text, ep.url)
                    self._record_failure(role, rc, ep.base_url, started, attempt, structured_attempts, error)
                    raise error
            finally:
                ep.in_flight -= 1
            if attempt >= rc.max_retries:
                error2 = RetriesExhaustedError(f"{role.value} call to {ep.url} failed: {last_error}", attempt + 1)
                self._record_failure(role, rc, ep.base_url, started, attempt, structured_attempts, error2)
                raise error2
            await asyncio.sleep(self.retry.delay(attempt, retry_after))
            attempt += 1

    @staticmethod
    def _result(data: dict[str, Any], latency: float, retries: int, cache_hit: bool) -> ChatResult:
        choice = data["choices"][0]
        message = choice["message"]
        usage = data.get("usage") or {}
        return ChatResult(
            content=message.get("content"),
            tool_calls=message.get("tool_calls") or [],
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency,
            retries=retries,
            cache_hit=cache_hit,
            raw=data,
            cached_prompt_tokens=_cached_prompt_tokens(data),
        )

    def _record(
        self, role: Role, rc: RoleConfig, endpoint: str, result: ChatResult,
        structured_attempts: int, ok: bool, error: str | None,
    ) -> None:
        self.usage.add(CallRecord(
            call_id=os.urandom(16).hex(),  # 32 random hex digits, like uuid4().hex at a quarter of its cost
            role=role.value, model=rc.model, endpoint=endpoint,
            prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
            latency_s=result.latency_s, retries=result.retries, structured_attempts=structured_attempts,
            cache_hit=result.cache_hit, ok=ok, error=error,
            cached_prompt_tokens=0 if result.cache_hit else result.cached_prompt_tokens,
            finish_reason=result.finish_reason,
        ))

    def _record_failure(
        self, role: Role, rc: RoleConfig, endpoint: str, started: float, retries: int,
        structured_attempts: int, error: LLMError,
    ) -> None:
        self.usage.add(CallRecord(
            call_id=os.urandom(16).hex(), role=role.value, model=rc.model, endpoint=endpoint,
            prompt_tokens=0, completion_tokens=0, latency_s=time.perf_counter() - started,
            retries=retries, structured_attempts=structured_attempts, cache_hit=False, ok=False,
            error=str(error)[:500],
        ))

    @overload
    async def structured(
        self, role: Role | str, messages: list[dict[str, Any]], schema: type[M], *,
        seed: int | None = ..., name: str | None = ..., **sampling: Any,
    ) -> M: ...

    @overload
    async def structured(
        self, role: Role | str, messages: list[dict[str, Any]], schema: dict[str, Any], *,
        seed: int | None = ..., name: str | None = ..., **sampling: Any,
    ) -> Any: ...

    async def structured(
        self,
        role: Role | str,
        messages: list[dict[str, Any]],
        schema: type[BaseModel] | dict[str, Any],
        *,
        seed: int | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> Any:
        """Generate JSON under `schema` and return it validated (a model instance for a pydantic
        schema, plain data for a dict schema); `structured_with_usage` without the cost."""
        value, _ = await self.structured_with_usage(role, messages, schema, seed=seed, name=name, **sampling)
        return value

    async def structured_with_usage(
        self,
        role: Role | str,
        messages: list[dict[str, Any]],
        schema: type[BaseModel] | dict[str, Any],
        *,
        seed: int | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> tuple[Any, Usage]:
        """`structured_reply` without the reply's text."""
        reply = await self.structured_reply(role, messages, schema, seed=seed, name=name, **sampling)
        return reply.value, reply.usage

    async def structured_reply(
        self,
        role: Role | str,
        messages: list[dict[str, Any]],
        schema: type[BaseModel] | dict[str, Any],
        *,
        seed: int | None = None,
        name: str | None = None,
        **sampling: Any,
    ) -> StructuredReply:
        """The one structured-output path: JSON under `response_format: json_schema`, validated,
        up to `structured_retries` more attempts, each with a new seed (`seed + attempt * 7919`, so
        neither the response cache nor a seeded server hands back the same invalid reply). Returns
        the validated value, what all attempts cost (a trajectory step's metadata) and the text of the
        reply that validated (a conversation that shows the model its own turn byte for byte lets the
        server reuse the tokens it generated); raises `StructuredOutputError`, carrying the last raw
        reply, when no attempt validates."""
        role = Role(role)
        rc = self.roles[role]
        json_schema = schema_for(schema)
        schema_name = name or (schema.__name__ if isinstance(schema, type) else "output")
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": schema_name[:64], "schema": json_schema, "strict": True},
        }
        validator = None if isinstance(schema, type) else jsonschema.Draft202012Validator(json_schema)
        attempts = rc.structured_retries + 1
        usage = Usage()
        raw = ""
        reason = ""
        for attempt in range(attempts):
            attempt_seed = (seed or 0) + attempt * 7919 if (seed is not None or attempt) else None
            started = time.perf_counter()
            # Through `chat`, like any call: the body is the same, and a subclass that stands in
            # for the model (a test's scripted agent) sees structured calls too.
            result = await self.chat(role, messages, response_format=response_format, seed=attempt_seed,
                                     structured_attempt=attempt + 1, **dict(sampling))
            usage.add(Usage(result.prompt_tokens, result.completion_tokens, time.perf_counter() - started, 1,
                            int(result.cache_hit)))
            raw = result.content or ""
            if result.finish_reason == "length":
                reason = f"reply cut off at max_tokens={sampling.get('max_tokens', rc.max_tokens)}"
                continue
            if result.finish_reason == "repetition":
                reason = f"reply stopped after {result.completion_tokens} tokens: it repeats itself"
                continue
            try:
                data = parse_json_reply(raw)
            except ValueError:
                reason = "reply is not JSON"
                continue
            try:
                if isinstance(schema, type):
                    return StructuredReply(schema.model_validate(data), usage, raw)
                assert validator is not None
                error = jsonschema.exceptions.best_match(validator.iter_errors(data))
                if error is None:
                    return StructuredReply(data, usage, raw)
                path = "/".join(str(p) for p in error.absolute_path) or "(root)"
                reason = f"schema violation at {path}: {error.message[:200]}"
            except ValidationError as exc:
                first = exc.errors()[0]
                path = "/".join(str(p) for p in first["loc"]) or "(root)"
                reason = f"schema violation at {path}: {first['msg']}"
        raise StructuredOutputError(f"{role.value}: no valid {schema_name}: {reason}", raw, attempts)
