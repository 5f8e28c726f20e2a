"""The coverage maps: where the tool repository and the tasks lie, and which regions the accepted
trajectories reach.

Each accepted tool is embedded from its name, description and parameter names
(`synth.report.embeddings.embed_texts`) and projected to the plane (`project_2d`); the plane is cut
into `GRID` x `GRID` cells, and each cell counts its tools and the accepted trajectories that call
them. A cell with tools and no accepted trajectory is a region the dataset does not cover; a region
with no cell drawn holds no tool at all. Tasks are mapped the same way from their goals (a sample of
at most `MAX_TASK_POINTS`), coloured by what became of them.

Tool use is read from the trajectories: a tool is *used* by a trajectory when one of its calls names
it and the tool is in the trajectory's agent's toolset.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synth.domains import load_taxonomy
from synth.export import iter_rows
from synth.report.embeddings import EmbeddingEndpoint, embed_texts, project_2d
from synth.store import connect_readonly

GRID = 12
MAX_TOOL_POINTS = 6000
MAX_TASK_POINTS = 4000
PAGE_SIZE = 5000

# Per tool: the trajectories that call it (by name, within their agent's toolset), and how many of
# those are accepted by their latest judgment. `{where}` filters the trajectories (`t`).
TOOL_USE_SQL = """
    WITH called AS (
        SELECT DISTINCT trajectory_id, agent_id, accepted, name FROM (
            SELECT t.id AS trajectory_id, t.agent_id, coalesce(j.accepted, false) AS accepted,
                   unnest(json_extract_string(t.messages, '$[*].tool_calls[*].function.name')) AS name
            FROM trajectories t LEFT JOIN latest_judgments j ON j.trajectory_id = t.id {where})
    ),
    agent_tools AS (
        SELECT id AS agent_id, unnest(from_json(tool_ids, '["VARCHAR"]')) AS tool_id FROM agents
    )
    SELECT x.tool_id, count(DISTINCT c.trajectory_id) AS uses,
           count(DISTINCT c.trajectory_id) FILTER (WHERE c.accepted) AS accepted_uses
    FROM called c JOIN agent_tools x ON x.agent_id = c.agent_id
    JOIN tools tl ON tl.id = x.tool_id AND tl.name = c.name
    GROUP BY 1
"""

_TOOLS_SQL = """
    SELECT id, name, description, domain, coalesce(source, 'synthetic') AS source,
           coalesce(json_keys(input_schema, '$.properties'), []) AS params
    FROM tools WHERE status = 'accepted'
"""

# A sample of tasks (deterministic: smallest hash of the id first) with what became of each.
_TASKS_SQL = """
    WITH verdicts AS (
        SELECT t.task_id, count(*) AS judged, count(*) FILTER (WHERE j.accepted) AS accepted
        FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id GROUP BY 1
    )
    SELECT k.id, k.goal, k.domain, k.status,
           CASE WHEN k.status = 'rejected' THEN 'task rejected'
                WHEN coalesce(v.accepted, 0) > 0 THEN 'accepted trajectory'
                WHEN coalesce(v.judged, 0) > 0 THEN 'only rejected trajectories'
                ELSE 'not rolled out' END AS outcome
    FROM tasks k LEFT JOIN verdicts v ON v.task_id = k.id
    ORDER BY hash(k.id) LIMIT {limit}
"""

SOURCE_COLOURS = {"mcp": "#d95f02", "synthetic": "#1b9e77"}
OUTCOME_COLOURS = {"accepted trajectory": "#1a9641", "only rejected trajectories": "#d7191c",
                   "not rolled out": "#9e9e9e", "task rejected": "#5e3c99"}


@dataclass
class MapPoint:
    id: str
    label: str
    x: float
    y: float
    domain: str
    category: str
    group: str  # tools: "mcp" | "synthetic"; tasks: the outcome
    uses: int = 0
    accepted_uses: int = 0


@dataclass
class MapCell:
    col: int
    row: int
    tools: int
    used_tools: int
    accepted_uses: int


@dataclass
class CoverageMap:
    """One map: the points drawn (a deterministic sample of at most the cap), how many there are in
    all, and (tool map) the grid cells with their counts."""

    points: list[MapPoint]
    total: int
    cells: list[MapCell] = field(default_factory=list)
    groups: dict[str, int] = field(default_factory=dict)  # points per colour group, over all points
    categories: list[str] = field(default_factory=list)
    cell_of: dict[str, int] = field(default_factory=dict)  # (tool map) every tool id -> its cell (row * GRID + col)
    domain_of: dict[str, str] = field(default_factory=dict)  # (tool map) every tool id -> its domain

    @property
    def uncovered_cells(self) -> list[MapCell]:
        return [c for c in self.cells if c.tools and not c.accepted_uses]


def category_of(domain: str) -> str:
    taxonomy = load_taxonomy()
    return taxonomy.get(domain).category if domain in taxonomy else "(other)"


def tool_text(row: dict[str, Any]) -> str:
    """What a tool is embedded from: its name, description and parameter names."""
    params = row.get("params") or []
    if isinstance(params, str):
        params = json.loads(params)
    return f"{row['name']} {row.get('description') or ''} {' '.join(str(p) for p in params)}"


def tool_use(db: str | Path, exclude_run: str | None = None) -> dict[str, tuple[int, int]]:
    """Tool id -> (trajectories calling it, accepted ones among them), leaving out the trajectories
    of `exclude_run`."""
    where, params = ("WHERE t.run_id IS DISTINCT FROM ?", [exclude_run]) if exclude_run else ("", [])
    with connect_readonly(db) as con:
        return {r[0]: (int(r[1]), int(r[2])) for r in con.execute(TOOL_USE_SQL.format(where=where), params).fetchall()}


def grid_cells(xy: np.ndarray, uses: list[tuple[int, int]], grid: int = GRID) -> tuple[list[MapCell], np.ndarray]:
    """The non-empty cells of a `grid` x `grid` cut of the unit square, and each point's cell index."""
    cols = np.minimum((xy[:, 0] * grid).astype(int), grid - 1) if len(xy) else np.zeros(0, dtype=int)
    rows = np.minimum((xy[:, 1] * grid).astype(int), grid - 1) if len(xy) else np.zeros(0, dtype=int)
    index = rows * grid + cols
    counts: dict[int, list[int]] = {}
    for i, cell in enumerate(index.tolist()):
        c = counts.setdefault(cell, [0, 0, 0])
        c[0] += 1
        c[1] += uses[i][0] > 0
        c[2] += uses[i][1]
    cells = [MapCell(cell % grid, cell // grid, *c) for cell, c in sorted(counts.items())]
    return cells, index


def tool_map(db: str | Path, endpoint: EmbeddingEndpoint | None = None) -> CoverageMap:
    """The map of the accepted tools (see the module docstring)."""
    rows = list(iter_rows(db, _TOOLS_SQL, "id", page_size=PAGE_SIZE))
    use = tool_use(db)
    xy = project_2d(embed_texts([tool_text(r) for r in rows], endpoint))
    uses = [use.get(r["id"], (0, 0)) for r in rows]
    cells, index = grid_cells(xy, uses)
    order = sorted(range(len(rows)), key=lambda i: hash_order(rows[i]["id"]))[:MAX_TOOL_POINTS]
    points = [MapPoint(rows[i]["id"], rows[i]["name"], float(xy[i, 0]), float(xy[i, 1]), rows[i]["domain"] or "",
                       category_of(rows[i]["domain"] or ""), rows[i]["source"], *uses[i]) for i in sorted(order)]
    groups: dict[str, int] = {}
    for r in rows:
        groups[r["source"]] = groups.get(r["source"], 0) + 1
    return CoverageMap(points, len(rows), cells, groups, sorted({p.category for p in points}),
                       {r["id"]: int(index[i]) for i, r in enumerate(rows)},
                       {r["id"]: r["domain"] or "" for r in rows})


def hash_order(text: str) -> int:
    """A stable pseudo-random order key (the drawn sample must not depend on the process)."""
    return zlib.crc32(text.encode())


def task_map(db: str | Path, endpoint: EmbeddingEndpoint | None = None) -> CoverageMap:
    """The map of a sample of the tasks, coloured by outcome."""
    with connect_readonly(db) as con:
        total = int(con.execute("SELECT count(*) FROM tasks").fetchall()[0][0])
        cur = con.execute(_TASKS_SQL.format(limit=MAX_TASK_POINTS))
        cols = [d[0] for d in cur.description or []]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    xy = project_2d(embed_texts([f"{r['domain'] or ''} {r['goal'] or ''}" for r in rows], endpoint))
    points = [MapPoint(r["id"], (r["goal"] or "")[:120], float(xy[i, 0]), float(xy[i, 1]), r["domain"] or "",
                       category_of(r["domain"] or ""), r["outcome"]) for i, r in enumerate(rows)]
    groups: dict[str, int] = {}
    for p in points:
        groups[p.group] = groups.get(p.group, 0) + 1
    return CoverageMap(points, total, [], groups, sorted({p.category for p in points}))


def category_colours(categories: list[str]) -> dict[str, str]:
    """A distinct hue per category, evenly around the colour wheel."""
    n = max(len(categories), 1)
    return {c: f"hsl({round(360 * i / n)}, 65%, 45%)" for i, c in enumerate(sorted(categories))}


# ---------------------------------------------------------------- steering

PRIOR_LEVELS = 8


def coverage_priors(db: str | Path, exclude_run: str | None = None, levels: int = PRIOR_LEVELS,
                    cmap: CoverageMap | None = None) -> dict[str, int]:
    """A head start of uses per accepted tool for `ToolsetSampler(prior_uses=...)`: 0 for a tool whose
    domain and map cell no accepted trajectory reaches, up to `levels` for the best covered. A tool's
    coverage is the accepted trajectories (of runs other than `exclude_run`) calling tools of its domain,
    per tool of that domain, plus the same over its map cell (`tool_map`, a tool cluster)."""
    cmap = cmap or tool_map(db)
    use = tool_use(db, exclude_run)
    per_domain: dict[str, list[int]] = {}  # domain -> [accepted calls, tools]
    per_cell: dict[int, list[int]] = {}
    for tool_id, domain in cmap.domain_of.items():
        accepted = use.get(tool_id, (0, 0))[1]
        for counts in (per_domain.setdefault(domain, [0, 0]), per_cell.setdefault(cmap.cell_of[tool_id], [0, 0])):
            counts[0] += accepted
            counts[1] += 1
    scores = {t: per_domain[d][0] / per_domain[d][1] + per_cell[cmap.cell_of[t]][0] / per_cell[cmap.cell_of[t]][1]
              for t, d in cmap.domain_of.items()}
    top = max(scores.values(), default=0.0)
    if top <= 0:
        return {}
    return {t: math.ceil(levels * s / top) for t, s in scores.items() if s > 0}


_RUNS_SQL = """
    SELECT r.id, r.started_at, coalesce(TRY_CAST(r.config->'run'->>'steer_coverage' AS BOOLEAN), false) AS steer,
           (SELECT count(*) FROM agents a WHERE a.run_id = r.id AND a.status = 'accepted') AS agents,
           (SELECT count(*) FROM trajectories t WHERE t.run_id = r.id) AS trajectories
    FROM runs r ORDER BY r.started_at NULLS LAST, r.id
"""

_RUN_TOOLSETS_SQL = """
    SELECT DISTINCT run_id, unnest(from_json(tool_ids, '["VARCHAR"]')) AS tool_id FROM agents WHERE status = 'accepted'
"""

# Per run, the tools its accepted trajectories call (within their agent's toolset).
_RUN_REACHED_SQL = """
    WITH called AS (
        SELECT DISTINCT run_id, agent_id, name FROM (
            SELECT t.run_id, t.agent_id,
                   unnest(json_extract_string(t.messages, '$[*].tool_calls[*].function.name')) AS name
            FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id WHERE j.accepted)
    ),
    agent_tools AS (
        SELECT id AS agent_id, unnest(from_json(tool_ids, '["VARCHAR"]')) AS tool_id FROM agents
    )
    SELECT DISTINCT c.run_id, x.tool_id
    FROM called c JOIN agent_tools x ON x.agent_id = c.agent_id JOIN tools tl ON tl.id = x.tool_id AND tl.name = c.name
"""


def coverage_by_run(db: str | Path, cmap: CoverageMap) -> list[dict[str, Any]]:
    """Per run, in start order: whether it steered, its agents and trajectories, and where its
    toolsets went relative to what the runs before it had covered: the share of the tools it
    sampled that lie in map cells and domains no earlier accepted trajectory reached, and the
    cells its own accepted trajectories reached first. Shows what `steer_coverage` changed."""
    with connect_readonly(db) as con:
        cur = con.execute(_RUNS_SQL)
        cols = [d[0] for d in cur.description or []]
        runs = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        sampled: dict[str, set[str]] = {}
        for run_id, tool_id in con.execute(_RUN_TOOLSETS_SQL).fetchall():
            sampled.setdefault(run_id, set()).add(tool_id)
        reached: dict[str, set[str]] = {}
        for run_id, tool_id in con.execute(_RUN_REACHED_SQL).fetchall():
            reached.setdefault(run_id, set()).add(tool_id)
    covered_cells: set[int] = set()
    covered_domains: set[str] = set()
    out = []
    for run in runs:
        tools = [t for t in sampled.get(run["id"], set()) if t in cmap.cell_of]
        cells = {cmap.cell_of[t] for t in reached.get(run["id"], set()) if t in cmap.cell_of}
        domains = {cmap.domain_of[t] for t in reached.get(run["id"], set()) if t in cmap.domain_of}
        out.append({**run, "tools_sampled": len(tools),
                    "in_empty_cells": sum(cmap.cell_of[t] not in covered_cells for t in tools) / len(tools)
                    if tools else None,
                    "in_empty_domains": sum(cmap.domain_of[t] not in covered_domains for t in tools) / len(tools)
                    if tools else None,
                    "new_cells": len(cells - covered_cells), "cells": len(cells)})
        covered_cells |= cells
        covered_domains |= domains
    return out
