"""`write_report(db, out)`: the dataset as one self-contained HTML file.

Everything the page shows is inside the file: the maps are inline SVG, the styles and the few lines of
script (switching a map's colouring) are inline, nothing is fetched when it is opened, so it can be
mailed, archived or opened offline. The page is rendered from `report.html.j2` beside this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from synth.report import contents
from synth.report.coverage import (
    GRID,
    OUTCOME_COLOURS,
    SOURCE_COLOURS,
    CoverageMap,
    category_colours,
    coverage_by_run,
    task_map,
    tool_map,
)
from synth.report.embeddings import EmbeddingEndpoint
from synth.stats import dataset_stats

MAP_SIZE = 640
MAP_MARGIN = 12


@dataclass
class ReportSummary:
    """What `write_report` wrote, and how long each part took (seconds)."""

    out: str
    bytes: int
    trajectories: int
    accepted: int
    tools_mapped: int
    tasks_mapped: int
    seconds: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"out": self.out, "bytes": self.bytes, "trajectories": self.trajectories, "accepted": self.accepted,
                "tools_mapped": self.tools_mapped, "tasks_mapped": self.tasks_mapped, "seconds": self.seconds}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.1f}%"
    env.filters["num"] = lambda v, d=1: "–" if v is None else (f"{v:,.{d}f}" if isinstance(v, float) else f"{v:,}")
    return env


def map_view(cmap: CoverageMap, colours: dict[str, str]) -> dict[str, Any]:
    """A map in SVG coordinates: points with both colourings, grid cells with their shading."""
    inner = MAP_SIZE - 2 * MAP_MARGIN
    by_category = category_colours(cmap.categories)
    peak = max((c.accepted_uses for c in cmap.cells), default=0)
    cell = inner / GRID
    cells = [{"x": MAP_MARGIN + c.col * cell, "y": MAP_MARGIN + (GRID - 1 - c.row) * cell, "size": cell,
              "tools": c.tools, "used": c.used_tools, "accepted": c.accepted_uses,
              "opacity": round(0.08 + 0.5 * (c.accepted_uses / peak) ** 0.5, 3) if c.accepted_uses else 0,
              "uncovered": c.tools > 0 and c.accepted_uses == 0}
             for c in cmap.cells]
    points = [{"x": round(MAP_MARGIN + p.x * inner, 1), "y": round(MAP_MARGIN + (1 - p.y) * inner, 1),
               "fill": colours.get(p.group, "#666"), "cat": by_category.get(p.category, "#666"),
               "used": p.accepted_uses > 0, "title": f"{p.label} · {p.domain} ({p.category}) · {p.group}"
               + (f" · {p.uses} trajectories, {p.accepted_uses} accepted" if p.uses else "")}
              for p in cmap.points]
    return {"size": MAP_SIZE, "cells": cells, "points": points, "total": cmap.total, "drawn": len(cmap.points),
            "groups": cmap.groups, "colours": colours, "categories": by_category,
            "uncovered": len(cmap.uncovered_cells), "covered": sum(1 for c in cmap.cells if c.accepted_uses)}


def write_report(db: str | Path, out: str | Path, endpoint: EmbeddingEndpoint | None = None,
                 extra_sections: list[dict[str, Any]] | None = None) -> ReportSummary:
    """Render the report of the dataset at `db` to `out` (one HTML file). Reads only, with short
    connections, so it works while a run writes the dataset. `endpoint`: embeddings from an
    OpenAI-compatible server instead of the built-in hashed TF-IDF. `extra_sections`: more
    `{"title", "html"}` blocks appended to the page (trusted HTML, e.g. the steering comparison)."""
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        value = fn(*args)
        seconds[name] = round(time.perf_counter() - start, 3)
        return value

    stats = timed("stats", dataset_stats, db)
    tools = timed("tool_map", tool_map, db, endpoint)
    tasks = timed("task_map", task_map, db, endpoint)
    by_domain = timed("yield", contents.yield_by_domain, db)
    accepted = stats["stages"]["trajectories"]["accepted"]
    context = {
        "db": str(db), "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "stats": stats,
        "tool_map": map_view(tools, SOURCE_COLOURS), "task_map": map_view(tasks, OUTCOME_COLOURS),
        "embedding": f"{endpoint.model} at {endpoint.base_url}" if endpoint else "hashed TF-IDF (built in)",
        "by_domain": by_domain, "by_category": contents.yield_by_category(by_domain),
        "reasons": timed("reasons", contents.rejection_reasons, db),
        "checks": timed("checks", contents.check_failure_rates, db),
        "calibrations": timed("calibrations", contents.calibrations, db),
        "cost": contents.cost_per_role(stats["llm_usage"], accepted),
        "examples": {"accepted": timed("accepted_examples", contents.example_trajectories, db, True),
                     "rejected": timed("rejected_examples", contents.example_trajectories, db, False)},
        "duplicates": timed("duplicates", contents.duplicate_examples, db),
        "runs": timed("runs", coverage_by_run, db, tools),
        "extra_sections": extra_sections or [],
    }
    start = time.perf_counter()
    html = _environment().get_template("report.html.j2").render(**context)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    seconds["render"] = round(time.perf_counter() - start, 3)
    return ReportSummary(str(out), len(html.encode()), stats["stages"]["trajectories"]["total"], accepted,
                         tools.total, tasks.total, seconds)
