"""Entry point for Ray job submission; takes the same options as `synth run`.

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python pipelines/synthesize.py --config synth.toml --db /abs/path/synth.duckdb

Inside a job, Ray sets RAY_ADDRESS, so the run joins the cluster that runs the job. Give `--db`
an absolute path: a job runs in a copy of the working directory that is deleted afterwards.
"""

from __future__ import annotations

import os
import sys

from synth.cli import app


def main(argv: list[str]) -> None:
    args = ["run", *argv]
    if "--ray-address" not in argv and os.environ.get("RAY_ADDRESS"):
        args += ["--ray-address", "auto"]
    app(args, prog_name="synthesize.py")


if __name__ == "__main__":
    main(sys.argv[1:])
