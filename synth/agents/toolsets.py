"""Sampling coherent toolsets for agents, spreading use over the whole tool repository.

A toolset is 2 to 8 tools that belong together: tools of one application (a synthetic tool's
`application`, an MCP tool's server), else of one domain, else of a few related domains of one
taxonomy category. Coverage matters as much as coherence: Kimi K2's agents drew on thousands of
tools, so `ToolsetSampler` always starts a toolset from a least-used tool (a random one among
them) and fills it with the least-used tools of the chosen group (random ties), synthetic and MCP
tools alike.

Steering (`prior_uses`): a tool can start with uses it never had in this sampler, as if already
drawn; `synth.report.coverage.coverage_priors` gives tools in domains and map cells that accepted
trajectories already reach such a head start, so least-use reaches the empty regions first.

Distinctness: a toolset (the frozenset of its tool ids) is never returned twice while another
exists. A repeat is retried with a widened group and more randomness, then, for a tiny repository,
by enumeration; only when every subset of sizes min..max has been used does it repeat one.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Mapping

import numpy as np

from synth.domains import load_taxonomy
from synth.models import ToolSpec

_LEVELS = ("application", "domain", "related")
_LEVEL_WEIGHTS = (0.5, 0.35, 0.15)
_ATTEMPTS_PER_LEVEL = 6
_ENUMERATE_UP_TO = 16
_RANDOM_FALLBACK_TRIES = 200
MAX_PRIOR_USES = 16  # a head start beyond this changes little and costs a bump per use


def application_of(tool: ToolSpec) -> str:
    """The application a tool belongs to: its `application`, else (MCP) its first server."""
    if tool.application:
        return tool.application
    if tool.provenance.servers:
        return tool.provenance.servers[0]
    return ""


def _category_of_domains(domains: set[str]) -> dict[str, str]:
    try:
        taxonomy = load_taxonomy()
    except Exception:  # a broken taxonomy file degrades to one category per domain
        return {d: d for d in domains}
    return {d: (taxonomy.get(d).category if d in taxonomy else d) for d in domains}


class ToolsetSampler:
    """Samples coherent, distinct toolsets from `tools` with `rng` (see the module docstring).

    Tools are deduplicated by id. With fewer tools than `min_size`, toolsets hold all there are.
    Deterministic for a given tool list and rng state.
    """

    def __init__(self, tools: list[ToolSpec], rng: random.Random, min_size: int = 2, max_size: int = 8,
                 prior_uses: Mapping[str, int] | None = None) -> None:
        if min_size < 1 or max_size < min_size:
            raise ValueError(f"toolset sizes must satisfy 1 <= min_size <= max_size, got {min_size}..{max_size}")
        self.rng = rng
        self.tools: list[ToolSpec] = []
        self.ids: list[str] = []
        self.uses: list[int] = []
        self._sizes = (min_size, max_size)
        self._seen: set[frozenset[str]] = set()
        # A tiny repository's candidate subsets (distinct names, in enumeration order), built once
        # per set of tools; a drawn subset is marked dead in its group's `alive`
        # mask (`_combo_at`: key -> (group, row)). Enumerating them on every draw cost a quarter of
        # a fast run's driver time, and testing every key against `_seen` on every draw a tenth.
        self._small_combos: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._combo_at: dict[frozenset[str], tuple[int, int]] = {}
        # Least-used buckets: _buckets[c] holds the tools used c times; O(1) moves and picks.
        self._buckets: list[list[int]] = [[]]
        self._slot: list[int] = []
        self._floor = 0
        self._by_app: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._by_domain: dict[str, list[int]] = defaultdict(list)
        self._category: dict[str, str] = {}
        self._domains_of_category: dict[str, list[str]] = defaultdict(list)
        self._priors: Mapping[str, int] = prior_uses or {}
        self.extend(tools)
        if not self.tools:
            raise ValueError("ToolsetSampler needs at least one tool; the tool repository is empty")

    def extend(self, tools: list[ToolSpec]) -> int:
        """Add `tools` (those not already held) with no uses, or their steering priors: a streaming run
        adds each wave of domains as its tools are made, and least-use starts the next toolsets
        from the new tools. Deterministic for a given sequence of calls. Returns how many were new."""
        held = set(self.ids)
        new = {t.id: t for t in tools if t.id not in held}
        if new:
            self._small_combos = None
        start = len(self.tools)
        for tool_id, tool in new.items():
            i = len(self.tools)
            self.tools.append(tool)
            self.ids.append(tool_id)
            self.uses.append(0)
            self._slot.append(len(self._buckets[0]))
            self._buckets[0].append(i)
            self._by_domain[tool.domain].append(i)
            app = application_of(tool)
            if app:
                self._by_app[(tool.domain, app)].append(i)
        self._floor = 0 if new else self._floor
        n = len(self.tools)
        self.min_size = min(self._sizes[0], n)
        self.max_size = min(self._sizes[1], n)
        fresh = sorted(set(self._by_domain) - set(self._category))
        self._category.update(_category_of_domains(set(fresh)))
        for domain in fresh:
            self._domains_of_category[self._category[domain]].append(domain)
            self._domains_of_category[self._category[domain]].sort()
        for i in range(start, n):
            for _ in range(min(int(self._priors.get(self.ids[i], 0)), MAX_PRIOR_USES)):
                self._bump(i)
        return len(new)

    # ------------------------------------------------------------ public

    def sample(self) -> list[ToolSpec]:
        """A toolset never returned before (while one exists), its tools' use counts bumped."""
        chosen = self._coherent_new() or self._fallback_new()
        if chosen is None:  # every subset is used up: repeat the least-used coherent one
            seed = self._least_used_tool()
            chosen = self._candidate(seed, self._levels_for(seed)[0], 0)
        key = frozenset(self.ids[i] for i in chosen)
        self._seen.add(key)
        if self._small_combos is not None and key in self._combo_at:
            group, row = self._combo_at[key]
            self._small_combos[group][1][row] = False
        for i in chosen:
            self._bump(i)
        order = sorted(chosen, key=lambda i: (application_of(self.tools[i]), self.tools[i].name))
        return [self.tools[i] for i in order]

    def coverage(self) -> float:
        """Share of the tools used by at least one returned toolset."""
        return 1.0 - len(self._buckets[0]) / len(self.tools)

    @property
    def sampled(self) -> int:
        """How many distinct toolsets have been returned."""
        return len(self._seen)

    # ------------------------------------------------------------ choosing

    def _coherent_new(self) -> list[int] | None:
        seed = self._least_used_tool()
        levels = self._levels_for(seed)
        weights = [_LEVEL_WEIGHTS[_LEVELS.index(level)] for level in levels]
        start = _LEVELS.index(self.rng.choices(levels, weights=weights)[0])
        attempt = 0
        for step in range(len(_LEVELS)):
            for _ in range(_ATTEMPTS_PER_LEVEL):
                levels = self._levels_for(seed)
                wanted = _LEVELS[min(start + step, len(_LEVELS) - 1)]
                level = next((lv for lv in levels if _LEVELS.index(lv) >= _LEVELS.index(wanted)), levels[-1])
                candidate = self._candidate(seed, level, attempt)
                if len(candidate) >= self.min_size and frozenset(self.ids[i] for i in candidate) not in self._seen:
                    return candidate
                attempt += 1
                if attempt % 2 == 0:
                    seed = self._least_used_tool()
        return None

    def _levels_for(self, seed: int) -> list[str]:
        """The grouping levels with enough tools around `seed`, narrowest first."""
        tool = self.tools[seed]
        levels = []
        app_size = len(self._by_app.get((tool.domain, application_of(tool)), []))
        if app_size >= self.min_size:
            levels.append("application")
        if len(self._by_domain[tool.domain]) >= self.min_size and (
            not levels or len(self._by_domain[tool.domain]) > app_size
        ):
            levels.append("domain")
        if len(self._domains_of_category[self._category[tool.domain]]) > 1 or not levels:
            levels.append("related")
        return levels

    def _pool(self, seed: int, level: str) -> tuple[list[int], list[int]]:
        """(primary pool, secondary pool): the seed's group, and for `related`, tools of other
        domains of its category (or of every domain when the category has just one)."""
        tool = self.tools[seed]
        if level == "application":
            return self._by_app.get((tool.domain, application_of(tool)), []), []
        if level == "domain":
            return self._by_domain[tool.domain], []
        others = [d for d in self._domains_of_category[self._category[tool.domain]] if d != tool.domain]
        if not others:
            others = [d for d in self._by_domain if d != tool.domain]
        picked = self.rng.sample(others, min(len(others), self.rng.randint(1, 2)))
        return self._by_domain[tool.domain], [i for d in picked for i in self._by_domain[d]]

    def _candidate(self, seed: int, level: str, attempt: int) -> list[int]:
        primary, secondary = self._pool(seed, level)
        available = len(set(primary) | set(secondary))
        size = self.rng.randint(self.min_size, max(self.min_size, min(self.max_size, available)))
        spread = 1.0 + attempt  # later attempts trade least-use for variety
        chosen = [seed]
        if secondary:
            from_primary = max(0, size // 2 - 1)
            chosen += self._least_used_of(primary, from_primary, spread, chosen)
            chosen += self._least_used_of(secondary, size - len(chosen), spread, chosen)
        chosen += self._least_used_of(primary, size - len(chosen), spread, chosen)
        return chosen

    def _least_used_of(self, pool: list[int], k: int, spread: float, exclude: list[int]) -> list[int]:
        """Up to `k` tools of `pool` by least use (randomised by `spread`), none sharing a name with
        `exclude` or each other: a toolset's names must be unique for function calling."""
        if k <= 0:
            return []
        taken = set(exclude)
        names = {self.tools[i].name for i in exclude}
        scored = sorted((self.uses[i] + self.rng.random() * spread, i) for i in pool if i not in taken)
        out: list[int] = []
        for _, i in scored:
            if self.tools[i].name in names:
                continue
            names.add(self.tools[i].name)
            out.append(i)
            if len(out) == k:
                break
        return out

    def _fallback_new(self) -> list[int] | None:
        """An unused subset of any tools: enumerated for a tiny repository, else random draws."""
        n = len(self.tools)
        if n <= _ENUMERATE_UP_TO:
            uses = np.asarray(self.uses, dtype=float)
            noise = np.random.default_rng(self.rng.getrandbits(64))
            best: list[int] | None = None
            best_score = float("inf")
            for combos, alive in self._enumerated():
                rows = np.flatnonzero(alive)
                if not len(rows):
                    continue
                scores = uses[combos[rows]].mean(axis=1) + noise.random(len(rows))
                j = int(scores.argmin())
                if scores[j] < best_score:
                    best, best_score = [int(i) for i in combos[rows[j]]], float(scores[j])
            return best
        for _ in range(_RANDOM_FALLBACK_TRIES):
            seed = self._least_used_tool()
            size = self.rng.randint(self.min_size, self.max_size)
            domain = self._by_domain[self.tools[seed].domain]
            pool = domain if len(domain) >= size else list(range(n))
            others = self._least_used_of(self.rng.sample(pool, min(len(pool), size + 2)), size - 1, 1e9, [seed])
            chosen = [seed, *others]
            if len(chosen) >= self.min_size and frozenset(self.ids[i] for i in chosen) not in self._seen:
                return chosen
        return None

    def _enumerated(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every subset of min..max size with distinct names, by size (smallest first): an index
        matrix and whether each row is still unseen (its key is in `_combo_at`)."""
        if self._small_combos is None:
            self._small_combos = []
            self._combo_at = {}
            for size in range(self.min_size, self.max_size + 1):
                combos = [c for c in itertools.combinations(range(len(self.tools)), size) if self._distinct_names(c)]
                keys = [frozenset(self.ids[i] for i in c) for c in combos]
                group = len(self._small_combos)
                self._combo_at.update((key, (group, row)) for row, key in enumerate(keys))
                alive = np.fromiter((key not in self._seen for key in keys), dtype=bool, count=len(keys))
                self._small_combos.append((np.array(combos, dtype=np.int64).reshape(len(combos), size), alive))
        return self._small_combos

    def _distinct_names(self, combo: tuple[int, ...]) -> bool:
        return len({self.tools[i].name for i in combo}) == len(combo)

    # ------------------------------------------------------------ least-used buckets

    def _least_used_tool(self) -> int:
        while not self._buckets[self._floor]:
            self._floor += 1
        bucket = self._buckets[self._floor]
        return bucket[self.rng.randrange(len(bucket))]

    def _bump(self, i: int) -> None:
        count = self.uses[i]
        bucket = self._buckets[count]
        pos, last = self._slot[i], bucket[-1]
        bucket[pos], self._slot[last] = last, pos
        bucket.pop()
        self.uses[i] = count + 1
        if len(self._buckets) <= count + 1:
            self._buckets.append([])
        self._buckets[count + 1].append(i)
        self._slot[i] = len(self._buckets[count + 1]) - 1
