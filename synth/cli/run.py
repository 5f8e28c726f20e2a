"""`synth run`: the main job, from domains to judged trajectories in a DuckDB dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer

from synth.cli.app import BaseUrlOpt, ConfigOpt, ModelOpt, app, build_config, console, friendly_errors


@app.command("run")
@friendly_errors
def run(
    domains: str | None = typer.Option(None, "--domains",
                                       help="Comma-separated domains, or all (see `synth domains list`)."),
    categories: str | None = typer.Option(None, "--categories", help="Comma-separated categories: all their domains."),
    exclude: str | None = typer.Option(None, "--exclude", help="Comma-separated domains or categories to leave out."),
    db: Path | None = typer.Option(None, "--db", help="DuckDB dataset file (default: data/synth.duckdb)."),
    trajectories: int | None = typer.Option(None, "--trajectories", "-n", help="Judged trajectories to end with."),
    config: Path | None = ConfigOpt,
    base_url: str | None = BaseUrlOpt,
    model: str | None = ModelOpt,
    ray_address: str | None = typer.Option(None, "--ray-address", help="Join an existing Ray cluster."),
    no_ray: bool = typer.Option(False, "--no-ray", help="Run the stages in this process, without Ray."),
    seed: int | None = typer.Option(None, "--seed", help="Run seed (part of the run's identity)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress display."),
) -> None:
    """Synthesise and judge trajectories; re-running the same command resumes where it stopped.

    Without --base-url the embedded llama.cpp backend is started and stopped around the run.
    Prints a JSON summary (run id, judged, accepted, status) on stdout.
    """
    from synth.pipeline.run import execute_run

    if domains is not None or categories is not None:  # a selection on the command line replaces the config's
        domains, categories = domains or "", categories or ""
    cfg = build_config(config, base_url=base_url, model=model, extra={"run": {
        "domains": domains, "categories": categories, "exclude": exclude, "db": str(db) if db else None,
        "trajectories": trajectories, "seed": seed}})
    grouping = DuplicateGrouping(Path(cfg.run.db))
    summary = execute_run(cfg, ray_address=ray_address, use_ray=not no_ray, show_progress=not quiet,
                          console=console, on_stored=grouping.start)
    print(json.dumps(summary.as_dict()))
    grouping.finish()
    if summary.status == "budget_spent":  # stopped as asked: not a failure
        console.print(f"[yellow]run {summary.run_id} spent its token budget[/]: {summary.judged}/{summary.target} "
                      "judged; raise run.token_budget and run the same command again to resume")
        return
    if summary.status not in ("finished",):
        console.print(f"[yellow]run {summary.run_id} ended {summary.status}[/]: "
                      f"{summary.judged}/{summary.target} judged; run the same command again to resume")
        raise typer.Exit(1)


class DuplicateGrouping:
    """Refresh the near-duplicate groups (`synth dedup`) once the run has stopped writing, in a
    Python process of its own: dedup reads every task and trajectory, and in the run's process those
    reads came on top of everything the run had grown to; its own process hands the memory back
    when it ends. `start` as soon as the run's rows are stored (it then overlaps Ray's and the
    embedded backend's shutdown, ~1.3 s of a fake-backend run's ~19), `finish` waits and reports;
    a `finish` without a `start` does both. Errors are the command's, as in-process."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        if self.process is not None or not self.db.is_file():
            return
        code = ("import json, sys; from synth.duplicates import dedup_dataset; "
                "print(json.dumps(dedup_dataset(sys.argv[1]).as_dict()))")
        self.process = subprocess.Popen([sys.executable, "-c", code, str(self.db)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self) -> None:
        self.start()
        if self.process is None:
            return
        out, err = self.process.communicate()
        if self.process.returncode != 0:
            raise RuntimeError(f"synth dedup of {self.db} failed: {err.strip()[-1500:]}")
        left_out = json.loads(out.strip().splitlines()[-1])["left_out"]
        console.print(f"near-duplicates: {left_out['trajectory']} trajectory(ies) and "
                      f"{left_out['task']} task(s) left out of exports (synth dedup)", highlight=False)
