"""The domain taxonomy: the fixed, curated list of application domains synthesis draws from.

Why a curated file rather than free text: Kimi K2's recipe spreads synthetic tools over hundreds of
domains so that the tool repository (and hence the tasks and trajectories built on it) covers the
space of things agents are asked to do, not whatever a model happens to think of first. A checked-in
list makes that coverage reviewable, reproducible across runs, and addressable by name from configs
and the CLI (`synth domains list`).

The data lives in `taxonomy.json` next to this module: categories, each holding domains, each domain
with a one-line description, example applications (products or APIs an agent would call tools on)
and the Toucan MCP labels (`mcp_labels`) it corresponds to, so that imported real MCP servers can be
placed in the same taxonomy as synthetic tools (`Taxonomy.domain_for_labels`).

Contract:
- `load_taxonomy()` returns the validated, cached `Taxonomy`; a malformed file raises `TaxonomyError`
  naming the offending entry (never a bare pydantic error), so a bad edit fails loudly at load.
- Names are snake_case slugs (`SLUG_RE`), unique: category names among categories, domain names across
  the whole file (a domain name alone identifies a domain).
- Unknown names raise `UnknownDomainError` / `UnknownCategoryError` (both `ValueError`) carrying
  close-match suggestions, so a typo in a config produces a useful message rather than an empty run.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{1,48}$")
TAXONOMY_RESOURCE = "taxonomy.json"

_SUGGEST_N = 5
_SUGGEST_CUTOFF = 0.5


class TaxonomyError(ValueError):
    """The taxonomy data is malformed. The message names the offending entry (category/domain)."""


class UnknownNameError(ValueError):
    """A name not present in the taxonomy. `suggestions` lists the closest known names (possibly
    empty), best first; the message offers them, or points at `synth domains list` if there are none."""

    kind = "name"

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f"did you mean: {', '.join(suggestions)}?" if suggestions else "see 'synth domains list'"
        super().__init__(f"unknown {self.kind} {name!r}; {hint}")


class UnknownDomainError(UnknownNameError):
    """Raised by `Taxonomy.get` / `Taxonomy.resolve` for a domain name that does not exist."""

    kind = "domain"


class UnknownCategoryError(UnknownNameError):
    """Raised by `Taxonomy.by_category` for a category name that does not exist."""

    kind = "category"


def suggest(name: str, known: Iterable[str]) -> list[str]:
    """Closest known names to `name`: difflib close matches (n=5, cutoff 0.5) first, then names that
    contain `name` as a substring (in taxonomy order), without duplicates."""
    known_list = list(known)
    out = difflib.get_close_matches(name, known_list, n=_SUGGEST_N, cutoff=_SUGGEST_CUTOFF)
    needle = name.strip().lower()
    if needle:
        out += [k for k in known_list if needle in k and k not in out]
    return out


def _norm_label(label: str) -> str:
    return " ".join(label.split()).casefold()


def _label_rank(domain: Domain, label: str) -> int:
    """Position of `label` (normalised) in the domain's `mcp_labels`: 0 is the domain's main label."""
    for i, own in enumerate(domain.mcp_labels):
        if _norm_label(own) == label:
            return i
    return len(domain.mcp_labels)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Domain(_Model):
    """One application domain, e.g. `weather` or `stock_trading`. `category` is the name of the
    category holding it; `examples` are concrete applications an agent would call tools on;
    `mcp_labels` are the Toucan MCP server labels this domain corresponds to."""

    name: str
    category: str
    description: str
    examples: list[str] = Field(default_factory=list)
    mcp_labels: list[str] = Field(default_factory=list)


# Real tools that fit no taxonomy domain get one of their own: `mcp/<server>` (MCP imports), and
# the domains that `[rollout]` bindings name. A run selects them by name; no tools are synthesised
# for them.
OWN_DOMAIN_PREFIXES = ("mcp/",)


def is_own_domain(name: str) -> bool:
    return name.startswith(OWN_DOMAIN_PREFIXES) and len(name) > 4


def own_domain_entry(name: str) -> Domain:
    """The Domain of a real-tool domain outside the taxonomy (category `mcp`)."""
    return Domain(name=name, category="mcp", description=f"tools of the MCP server {name.split('/', 1)[1]}")


class Category(_Model):
    """A group of related domains, e.g. `finance`. Each domain's `category` equals this `name`."""

    name: str
    description: str
    domains: list[Domain]


class Taxonomy(_Model):
    """The whole taxonomy: categories in file order, and lookups over their domains.

    Build one with `load_taxonomy()` (the packaged file) or `parse_taxonomy(data)` (any dict in the
    file's shape); both validate. Order is meaningful: `domains` lists domains category by category in
    file order, and `domain_for_labels` prefers earlier domains on ties.
    """

    version: int = 1
    categories: list[Category]

    _domains: list[Domain] = PrivateAttr(default_factory=list)
    _by_name: dict[str, Domain] = PrivateAttr(default_factory=dict)
    _by_category: dict[str, Category] = PrivateAttr(default_factory=dict)
    _labels: dict[str, frozenset[str]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._domains = [d for c in self.categories for d in c.domains]
        self._by_category = {c.name: c for c in self.categories}
        self._by_name = {d.name: d for d in self._domains}
        self._labels = {d.name: frozenset(_norm_label(label) for label in d.mcp_labels) for d in self._domains}

    @property
    def domains(self) -> list[Domain]:
        """Every domain, flat, in file order (a fresh list; the domains themselves are frozen)."""
        return list(self._domains)

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self._domains]

    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Domain:
        """The domain called `name`; `UnknownDomainError` (with suggestions) if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownDomainError(name, suggest(name, self.domain_names)) from None

    def category(self, name: str) -> Category:
        """The category called `name`; `UnknownCategoryError` (with suggestions) if there is none."""
        try:
            return self._by_category[name]
        except KeyError:
            raise UnknownCategoryError(name, suggest(name, self.category_names)) from None

    def by_category(self, name: str) -> list[Domain]:
        """The domains of category `name`, in file order; `UnknownCategoryError` if unknown."""
        return list(self.category(name).domains)

    def resolve(self, names: Iterable[str]) -> list[Domain]:
        """Domains for `names`, in the order given, each once (later duplicates dropped). The first
        unknown name raises `UnknownDomainError`; nothing is silently skipped."""
        seen: set[str] = set()
        out: list[Domain] = []
        for name in names:
            if name in seen:
                continue
            out.append(self.get(name))
            seen.add(name)
        return out

    def select(self, domains: Iterable[str] = (), categories: Iterable[str] = (),
               exclude: Iterable[str] = ()) -> list[Domain]:
        """The domains a run covers: `domains` by name (`all` for every domain), then the domains
        of each of `categories`, each once, in that order, less those `exclude` names (a domain or
        a whole category). An unknown name of any of the three raises `UnknownNameError` with
        suggestions; an empty selection is a ValueError, never a run of nothing."""
        chosen: list[Domain] = []
        for name in domains:
            chosen += self._domains if name == "all" else [self.get(name) if not is_own_domain(name)
                                                           else own_domain_entry(name)]
        for name in categories:
            chosen += self.by_category(name)
        dropped: set[str] = set()
        for name in exclude:
            if name in self._by_name or is_own_domain(name):
                dropped.add(name)
            elif name in self._by_category:
                dropped.update(d.name for d in self._by_category[name].domains)
            else:
                raise UnknownNameError(name, suggest(name, [*self.domain_names, *self.category_names]))
        seen: set[str] = set()
        out = []
        for domain in chosen:
            if domain.name not in seen and domain.name not in dropped:
                seen.add(domain.name)
                out.append(domain)
        if not out:
            raise ValueError("the selection is empty: every chosen domain is excluded")
        return out

    def domain_for_labels(self, primary_label: str | None, secondary_labels: Sequence[str]) -> Domain | None:
        """Place a real MCP server (Toucan labels) in the taxonomy.

        Candidates are the domains whose `mcp_labels` contain `primary_label`; among them the one
        matching the most distinct `secondary_labels` wins. Remaining ties go to a domain whose main
        (first-listed) label is the primary label, then to the earliest in file order; so the first
        domain that lists a label first is that label's canonical home. When there is no
        primary label, or no domain carries it, the domain matching the most secondary labels (at
        least one) is used instead. Labels compare case- and whitespace-insensitively. Returns None
        when nothing matches.
        """
        primary = _norm_label(primary_label) if primary_label else None
        secondary = {_norm_label(s) for s in secondary_labels if s} - ({primary} if primary else set())

        def score(d: Domain) -> int:
            return len(secondary & self._labels[d.name])

        if primary is not None:
            candidates = [d for d in self._domains if primary in self._labels[d.name]]
            if candidates:
                # Most secondary matches first; then domains whose *main* (first-listed) label is the
                # primary label; min() keeps the first of equal keys, i.e. file order breaks the rest.
                return min(candidates, key=lambda d: (-score(d), _label_rank(d, primary)))
        if not secondary:
            return None
        best = max(self._domains, key=score)
        return best if score(best) > 0 else None


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """Name the taxonomy entry a pydantic error location points into, e.g.
    "category 'finance' > domain 'stock_trading' (examples)"."""
    parts: list[str] = []
    node: Any = data
    rest: list[str] = []
    i = 0
    while i < len(loc):
        key = loc[i]
        if key in ("categories", "domains") and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            idx = loc[i + 1]
            kind = "category" if key == "categories" else "domain"
            try:
                node = node[key][idx]
                label = node.get("name") if isinstance(node, dict) else None
            except (KeyError, IndexError, TypeError):
                label = None
            parts.append(f"{kind} {label!r}" if isinstance(label, str) and label else f"{kind} #{idx}")
            i += 2
            continue
        rest = [str(k) for k in loc[i:]]
        break
    where = " > ".join(parts) if parts else "taxonomy"
    return f"{where} ({'.'.join(rest)})" if rest else where


def _check(data: dict[str, Any]) -> list[str]:
    """Content rules pydantic's types do not express: slugs, uniqueness, non-empty descriptions,
    at least one example per domain. Returns one message per violation, each naming the entry."""
    problems: list[str] = []
    seen_categories: set[str] = set()
    seen_domains: dict[str, str] = {}
    for ci, cat in enumerate(data.get("categories") or []):
        cname = cat.get("name") if isinstance(cat, dict) else None
        where_c = f"category {cname!r}" if cname else f"category #{ci}"
        if not isinstance(cat, dict):
            problems.append(f"{where_c}: not an object")
            continue
        if not isinstance(cname, str) or not SLUG_RE.match(cname):
            problems.append(f"{where_c}: name is not a slug matching {SLUG_RE.pattern}")
        elif cname in seen_categories:
            problems.append(f"{where_c}: duplicate category name")
        else:
            seen_categories.add(cname)
        if not str(cat.get("description") or "").strip():
            problems.append(f"{where_c}: empty description")
        domains = cat.get("domains")
        if not isinstance(domains, list) or not domains:
            problems.append(f"{where_c}: needs a non-empty 'domains' list")
            continue
        for di, dom in enumerate(domains):
            dname = dom.get("name") if isinstance(dom, dict) else None
            where_d = f"{where_c} > domain {dname!r}" if dname else f"{where_c} > domain #{di}"
            if not isinstance(dom, dict):
                problems.append(f"{where_d}: not an object")
                continue
            if not isinstance(dname, str) or not SLUG_RE.match(dname):
                problems.append(f"{where_d}: name is not a slug matching {SLUG_RE.pattern}")
            elif dname in seen_domains:
                problems.append(f"{where_d}: duplicate domain name (also in category {seen_domains[dname]!r})")
            else:
                seen_domains[dname] = str(cname)
            if dom.get("category") not in (None, cname):
                problems.append(f"{where_d}: category field {dom.get('category')!r} disagrees with its category")
            if not str(dom.get("description") or "").strip():
                problems.append(f"{where_d}: empty description")
            examples = dom.get("examples")
            if not isinstance(examples, list) or not [e for e in examples if isinstance(e, str) and e.strip()]:
                problems.append(f"{where_d}: needs at least one example")
    return problems


def parse_taxonomy(data: dict[str, Any]) -> Taxonomy:
    """Validate `data` (the JSON file's shape) into a `Taxonomy`. This is the validation
    `load_taxonomy` uses. Raises `TaxonomyError` naming every offending entry."""
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise TaxonomyError("taxonomy: expected an object with a 'categories' list")
    problems = _check(data)
    if problems:
        raise TaxonomyError("invalid taxonomy:\n  " + "\n  ".join(problems))
    # Domains carry their category's name; the file leaves it implicit.
    filled = {
        **data,
        "categories": [
            {**cat, "domains": [{**dom, "category": cat["name"]} for dom in cat["domains"]]}
            for cat in data["categories"]
        ],
    }
    try:
        return Taxonomy.model_validate(filled)
    except ValidationError as exc:
        lines = [f"{_where(tuple(err['loc']), filled)}: {err['msg']}" for err in exc.errors()]
        raise TaxonomyError("invalid taxonomy:\n  " + "\n  ".join(lines)) from None


@functools.lru_cache(maxsize=1)
def load_taxonomy() -> Taxonomy:
    """The packaged taxonomy (`synth/domains/taxonomy.json`), validated once and cached.
    Treat the result as read-only: it is shared by every caller."""
    text = resources.files("synth.domains").joinpath(TAXONOMY_RESOURCE).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaxonomyError(f"{TAXONOMY_RESOURCE}: not valid JSON: {exc}") from None
    return parse_taxonomy(data)
