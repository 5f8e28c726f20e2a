"""`synth domains list`: the taxonomy of categories and domains tools are synthesised for."""

from __future__ import annotations

import json

import typer

from synth.cli.app import app, console, friendly_errors

domains_app = typer.Typer(no_args_is_help=True, help="The taxonomy of categories and domains.")
app.add_typer(domains_app, name="domains")


@domains_app.command("list")
@friendly_errors
def domains_list(
    category: str | None = typer.Option(None, "--category", help="Only domains of this category."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per domain)."),
) -> None:
    """List the taxonomy's domains (name, category, description, example applications)."""
    from synth.domains import load_taxonomy

    taxonomy = load_taxonomy()
    domains = taxonomy.by_category(category) if category is not None else taxonomy.domains
    if as_json:
        rows = [{"name": d.name, "category": d.category, "description": d.description,
                 "examples": list(d.examples), "mcp_labels": list(d.mcp_labels)}
                for d in domains]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for d in domains:
        print(f"{d.name}\t{d.category}\t{d.description}")
    console.print(f"{len(domains)} domains in {len({d.category for d in domains})} categories")
