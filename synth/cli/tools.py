"""`synth tools generate` and `synth tools import-mcp`: build the tool repository in a dataset."""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import time
from pathlib import Path
from typing import Any

import typer

from synth.cli.app import BaseUrlOpt, ConfigOpt, ModelOpt, UserError, app, build_config, console, friendly_errors
from synth.ids import content_id

tools_app = typer.Typer(no_args_is_help=True, help="The tool repository: synthesise tools, import MCP tools.")
app.add_typer(tools_app, name="tools")

DbOpt = typer.Option(Path("data/synth.duckdb"), "--db", help="DuckDB dataset file.")


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


@tools_app.command("generate")
@friendly_errors
def tools_generate(
    domains: str = typer.Option(..., "--domains", help="Comma-separated taxonomy domains."),
    per_domain: int | None = typer.Option(None, "--per-domain", min=1,
                                          help="Tools to generate per domain [default: run.tools_per_domain]."),
    applications: int | None = typer.Option(None, "--applications", min=1, max=64,
                                            help="Applications per domain [default: tools.applications_per_domain]."),
    evolution_rounds: int | None = typer.Option(None, "--evolution-rounds", min=0,
                                                help="Evolution passes per tool [default: tools.evolution_rounds]."),
    seed: int | None = typer.Option(None, "--seed", help="Seed (same seed, same prompts) [default: run.seed]."),
    db: Path | None = typer.Option(None, "--db", help="DuckDB dataset file [default: run.db]."),
    config: Path | None = ConfigOpt,
    base_url: str | None = BaseUrlOpt,
    model: str | None = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Synthesise tools hierarchically (applications, tools, evolution) and store them, rejected
    ones with their reasons. Starts the embedded backend when no base URL is configured."""
    from synth.domains import load_taxonomy
    from synth.llm import LLMClient
    from synth.llm.session import model_endpoints
    from synth.store import Dataset
    from synth.tools.repository import store_tools
    from synth.tools.synthesize import SynthesisSettings, synthesize_tools

    names = _split(domains)
    if not names:
        raise UserError("--domains is empty")
    chosen = load_taxonomy().resolve(names)
    cfg = build_config(config, base_url=base_url, model=model)
    # The same defaults as `synth run`: the config's [run] and [tools] tables, flags on top.
    per_domain = per_domain if per_domain is not None else cfg.run.tools_per_domain
    applications = applications if applications is not None else cfg.tools.applications_per_domain
    evolution_rounds = evolution_rounds if evolution_rounds is not None else cfg.tools.evolution_rounds
    seed = seed if seed is not None else cfg.run.seed
    db = db if db is not None else Path(cfg.run.db)
    settings = SynthesisSettings(**{**cfg.tools.model_dump(), "applications_per_domain": applications,
                                    "evolution_rounds": evolution_rounds},
                                 per_domain=per_domain, seed=seed, model=cfg.llm.role("generator").model)
    run_id = content_id("run", "tools-generate", names, per_domain, applications, evolution_rounds, seed)
    started = time.monotonic()
    with model_endpoints(cfg) as (live, _backend):

        async def go() -> Any:
            async with LLMClient(live) as llm:
                return await synthesize_tools(list(chosen), llm, random.Random(seed), settings)

        result = asyncio.run(go())
    counts = store_tools(Dataset(db), run_id, result.tools, result.rejected)
    summary = {"run_id": run_id, "domains": names, "accepted": counts["accepted"], "rejected": counts["rejected"],
               "rows_added": counts["added"], "applications": result.applications,
               "rejections": [{"domain": r.domain, "tool": r.name, "reason": r.reason} for r in result.rejected],
               "seconds": round(time.monotonic() - started, 1), "db": str(db)}
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        console.print(f"{counts['accepted']} tools accepted, {counts['rejected']} rejected, "
                      f"{counts['added']} new rows in {db} ({summary['seconds']}s)")
        for r in result.rejected[:20]:
            console.print(f"  rejected {r.domain}/{r.name}: {r.reason}", highlight=False, markup=False)


@tools_app.command("import-mcp")
@friendly_errors
def tools_import_mcp(
    paths: list[Path] = typer.Argument(None, help="tools/list JSON files or Toucan-style JSONL(.gz)."),
    command: str | None = typer.Option(None, "--command", help='Start an MCP server over stdio, e.g. "python srv.py".'),
    domain: str | None = typer.Option(None, "--domain", help="Put every imported tool in this domain."),
    db: Path = DbOpt,
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds to wait for a live server."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report (every rejection) as JSON."),
) -> None:
    """Import real MCP tools: normalise messy schemas, place servers in the taxonomy, merge equal
    tools (recording every server), store rejected ones with their reasons. Idempotent."""
    from synth.domains import load_taxonomy
    from synth.store import Dataset
    from synth.tools.mcp_import import ServerTools, import_servers, list_tools_stdio, read_mcp_file
    from synth.tools.repository import store_tools

    if not paths and not command:
        raise UserError("give MCP files to import, or --command to start a live server")
    started = time.monotonic()
    taxonomy = load_taxonomy()
    if domain is not None:
        domain = taxonomy.get(domain).name
    servers: list[ServerTools] = []
    for path in paths or []:
        servers += read_mcp_file(path)
    if command:
        argv = shlex.split(command)
        try:
            servers.append(asyncio.run(list_tools_stdio(argv, timeout_s=timeout_s)))
        except Exception as exc:
            raise UserError(f"could not list the tools of MCP server {command!r}: {exc}") from None
    result = import_servers(servers, taxonomy, domain=domain)
    sources = [str(p) for p in paths or []] + ([command] if command else [])
    run_id = content_id("run", "tools-import-mcp", sources)
    counts = store_tools(Dataset(db), run_id, result.tools, result.rejected)
    report = result.report()
    report.update(rows_added=counts["added"], seconds=round(time.monotonic() - started, 2), db=str(db))
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return
    console.print(
        f"{report['imported']}/{report['tools_seen']} tools imported from {report['servers']} servers "
        f"({report['distinct_tools']} distinct, {report['merged_duplicates']} duplicates merged, "
        f"{report['repaired']} repaired), {report['rejected']} rejected; {counts['added']} new rows in {db} "
        f"({report['seconds']}s)", highlight=False)
    for r in report["rejections"]:
        console.print(f"  rejected {r['server']}/{r['tool']}: {r['reason']}", highlight=False, markup=False)
