"""`synth config show`, `synth backend serve`, `synth llm smoke`: the foundation's commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from pydantic import BaseModel

from synth.cli.app import (
    BaseUrlOpt,
    ConfigOpt,
    ModelOpt,
    UserError,
    app,
    build_config,
    console,
    friendly_errors,
)
from synth.llm import LLMClient

config_app = typer.Typer(no_args_is_help=True, help="Inspect the effective configuration.")
backend_app = typer.Typer(no_args_is_help=True, help="The embedded llama.cpp backend.")
llm_app = typer.Typer(no_args_is_help=True, help="Talk to the configured model endpoints.")
app.add_typer(config_app, name="config")
app.add_typer(backend_app, name="backend")
app.add_typer(llm_app, name="llm")


@config_app.command("show")
@friendly_errors
def config_show(
    config: Path | None = ConfigOpt,
    base_url: str | None = BaseUrlOpt,
    model: str | None = ModelOpt,
) -> None:
    """Print the effective config (file, SYNTH_* variables and flags applied), every role resolved."""
    cfg = build_config(config, base_url=base_url, model=model)
    data = cfg.model_dump(mode="json")
    data["llm"]["resolved_roles"] = {r.value: rc.model_dump(mode="json") for r, rc in cfg.roles().items()}
    data["agents"] = cfg.agent_settings().model_dump(mode="json")  # tasks_per_agent as the run uses it
    print(json.dumps(data, indent=2))


@backend_app.command("serve")
@friendly_errors
def backend_serve(
    port: int | None = typer.Option(None, "--port", help="Port on 127.0.0.1 (default: a free one)."),
    model: Path | None = typer.Option(None, "--model", help="GGUF file (default: SmolLM2-135M-Instruct)."),
    parallel: int | None = typer.Option(None, "--parallel", help="Parallel decoding slots."),
    config: Path | None = ConfigOpt,
) -> None:
    """Run llama-server in the foreground and print its base URL; Ctrl-C stops it."""
    from synth.llm.local import LocalBackend, describe_exit, stop_on_signals

    cfg = build_config(config, extra={"backend": {"port": port, "model_path": str(model) if model else None,
                                                  "parallel": parallel}})
    backend = LocalBackend(cfg.backend)
    stop_on_signals(backend)
    console.print(f"starting {backend.binary.name} with {backend.model.name} (log: {backend.log_path}) ...")
    backend.start()
    print(backend.base_url, flush=True)
    console.print(f"ready: {backend.base_url} (health: {backend.health_url}); Ctrl-C to stop")
    try:
        while backend.is_running():
            assert backend.process is not None
            backend.process.wait()
        assert backend.process is not None
        raise UserError(f"llama-server {describe_exit(backend.process.returncode)} while serving; "
                        f"log: {backend.log_path}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        backend.stop()


@backend_app.command("check")
def backend_check(
    model: Path | None = typer.Option(None, "--model", help="GGUF file (default: SmolLM2-135M-Instruct)."),
    config: Path | None = ConfigOpt,
) -> None:
    """Start llama-server, ask for one short completion, stop it (the install script's last step).

    On failure prints one paragraph (what killed the server, its last log lines, what to do) and
    exits 1, so a backend that cannot run on this machine fails the install, not the first run.
    """
    from synth.llm.errors import BackendUnavailableError
    from synth.llm.local import BackendCrashedError, check_backend

    try:
        cfg = build_config(config, extra={"backend": {"model_path": str(model) if model else None}})
        log_file = Path(cfg.backend.log_file).with_name("llama-server-check.log")
        result = check_backend(cfg.backend, log_file=log_file)
    except BackendUnavailableError as exc:
        tail = ""
        log = getattr(exc, "log_path", None)
        if isinstance(exc, BackendCrashedError) and log is not None:
            try:
                lines = Path(log).read_text(errors="replace").splitlines()[-8:]
                tail = "\n  last log lines:\n" + "\n".join(f"    {line}" for line in lines)
            except OSError:
                pass
        console.print(
            f"[bold red]synth backend check failed:[/] {exc}{tail}\n"
            "  The embedded backend cannot serve on this machine, so `synth run` without --base-url would fail "
            "the same way. Rebuild llama-server portably (`SYNTH_REBUILD_BACKEND=1 bash scripts/install.sh`; "
            "do not set SYNTH_NATIVE_BUILD), or run synth against another OpenAI-compatible server with "
            "--base-url URL --model NAME.",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(1) from None
    rate = result.completion_tokens / result.seconds if result.seconds > 0 else 0.0
    console.print(f"backend ok: {result.binary} served {Path(result.model).name}; one completion of "
                  f"{result.completion_tokens} tokens in {result.seconds:.2f}s ({rate:.0f} tokens/s): "
                  f"{result.reply.strip()[:60]!r}", highlight=False, soft_wrap=True)


class _SmokeAddress(BaseModel):
    city: str
    country: str


class _SmokeContact(BaseModel):
    name: str
    age: int
    address: _SmokeAddress
    tags: list[str]


@llm_app.command("smoke")
@friendly_errors
def llm_smoke(
    config: Path | None = ConfigOpt,
    base_url: str | None = BaseUrlOpt,
    model: str | None = ModelOpt,
) -> None:
    """One structured call with a nested schema (the embedded backend unless --base-url)."""
    from synth.llm.session import model_endpoints

    cfg = build_config(config, base_url=base_url, model=model)
    with model_endpoints(cfg) as (live, _backend):

        async def go() -> _SmokeContact:
            async with LLMClient(live) as client:
                return await client.structured(
                    "generator",
                    [{"role": "user", "content": "Invent a contact: name, age, address (city, country), tags."}],
                    _SmokeContact, seed=1,
                )

        result = asyncio.run(go())
    print(result.model_dump_json(indent=2))
