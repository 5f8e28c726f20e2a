"""The standing corpus of SmolLM2-135M trajectories (`tests/data/smollm2_corpus.jsonl.gz`, made and
read by `bench/check_corpus.py`): what the acceptance rules say of real model output is recorded, so a
change to them shows its effect on that output instead of on hand-written fixtures alone."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """`synth judge file --no-llm` over the corpus under the shipped `synth.toml`, as a user runs it."""
    from typer.testing import CliRunner

    from synth.cli import app

    tmp = tmp_path_factory.mktemp("corpus")
    items, judged = tmp / "corpus.jsonl", tmp / "judged.jsonl"
    with gzip.open(DATA / "smollm2_corpus.jsonl.gz", "rb") as src, items.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    result = CliRunner().invoke(app, ["judge", "file", str(items), "-o", str(judged), "--no-llm",
                                      "--config", str(ROOT / "synth.toml")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["input_errors"] == 0
    return {line["trajectory_id"]: {"accepted": line["accepted"], "failed_checks": line["failed_checks"]}
            for line in map(json.loads, judged.read_text(encoding="utf-8").splitlines())}


def test_read_trajectories_keep_their_verdicts(verdicts: dict[str, dict]):
    """Labels a person gave after reading the whole conversation: junk is never accepted (whatever
    rule catches it), and an honest worked example is not thrown out by a rule meant for junk."""
    labels = json.loads((DATA / "smollm2_corpus_labels.json").read_text())
    wrong = {tid: (label["label"], verdicts[tid]) for tid, label in labels.items()
             if verdicts[tid]["accepted"] != (label["label"] == "honest")}
    assert not wrong, wrong


def test_verdicts_match_the_record(verdicts: dict[str, dict]):
    """Any verdict or failed check that moves must be read and recorded on purpose:
    `python bench/check_corpus.py show` lists the moves, `record` makes them the record."""
    recorded = json.loads((DATA / "smollm2_corpus_verdicts.json").read_text())
    moved = {tid: (recorded.get(tid), verdicts.get(tid)) for tid in set(recorded) | set(verdicts)
             if recorded.get(tid) != verdicts.get(tid)}
    assert not moved, f"{len(moved)} verdict(s) moved (recorded, now): {moved}"
