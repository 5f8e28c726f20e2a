"""The `synth` command line. Importing the command modules registers their commands on `app`."""

from __future__ import annotations

import sys

from synth.cli import core, dataset, domains, judge, report, run, tools  # noqa: F401  (registration)
from synth.cli.app import app, console


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
