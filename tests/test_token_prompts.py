"""A conversation's earlier replies go back to llama-server as the tokens the model generated
(`synth.llm.token_prompts`): real HTTP against the scripted server answering `/apply-template` and
`/completion` as llama-server does; the embedded server's own test is in the integration tier."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import pytest

from synth.config import load_config
from synth.llm.fake_server import chatml, text_reply
from synth.llm.token_prompts import ReplyTokens, completion_body, reply_tokens
from tests.test_llm_client import USER, Person, client_for

SYSTEM = {"role": "system", "content": "You are a weather agent."}
FIRST = [SYSTEM, {"role": "user", "content": "Weather in Paris?"}]


def _next(messages: list[dict[str, Any]], reply: str, user: str) -> list[dict[str, Any]]:
    return [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": user}]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_next_turn_sends_the_earlier_reply_as_its_generated_tokens(fake_server: Any, stream: bool) -> None:
    server = fake_server(script=[text_reply("Sunny."), text_reply("Rain.")], llama=True)
    async with client_for(server.base_url, token_prompts=True, loop_stop_chars=80 if stream else 0) as llm:
        first = await llm.chat("agent", FIRST, seed=1, max_tokens=50)
        second_messages = _next(FIRST, first.content or "", "And Lyon?")
        second = await llm.chat("agent", second_messages, seed=2, max_tokens=50)
    assert (first.content, second.content) == ("Sunny.", "Rain.")
    assert first.finish_reason == second.finish_reason == "stop"
    one, two = server.completions
    assert one["prompt"] == [chatml(FIRST)] and one["n_predict"] == 50 and one["seed"] == 1
    assert one["return_tokens"] and bool(one.get("stream")) == stream
    # The first prompt as it was sent, the reply's tokens as generated (not its end-of-turn token,
    # which the template writes), then the rest of the conversation as text.
    rest = chatml(second_messages)[len(chatml(FIRST) + "Sunny."):]
    assert two["prompt"] == [chatml(FIRST), *map(ord, "Sunny."), rest]
    assert rest.startswith("<|im_end|>\n<|im_start|>user\nAnd Lyon?")
    # Usage as /completion counts it (the scripted server: a token a character of text, one an id).
    assert [r.prompt_tokens for r in llm.usage.records] == [len(chatml(FIRST)), len(chatml(second_messages))]


async def test_a_structured_call_goes_as_json_schema_and_is_validated_as_before(fake_server: Any) -> None:
    server = fake_server(llama=True)
    async with client_for(server.base_url, token_prompts=True) as llm:
        person = await llm.structured("generator", USER, Person, seed=3)
    assert isinstance(person, Person)
    (sent,) = server.completions
    assert sent["json_schema"]["required"] == ["name", "age", "address", "tags"]
    assert "response_format" not in sent and "messages" not in sent and "max_tokens" not in sent


async def test_the_response_cache_keeps_the_chat_request_as_its_key(fake_server: Any, tmp_path: Any) -> None:
    server = fake_server(script=[text_reply("Sunny.")], llama=True)
    async with client_for(server.base_url, tmp_path, token_prompts=True) as llm:
        await llm.chat("agent", FIRST, seed=1)
    async with client_for(server.base_url, tmp_path, token_prompts=False) as llm:
        again = await llm.chat("agent", FIRST, seed=1)  # the same chat request: replayed, not sent
    assert again.cache_hit and again.content == "Sunny." and server.requests == 1


async def test_a_server_without_apply_template_gets_chat_requests(fake_server: Any) -> None:
    server = fake_server(script=[text_reply("Sunny."), text_reply("Rain.")])  # no llama-server endpoints
    async with client_for(server.base_url, token_prompts=True) as llm:
        first = await llm.chat("agent", FIRST)
        second = await llm.chat("agent", _next(FIRST, first.content or "", "And Lyon?"))
    assert (first.content, second.content) == ("Sunny.", "Rain.")
    assert server.requests == 2  # one chat request each: the 404 of /apply-template is asked once


async def test_native_tool_calls_and_the_setting_off_keep_the_chat_api(fake_server: Any) -> None:
    server = fake_server(llama=True)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    async with client_for(server.base_url, token_prompts=True) as llm:
        await llm.chat("agent", FIRST, tools=tools)
    async with client_for(server.base_url) as llm:
        await llm.chat("agent", FIRST)
    assert server.completions == [] and server.served == 2


def test_only_the_rendering_the_template_reproduces_goes_as_tokens() -> None:
    replies = ReplyTokens()
    rendered = chatml(FIRST)
    replies.remember(FIRST, rendered, [rendered], "Sunny.", [83, 117])
    later = _next(FIRST, "Sunny.", "And Lyon?")
    assert replies.prompt(later, chatml(later))[:3] == [rendered, 83, 117]
    # A template that rewrites the earlier turn: the conversation goes as text.
    assert replies.prompt(later, "<rewritten>" + chatml(later)) == ["<rewritten>" + chatml(later)]
    # An edited reply is another conversation.
    edited = _next(FIRST, "Sunny!", "And Lyon?")
    assert replies.prompt(edited, chatml(edited)) == [chatml(edited)]
    assert replies.reused == 1


def test_the_end_of_turn_token_is_left_out_wherever_the_server_sent_it() -> None:
    assert reply_tokens([83, 117, 2], streamed=False, silent_tail=False) == [83, 117]  # a whole response
    assert reply_tokens([83, 117, 2], streamed=True, silent_tail=True) == [83, 117]  # its own event, no text
    assert reply_tokens([83, 117], streamed=True, silent_tail=False) == [83, 117]  # a stream without it


def test_a_completion_request_carries_the_chat_requests_sampling() -> None:
    chat = {"model": "m", "messages": FIRST, "temperature": 0.2, "top_p": 0.9, "max_tokens": 7, "seed": 4,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}
    body = completion_body(chat, ["p"], stream=False)
    assert body == {"prompt": ["p"], "temperature": 0.2, "top_p": 0.9, "n_predict": 7, "seed": 4,
                    "json_schema": {"type": "object"}, "return_tokens": True, "cache_prompt": True}
    assert json.dumps(completion_body(chat, ["p"], stream=True)).count('"stream": true') == 1


def test_the_embedded_backends_roles_send_token_prompts_and_keep_their_run() -> None:
    from synth.pipeline.driver import run_identity

    plain = load_config(None, {"llm": {"roles": {"judge": {"base_urls": ["http://judge:8000/v1"]}}}}, environ={})
    served = plain.with_base_url("http://127.0.0.1:9/v1")
    assert served.llm.role("agent").token_prompts is True
    assert served.llm.role("judge").token_prompts is None  # its own server: off
    assert run_identity(served, ["weather"]) == run_identity(plain, ["weather"])
    off = load_config(None, {"llm": {"token_prompts": False}}, environ={}).with_base_url("http://127.0.0.1:9/v1")
    assert off.llm.role("agent").token_prompts is False


@pytest.mark.integration
@pytest.mark.parametrize("loop_stop_chars", [48, 0], ids=["streamed", "whole"])
async def test_the_embedded_server_finds_each_earlier_reply_in_its_cache(backend_url: str, tmp_path: Any,
                                                                         loop_stop_chars: int) -> None:
    """Three turns of an agent conversation under an action grammar: each later turn's prompt is
    the earlier conversation, replies included, computed once, so all of it comes from the slot's
    cache (through the chat API the server tokenized each reply anew and recomputed it)."""
    schema = {"type": "object", "properties": {"action": {"const": "reply"},
                                               "message": {"type": "string", "maxLength": 80}},
              "required": ["action", "message"], "additionalProperties": False}
    messages = [{"role": "system", "content": "You are the agent of a weather service. Answer with JSON actions."},
                {"role": "user", "content": "What is the weather in Paris tomorrow?"}]
    async with client_for(backend_url, tmp_path, token_prompts=True, loop_stop_chars=loop_stop_chars) as llm:
        for turn in range(3):
            reply = await llm.structured_reply("agent", messages, schema, seed=20 + turn, max_tokens=120)
            assert json.loads(reply.text)["action"] == "reply"
            messages = _next(messages, reply.text, f"And the day after, day {turn + 2}?")
        replies = llm._endpoints[backend_url].replies
        assert replies is not None and replies.reused >= 2  # the second and third turns
        # A remembered reply ends on its last word, not on the end-of-turn token the template adds.
        root = backend_url.removesuffix("/v1")
        async with httpx.AsyncClient(timeout=10) as http:
            eos = (await http.get(f"{root}/props")).json()["eos_token"]
            (eos_id,) = (await http.post(f"{root}/tokenize", json={"content": eos})).json()["tokens"]
        assert all(turn.pieces[-1] != eos_id for turn in replies._turns.values())
    records = [r for r in llm.usage.records if r.finish_reason == "stop"]  # the replies kept, one a turn
    assert len(records) == 3
    for before, after in itertools.pairwise(records):
        # Every token of the earlier prompt and reply but the end-of-turn one is found cached.
        assert after.cached_prompt_tokens >= before.prompt_tokens + before.completion_tokens - 1, records


async def test_a_looping_completion_is_stopped_and_not_remembered(fake_server: Any) -> None:
    from tests.test_loop_stop import LOOP, VALID

    server = fake_server(script=[text_reply(LOOP), text_reply(VALID)], llama=True)
    async with client_for(server.base_url, token_prompts=True, loop_stop_chars=80) as llm:
        person = await llm.structured("generator", USER, Person, seed=3)
        replies = llm._endpoints[server.base_url].replies
        assert replies is not None and len(replies._turns) == 1  # the valid reply only
    assert person.name == "a"
    first, second = llm.usage.records
    assert (first.finish_reason, second.finish_reason) == ("repetition", "stop") and first.completion_tokens < 200
