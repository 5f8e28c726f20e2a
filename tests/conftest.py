"""Shared fixtures: a scripted fake OpenAI server (unit tier) and the embedded backend
(integration tier, one llama-server per test session).

Integration tests are marked `integration`. They use `SYNTH_TEST_BASE_URL` when set (a server
already running), else start the embedded backend once. When the backend is not installed they
skip, unless `SYNTH_REQUIRE_BACKEND=1` (set by CI), where a missing backend is a failure.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from synth.config import SynthConfig, load_config
from synth.llm.errors import BackendUnavailableError
from synth.llm.fake_server import FakeOpenAIServer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MCP_DATA = SHARED_DATA / "mcp"


def make_config(base_url: str, tmp_path: Path | None = None, **llm: Any) -> SynthConfig:
    """A config pointing every role at `base_url`; the response cache goes under tmp_path."""
    overrides: dict[str, Any] = {"llm": {"base_urls": [base_url], **llm}}
    overrides["cache"] = {"enabled": tmp_path is not None, "dir": str(tmp_path / "cache") if tmp_path else "x"}
    return load_config(None, overrides, environ={})


@pytest.fixture(autouse=True)
def _private_response_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in-process read ./synth.toml, whose cache is ./data/cache: give every test its
    own, so no test replays replies cached by another (or by an earlier run of the suite)."""
    monkeypatch.setenv("SYNTH_CACHE__DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeOpenAIServer]]:
    """Factory: `fake_server(script=[...], rate_429=0.1, responder=fn)` -> a started server."""
    started: list[FakeOpenAIServer] = []

    def make(**kwargs: Any) -> FakeOpenAIServer:
        server = FakeOpenAIServer(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def backend_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real llama-server with SmolLM2 (see module docstring)."""
    url = os.environ.get("SYNTH_TEST_BASE_URL")
    if url:
        yield url.rstrip("/")
        return
    from synth.config import BackendConfig
    from synth.llm.local import LocalBackend

    log = tmp_path_factory.mktemp("backend") / "llama-server.log"
    try:
        backend = LocalBackend(BackendConfig(parallel=4, ctx_per_slot=4096), log_file=log)
    except BackendUnavailableError as exc:
        if os.environ.get("SYNTH_REQUIRE_BACKEND") == "1":
            pytest.fail(f"embedded backend required but unavailable: {exc}")
        pytest.skip(f"embedded backend not installed: {exc}")
    backend.start()
    try:
        yield backend.base_url
    finally:
        backend.stop()


@pytest.fixture
def backend_config(backend_url: str, tmp_path: Path) -> SynthConfig:
    """Config for the real backend, with a per-test response cache."""
    return make_config(backend_url, tmp_path)


def one_word_goals(
    server: FakeOpenAIServer, seen: list[str] | None = None
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A responder: the fake server's default replies, but every task draft's `goal` is one word
    and its `success_criteria` one word each (valid under the task schema; the goal is replaced by
    one composed from the plan, the criteria are dropped, and the plan's own criteria remain).
    `seen` collects each request's last prompt."""

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        if seen is not None:
            seen.append(body["messages"][-1]["content"])
        message = server.default_message(body)
        try:
            data = json.loads(message.get("content") or "")
        except ValueError:
            return message
        if isinstance(data, dict) and "goal" in data:
            data["goal"] = "pleasehelpme"
            data["success_criteria"] = ["ok"]
            message = {**message, "content": json.dumps(data)}
        return message

    return respond


def broken_task_drafts(server: FakeOpenAIServer) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A responder: the fake server's default replies, except that every task draft (a request
    whose schema has a `goal`) is answered with text that is not JSON, so no task can be made."""

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
        if "goal" in (schema.get("properties") or {}):
            return {"role": "assistant", "content": "I cannot write that task."}
        return server.default_message(body)

    return respond


def mcp_data_or_skip(name: str) -> Path:
    path = MCP_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


# ---------------------------------------------------------------- where the test time goes
# CI's budget is dominated by the integration tier; print each tier's share (setup, call and
# teardown of every test, the shared backend's start-up included) so a slow-down is seen at once.
_TIER_SECONDS: dict[str, float] = {"unit": 0.0, "integration": 0.0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tier = "integration" if "integration" in report.keywords else "unit"
    _TIER_SECONDS[tier] += report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        "tier durations: unit {:.0f}s, integration {:.0f}s".format(
            _TIER_SECONDS["unit"], _TIER_SECONDS["integration"])
    )


def judge_answer(body: dict[str, Any], verdict: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """The judge's reply carrying `verdict(n)` for n criteria: the bare JSON under a schema
    (`verdict_format = "schema"`, or a repair), else reasoning ending in a ```json block (`free`)."""
    fmt = body.get("response_format")
    if fmt:
        n = fmt["json_schema"]["schema"]["properties"]["criteria"]["minItems"]
        return {"role": "assistant", "content": json.dumps(verdict(n))}
    n = int(re.search(r"\((\d+) in all\)", body["messages"][0]["content"])[1])  # type: ignore[index]
    return {"role": "assistant", "content": "I went through the criteria one by one against the conversation.\n"
                                            f"```json\n{json.dumps(verdict(n))}\n```"}


def verdict_reply(passed: bool, score: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A responder answering every judge request with the same verdict (criteria sized to the rubric)."""

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        # A passing criterion needs a quote of the conversation behind it: quote its last line.
        conversation = body["messages"][-1]["content"].split("Conversation:", 1)[-1].strip()
        quote = conversation.splitlines()[-1][:60] if passed and conversation else ""
        return judge_answer(body, lambda n: {"criteria": [{"passed": passed, "evidence": quote}] * n,
                                             "score": score, "verdict": "pass" if passed else "fail"})

    return respond
