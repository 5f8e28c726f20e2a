"""The model client against a scripted OpenAI-compatible server on loopback (real HTTP)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synth.llm import (
    BadRequestError,
    ContextLengthError,
    LLMClient,
    RetriesExhaustedError,
    RetryPolicy,
    StructuredOutputError,
)
from synth.llm.fake_server import drop, stall, status, text_reply
from tests.conftest import make_config

FAST = RetryPolicy(base_delay_s=0.001, max_delay_s=0.02)
USER = [{"role": "user", "content": "hello"}]


class Address(BaseModel):
    city: str
    zip: str


class Person(BaseModel):
    name: str
    age: int
    address: Address
    tags: list[str]


def client_for(url: str, tmp_path: Path | None = None, **llm: Any) -> LLMClient:
    return LLMClient(make_config(url, tmp_path, **llm), retry=FAST)


async def test_429_then_success_counts_one_call_and_its_retry(fake_server):
    server = fake_server(script=[status(429), status(429)])
    async with client_for(server.base_url) as llm:
        result = await llm.chat("agent", USER)
    assert result.content == "ok"
    assert result.retries == 2
    assert len(llm.usage.records) == 1
    assert llm.usage.by_role["agent"].retries == 2
    assert server.requests == 3


async def test_503_retry_after_is_honoured(fake_server, monkeypatch):
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def record_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("synth.llm.client.asyncio.sleep", record_sleep)
    server = fake_server(script=[status(503, retry_after=1.5)])
    async with client_for(server.base_url) as llm:
        result = await llm.chat("agent", USER)
    assert result.content == "ok"
    assert slept == [1.5]


async def test_dropped_connection_is_retried(fake_server):
    server = fake_server(script=[drop(), drop()])
    async with client_for(server.base_url) as llm:
        result = await llm.chat("user", USER)
    assert result.content == "ok"
    assert result.retries == 2


async def test_stall_past_timeout_is_retried_then_succeeds(fake_server):
    server = fake_server(script=[stall(2.0)])
    async with client_for(server.base_url, timeout_s=0.3) as llm:
        result = await llm.chat("user", USER)
    assert result.content == "ok"
    assert result.retries == 1


async def test_persistent_failure_raises_retries_exhausted(fake_server):
    server = fake_server(script=[status(500)] * 10)
    async with client_for(server.base_url, max_retries=3) as llm:
        with pytest.raises(RetriesExhaustedError) as info:
            await llm.chat("judge", USER)
    assert info.value.attempts == 4
    assert "HTTP 500" in str(info.value)
    assert llm.usage.by_role["judge"].failed == 1


async def test_400_is_not_retried(fake_server):
    server = fake_server(script=[status(400, body='{"error": "bad field"}')])
    async with client_for(server.base_url) as llm:
        with pytest.raises(BadRequestError) as info:
            await llm.chat("agent", USER)
    assert not isinstance(info.value, ContextLengthError)
    assert server.requests == 1


async def test_context_too_long_has_its_own_error(fake_server):
    body = json.dumps({"error": {"type": "exceed_context_size_error", "message": "request exceeds context length"}})
    server = fake_server(script=[status(400, body=body)])
    async with client_for(server.base_url) as llm:
        with pytest.raises(ContextLengthError):
            await llm.chat("agent", USER)
    assert server.requests == 1


async def test_structured_reply_not_json_is_retried_then_valid(fake_server):
    server = fake_server(script=[text_reply("Sure! Here is a person: Bob, 42")])
    async with client_for(server.base_url) as llm:
        person = await llm.structured("generator", USER, Person, seed=3)
    assert isinstance(person, Person)
    assert llm.usage.records[-1].structured_attempts == 2


async def test_structured_missing_fields_raises_with_raw_text(fake_server):
    bad = json.dumps({"name": "Bob"})
    server = fake_server(script=[text_reply(bad)] * 3)
    async with client_for(server.base_url, structured_retries=2) as llm:
        with pytest.raises(StructuredOutputError) as info:
            await llm.structured("generator", USER, Person, seed=3)
    assert info.value.raw_text == bad
    assert info.value.attempts == 3
    assert "age" in str(info.value)


async def test_structured_with_dict_schema_validates_with_jsonschema(fake_server):
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "integer"}, "minItems": 1}},
        "required": ["items"],
    }
    server = fake_server(script=[text_reply('{"items": ["x"]}')])
    async with client_for(server.base_url) as llm:
        data = await llm.structured("generator", USER, schema)
    assert isinstance(data["items"][0], int)
    assert server.requests == 2


async def test_structured_request_carries_json_schema_response_format(fake_server):
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body)
        return {"role": "assistant", "content": json.dumps(
            {"name": "a", "age": 1, "address": {"city": "c", "zip": "z"}, "tags": []})}

    server = fake_server(responder=responder)
    async with client_for(server.base_url) as llm:
        await llm.structured("generator", USER, Person)
    fmt = seen[0]["response_format"]
    assert fmt["type"] == "json_schema"
    schema = fmt["json_schema"]["schema"]
    assert "$defs" not in schema and schema["properties"]["address"]["properties"]["city"]["type"] == "string"


async def test_native_tool_calls_pass_through(fake_server):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "d",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    server = fake_server()
    async with client_for(server.base_url) as llm:
        result = await llm.chat("agent", USER, tools=tools, tool_choice="required")
    call = result.tool_calls[0]
    assert call["function"]["name"] == "get_weather"
    assert "city" in json.loads(call["function"]["arguments"])
    assert result.message()["tool_calls"] == result.tool_calls


async def test_cache_replays_identical_requests_without_model_calls(fake_server, tmp_path):
    server = fake_server()
    async with client_for(server.base_url, tmp_path) as llm:
        first = await llm.structured("generator", USER, Person, seed=11)
    async with client_for(server.base_url, tmp_path) as llm2:
        second = await llm2.structured("generator", USER, Person, seed=11)
        assert llm2.usage.by_role["generator"].cache_hits == 1
    assert first == second
    assert server.requests == 1


async def test_load_balances_across_base_urls(fake_server):
    a, b = fake_server(), fake_server()
    cfg = make_config(a.base_url, None, max_concurrency=4)
    cfg.llm.base_urls = [a.base_url, b.base_url]
    async with LLMClient(cfg, retry=FAST) as llm:
        await asyncio.gather(*(llm.chat("agent", [{"role": "user", "content": str(i)}]) for i in range(40)))
    assert a.served > 5 and b.served > 5
    assert a.served + b.served == 40


async def test_200_concurrent_structured_calls_survive_faults(fake_server):
    """30% of requests answered 429/503, 5% of connections dropped: every call completes,
    the usage log has each call exactly once, and retries are counted."""
    server = fake_server(rate_429=0.15, rate_503=0.15, rate_drop=0.05, seed=7)
    async with client_for(server.base_url, max_concurrency=64, max_retries=12) as llm:
        results = await asyncio.gather(
            *(llm.structured("generator", [{"role": "user", "content": f"person {i}"}], Person) for i in range(200))
        )
    assert all(isinstance(r, Person) for r in results)
    records = llm.usage.records
    assert len(records) == 200
    assert len({r.call_id for r in records}) == 200
    assert all(r.ok for r in records)
    total_retries = sum(r.retries for r in records)
    assert total_retries == llm.usage.by_role["generator"].retries
    assert total_retries == server.requests - 200
    assert total_retries > 30


def test_prefix_cache_reuse_is_read_from_either_field() -> None:
    from synth.llm.client import _cached_prompt_tokens

    assert _cached_prompt_tokens({"usage": {"prompt_tokens_details": {"cached_tokens": 5}}}) == 5
    assert _cached_prompt_tokens({"timings": {"cache_n": 7, "prompt_n": 3}}) == 7
    assert _cached_prompt_tokens({"usage": {"prompt_tokens": 9}}) == 0


def test_episodes_in_flight_follow_the_servers_slots(fake_server: Any) -> None:
    """Unset `run.in_flight` means two episodes per decoding slot of the agent's servers (llama-server's
    /props), summed over replicas; a server that does not say gets the fixed default; a set value wins."""
    from synth.config import DEFAULT_IN_FLIGHT
    from synth.llm.session import episodes_in_flight

    four, three = fake_server(slots=4), fake_server(slots=3)
    assert episodes_in_flight(make_config(four.base_url)) == (8, "2 per slot of 4 server slot(s), from /props")
    assert episodes_in_flight(make_config(four.base_url, base_urls=[four.base_url, three.base_url]))[0] == 14
    silent = fake_server()
    assert episodes_in_flight(make_config(silent.base_url)) == (DEFAULT_IN_FLIGHT,
                                                               "the servers do not report their slots")
    cfg = make_config(four.base_url)
    fixed = cfg.model_copy(update={"run": cfg.run.model_copy(update={"in_flight": 5})})
    assert episodes_in_flight(fixed) == (5, "run.in_flight")


def test_auto_tool_mode_follows_the_servers_chat_template(fake_server: Any) -> None:
    """Issue 13: native tool calls where the model's chat template supports tools, the per-toolset
    action schema where it does not; a configured mode stands; a server without /props gets native."""
    from synth.llm.session import agent_tool_mode, template_supports_tools

    tools = fake_server(props={"chat_template_caps": {"supports_tools": True}, "chat_template": "..."})
    plain = fake_server(props={"chat_template": "{% for message in messages %}<|im_start|>{{ message.content }}"})
    silent = fake_server()
    auto = {"tool_mode": "auto"}
    assert agent_tool_mode(make_config(tools.base_url, **auto))[0] == "native"
    mode, why = agent_tool_mode(make_config(plain.base_url, **auto))
    assert mode == "constrained" and "no tool calling" in why
    assert agent_tool_mode(make_config(silent.base_url, **auto))[0] == "native"
    assert agent_tool_mode(make_config(tools.base_url, base_urls=[tools.base_url, plain.base_url], **auto))[0] \
        == "constrained"
    assert agent_tool_mode(make_config(tools.base_url)) == ("constrained", "configured")
    assert template_supports_tools({"chat_template": "{% if tools %}...{% endif %}"}) is True
    assert template_supports_tools({}) is None


LONG_SYSTEM = {"role": "system", "content": "You are the order desk of Northwind. " * 40}


async def test_a_shared_long_opening_is_computed_once_before_its_siblings_go(fake_server):
    """With `prefix_warmup` (for servers with one prefix cache for all requests): episodes of one
    agent share a long opening (system prompt, tools); the first request with it goes alone, the
    others wait for its reply (then the server has it cached), later ones never wait; a short
    opening never waits (`synth.llm.prefix`). Off, nothing waits."""
    arrived: list[str] = []

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        arrived.append(body["messages"][-1]["content"])
        return {"role": "assistant", "content": "ok"}

    server = fake_server(responder=responder)
    async with client_for(server.base_url, prefix_warmup=True) as llm:
        first = asyncio.create_task(llm.chat("agent", [LONG_SYSTEM, {"role": "user", "content": "first"}]))
        await asyncio.sleep(0)  # the first is on its way before its siblings are asked for
        await asyncio.gather(first, *(llm.chat("agent", [LONG_SYSTEM, {"role": "user", "content": f"sibling {i}"}])
                                      for i in range(3)))
        assert arrived[0] == "first" and llm.prefixes.waits == 3
        await llm.chat("agent", [LONG_SYSTEM, {"role": "user", "content": "later"}])
        short = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
        await asyncio.gather(*(llm.chat("agent", short, seed=i) for i in range(3)))
        assert llm.prefixes.waits == 3
    async with client_for(server.base_url) as llm:
        await asyncio.gather(*(llm.chat("agent", [LONG_SYSTEM, {"role": "user", "content": f"off {i}"}])
                               for i in range(3)))
        assert llm.prefixes.waits == 0


async def test_siblings_go_on_when_the_first_request_fails_and_follow_it_to_its_replica(fake_server):
    failing = fake_server(script=[status(400)])
    async with client_for(failing.base_url, prefix_warmup=True) as llm:
        results = await asyncio.gather(
            *(llm.chat("agent", [LONG_SYSTEM, {"role": "user", "content": str(i)}]) for i in range(3)),
            return_exceptions=True)
    assert sum(isinstance(r, Exception) for r in results) == 1 and failing.served == 2
    a, b = fake_server(), fake_server()
    cfg = make_config(a.base_url, None, max_concurrency=4)
    cfg.llm.base_urls = [a.base_url, b.base_url]
    async with LLMClient(cfg, retry=FAST) as llm:
        await llm.chat("agent", [LONG_SYSTEM, {"role": "user", "content": "first"}])
        home = a if a.served else b
        for i in range(6):
            await llm.chat("agent", [LONG_SYSTEM, {"role": "user", "content": f"turn {i}"}])
    assert home.served == 7
