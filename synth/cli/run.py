"""CLI commands: run (see the module's command docstrings)."""

from __future__ import annotations

from synth.cli.app import app  # noqa: F401
