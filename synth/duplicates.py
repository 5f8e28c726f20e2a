"""Near-duplicate tasks and trajectories: found by MinHash, stored as groups, one representative each.

Content-hash ids only catch exact copies: a task whose goal is reworded, or a trajectory that makes the
same calls with the same arguments in other words, gets another id. A dataset can hold the same
conversation many times that way, and a model trained on it over-weights whatever was repeated.

What counts as "nearly the same thing":

- **tasks**: the same toolset (the agent's tool ids) and the same stated values (the tokens of the goal
  that carry a digit or an `@`, such as `o-17` or `ann@example.com`), and goals whose content words
  (lowercased, stop words dropped, crudely stemmed) have a Jaccard similarity of at least
  `TASK_THRESHOLD`. "Cancel order o-17" and "Please get order o-17 cancelled" are one task; "Cancel
  order o-17" and "Cancel order o-18" are two.
- **trajectories**: the same toolset, the same verdict (accepted or not, by the latest judgment: a
  rejected near-copy of an accepted trajectory is a negative that differs where it matters), the same
  tool calls in the same order with the same arguments (canonical JSON), and user plus assistant text
  whose content words have a Jaccard similarity of at least `TRAJECTORY_THRESHOLD`.

Candidates come from MinHash locality-sensitive hashing (`NUM_PERM` hashes in `BANDS` bands, so pairs
above about 0.5 similarity share a band with high probability) within the exact key (toolset, values or
calls); each candidate is confirmed by its estimated Jaccard similarity, and confirmed pairs are joined
into groups (union-find). Memory is one signature (`NUM_PERM` 32-bit integers) and one key digest per item;
rows are read page by page.

Each group of two or more keeps one **representative**: for trajectories the accepted one (by its
latest judgment) first, then the earliest stored, then the smallest id; for tasks an accepted task
first, then the earliest, then the smallest id. `dedup_dataset(db)` recomputes every group and
replaces the `duplicates` table (one row per member of a group, see `synth.store.TABLES`). `synth run`
calls it when a run ends, `synth dedup --db PATH` on demand; `synth export` leaves the non-representative
members out unless `--keep-duplicates`, `synth stats` and `synth report` show the groups.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from synth.export import iter_rows
from synth.ids import canonical_json, content_id
from synth.judges.messages import iter_tool_calls
from synth.judges.messages import text as message_content
from synth.naming import crude_stem
from synth.store import Dataset, connect_readonly, json_value

Kind = Literal["task", "trajectory"]
KINDS: tuple[Kind, ...] = ("task", "trajectory")

NUM_PERM = 64
BANDS = 16  # 16 bands of 4 rows: the LSH threshold (1/16)^(1/4) is 0.5
TASK_THRESHOLD = 0.5
TRAJECTORY_THRESHOLD = 0.5
# Within one LSH bucket an item is compared with at most this many group leaders, so a bucket of
# thousands of items costs thousands of comparisons, not millions.
MAX_LEADERS = 32
# Rows read per page: a page of trajectories holds their messages, so a small page keeps the
# transient memory of a dedup the same for 200 trajectories or 200,000 (what stays is one
# signature and one key digest per item).
PAGE_SIZE = 250

_PRIME = np.uint64(4294967291)  # the largest prime below 2^32
_rng = np.random.default_rng(20260401)
_A = _rng.integers(1, 2**32 - 5, size=NUM_PERM, dtype=np.uint64)
_B = _rng.integers(0, 2**32 - 5, size=NUM_PERM, dtype=np.uint64)

# Words that a rewording adds or drops without changing the request. Negations stay content.
_STOP_WORDS_TEXT = """
a about above after again all am an and any are as at be been before being below between both but by
can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its just let me more most my myself of off on once only or other our ours
out over own please same she should so some such than that the their them then there these they this
those through to too under until up very via was we were what when where which while who whom why will
with would you your yours yourself also get need want like help kindly thanks thank hi hello sure ok okay
"""
_STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
_WORD = re.compile(r"[a-z0-9][a-z0-9_.@-]*[a-z0-9]|[a-z0-9]")


def content_words(text: str) -> set[str]:
    """The stemmed content words of `text`; values (tokens with a digit or '@') are kept whole."""
    out = {_word_of(token) for token in _WORD.findall(text.lower())}
    out.discard("")
    return out


_word_cache: dict[str, str] = {}


def _word_of(token: str) -> str:
    """A token as a content word ('' for a stop word), cached: a dataset repeats its vocabulary."""
    word = _word_cache.get(token)
    if word is None:
        if len(_word_cache) > 2_000_000:
            _word_cache.clear()
        word = _word_cache[token] = "" if token in _STOP_WORDS else token if _is_value(token) else crude_stem(token)
    return word


def _is_value(token: str) -> bool:
    return any(c.isdigit() for c in token) or "@" in token


def stated_values(text: str) -> frozenset[str]:
    """The value tokens of `text` (ids, numbers, e-mail addresses), which a rewording keeps."""
    return frozenset(t.strip(".") for t in _WORD.findall(text.lower()) if _is_value(t))


# ---------------------------------------------------------------- MinHash


_hash_cache: dict[str, int] = {}


def _token_hash(token: str) -> int:
    value = _hash_cache.get(token)
    if value is None:
        if len(_hash_cache) > 2_000_000:
            _hash_cache.clear()
        value = _hash_cache[token] = zlib.crc32(token.encode())
    return value


def minhash(words: set[str]) -> np.ndarray:
    """The MinHash signature of a word set: `NUM_PERM` unsigned 32-bit minima of (a·h + b) mod p.
    An empty set gets a signature of its own (all 2^32 - 1), equal only to another empty set's."""
    if not words:
        return np.full(NUM_PERM, 2**32 - 1, dtype=np.uint32)
    hashes = np.fromiter((_token_hash(w) for w in words), dtype=np.uint64, count=len(words))
    values = (np.outer(hashes, _A) + _B) % _PRIME
    return values.min(axis=0).astype(np.uint32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The Jaccard similarity estimated from two signatures (the share of equal minima)."""
    return float(np.count_nonzero(a == b)) / NUM_PERM


# ---------------------------------------------------------------- grouping


@dataclass
class Item:
    """One task or trajectory as grouping sees it. `key` must be equal for two items to be
    duplicates (toolset plus values, or toolset plus calls); `rank` orders a group's members, the
    smallest becomes its representative."""

    id: str
    key: str
    signature: np.ndarray
    rank: tuple[Any, ...]
    run_id: str | None = None


@dataclass
class DuplicateGroup:
    kind: Kind
    representative: str
    members: list[str]  # the representative first, then the rest in rank order
    similarity: dict[str, float] = field(default_factory=dict)  # member -> estimated Jaccard to the representative
    runs: dict[str, str | None] = field(default_factory=dict)  # member -> its run_id

    @property
    def id(self) -> str:
        return content_id("dup", self.kind, sorted(self.members))

    @property
    def left_out(self) -> list[str]:
        return self.members[1:]


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def group_items(items: list[Item], threshold: float, kind: Kind) -> list[DuplicateGroup]:
    """Groups of two or more items with equal keys whose signatures agree on at least `threshold`
    (joined transitively), each led by its smallest-ranked member. One band at a time, so the
    buckets in memory are one per item, not one per item and band."""
    rows = NUM_PERM // BANDS
    uf = _UnionFind(len(items))
    keys = [hash(item.key) for item in items]
    for band in range(BANDS):
        buckets: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            bucket = hash((keys[i], item.signature[band * rows:(band + 1) * rows].tobytes()))
            leaders = buckets.get(bucket)
            if leaders is None:
                buckets[bucket] = [i]
                continue
            for j in leaders:
                if uf.find(i) == uf.find(j):
                    break
                if items[j].key == item.key and similarity(item.signature, items[j].signature) >= threshold:
                    uf.union(i, j)
                    break
            else:
                if len(leaders) < MAX_LEADERS:
                    leaders.append(i)
    members: dict[int, list[int]] = {}
    for i in range(len(items)):
        members.setdefault(uf.find(i), []).append(i)
    groups = []
    for idx in members.values():
        if len(idx) < 2:
            continue
        idx.sort(key=lambda i: items[i].rank)
        rep = items[idx[0]]
        groups.append(DuplicateGroup(kind, rep.id, [items[i].id for i in idx],
                                     {items[i].id: similarity(rep.signature, items[i].signature) for i in idx},
                                     {items[i].id: items[i].run_id for i in idx}))
    groups.sort(key=lambda g: g.representative)
    return groups


# ---------------------------------------------------------------- reading the dataset


def _toolset_key(tool_ids: Any, fallback: str | None) -> str:
    ids = json_value(tool_ids, None)
    if isinstance(ids, list) and ids:
        return canonical_json(sorted(str(i) for i in ids))
    return f"agent:{fallback}"


# Plain scans, paged by id; the agents' toolsets and the verdicts are read once beside them (a join
# per page recomputed the latest judgments 50 times over on 100,000 trajectories).
_TASKS_SQL = "SELECT id, run_id, goal, agent_id, status = 'accepted' AS ok, created_at FROM tasks"
_TRAJECTORIES_SQL = "SELECT id, run_id, messages, agent_id, created_at FROM trajectories"


def _digest(key: str) -> str:
    """A grouping key kept as its digest: keys are only compared, and a trajectory's (its toolset
    and every call's arguments) can run to kilobytes."""
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def task_item(row: dict[str, Any]) -> Item:
    """A `tasks` row (with its agent's `tool_ids`) as an Item."""
    goal = str(row.get("goal") or "")
    key = _digest(_toolset_key(row.get("tool_ids"), row.get("agent_id")) + canonical_json(sorted(stated_values(goal))))
    return Item(row["id"], key, minhash(content_words(goal)), _rank(row), row.get("run_id"))


def trajectory_item(row: dict[str, Any]) -> Item:
    """A `trajectories` row (with its agent's `tool_ids`) as an Item: keyed by toolset and calls,
    signed by the words of its user and assistant messages."""
    messages = [m for m in json_value(row.get("messages"), []) or [] if isinstance(m, dict)]
    calls = [(c.name, c.arguments if c.arguments is not None else c.arguments_text)
             for c in iter_tool_calls(messages)]
    words: set[str] = set()
    for m in messages:
        if m.get("role") in ("user", "assistant"):
            words |= content_words(message_content(m.get("content")))
    # The verdict is part of the key: a rejected near-copy of an accepted trajectory differs from it in
    # what made it wrong (a negative worth keeping), while two accepted near-copies teach the same thing.
    key = _digest(_toolset_key(row.get("tool_ids"), row.get("agent_id")) + canonical_json([bool(row.get("ok")), calls]))
    return Item(row["id"], key, minhash(words), _rank(row), row.get("run_id"))


def _rank(row: dict[str, Any]) -> tuple[Any, ...]:
    created = row.get("created_at")
    return (not row.get("ok"), created is None, str(created or ""), row["id"])


def find_duplicates(db: str | Path) -> dict[Kind, list[DuplicateGroup]]:
    """Every near-duplicate group of tasks and of trajectories in the dataset at `db` (read-only)."""
    with connect_readonly(db) as con:
        toolsets = dict(con.execute("SELECT id, tool_ids FROM agents").fetchall())
        accepted = {r[0] for r in con.execute("SELECT trajectory_id FROM latest_judgments WHERE accepted").fetchall()}
    tasks = [task_item({**r, "tool_ids": toolsets.get(r["agent_id"])})
             for r in iter_rows(db, _TASKS_SQL, "id", page_size=PAGE_SIZE)]
    task_groups = group_items(tasks, TASK_THRESHOLD, "task")
    del tasks
    trajectories = [trajectory_item({**r, "tool_ids": toolsets.get(r["agent_id"]), "ok": r["id"] in accepted})
                    for r in iter_rows(db, _TRAJECTORIES_SQL, "id", page_size=PAGE_SIZE)]
    return {"task": task_groups, "trajectory": group_items(trajectories, TRAJECTORY_THRESHOLD, "trajectory")}


# ---------------------------------------------------------------- storing


@dataclass
class DedupSummary:
    """What `dedup_dataset` stored: groups and members left out, per kind."""

    groups: dict[str, int]
    left_out: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "left_out": self.left_out}


def duplicate_rows(groups: Iterable[DuplicateGroup]) -> list[dict[str, Any]]:
    """One `duplicates` row per member of each group."""
    return [{"id": member, "run_id": g.runs.get(member), "kind": g.kind, "group_id": g.id,
             "representative_id": g.representative, "is_representative": member == g.representative,
             "similarity": round(g.similarity.get(member, 1.0), 4), "group_size": len(g.members)}
            for g in groups for member in g.members]


def store_duplicates(db: str | Path, groups: dict[Kind, list[DuplicateGroup]]) -> None:
    """Replace the `duplicates` table with `groups` (one read-write transaction: a reader sees the
    old groups or the new ones, never none)."""
    Dataset(db).replace("duplicates", duplicate_rows(g for gs in groups.values() for g in gs))


def dedup_dataset(db: str | Path) -> DedupSummary:
    """Find the near-duplicate groups of the dataset at `db` and store them (see module docstring)."""
    groups = find_duplicates(db)
    store_duplicates(db, groups)
    return DedupSummary(groups={k: len(v) for k, v in groups.items()},
                        left_out={k: sum(len(g.left_out) for g in v) for k, v in groups.items()})
