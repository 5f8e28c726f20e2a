"""`synth dedup` and `synth report`: finding near-duplicates, and looking at a dataset in a browser."""

from __future__ import annotations

import json
from pathlib import Path

import typer

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


@app.command("report")
@friendly_errors
def report(
    db: Path = DbOpt,
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    embeddings_url: str | None = typer.Option(
        None, "--embeddings-url", envvar="SYNTH_EMBEDDINGS_URL",
        help="An OpenAI-compatible /v1 base URL serving embeddings (default: built-in hashed TF-IDF)."),
    embeddings_model: str = typer.Option("text-embedding-3-small", "--embeddings-model",
                                         envvar="SYNTH_EMBEDDINGS_MODEL", help="Model name for --embeddings-url."),
) -> None:
    """Write the dataset as one self-contained HTML page: coverage maps, yield, rejection reasons,
    check failure rates, the judge's calibration, cost, near-duplicates and example trajectories.
    Read-only: works while a run writes the dataset. Prints a JSON summary."""
    from synth.report import EmbeddingEndpoint, write_report

    endpoint = EmbeddingEndpoint(embeddings_url, embeddings_model) if embeddings_url else None
    summary = write_report(_existing_db(db), out, endpoint)
    print(json.dumps(summary.as_dict()))
