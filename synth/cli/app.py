"""The shared pieces of the `synth` command line: the Typer app, config building from flags,
and the error policy (errors a user can fix print one message and exit 2, never a traceback).
Each command group lives in its own module of this package and registers itself on `app`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from synth.config import ConfigError, SynthConfig, load_config
from synth.llm import LLMError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Synthesise agentic tool-use training data.")

# Messages on stderr are one line each, however narrow the console rich assumes for a log (80
# columns): a note or warning wrapped mid-sentence in a CI or `ray job` log reads as two.
console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """An error the user can fix; printed without a traceback, exit code 2."""


def friendly_errors(fn: F) -> F:
    """Turn the errors a user can fix into one line on stderr and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, UserError, LLMError, FileNotFoundError, ValueError) as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def build_config(
    config: Path | None,
    *,
    base_url: str | None = None,
    model: str | None = None,
    extra: dict[str, Any] | None = None,
) -> SynthConfig:
    overrides: dict[str, Any] = {}
    llm: dict[str, Any] = {}
    if base_url:
        llm["base_urls"] = [base_url]
    if model:
        llm["model"] = model
    if llm:
        overrides["llm"] = llm
    for section, values in (extra or {}).items():
        clean = {k: v for k, v in values.items() if v is not None}
        if clean:
            overrides.setdefault(section, {}).update(clean)
    return load_config(config, overrides)


ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (default: ./synth.toml if present).")
BaseUrlOpt = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint for every role, e.g. http://127.0.0.1:8000/v1.")
ModelOpt = typer.Option(None, "--model", help="Model name to send with --base-url.")


