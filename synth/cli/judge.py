"""`synth judge ...`: judge trajectories from a file, re-judge a dataset under the current policy,
and calibrate the policy (which is what gives an LLM judge model its vote).

- `synth judge file IN.jsonl --out OUT.jsonl [--no-llm]`: one trajectory per line (the shape of
  `synth/judges/fixtures/good_trajectories.json` items, read by `synth.judges.inputs.read_item`);
  each output line is the input plus `accepted`, `well_formed`, `failed_checks`, `reasons`. A line
  that cannot be read gets `accepted: false` and `reasons: ["input error: line N: ..."]`, and the
  other lines go on; the exit code is 0 unless no line could be read.
- `synth judge run --db PATH [--no-llm]`: a new judgment per stored trajectory under the current
  `[judge]` policy, without rolling anything out again; it becomes the trajectory's latest.
- `synth judge calibrate [--db PATH] [--checks-only]`: see `synth.judges.calibrate`; the report is
  stored in the dataset's `calibrations` table (`--db`, else the configured `run.db`).

With an LLM judge, its verdict decides only when the judge model's latest stored calibration meets
the `[judge]` floors; otherwise it is advisory (`synth.judges.policy.vote_of`).
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import typer

from synth.cli.app import BaseUrlOpt, ConfigOpt, ModelOpt, UserError, app, build_config, console, friendly_errors
from synth.cli.dataset import _existing_db

judge_app = typer.Typer(no_args_is_help=True,
                        help="The judges: judge a file, re-judge a dataset, calibrate the policy.")
app.add_typer(judge_app, name="judge")

NoLlmOpt = typer.Option(False, "--no-llm", help="Deterministic checks only: no model is started.")


def _policy(cfg: Any, no_llm: bool) -> Any:
    policy = cfg.judge_policy()
    return policy.model_copy(update={"llm_judge": False}) if no_llm else policy


async def _judge_all(items: list[tuple[Any, Any, Any]], cfg: Any, policy: Any, calibration_db: Path | None,
                     seed: int) -> list[Any]:
    """Judgments of (task, tools, trajectory) items, with a model client only when the policy asks
    for the LLM judge (the embedded backend is started only then)."""
    from synth.ids import derive_seed
    from synth.judges.policy import judge

    async def run(llm: Any, calibration: Any) -> list[Any]:
        return list(await asyncio.gather(*(
            judge(traj, task, tools, llm, random.Random(derive_seed(seed, "judge", traj.id)), policy, calibration)
            for task, tools, traj in items)))

    if not policy.llm_judge:
        return await run(None, None)
    from synth.config import Role
    from synth.judges.policy import judge_name
    from synth.llm import LLMClient
    from synth.store import latest_calibration

    model = judge_name(policy, cfg.llm.role(Role.JUDGE).model)
    calibration = latest_calibration(calibration_db, model) if calibration_db is not None else None
    async with LLMClient(cfg) as llm:
        return await run(llm, calibration)


def _judge_items(items: list[tuple[Any, Any, Any]], cfg: Any, policy: Any, calibration_db: Path | None,
                 seed: int) -> list[Any]:
    if not policy.llm_judge or not items:
        return asyncio.run(_judge_all(items, cfg, policy, calibration_db, seed))
    from synth.llm.session import model_endpoints

    with model_endpoints(cfg) as (live, _backend):
        return asyncio.run(_judge_all(items, live, policy, calibration_db, seed))


# ---------------------------------------------------------------- judge file


def _read_lines(path: Path) -> list[tuple[int, Any, str | None]]:
    """(line number, parsed JSON or the raw text, error or None) per non-blank line."""
    from synth.judges.inputs import InputError, read_item

    out: list[tuple[int, Any, str | None]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                out.append((number, line.rstrip("\n"), f"not JSON: {exc}"))
                continue
            try:
                read_item(data)
            except InputError as exc:
                out.append((number, data, str(exc)))
                continue
            out.append((number, data, None))
    return out


@judge_app.command("file")
@friendly_errors
def judge_file(
    path: Path = typer.Argument(..., help="JSONL: one {task, tools, messages, termination} per line."),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL written: each input line plus the verdict."),
    no_llm: bool = NoLlmOpt,
    db: Path | None = typer.Option(None, "--db", help="Dataset holding the judge model's calibration "
                                                      "(default: the configured run.db, if it exists)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the judge samples."),
    config: Path | None = ConfigOpt,
    base_url: str | None = BaseUrlOpt,
    model: str | None = ModelOpt,
) -> None:
    """Judge trajectories given one per line; writes each line with `accepted`, `well_formed`,
    `failed_checks` and `reasons` added, and prints a JSON summary."""
    from synth.judges.inputs import read_item

    if not path.is_file():
        raise UserError(f"no input file at {path}")
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a directory; judge file writes one JSONL file")
    lines = _read_lines(path)
    good = [(n, data) for n, data, error in lines if error is None]
    if not good:
        first = next((f"line {n}: {e}" for n, _, e in lines if e), "the file has no line")
        raise UserError(f"no line of {path} could be read ({first})")
    cfg = build_config(config, base_url=base_url, model=model)
    policy = _policy(cfg, no_llm)
    items = [read_item(data) for _, data in good]
    calibration_db = db if db is not None else Path(cfg.run.db)
    judgments = _judge_items(items, cfg, policy, calibration_db if calibration_db.is_file() else None, seed)
    verdicts = {n: j for (n, _), j in zip(good, judgments, strict=True)}
    counts = {"lines": len(lines), "judged": len(good), "accepted": 0, "well_formed": 0,
              "input_errors": len(lines) - len(good)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for n, data, error in lines:
            record = dict(data) if isinstance(data, dict) else {"input": data}
            if error is not None:
                console.print(f"[yellow]line {n}[/]: {error}", highlight=False)
                record.update(accepted=False, well_formed=False, failed_checks=[],
                              reasons=[f"input error: line {n}: {error}"])
            else:
                j = verdicts[n]
                record.update(accepted=j.accepted, well_formed=j.well_formed, failed_checks=j.failed_checks,
                              reasons=j.reasons)
                counts["accepted"] += int(j.accepted)
                counts["well_formed"] += int(bool(j.well_formed))
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(json.dumps({**counts, "out": str(out)}))


# ---------------------------------------------------------------- judge run


@judge_app.command("run")
@friendly_errors
def judge_run(
    db: Path = typer.Option(Path("data/synth.duckdb"), "--db", help="DuckDB dataset file."),
    no_llm: bool = NoLlmOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the judge samples."),
    config: Path | None = ConfigOpt,
    base_url: str | None = BaseUrlOpt,
    model: str | None = ModelOpt,
) -> None:
    """Re-judge every stored trajectory under the current judge policy (no rollouts). The new
    judgment becomes each trajectory's latest, which views, stats and exports use. Prints a JSON
    summary, with how many verdicts changed."""
    from synth.judges.checks import tools_from_trajectory
    from synth.store import Dataset, read_episodes, read_judgments

    path = _existing_db(db)
    cfg = build_config(config, base_url=base_url, model=model)
    policy = _policy(cfg, no_llm)
    episodes = read_episodes(path)
    before = {j.trajectory_id: j.accepted for _, j in read_judgments(path)}
    items = [(e.task, e.tools or tools_from_trajectory(e.trajectory), e.trajectory) for e in episodes]
    judgments = _judge_items(items, cfg, policy, path, seed)
    rows = []
    counts = {"judged": 0, "accepted": 0, "well_formed": 0, "newly_accepted": 0, "newly_rejected": 0}
    for episode, judgment in zip(episodes, judgments, strict=True):
        judgment = judgment.model_copy(update={"trajectory_id": episode.id})
        rows.append(judgment.to_row(episode.run_id or "rejudge"))
        counts["judged"] += 1
        counts["accepted"] += int(judgment.accepted)
        counts["well_formed"] += int(bool(judgment.well_formed))
        previous = before.get(episode.id)
        counts["newly_accepted"] += int(judgment.accepted and previous is False)
        counts["newly_rejected"] += int(not judgment.accepted and previous is True)
    Dataset(path).upsert_many("judgments", rows)
    print(json.dumps({**counts, "db": str(path)}))


# ---------------------------------------------------------------- judge calibrate


@judge_app.command("calibrate")
@friendly_errors
def judge_calibrate(
    db: Path | None = typer.Option(None, "--db", help="Also calibrate on this dataset's accepted trajectories, "
                                                      "and store the report there (default store: run.db)."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many accepted trajectories from --db."),
    fixtures: int | None = typer.Option(None, "--fixtures", min=1,
                                        help="Use only the first N shipped good trajectories (default: all)."),
    checks_only: bool = typer.Option(False, "--checks-only", "--no-llm",
                                     help="Only the deterministic checks (no model)."),
    samples: int | None = typer.Option(None, "--samples", min=1, help="Judge samples per trajectory "
                                                                      "(default: the [judge] config)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corruptions and judge samples."),
    store: bool = typer.Option(True, "--store/--no-store", help="Store the report in the dataset."),
    config: Path | None = ConfigOpt,
    base_url: str | None = BaseUrlOpt,
    model: str | None = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Score the configured judging policy (every check, plus the LLM verdict as the policy gives
    it a vote) on the shipped good trajectories (plus --db's accepted ones) and their corruptions;
    report n, recall and precision with 95% intervals per corruption kind, for the policy, the
    checks and the LLM judge, and store the report (which gives the judge model its vote).
    Starts the embedded backend when no base URL is configured (unless --checks-only)."""
    from synth.judges.calibrate import (
        calibrate,
        examples_from_db,
        format_report,
        labelled_set,
        load_fixture_examples,
    )
    from synth.llm import LLMClient
    from synth.llm.session import model_endpoints
    from synth.store import Dataset, read_episodes

    good = load_fixture_examples()[:fixtures] if fixtures else load_fixture_examples()
    if db is not None:
        source = _existing_db(db)

        def load(n: int) -> list[tuple[Any, Any, Any]]:
            return [(e.task, e.trajectory, e.tools) for e in read_episodes(source, accepted_only=True, limit=n)]

        good += examples_from_db(load, limit, source=str(db))
    examples = labelled_set(good, random.Random(seed))
    cfg = build_config(config, base_url=base_url, model=model)
    policy = cfg.judge_policy()
    if samples:
        policy = policy.model_copy(update={"samples": samples})

    if checks_only or not policy.llm_judge:
        report = asyncio.run(calibrate(examples, None, random.Random(seed), policy))
    else:
        with model_endpoints(cfg) as (live, _backend):

            async def go() -> Any:
                async with LLMClient(live) as client:
                    return await calibrate(examples, client, random.Random(seed), policy)

            report = asyncio.run(go())
    stored_in = None
    calibration = report.to_calibration()
    if store:
        target = db if db is not None else Path(cfg.run.db)
        Dataset(target).upsert_many("calibrations", [calibration.to_row()])
        stored_in = str(target)
    if as_json:
        print(json.dumps({**report.model_dump(mode="json"), "calibration_id": calibration.id,
                          "stored_in": stored_in}, indent=2))
    else:
        print(format_report(report))
        if stored_in:
            print(f"stored as calibration {calibration.id} in {stored_in}")
