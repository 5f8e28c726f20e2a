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
    from synth.llm.local import LocalBackend, stop_on_signals

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
        raise UserError(f"llama-server exited; log {backend.log_path}:\n{backend.log_tail()}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        backend.stop()


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
