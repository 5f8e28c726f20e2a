"""A llama-server that cannot run on this machine is explained, not a traceback (unit tier).

Stand-in binaries play the broken server: one kills itself with a signal at start-up (what an
AMX or AVX-512 build does on a CPU or VM that lacks them), one answers /health and then dies on
its first completion (matrix kernels first run there). `synth run`, `synth backend serve` and
`synth backend check` (the install script's last step) must say which signal, where the log is,
and what to do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from synth.config import BackendConfig
from synth.llm.local import BackendCrashedError, LocalBackend, check_backend, describe_exit

SIGNALS = ["SIGILL", "SIGSEGV"]


def _stand_in(tmp_path: Path, body: str) -> Path:
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    binary.chmod(0o755)
    return binary


def _dies_at_start(tmp_path: Path, sig: str) -> Path:
    return _stand_in(tmp_path, f"""
        import os, signal, sys
        print("load_tensors: CPU_Mapped model buffer size", flush=True)
        signal.signal(signal.{sig}, signal.SIG_DFL)
        os.kill(os.getpid(), signal.{sig})
    """)


def _dies_on_first_completion(tmp_path: Path) -> Path:
    """Serves /health, then SIGILLs itself when asked for a completion."""
    return _stand_in(tmp_path, """
        import os, signal, sys
        from http.server import BaseHTTPRequestHandler, HTTPServer
        port = int(sys.argv[sys.argv.index("--port") + 1])

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers(); self.wfile.write(b'{"status":"ok"}')
            def do_POST(self):
                os.kill(os.getpid(), signal.SIGILL)
            def log_message(self, *args):
                pass

        HTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """)


def _env(tmp_path: Path, binary: Path) -> dict[str, str]:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTH_")}
    return {**env, "SYNTH_BACKEND__BINARY": str(binary), "SYNTH_BACKEND__MODEL_PATH": str(model),
            "SYNTH_BACKEND__LOG_FILE": str(tmp_path / "llama-server.log"), "SYNTH_CACHE__ENABLED": "false"}


def _synth(tmp_path: Path, binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synth", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=_env(tmp_path, binary), timeout=120)


def test_describe_exit_names_signals():
    assert describe_exit(-int(signal.SIGILL)).startswith("killed by SIGILL (an illegal instruction")
    assert describe_exit(-int(signal.SIGSEGV)).startswith("killed by SIGSEGV")
    assert describe_exit(3) == "exited with code 3"


@pytest.mark.parametrize("sig", SIGNALS)
def test_crash_at_start_up_is_one_line_naming_the_signal(tmp_path: Path, sig: str):
    binary = _dies_at_start(tmp_path, sig)
    with pytest.raises(BackendCrashedError) as info:
        LocalBackend(BackendConfig(binary=str(binary), model_path=str(binary)), log_file=tmp_path / "x.log").start()
    message = str(info.value)
    assert "\n" not in message
    assert f"killed by {sig}" in message and str(tmp_path / "x.log") in message
    assert "SYNTH_REBUILD_BACKEND=1" in message and "--base-url" in message
    assert info.value.signal_name == sig


@pytest.mark.parametrize("sig", SIGNALS)
def test_synth_run_exits_2_with_the_signal_by_name(tmp_path: Path, sig: str):
    binary = _dies_at_start(tmp_path, sig)
    proc = _synth(tmp_path, binary, "run", "--domains", "weather", "--trajectories", "1",
                  "--db", str(tmp_path / "s.duckdb"), "--no-ray", "-q")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"killed by {sig}" in lines[0]
    assert str(tmp_path / "llama-server.log") in lines[0]
    assert "SYNTH_REBUILD_BACKEND=1" in lines[0] and "--base-url" in lines[0]


@pytest.mark.parametrize("sig", SIGNALS)
def test_backend_serve_exits_2_with_the_signal_by_name(tmp_path: Path, sig: str):
    binary = _dies_at_start(tmp_path, sig)
    proc = _synth(tmp_path, binary, "backend", "serve")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and f"killed by {sig}" in error_lines[0]


@pytest.mark.parametrize("sig", SIGNALS)
def test_backend_check_fails_with_a_paragraph(tmp_path: Path, sig: str):
    """The install script's last step: non-zero, the signal, the log's last lines, what to do."""
    binary = _dies_at_start(tmp_path, sig)
    proc = _synth(tmp_path, binary, "backend", "check")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"killed by {sig}" in proc.stderr
    assert "CPU_Mapped model buffer size" in proc.stderr  # the log's last lines
    assert "SYNTH_REBUILD_BACKEND=1 bash scripts/install.sh" in proc.stderr and "--base-url" in proc.stderr


def test_backend_check_catches_a_crash_on_the_first_completion(tmp_path: Path):
    binary = _dies_on_first_completion(tmp_path)
    with pytest.raises(BackendCrashedError, match=r"killed by SIGILL .* during its first completion"):
        check_backend(BackendConfig(binary=str(binary), model_path=str(binary)), log_file=tmp_path / "c.log")
    proc = _synth(tmp_path, binary, "backend", "check")
    assert proc.returncode == 1 and "during its first completion" in proc.stderr


def test_install_script_ends_with_the_backend_check():
    """The check is the install's last step and runs under `set -e`: a failing check fails the install."""
    script = (Path(__file__).resolve().parents[1] / "scripts" / "install.sh").read_text()
    assert "set -euo pipefail" in script
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert "synth backend check" in commands[-2:]
    assert "-DGGML_NATIVE=OFF" in script and "--no-cache-dir" in script
