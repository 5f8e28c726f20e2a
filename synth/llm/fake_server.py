"""A scripted OpenAI-compatible server on loopback, for failure-path tests and benchmarks.

It speaks real HTTP/1.1 (keep-alive, Content-Length) on a raw asyncio socket server running in a
background thread, so clients exercise their real transport. Behaviour per request, first match:
1. the next entry of `script` (a queue of `Scripted` actions: a status code, a dropped
   connection, a stall, a literal body or message);
2. random faults at the configured rates (`rate_429`, `rate_503`, `rate_drop`), seeded;
3. `responder(body)` if given, else a default reply: JSON that satisfies the request's
   `response_format` schema (see `schema_example`), a tool call when tools are offered and
   `tool_choice` asks for one, else a short text.

`FakeOpenAIServer.requests` counts what arrived; `served` counts 200s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import string
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Responder = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Scripted:
    """One scripted reaction. kind: status | drop | stall | text | message."""

    kind: str
    status: int = 200
    seconds: float = 0.0
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    message: dict[str, Any] | None = None


def status(code: int, retry_after: float | None = None, body: str = "") -> Scripted:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return Scripted("status", status=code, headers=headers, text=body or json.dumps({"error": {"code": code}}))


def drop() -> Scripted:
    return Scripted("drop")


def stall(seconds: float) -> Scripted:
    return Scripted("stall", seconds=seconds)


def text_reply(text: str) -> Scripted:
    """A 200 whose assistant content is `text` (e.g. not JSON, or JSON missing fields)."""
    return Scripted("text", text=text)


_SAFE = string.ascii_lowercase + string.digits


# Properties whose strings are prose in synth's own schemas (a goal, a prompt, a criterion):
# a one-word slug there would be rejected by the stage's validation, not by the schema.
_PROSE_FIELDS = frozenset({
    "goal", "description", "system_prompt", "message", "reason", "evidence", "content", "summary",
    "success_criteria", "failure_conditions", "checkpoints", "policies", "constraints", "traits", "text",
})


def schema_example(schema: Any, rng: random.Random, depth: int = 0, field: str = "") -> Any:
    """A value that satisfies common JSON schemas (types, enum, const, required, min/max sizes,
    anyOf/oneOf/allOf); strings are short lowercase slugs, which pass identifier patterns, or a
    few words of them for prose fields (see `_PROSE_FIELDS`)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [s for s in schema[key] if isinstance(s, dict) and s.get("type") != "null"]
            return schema_example(rng.choice(options or schema[key]), rng, depth + 1, field)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        return schema_example(merged, rng, depth + 1, field)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        out = {}
        for name, sub in props.items():
            if name in required or depth < 2:
                out[name] = schema_example(sub, rng, depth + 1, name)
        return out
    if kind == "array":
        lo = int(schema.get("minItems", 1))
        hi = int(schema.get("maxItems", max(lo, 2)))
        count = rng.randint(lo, max(lo, min(hi, lo + 2)))
        items = schema.get("items") or {"type": "string"}
        values = [schema_example(items, rng, depth + 1, field) for _ in range(count)]
        if schema.get("uniqueItems"):
            seen: list[Any] = []
            for v in values:
                if v not in seen:
                    seen.append(v)
            values = seen
        return values
    if kind == "integer":
        lo = int(schema.get("minimum", 1))
        hi = int(schema.get("maximum", lo + 99))
        return rng.randint(lo, hi)
    if kind == "number":
        low = float(schema.get("minimum", 0.0))
        high = float(schema.get("maximum", low + 100.0))
        return round(rng.uniform(low, high), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    lo = int(schema.get("minLength", 3))
    hi = int(schema.get("maxLength", max(lo, 12)))
    if field in _PROSE_FIELDS and "pattern" not in schema and "format" not in schema and hi >= 40:
        words = [_slug(rng, rng.randint(2, 7)) for _ in range(rng.randint(4, 7))]
        return " ".join(words)[:hi]
    n = rng.randint(max(lo, 1), max(lo, min(hi, 12)))
    return _slug(rng, n)


def _slug(rng: random.Random, n: int) -> str:
    return rng.choice(string.ascii_lowercase) + "".join(rng.choice(_SAFE) for _ in range(n - 1))


def chatml(messages: list[dict[str, Any]]) -> str:
    """`messages` in the ChatML template (SmolLM2's), ready for the assistant's turn."""
    turns = "".join(f"<|im_start|>{m.get('role')}\n{m.get('content') or ''}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


class FakeOpenAIServer:
    def __init__(
        self,
        *,
        script: list[Scripted] | None = None,
        rate_429: float = 0.0,
        rate_503: float = 0.0,
        rate_drop: float = 0.0,
        retry_after: float | None = 0.01,
        responder: Responder | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        slots: int | None = None,
        props: dict[str, Any] | None = None,
        stream: bool = False,
        llama: bool = False,
    ) -> None:
        self.script: deque[Scripted] = deque(script or [])
        self.rate_429, self.rate_503, self.rate_drop = rate_429, rate_503, rate_drop
        self.retry_after = retry_after
        self.responder = responder
        self.rng = random.Random(seed)
        self.host, self.port = host, port
        self.slots = slots  # answered as llama-server's /props `total_slots` when set
        self.props = props  # more of /props (a chat template, its capabilities) when set
        # Answer `"stream": true` requests as llama-server does (server-sent events, a few characters
        # an event, usage in the last); off, they get one JSON reply, as from a server that ignores it.
        self.stream = stream
        # Answer llama-server's `/apply-template` (ChatML) and `/completion` (a token per character
        # of the reply, its code point, then the end-of-turn token 0); the bodies are kept.
        self.llama = llama
        self.completions: list[dict[str, Any]] = []
        self.requests = 0
        self.served = 0
        self.streams_cut = 0  # streamed replies whose client hung up before the end
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        self._server.close()
        loop.run_until_complete(self._server.wait_closed())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run in the calling thread (for a separate benchmark process)."""
        self._run()

    def _next_action(self) -> Scripted | None:
        if self.script:
            return self.script.popleft()
        roll = self.rng.random()
        if roll < self.rate_drop:
            return drop()
        roll -= self.rate_drop
        if roll < self.rate_429:
            return status(429, self.retry_after)
        roll -= self.rate_429
        if roll < self.rate_503:
            return status(503, self.retry_after)
        return None

    def default_message(self, body: dict[str, Any]) -> dict[str, Any]:
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
            return {"role": "assistant", "content": json.dumps(schema_example(schema, self.rng))}
        tools = body.get("tools") or []
        if tools and body.get("tool_choice") not in (None, "none", "auto"):
            fn = tools[0]["function"]
            args = schema_example(fn.get("parameters") or {"type": "object"}, self.rng)
            call = {"id": f"call_{self.requests}", "type": "function",
                    "function": {"name": fn["name"], "arguments": json.dumps(args)}}
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        return {"role": "assistant", "content": "ok"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:].strip())
                raw = await reader.readexactly(length) if length else b""
                if head.startswith(b"GET"):  # health and /props: not model requests, not counted
                    props = head.startswith(b"GET /props") and (self.slots is not None or self.props is not None)
                    body = {**(self.props or {}), **({"total_slots": self.slots} if self.slots is not None else {})}
                    self._write(writer, 200, json.dumps(body).encode() if props else b'{"status":"ok"}', {})
                    await writer.drain()
                    continue
                path = head.split(b" ", 2)[1]
                if not self.llama and path in (b"/apply-template", b"/completion"):  # not a llama-server
                    self._write(writer, 404, b'{"error": "not found"}', {})
                    await writer.drain()
                    continue
                if self.llama and path == b"/apply-template":
                    rendered = chatml(json.loads(raw or b"{}").get("messages") or [])
                    self._write(writer, 200, json.dumps({"prompt": rendered}).encode(), {})
                    await writer.drain()
                    continue
                self.requests += 1
                action = self._next_action()
                if action is not None and action.kind == "drop":
                    writer.transport.abort()
                    return
                if action is not None and action.kind == "stall":
                    await asyncio.sleep(action.seconds)
                    action = None
                if action is not None and action.kind == "status":
                    self._write(writer, action.status, action.text.encode(), action.headers)
                    await writer.drain()
                    continue
                body = json.loads(raw or b"{}")
                completion = self.llama and path == b"/completion"
                if completion:
                    self.completions.append(body)
                    body = {**body, **({"response_format": {"type": "json_schema", "json_schema": {
                        "schema": body["json_schema"]}}} if "json_schema" in body else {})}
                if action is not None and action.kind == "text":
                    message: dict[str, Any] = {"role": "assistant", "content": action.text}
                elif action is not None and action.message is not None:
                    message = action.message
                elif self.responder is not None:
                    message = self.responder(body)
                else:
                    message = self.default_message(body)
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                content = message.get("content") or ""
                reply = {
                    "id": f"chatcmpl-{self.requests}", "object": "chat.completion",
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": max(1, len(content) // 4),
                              "total_tokens": 10 + max(1, len(content) // 4)},
                }
                self.served += 1
                if completion:
                    await self._write_completion(writer, body, content)
                    continue
                if self.stream and body.get("stream") and not message.get("tool_calls"):
                    if not await self._write_stream(writer, reply, content):
                        self.streams_cut += 1
                        return
                    continue
                self._write(writer, 200, json.dumps(reply).encode(), {})
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _write_completion(self, writer: asyncio.StreamWriter, body: dict[str, Any], content: str) -> None:
        """`content` as llama-server's `/completion` answers: one JSON object, or with `stream` an
        event a character (and the end-of-turn token) and a final event that says why it stopped."""
        prompt = sum(len(p) if isinstance(p, str) else 1 for p in body.get("prompt") or [])
        done = {"content": "", "tokens": [], "stop": True, "stop_type": "eos", "tokens_predicted": len(content) + 1,
                "tokens_evaluated": prompt, "timings": {"cache_n": 0, "prompt_n": prompt}}
        if not body.get("stream"):
            whole = {**done, "content": content, "tokens": [*map(ord, content), 0] if body.get("return_tokens") else []}
            self._write(writer, 200, json.dumps(whole).encode(), {})
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 X\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        events = [{"content": c, "tokens": [ord(c)], "stop": False} for c in content]
        events += [{"content": "", "tokens": [0], "stop": False}, done]
        with contextlib.suppress(ConnectionError):
            for event in events:
                data = f"data: {json.dumps(event)}\n\n".encode()
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    @staticmethod
    async def _write_stream(writer: asyncio.StreamWriter, reply: dict[str, Any], content: str) -> bool:
        """`reply` as a chunked event stream: its content 4 characters an event, then the finish
        reason with the usage, then `[DONE]`. False when the client hung up before the end."""
        writer.write(b"HTTP/1.1 200 X\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        finish = reply["choices"][0]["finish_reason"]
        events = [{"choices": [{"index": 0, "delta": {"content": content[i:i + 4]}, "finish_reason": None}]}
                  for i in range(0, len(content), 4)]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": reply["usage"]})
        try:
            for event in [*(json.dumps(e) for e in events), "[DONE]"]:
                data = f"data: {event}\n\n".encode()
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.002)  # a token's time, so a client can stop the stream midway
                if writer.is_closing():
                    return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            return False
        return True

    @staticmethod
    def _write(writer: asyncio.StreamWriter, code: int, payload: bytes, headers: dict[str, str]) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
            f"{extra}\r\n".encode() + payload
        )
