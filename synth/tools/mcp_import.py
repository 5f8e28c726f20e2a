"""Import of real MCP tools: from `tools/list` JSON files, Toucan-style JSONL(.gz), or a live
MCP server over stdio.

Contract:
- Readers (`read_mcp_file`, `list_tools_stdio`) turn a source into `ServerTools` (the server's
  name, labels, where it came from, and its raw tool entries). A file that is not a tool list at
  all is a `ValueError` naming the file; a bad *line* of a JSONL file becomes a rejection.
- `import_servers(servers, taxonomy)` is pure (no I/O): every raw tool is converted exactly
  (`spec.tool_from_mcp`), repaired where the meaning is unambiguous (`validate.normalize_schema`,
  an illegal name sanitised, a missing description derived from the name and parameters; every
  repair is noted in `provenance.notes`) and checked (`validate.tool_problems`). Tools with equal
  content (same id) are merged into one, recording every server and file. Nothing is dropped
  silently: each raw tool ends up imported (possibly merged) or rejected with a reason.
- Each server is placed in the taxonomy by its labels (`Taxonomy.domain_for_labels`), else by
  the domain whose name, description and examples share the most words with the server's name
  and tools, else in a domain of its own, `mcp/<server>` (`own_domain`), which a run selects by
  that name (`synth run --domains mcp/<server>`).
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from synth.models import Provenance, ToolSpec
from synth.naming import name_words
from synth.tools.repository import RejectedTool
from synth.tools.spec import tool_from_mcp, tools_list_entries
from synth.tools.validate import normalize_schema, sanitize_name, tool_problems

OWN_DOMAIN_PREFIX = "mcp/"


def own_domain(server: str) -> str:
    """The domain of a server that fits no taxonomy domain: `mcp/` and its name in snake case."""
    slug = re.sub(r"[^a-z0-9]+", "_", server.lower()).strip("_") or "server"
    return OWN_DOMAIN_PREFIX + slug


class DomainLike(Protocol):
    name: str
    description: str
    examples: list[str]


class TaxonomyLike(Protocol):
    def domain_for_labels(self, primary_label: str, secondary_labels: Sequence[str]) -> Any: ...


@dataclass
class ServerTools:
    """One MCP server's `tools/list`, with what is known about the server."""

    server: str
    file: str
    tools: list[Any]
    primary_label: str | None = None
    secondary_labels: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    """What an import produced: accepted specs (one per content id), rejections, and counts."""

    tools: list[ToolSpec] = field(default_factory=list)
    rejected: list[RejectedTool] = field(default_factory=list)
    seen: int = 0
    merged: int = 0
    repaired: int = 0
    servers: int = 0
    placements: Counter[str] = field(default_factory=Counter)

    @property
    def imported(self) -> int:
        """Raw tools accepted, counting each one merged into an equal tool."""
        return self.seen - len(self.rejected)

    def report(self) -> dict[str, Any]:
        reasons = Counter(_reason_kind(r.reason) for r in self.rejected)
        return {
            "servers": self.servers,
            "tools_seen": self.seen,
            "imported": self.imported,
            "distinct_tools": len(self.tools),
            "merged_duplicates": self.merged,
            "repaired": self.repaired,
            "rejected": len(self.rejected),
            "rejected_by_reason": dict(reasons.most_common()),
            "domains": dict(self.placements.most_common()),
            "rejections": [{"server": r.server, "tool": r.name, "reason": r.reason} for r in self.rejected],
        }


def _reason_kind(reason: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|\d+", "…", reason)[:80]


# ---------------------------------------------------------------- readers


def _open_text(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        yield from fh


def read_mcp_file(path: str | Path) -> list[ServerTools]:
    """The servers in one file: a `tools/list` JSON document, or JSONL (optionally gzipped) with
    one server per line in Toucan's shape (`server`, `primary_label`, `secondary_labels`,
    `tools`). A line that is not valid JSON becomes a server whose one raw tool is that line, so
    it is reported, not lost."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such MCP file: {path}")
    name = path.name
    stem = name.removesuffix(".gz")
    if stem.endswith(".jsonl"):
        servers: list[ServerTools] = []
        for lineno, line in enumerate(_open_text(path), 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                servers.append(
                    ServerTools(
                        server=f"line {lineno}", file=where, tools=[{"_unparsed": line[:500], "_error": str(exc)}]
                    )
                )
                continue
            servers.append(_server_from_document(data, where, default_name=f"line {lineno}"))
        return servers
    try:
        data = json.loads("".join(_open_text(path)))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    return [_server_from_document(data, str(path), default_name=stem.removesuffix(".json"))]


def _server_from_document(data: Any, where: str, default_name: str) -> ServerTools:
    tools = tools_list_entries(data, where)
    server = default_name
    primary: str | None = None
    secondary: list[str] = []
    if isinstance(data, Mapping):
        info = data.get("server_info") or data.get("serverInfo")
        if isinstance(data.get("server"), str):
            server = data["server"]
        elif isinstance(info, Mapping) and isinstance(info.get("name"), str):
            server = info["name"]
        if isinstance(data.get("primary_label"), str):
            primary = data["primary_label"]
        if isinstance(data.get("secondary_labels"), list):
            secondary = [s for s in data["secondary_labels"] if isinstance(s, str)]
    return ServerTools(server=server, file=where, tools=tools, primary_label=primary, secondary_labels=secondary)


async def list_tools_stdio(
    command: Sequence[str], *, timeout_s: float = 60.0, env: dict[str, str] | None = None
) -> ServerTools:
    """Start an MCP server over stdio (official `mcp` SDK), initialise, and read every page of
    `tools/list` in wire shape (`inputSchema`, ...)."""
    import anyio
    from mcp import StdioServerParameters

    if not command:
        raise ValueError("--command is empty")
    params = StdioServerParameters(command=command[0], args=list(command[1:]), env=env)
    tools: list[Any] = []
    # The server's stderr goes to a real file (the SDK needs a file descriptor), kept for errors.
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        try:
            with anyio.fail_after(timeout_s):
                init = await _list_all(params, errlog, tools)
        except Exception as exc:
            errlog.seek(0)
            tail = errlog.read()[-800:].strip()
            raise RuntimeError(f"{type(exc).__name__}: {exc}" + (f"; server stderr: {tail}" if tail else "")) from exc
    server = init.server_info.name or " ".join(command)
    return ServerTools(server=server, file="stdio: " + " ".join(command), tools=tools)


async def _list_all(params: Any, errlog: Any, tools: list[Any]) -> Any:
    """Initialise a stdio session and append every page of `tools/list` to `tools`; returns the
    InitializeResult."""
    from mcp import ClientSession
    from mcp.client.stdio import stdio_client
    from mcp.types import PaginatedRequestParams

    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        cursor: str | None = None
        while True:
            page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
            tools += [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in page.tools]
            cursor = page.next_cursor
            if not cursor:
                return init


# ---------------------------------------------------------------- placement

_WORD = re.compile(r"[a-z]{3,}")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "from",
        "that",
        "this",
        "your",
        "into",
        "tool",
        "tools",
        "data",
        "server",
        "use",
        "using",
        "get",
        "set",
        "list",
        "api",
        "mcp",
        "based",
        "provides",
        "returns",
    ]
)


def _words(text: str) -> set[str]:
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text).lower()
    return {w for w in _WORD.findall(spaced) if w not in _STOP}


def _domains_of(taxonomy: Any) -> list[Any]:
    domains = getattr(taxonomy, "domains", None)
    if callable(domains):
        domains = domains()
    if isinstance(domains, Mapping):
        return list(domains.values())
    if domains is not None:
        return list(domains)
    try:
        return list(taxonomy)
    except TypeError:
        return []


def _domain_words(domain: Any) -> set[str]:
    name = domain.name.replace("_", " ").replace("-", " ")
    return _words(f"{name} {domain.description} {' '.join(getattr(domain, 'examples', []) or [])}")


def place_server(server: ServerTools, taxonomy: Any) -> tuple[str, str]:
    """(domain name, how it was chosen) for a server: by labels, else by shared words, else a
    domain of its own (`own_domain`)."""
    if taxonomy is None:
        return own_domain(server.server), "no taxonomy"
    text = server.server + " " + " ".join(
        f"{t.get('name', '')} {t.get('description', '')}"
        for t in server.tools[:30]
        if isinstance(t, Mapping) and isinstance(t.get("description", ""), str)
    )
    words = _words(text)
    domains = _domains_of(taxonomy)
    if server.primary_label:
        by_labels = taxonomy.domain_for_labels(server.primary_label, server.secondary_labels)
        if by_labels is not None:
            # Among the domains carrying the label, the one sharing most words with the server.
            label = server.primary_label.strip().lower()
            candidates = [d for d in domains if label in {x.strip().lower() for x in getattr(d, "mcp_labels", [])}]
            scored = [(len(words & _domain_words(d)), d.name) for d in candidates]
            best_label = max(scored, default=(0, by_labels.name), key=lambda x: x[0])
            chosen = best_label[1] if best_label[0] > 0 else by_labels.name
            return chosen, f"labels {server.primary_label!r}"
    best: tuple[int, str] | None = None
    for domain in domains:
        score = len(words & _domain_words(domain))
        if score and (best is None or score > best[0]):
            best = (score, domain.name)
    if best is not None:
        return best[1], "shared words"
    return own_domain(server.server), "no match: a domain of its own"


# ---------------------------------------------------------------- import


def _humanize(name: str) -> str:
    words = name_words(name)
    return " ".join(words).capitalize() if words else name


def derived_description(name: str, schema: Any, server: str) -> str:
    """A plain description for a tool its server published without one."""
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    params = ", ".join(list(props)[:8]) if isinstance(props, Mapping) and props else "no arguments"
    return f"{_humanize(name)} (tool of the {server} MCP server; arguments: {params})."


def build_spec(raw: Any, *, domain: str, provenance: Provenance, server: str) -> tuple[ToolSpec | None, str | None]:
    """(spec, None) for an importable raw tool, else (spec-or-None, reason). Repairs are noted in
    the spec's `provenance.notes`; a spec returned with a reason is a rejected one."""
    if not isinstance(raw, Mapping):
        return None, f"tool entry is a {type(raw).__name__}, not a JSON object"
    if "_unparsed" in raw:
        return None, f"line is not valid JSON: {raw.get('_error')}"
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        return None, "tool has no name"
    notes: list[str] = []
    fixed = dict(raw)
    legal = sanitize_name(name)
    if legal is None:
        return None, f"name {name!r} has no legal function-name form (^[a-zA-Z0-9_-]{{1,64}}$)"
    if legal != name:
        fixed["name"] = legal
        notes.append(f"name {name!r} sanitised to {legal!r}")
    schema, schema_notes = normalize_schema(raw.get("inputSchema"))
    if not isinstance(schema, dict):
        return None, f"inputSchema is a {type(schema).__name__}, not a JSON object"
    fixed["inputSchema"] = schema
    notes += [f"inputSchema: {n}" for n in schema_notes]
    if "outputSchema" in raw and raw["outputSchema"] is not None:
        output, output_notes = (
            normalize_schema(raw["outputSchema"]) if raw["outputSchema"] != {} else (raw["outputSchema"], [])
        )
        fixed["outputSchema"] = output
        notes += [f"outputSchema: {n}" for n in output_notes]
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        return None, f"description is a {type(description).__name__}, not a string"
    if not (description or "").strip():
        fixed["description"] = derived_description(legal, schema, server)
        notes.append("description missing; derived from the name and parameters")
    prov = provenance.model_copy(deep=True)
    prov.notes += notes
    try:
        spec = tool_from_mcp(fixed, domain=domain, provenance=prov)
    except ValueError as exc:
        return None, str(exc)
    except Exception as exc:  # pydantic or anything else: one bad tool never stops an import
        return None, f"could not build tool: {type(exc).__name__}: {str(exc)[:160]}"
    problems = tool_problems(spec)
    if problems:
        return spec, "; ".join(problems)[:500]
    return spec, None


def import_servers(servers: Iterable[ServerTools], taxonomy: Any, *, domain: str | None = None) -> ImportResult:
    """Convert, repair, check and merge every tool of `servers` (see the module docstring).
    `domain` forces every server into one domain instead of placing it."""
    result = ImportResult()
    by_id: dict[str, ToolSpec] = {}
    for server in servers:
        result.servers += 1
        place, how = (domain, "given") if domain else place_server(server, taxonomy)
        labels = [lab for lab in [server.primary_label, *server.secondary_labels] if lab]
        for raw in server.tools:
            result.seen += 1
            prov = Provenance(
                servers=[server.server], files=[server.file], labels=labels, notes=[f"placed in {place} by {how}"]
            )
            try:
                spec, reason = build_spec(raw, domain=place, provenance=prov, server=server.server)
            except Exception as exc:  # belt and braces: never crash on one tool
                spec, reason = None, f"import failed: {type(exc).__name__}: {str(exc)[:160]}"
            if reason is not None or spec is None:
                result.rejected.append(
                    RejectedTool(
                        reason or "unknown", raw, place, server.server, spec, "mcp", server.server, server.file
                    )
                )
                continue
            if len(spec.provenance.notes) > 1:
                result.repaired += 1
            twin = by_id.get(spec.id)
            if twin is not None:
                result.merged += 1
                for attr in ("servers", "files", "labels"):
                    values = getattr(twin.provenance, attr)
                    values += [v for v in getattr(spec.provenance, attr) if v not in values]
                continue
            by_id[spec.id] = spec
            result.tools.append(spec)
            result.placements[place] += 1
    return result
