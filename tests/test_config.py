"""Config loading: TOML, SYNTH_* variables, CLI flags, and the error policy for bad configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from synth.config import ConfigError, Role, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_resolve_every_role():
    cfg = load_config(None, environ={})
    roles = cfg.roles()
    assert set(roles) == set(Role)
    assert cfg.needs_local_backend()


def test_role_override_and_env_and_flags_precedence(tmp_path: Path):
    path = tmp_path / "synth.toml"
    path.write_text(
        '[llm]\nmodel = "file-model"\ntemperature = 0.2\n'
        '[llm.roles.judge]\nmodel = "judge-model"\nbase_urls = ["http://judge:8000/v1"]\n'
    )
    env = {"SYNTH_LLM__TEMPERATURE": "0.5", "SYNTH_LLM__ROLES__USER__MAX_TOKENS": "99"}
    cfg = load_config(path, {"llm": {"base_urls": ["http://flag:1/v1"]}}, environ=env)
    judge, user, agent = cfg.llm.role("judge"), cfg.llm.role("user"), cfg.llm.role("agent")
    assert judge.model == "judge-model" and judge.base_urls == ["http://judge:8000/v1"]
    assert agent.model == "file-model" and agent.base_urls == ["http://flag:1/v1"]
    assert agent.temperature == 0.5  # env beats file
    assert user.max_tokens == 99
    assert not cfg.needs_local_backend()


def test_comma_separated_urls_from_env():
    cfg = load_config(None, environ={"SYNTH_LLM__BASE_URLS": "http://a:1/v1/, http://b:2/v1"})
    assert cfg.llm.role("agent").base_urls == ["http://a:1/v1", "http://b:2/v1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[llm]\ntemprature = 1\n", "unknown key 'llm.temprature'"),
        ("[llm]\ntemperature = 'hot'\n", "key 'llm.temperature'"),
        ("[llm.roles.judge]\nmax_tokens = -3\n", "roles.judge.max_tokens"),
        ("[llm]\nbase_urls = ['ftp://x']\n", "llm.base_urls"),
        ("[llm\n", "not valid TOML"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "synth.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_missing_explicit_config_file_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_cli_bad_config_exits_2_without_traceback(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("[backend]\nparallel = 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "config", "show", "--config", str(path)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "backend.parallel" in proc.stderr and str(path) in proc.stderr.replace("\n", "")
    assert "Traceback" not in proc.stderr


def test_cli_config_show_prints_resolved_roles(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "config", "show", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )
    data = json.loads(proc.stdout)
    assert data["llm"]["resolved_roles"]["judge"]["base_urls"] == ["http://127.0.0.1:9/v1"]
    assert data["llm"]["resolved_roles"]["agent"]["model"] == "m"


@pytest.mark.parametrize("module", ["synth.config", "synth.judges.checks", "synth.rollout.user", "synth.naming",
                                    "synth.agents.plans", "synth.cli.app", "synth.pipeline.worker"])
def test_each_entry_module_imports_on_its_own(module: str) -> None:
    """Import order within one test process hides cycles; a fresh interpreter per entry point does not
    (`synth config show` once died of `synth.config` -> rollout -> judges.checks -> rollout)."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_paths_are_absolute_and_the_cache_sits_beside_the_database(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray worker on another node, or a job's driver in its temporary working directory, must
    open the same files as the process that loaded the config."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, {"run": {"db": "out/run.duckdb"}}, environ={})
    assert cfg.run.db == str(tmp_path / "out" / "run.duckdb")
    assert cfg.cache.dir == str(tmp_path / "out" / "cache")
    assert Path(cfg.backend.log_file).is_absolute()
    submitted = load_config(None, {"run": {"db": "/srv/data/run.duckdb"}}, environ={})
    assert submitted.cache.dir == "/srv/data/cache"
    explicit = load_config(None, {"cache": {"dir": "my-cache"}}, environ={})
    assert explicit.cache.dir == str(tmp_path / "my-cache")
