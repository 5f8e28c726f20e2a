"""`synth dedup` and `synth report`: finding near-duplicates, and looking at a dataset in a browser."""

from __future__ import annotations

import json
from pathlib import Path

from synth.cli.app import app, friendly_errors
from synth.cli.dataset import DbOpt, _existing_db


@app.command("dedup")
@friendly_errors
def dedup(db: Path = DbOpt) -> None:
    """Group near-duplicate tasks and trajectories (same toolset, reworded goal; same calls with the
    same arguments) and store the groups in the `duplicates` table, replacing the previous ones.
    Exports then keep one representative per group. Prints a JSON summary."""
    from synth.duplicates import dedup_dataset

    summary = dedup_dataset(_existing_db(db))
    print(json.dumps(summary.as_dict()))
