"""A reply that loops is stopped while it streams, and retried like a cut-off one (real HTTP, the
scripted server streaming as llama-server does)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from synth.llm import StructuredOutputError
from synth.llm.cache import request_key
from synth.llm.fake_server import text_reply
from synth.llm.repetition import looping_unit
from tests.test_llm_client import USER, Person, client_for

VALID = json.dumps({"name": "a", "age": 1, "address": {"city": "c", "zip": "z"}, "tags": []})
LOOP = '{"name": "' + "f-v-v" + "-v" * 600 + '"}'


@pytest.mark.parametrize("text, unit", [
    ("f" + "-v" * 60, 2),
    ("Please retry later. " * 5, 20),
    ('[' + '{"id": "wea-1"}, ' * 6, 17),
])
def test_a_tail_of_one_unit_repeated_is_a_loop(text: str, unit: int) -> None:
    assert looping_unit(text, 80) == unit


@pytest.mark.parametrize("text", [
    VALID,
    "-v" * 30,  # repeats, but shorter than the span looked at
    "The forecast for Paris is sunny, 21 C. The forecast for Lyon is rain, 14 C. " * 2,  # not back to back
    "abc" * 200 + "d",  # the loop has ended
])
def test_text_that_does_not_end_in_a_loop_is_not_one(text: str) -> None:
    assert looping_unit(text, 80) is None
    assert looping_unit("x" * 500, 0) is None  # 0: never


async def test_a_looping_reply_is_stopped_midway_and_retried_with_a_new_seed(fake_server: Any) -> None:
    seen: list[dict[str, Any]] = []
    replies = iter([LOOP, VALID])

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body)
        return {"role": "assistant", "content": next(replies)}

    server = fake_server(responder=responder, stream=True)
    async with client_for(server.base_url, loop_stop_chars=80) as llm:
        person = await llm.structured("generator", USER, Person, seed=3)
    assert person.name == "a"
    assert [b["stream"] for b in seen] == [True, True] and seen[0]["seed"] != seen[1]["seed"]
    assert server.streams_cut == 1  # the client hung up on the loop; the valid reply streamed to its end
    first, second = llm.usage.records
    assert first.ok and second.structured_attempts == 2
    assert (first.finish_reason, second.finish_reason) == ("repetition", "stop")  # llm_calls.finish_reason
    # Stopped after about 80 characters of loop, not the ~1,200 of the whole reply (4 a chunk).
    assert first.completion_tokens < 60


async def test_a_reply_that_only_loops_fails_with_the_reason_and_its_text(fake_server: Any) -> None:
    server = fake_server(script=[text_reply(LOOP)] * 2, stream=True)
    async with client_for(server.base_url, structured_retries=1, loop_stop_chars=80) as llm:
        with pytest.raises(StructuredOutputError) as info:
            await llm.structured("generator", USER, Person, seed=3)
    assert "repeats itself" in str(info.value)
    assert info.value.raw_text.startswith('{"name": "f-v-v') and len(info.value.raw_text) < 200


async def test_a_streamed_reply_comes_back_whole_with_its_usage(fake_server: Any) -> None:
    server = fake_server(script=[text_reply(VALID)], stream=True)
    async with client_for(server.base_url, loop_stop_chars=80) as llm:
        result = await llm.chat("agent", USER)
    assert result.content == VALID and result.finish_reason == "stop" and not result.cut_off
    assert result.prompt_tokens == 10  # the last event's usage, not a count of chunks
    assert server.streams_cut == 0


async def test_streaming_stays_out_of_the_cache_key_and_off_unless_the_stop_is_on(fake_server: Any,
                                                                                   tmp_path: Any) -> None:
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body)
        return {"role": "assistant", "content": VALID}

    server = fake_server(responder=responder, stream=True)
    async with client_for(server.base_url, tmp_path, loop_stop_chars=80) as llm:
        assert "stream" not in llm.payload("agent", USER)
        await llm.chat("agent", USER, seed=1)
    async with client_for(server.base_url, tmp_path) as llm:  # a --base-url server: off unless set
        await llm.chat("agent", USER, seed=1)  # the same request: replayed from the cache
        await llm.chat("agent", USER, seed=2)
    assert len(seen) == 2 and seen[0]["stream"] is True and "stream" not in seen[1]
    assert request_key(llm.payload("agent", USER, seed=1)) == request_key(
        {k: v for k, v in seen[0].items() if k not in ("stream", "stream_options")})


def test_the_embedded_backends_roles_stop_loops_unless_configured_and_keep_their_run() -> None:
    from synth.config import EMBEDDED_LOOP_STOP_CHARS, load_config
    from synth.pipeline.driver import run_identity

    plain = load_config(None, {"llm": {"roles": {"judge": {"base_urls": ["http://judge:8000/v1"]}}}}, environ={})
    served = plain.with_base_url("http://127.0.0.1:9/v1")
    assert served.llm.role("agent").loop_stop_chars == EMBEDDED_LOOP_STOP_CHARS
    assert served.llm.role("judge").loop_stop_chars is None  # its own server: off
    assert run_identity(served, ["weather"]) == run_identity(plain, ["weather"])
    chosen = load_config(None, {"llm": {"loop_stop_chars": 0}}, environ={}).with_base_url("http://127.0.0.1:9/v1")
    assert chosen.llm.role("agent").loop_stop_chars == 0
