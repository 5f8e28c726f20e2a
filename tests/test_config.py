"""Config loading: TOML, SYNTH_* variables, CLI flags, and the error policy for bad configs."""

from __future__ import annotations

import json
import re
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


def test_lists_from_env_as_json_or_comma_separated():
    """`SYNTH_RUN__MCP_FILES='["servers.jsonl.gz"]'` was refused ("Input should be a valid list"):
    a variable written as a JSON list or table is read as one, and file lists also split on commas."""
    as_json = load_config(None, environ={"SYNTH_RUN__MCP_FILES": '["a.jsonl.gz", "b.json"]',
                                         "SYNTH_JUDGE__PANEL": '[{"model": "m1"}, {"model": "m2"}]'})
    assert as_json.run.mcp_files == ["a.jsonl.gz", "b.json"]
    assert [m["model"] for m in as_json.judge.panel] == ["m1", "m2"]
    assert load_config(None, environ={"SYNTH_RUN__MCP_FILES": "a.jsonl.gz, b.json"}).run.mcp_files == [
        "a.jsonl.gz", "b.json"]
    with pytest.raises(ConfigError, match=r"SYNTH_RUN__MCP_FILES.*must be JSON"):
        load_config(None, environ={"SYNTH_RUN__MCP_FILES": '["a.jsonl.gz"'})


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


@pytest.mark.parametrize("module", ["synth.config", "synth.settings", "synth.judges.checks", "synth.rollout.user",
                                    "synth.naming", "synth.agents.plans", "synth.cli.app", "synth.pipeline.worker"])
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


def test_settings_sit_below_the_config_and_every_stage() -> None:
    """`synth.settings` imports no other synth module, so config and stages can both import it."""
    code = ("import sys, synth.settings; "
            "print(sorted(m for m in sys.modules if m.startswith('synth.') and m != 'synth.settings'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_every_stage_table_reaches_its_knobs_and_config_show_prints_them_all(tmp_path: Path) -> None:
    config = tmp_path / "synth.toml"
    config.write_text("[tools]\nevolution_rounds = 2\n[agents]\nrepair_rounds = 0\nno_tool_share = 0.3\n"
                      "[rollout]\nmax_turns = 2\n[judge]\nsamples = 3\n")
    cfg = load_config(config, environ={"SYNTH_TOOLS__MAX_PARAMETERS": "6"})
    assert cfg.tools.evolution_rounds == 2 and cfg.tools.max_parameters == 6
    assert cfg.agent_settings().repair_rounds == 0 and cfg.agent_settings().tasks_per_agent == cfg.run.tasks_per_agent
    assert cfg.rollout_settings().max_turns == 2 and cfg.judge_policy().samples == 3
    proc = subprocess.run([sys.executable, "-m", "synth", "config", "show", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for table, model in (("tools", "ToolSettings"), ("agents", "AgentSettings"), ("rollout", "RolloutSettings"),
                         ("judge", "JudgePolicy")):
        import synth.settings

        assert set(data[table]) == set(getattr(synth.settings, model).model_fields), table
    assert data["tools"]["evolution_rounds"] == 2 and data["rollout"]["max_steps_per_turn"] == 4


@pytest.mark.parametrize(("text", "expected"), [
    ("[agents]\nno_tool_share = 0.8\nunserviceable_share = 0.5\n", "no_tool_share + unserviceable_share"),
    ("[agents]\ntasks_per_agent = 3\n", "run.tasks_per_agent"),
    ("[tools]\nevolution_round = 2\n", "unknown key 'tools.evolution_round'"),
    ("[rollout]\nfault_kinds = [\"meteor\"]\n", "unknown fault kind(s) meteor"),
])
def test_stage_table_mistakes_are_named(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "synth.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(config, environ={})


def test_default_stage_tables_keep_existing_run_identities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Typed stage tables dump every default; a run's identity counts only what differs from them
    (as the free-form tables did), so upgrading does not orphan datasets."""
    from synth.pipeline.driver import run_identity

    monkeypatch.chdir(tmp_path)  # no ./synth.toml
    plain = load_config(None, environ={})
    explicit = load_config(None, {"tools": {"evolution_rounds": 1}, "rollout": {"per_task": 4}}, environ={})
    assert run_identity(plain, ["weather"]) == run_identity(explicit, ["weather"])
    changed = load_config(None, {"tools": {"evolution_rounds": 2}}, environ={})
    assert run_identity(plain, ["weather"]) != run_identity(changed, ["weather"])
    # The identities the free-form tables gave (computed at c530b6e).
    assert run_identity(plain, ["weather"]) == "run_cf51f105b33675bfc440"
    tuned = load_config(None, {"rollout": {"max_turns": 2}, "judge": {"samples": 3}}, environ={})
    assert run_identity(tuned, ["weather"]) == "run_57572c3551ec46424a27"


def test_toolset_sizes_reach_the_sampler() -> None:
    import random

    from synth.models import ToolSpec
    from synth.pipeline.driver import toolset_sampler

    cfg = load_config(None, {"agents": {"toolset_min_tools": 2, "toolset_max_tools": 3}}, environ={})
    tools = [ToolSpec(name=f"get_thing_{i}", description="Returns a thing.", input_schema={"type": "object"},
                      domain="weather", application="App", source="synthetic") for i in range(10)]
    sampler = toolset_sampler(tools, cfg.run, random.Random(0), None, cfg.agents)
    assert all(2 <= len(sampler.sample()) <= 3 for _ in range(20))
    with pytest.raises(ConfigError, match="toolset_min_tools"):
        load_config(None, {"agents": {"toolset_min_tools": 5, "toolset_max_tools": 3}}, environ={})


def test_python_dash_m_synth_runs_the_cli_but_not_when_imported_by_a_spawned_process():
    """`python -m synth` is the `synth` command; a process that multiprocessing spawns imports the
    parent's main module as `__mp_main__`, and must not run the command a second time."""
    import subprocess
    import sys

    help_text = subprocess.run([sys.executable, "-m", "synth", "--help"], capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and "run" in help_text.stdout
    spawned = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_module('synth', run_name='__mp_main__')"],
        capture_output=True, text=True, timeout=120)
    assert spawned.returncode == 0, spawned.stderr
    assert spawned.stdout == "" and "Usage" not in spawned.stderr
