"""The DuckDB dataset: table definitions, the single writer, and a lock-tolerant reader.

DuckDB lets one process hold a file for writing and then refuses every other process, even
read-only ones. So the writer (`Dataset`) buffers rows in memory and holds the file only while it
flushes a batch (`flush()` opens, inserts with `ON CONFLICT DO NOTHING`, closes). Between flushes
a notebook can open the file; `connect_readonly` retries while a flush holds the lock.

Every table has an `id` primary key (a content hash, see `synth.ids`), a `run_id`, and nested
data as JSON. Inserting a row whose id exists is a no-op: re-running work never duplicates rows.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from synth.models import Calibration, Judgment, Task, ToolSpec, Trajectory

# Column name -> DuckDB type, per table. JSON columns take any JSON-serialisable Python value.
TABLES: dict[str, dict[str, str]] = {
    "runs": {
        "id": "VARCHAR PRIMARY KEY", "run_id": "VARCHAR", "started_at": "TIMESTAMP",
        "finished_at": "TIMESTAMP", "status": "VARCHAR", "domains": "JSON", "target_trajectories": "INTEGER",
        "config": "JSON", "usage": "JSON",
    },
    "tools": {
        "id": "VARCHAR PRIMARY KEY", "run_id": "VARCHAR", "domain": "VARCHAR", "application": "VARCHAR",
        "name": "VARCHAR", "description": "VARCHAR", "input_schema": "JSON", "output_schema": "JSON",
        "side_effect": "VARCHAR", "error_modes": "JSON", "source": "VARCHAR", "provenance": "JSON",
        "status": "VARCHAR", "reason": "VARCHAR", "created_at": "TIMESTAMP",
    },
    "agents": {
        "id": "VARCHAR PRIMARY KEY", "run_id": "VARCHAR", "domain": "VARCHAR", "name": "VARCHAR",
        "system_prompt": "VARCHAR", "tool_ids": "JSON", "traits": "JSON", "status": "VARCHAR",
        "reason": "VARCHAR", "created_at": "TIMESTAMP", "policy_source": "VARCHAR",
    },
    "tasks": {
        "id": "VARCHAR PRIMARY KEY", "run_id": "VARCHAR", "agent_id": "VARCHAR", "domain": "VARCHAR",
        "kind": "VARCHAR", "difficulty": "VARCHAR", "goal": "VARCHAR", "persona": "JSON",
        "withheld": "JSON", "initial_state": "JSON", "rubric": "JSON", "status": "VARCHAR",
        "reason": "VARCHAR", "created_at": "TIMESTAMP", "goal_source": "VARCHAR",
    },
    "trajectories": {
        "id": "VARCHAR PRIMARY KEY", "run_id": "VARCHAR", "task_id": "VARCHAR", "agent_id": "VARCHAR",
        "domain": "VARCHAR", "messages": "JSON", "tools": "JSON", "steps": "JSON", "state_log": "JSON",
        "final_state": "JSON", "termination": "VARCHAR", "n_turns": "INTEGER", "n_tool_calls": "INTEGER",
        "prompt_tokens": "BIGINT", "completion_tokens": "BIGINT", "created_at": "TIMESTAMP", "seed": "BIGINT",
        "rollout_index": "INTEGER", "agent_model": "VARCHAR",
    },
    "judgments": {
        "id": "VARCHAR PRIMARY KEY", "run_id": "VARCHAR", "trajectory_id": "VARCHAR", "task_id": "VARCHAR",
        "accepted": "BOOLEAN", "score": "DOUBLE", "checks": "JSON", "failed_checks": "JSON",
        "criteria": "JSON", "reasons": "JSON", "judge": "JSON", "created_at": "TIMESTAMP",
        "well_formed": "BOOLEAN",
    },
    # Reports of `synth judge calibrate`: what decides whether a judge model's verdict has a vote.
    "calibrations": {
        "id": "VARCHAR PRIMARY KEY", "run_id": "VARCHAR", "judge_model": "VARCHAR", "policy": "JSON",
        "kinds": "JSON", "n_good": "INTEGER", "judge_recall": "DOUBLE", "judge_precision": "DOUBLE",
        "created_at": "TIMESTAMP",
    },
    # Near-duplicate groups of tasks and trajectories (`synth.duplicates`): one row per member of a
    # group of two or more, `id` the member's id; rewritten whole by `synth dedup` and at the end of a run.
    "duplicates": {
        "id": "VARCHAR PRIMARY KEY", "run_id": "VARCHAR", "kind": "VARCHAR", "group_id": "VARCHAR",
        "representative_id": "VARCHAR", "is_representative": "BOOLEAN", "similarity": "DOUBLE",
        "group_size": "INTEGER", "created_at": "TIMESTAMP",
    },
    "llm_calls": {
        "id": "VARCHAR PRIMARY KEY", "run_id": "VARCHAR", "role": "VARCHAR", "model": "VARCHAR",
        "endpoint": "VARCHAR", "prompt_tokens": "INTEGER", "completion_tokens": "INTEGER",
        "latency_s": "DOUBLE", "retries": "INTEGER", "structured_attempts": "INTEGER",
        "cache_hit": "BOOLEAN", "ok": "BOOLEAN", "error": "VARCHAR", "created_at": "TIMESTAMP",
        "cached_prompt_tokens": "INTEGER", "finish_reason": "VARCHAR",
    },
}

# A trajectory may be judged again (another policy, `synth judge run`): its latest judgment is the
# one that counts, in every view, statistic and export. Re-storing a judgment refreshes its
# `created_at` (`Dataset.upsert_many`), so re-applying an earlier policy makes it the latest again.
LATEST_JUDGMENTS_SQL = """
    SELECT * EXCLUDE (rn) FROM (
        SELECT j.*, row_number() OVER (PARTITION BY j.trajectory_id
                                       ORDER BY j.created_at DESC NULLS LAST, j.id DESC) AS rn
        FROM judgments j
    ) WHERE rn = 1
"""

VIEWS = {
    # One judgment per trajectory: its latest.
    "latest_judgments": LATEST_JUDGMENTS_SQL,
    # One accepted trajectory per row (by its latest judgment), in the shape SFT exporters need.
    "accepted_sft": """
        SELECT t.id AS trajectory_id, t.run_id, t.domain, t.task_id, t.agent_id, t.messages, t.tools,
               j.score, j.id AS judgment_id, j.well_formed
        FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id
        WHERE j.accepted
    """,
    # Every accepted task with what rubric-reward RL needs to roll it out again, and how many of
    # its trajectories were judged and accepted (by their latest judgment).
    "rl_tasks": """
        SELECT k.id AS task_id, k.run_id, k.domain, k.agent_id, a.system_prompt, a.tool_ids,
               k.goal, k.persona, k.withheld, k.initial_state, k.rubric, k.difficulty, k.kind,
               coalesce(c.n_judged, 0) AS n_judged, coalesce(c.n_accepted, 0) AS n_accepted
        FROM tasks k JOIN agents a ON a.id = k.agent_id
        LEFT JOIN (SELECT t.task_id, count(*) AS n_judged, count(*) FILTER (WHERE j.accepted) AS n_accepted
                   FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id GROUP BY 1
                  ) c ON c.task_id = k.id
        WHERE k.status = 'accepted'
    """,
    # How hard each task is for each agent model: of its judged rollouts (`[rollout] per_task`),
    # the share accepted (and well formed), by their latest judgments. Rows stored before the
    # rollout_index column existed count as rollout 0.
    "task_pass_rates": """
        SELECT t.task_id, t.run_id, t.agent_model, any_value(t.domain) AS domain, count(*) AS k,
               count(*) FILTER (WHERE j.accepted) AS n_accepted,
               count(*) FILTER (WHERE j.well_formed) AS n_well_formed,
               count(*) FILTER (WHERE j.accepted) / count(*) AS pass_rate,
               count(*) FILTER (WHERE j.well_formed) / count(*) AS well_formed_rate
        FROM trajectories t JOIN latest_judgments j ON j.trajectory_id = t.id
        GROUP BY t.task_id, t.run_id, t.agent_model
    """,
}

# The structural checks behind `judgments.well_formed` (synth.models.WELL_FORMED_CHECKS), for
# back-filling rows stored before the column existed.
_WELL_FORMED_SQL = (
    "NOT list_has_any(from_json(failed_checks, '[\"VARCHAR\"]'), "
    "['tools_exist', 'arguments_valid', 'calls_answered', 'final_reply', 'no_fabrication'])"
)

JSON_COLUMNS = {t: {c for c, ty in cols.items() if ty == "JSON"} for t, cols in TABLES.items()}


def json_value(value: Any, default: Any) -> Any:
    """A JSON column's value as Python: DuckDB hands JSON back as text; `default` for NULL or
    text that is not JSON (a reader never fails on one bad cell)."""
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


_ROWS_PER_INSERT = 100
# Rows per scanned batch: within DuckDB's sample for typing a Python object column.
_ROWS_PER_SCAN = 1000
# Below this many rows a flush binds VALUES: registering a scan costs more than it saves.
_SCAN_FROM_ROWS = 50


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text


# The writer's DuckDB threads. Its flushes run beside the run's event loop (a thread of the same
# process), and each ends in a checkpoint that rewrites the trailing rows of `trajectories`; with
# one thread that checkpoint holds less at once. On this 2-core machine, 2,000 fake-backend
# episodes peaked at 177-183 MiB against 200's 156-159 (x1.12-1.17; with DuckDB's default of 2
# threads x1.21-1.27), and orchestration went from 422-461 to 476 calls/s (`bench_pipeline.py
# memory` and `throughput`).
_WRITER_THREADS = 1


def _connect(path: Path, read_only: bool, timeout_s: float) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting while another process holds it (a writer mid-flush). A read-write
    connection is the writer's, set to `_WRITER_THREADS` once open (a `config` at connect would
    refuse to share the file with a connection of this process opened without it); readers keep
    DuckDB's default."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            if not read_only:
                con.execute(f"SET threads = {_WRITER_THREADS}")
            return con
        except duckdb.Error as exc:
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)


def connect_readonly(path: str | Path, timeout_s: float = 30.0) -> duckdb.DuckDBPyConnection:
    """A read-only connection for notebooks and `synth stats`, retried while a run flushes.

    Close it promptly (or use `with`): while it is open the writer's next flush waits.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path}")
    return _connect(path, True, timeout_s)


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables and views, and migrate a dataset written by an older synth: columns added
    since are added (`judgments.well_formed` back-filled from `failed_checks`), views replaced."""
    for table, cols in TABLES.items():
        body = ", ".join(f"{name} {ty}" for name, ty in cols.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
        have = {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
        for name, ty in cols.items():
            if name not in have:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {ty.replace(' PRIMARY KEY', '')}")
    con.execute(f"UPDATE judgments SET well_formed = {_WELL_FORMED_SQL} WHERE well_formed IS NULL")
    for view, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {view} AS {sql}")


def needs_migration(path: str | Path) -> bool:
    """True when the dataset at `path` lacks a table, column or view of this version."""
    with connect_readonly(path) as con:
        cols = set(con.execute("SELECT table_name, column_name FROM information_schema.columns").fetchall())
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    wanted = {(t, c) for t, columns in TABLES.items() for c in columns}
    return bool(wanted - cols) or bool(set(VIEWS) - tables)


def migrate(path: str | Path) -> None:
    """Bring an existing dataset to this version's schema (a short read-write open)."""
    Dataset(path)


def _insert_new(con: duckdb.DuckDBPyConnection, pending: Mapping[str, list[list[Any]]], *, scan: bool
                ) -> dict[str, int]:
    """Insert `pending` rows (encoded, per table) whose ids are new, in one transaction; returns
    the rows inserted per table."""
    inserted: dict[str, int] = {}
    con.execute("BEGIN")
    for table, rows in pending.items():
        before = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        _insert(con, "INSERT", table, rows, "ON CONFLICT DO NOTHING", scan=scan)
        inserted[table] = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before
    con.execute("COMMIT")
    return inserted


def _insert(con: duckdb.DuckDBPyConnection, verb: str, table: str, encoded: list[list[Any]], tail: str = "",
            *, scan: bool = False) -> None:
    """`verb` (INSERT, INSERT OR REPLACE) the encoded rows into `table`.

    `scan`: as columns (NumPy object arrays) that DuckDB scans, `_ROWS_PER_SCAN` at a time, about
    6x faster than bound parameters (a flush of a fast run took 50-100 ms on the driver); its
    types are inferred from the values, so a caller falls back to `scan=False` on a type error.
    Otherwise multi-row VALUES, `_ROWS_PER_INSERT` per statement (DuckDB's executemany runs one
    statement per row, ~10x slower still)."""
    cols = list(TABLES[table])
    if scan:
        for start in range(0, len(encoded), _ROWS_PER_SCAN):
            chunk = encoded[start:start + _ROWS_PER_SCAN]
            columns = {}
            for name, column_values in zip(cols, zip(*chunk, strict=True), strict=True):
                column = np.empty(len(column_values), dtype=object)
                column[:] = column_values  # element by element: a list value stays one value
                columns[name] = column
            con.register("_synth_rows", columns)
            try:
                con.execute(f"{verb} INTO {table} BY NAME SELECT * FROM _synth_rows {tail}")
            finally:
                con.unregister("_synth_rows")
        return
    marks = ", ".join("?" for _ in cols)
    for start in range(0, len(encoded), _ROWS_PER_INSERT):
        chunk = encoded[start:start + _ROWS_PER_INSERT]
        values = ", ".join(f"({marks})" for _ in chunk)
        con.execute(f"{verb} INTO {table} ({', '.join(cols)}) VALUES {values} {tail}",
                    [v for row in chunk for v in row])


def _encode(table: str, row: Mapping[str, Any]) -> list[Any]:
    json_cols = JSON_COLUMNS[table]
    out = []
    for col in TABLES[table]:
        value = row.get(col)
        if col in json_cols and value is not None:
            value = json.dumps(value, ensure_ascii=False, default=str)
        out.append(value)
    return out


class Dataset:
    """The one writer of a dataset file. Thread-safe; rows wait in memory until `flush()`.

    `flush_every` rows (or an explicit flush) trigger a write; None: explicit flushes only (a
    `synth run` driver, which flushes on a timer, in a thread). Rows are validated against the
    table's columns on `add`, so a typo fails at the call site, not at flush time.
    """

    def __init__(self, path: str | Path, *, flush_every: int | None = 200, lock_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self.lock_timeout_s = lock_timeout_s
        self._pending: dict[str, list[list[Any]]] = {t: [] for t in TABLES}
        self._count = 0
        self._auto_inserted: dict[str, int] = {}
        self._lock = threading.Lock()
        # One writer at a time: the driver flushes from a thread while its loop may reach
        # `flush_every` in `add` and write too.
        self._write_lock = threading.RLock()
        with self.connect() as con:
            create_schema(con)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A short-lived read-write connection; close it soon (others are locked out meanwhile)."""
        return _connect(self.path, False, self.lock_timeout_s)

    def add(self, table: str, row: Mapping[str, Any]) -> None:
        unknown = set(row) - set(TABLES[table])
        if unknown:
            raise KeyError(f"table {table} has no column(s) {sorted(unknown)}")
        if "id" not in row or not row["id"]:
            raise KeyError(f"a {table} row needs an id")
        encoded = _encode(table, {"created_at": now(), **row} if "created_at" in TABLES[table] else row)
        with self._lock:
            self._pending[table].append(encoded)
            self._count += 1
            due = self.flush_every is not None and self._count >= self.flush_every
        if due:
            written = self._write()
            with self._lock:
                for table, n in written.items():
                    self._auto_inserted[table] = self._auto_inserted.get(table, 0) + n

    def add_many(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.add(table, row)

    def flush(self) -> dict[str, int]:
        """Write every pending row; returns rows actually inserted per table (new ids only) since
        the previous `flush()`, counting batches that `add` wrote on its own at `flush_every`."""
        inserted = self._write()
        with self._lock:
            carried, self._auto_inserted = self._auto_inserted, {}
        for table, n in carried.items():
            inserted[table] = inserted.get(table, 0) + n
        return inserted

    def _write(self) -> dict[str, int]:
        with self._write_lock:
            return self._write_pending()

    def _write_pending(self) -> dict[str, int]:
        with self._lock:
            pending = {t: rows for t, rows in self._pending.items() if rows}
            self._pending = {t: [] for t in TABLES}
            self._count = 0
        if not pending:
            return {}
        with self.connect() as con:
            try:
                return _insert_new(con, pending, scan=sum(map(len, pending.values())) >= _SCAN_FROM_ROWS)
            except duckdb.Error:
                # A column the scan typed differently from its table (mixed values): the same rows
                # again as bound parameters, which DuckDB casts one by one.
                con.execute("ROLLBACK")
                return _insert_new(con, pending, scan=False)

    def upsert(self, table: str, row: Mapping[str, Any]) -> None:
        """Replace a row by id (for rows that change: a run's status and finish time)."""
        self.flush()
        cols = list(TABLES[table])
        values = _encode(table, row)
        marks = ", ".join("?" for _ in cols)
        with self._write_lock, self.connect() as con:
            con.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({marks})", values)

    def upsert_many(self, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace rows by id, refreshing `created_at` (a re-judged trajectory's judgment
        becomes its latest even when an identical one was stored before). Returns rows written."""
        self.flush()
        encoded = [_encode(table, {**row, "created_at": now()} if "created_at" in TABLES[table] else row)
                   for row in rows]
        if not encoded:
            return 0
        with self._write_lock, self.connect() as con:
            con.execute("BEGIN")
            _insert(con, "INSERT OR REPLACE", table, encoded)
            con.execute("COMMIT")
        return len(encoded)

    def replace(self, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Replace every row of `table` with `rows` in one transaction (readers see the old rows or
        the new ones, never none); for tables recomputed whole, like `duplicates`. Returns rows written."""
        self.flush()
        stamp = now()
        encoded = [_encode(table, {**row, "created_at": stamp} if "created_at" in TABLES[table] else row)
                   for row in rows]
        with self._write_lock, self.connect() as con:
            con.execute("BEGIN")
            con.execute(f"DELETE FROM {table}")
            _insert(con, "INSERT", table, encoded)
            con.execute("COMMIT")
        return len(encoded)

    def existing_ids(self, table: str, where: str = "", params: list[Any] | None = None) -> set[str]:
        self.flush()
        sql = f"SELECT id FROM {table}" + (f" WHERE {where}" if where else "")
        with self.connect() as con:
            return {r[0] for r in con.execute(sql, params or []).fetchall()}

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        self.flush()
        with self.connect() as con:
            return con.execute(sql, params or []).fetchall()


# ---------------------------------------------------------------- typed reads


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description or []]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def read_judgments(path: str | Path, *, latest: bool = True) -> list[tuple[str, Judgment]]:
    """(row id, Judgment) of every judgment, or of each trajectory's latest one."""
    with connect_readonly(path) as con:
        rows = _rows(con, f"SELECT * FROM {'latest_judgments' if latest else 'judgments'} ORDER BY id")
    return [(r["id"], Judgment.from_row(r)) for r in rows]


def _tools_of_agents(con: duckdb.DuckDBPyConnection, agent_ids: set[str]) -> dict[str, list[ToolSpec]]:
    """Each agent's toolset from the `tools` table (which keeps `side_effect`, unlike the OpenAI
    tool list stored with a trajectory)."""
    if not agent_ids:
        return {}
    marks = ", ".join("?" for _ in agent_ids)
    agents = _rows(con, f"SELECT id, tool_ids FROM agents WHERE id IN ({marks})", sorted(agent_ids))
    wanted = {a["id"]: json.loads(a["tool_ids"] or "[]") for a in agents}
    ids = sorted({t for ts in wanted.values() for t in ts})
    by_id: dict[str, ToolSpec] = {}
    if ids:
        marks = ", ".join("?" for _ in ids)
        for r in _rows(con, f"SELECT * FROM tools WHERE id IN ({marks})", ids):
            decoded = {k: (json.loads(v) if k in JSON_COLUMNS["tools"] and isinstance(v, str) else v)
                       for k, v in r.items()}
            by_id[r["id"]] = ToolSpec.from_row(decoded)
    return {a: [by_id[t] for t in ts if t in by_id] for a, ts in wanted.items()}


@dataclass
class StoredEpisode:
    """A stored trajectory with its task and toolset, as `read_episodes` returns them. `id` and
    `run_id` are the row's (link new rows to these, not to `trajectory.id`)."""

    id: str
    run_id: str | None
    task: Task
    trajectory: Trajectory
    tools: list[ToolSpec] | None  # the agent's toolset from the `tools` table, when stored there


def read_episodes(path: str | Path, *, accepted_only: bool = False, limit: int | None = None,
                  ) -> list[StoredEpisode]:
    """The stored trajectories with their tasks (only those whose latest judgment accepts them,
    with `accepted_only`), in id order."""
    where = "WHERE t.id IN (SELECT trajectory_id FROM accepted_sft)" if accepted_only else ""
    sql = f"""SELECT t.*, k.goal, k.kind, k.difficulty, k.rubric, k.initial_state, k.persona, k.withheld,
                     k.goal_source, k.agent_id AS task_agent_id, k.domain AS task_domain
              FROM trajectories t JOIN tasks k ON k.id = t.task_id {where} ORDER BY t.id"""
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with connect_readonly(path) as con:
        rows = _rows(con, sql)
        toolsets = _tools_of_agents(con, {r["agent_id"] for r in rows})
    return [StoredEpisode(id=r["id"], run_id=r["run_id"],
                          task=Task.from_row({**r, "agent_id": r["task_agent_id"], "domain": r["task_domain"]}),
                          trajectory=Trajectory.from_row(r), tools=toolsets.get(r["agent_id"]) or None)
            for r in rows]


def latest_calibration(path: str | Path, judge_model: str | None) -> Calibration | None:
    """The most recent calibration stored for `judge_model` with the LLM judge measured, or None
    (no dataset, an older dataset without the table, or none stored)."""
    if judge_model is None or not Path(path).is_file():
        return None
    with connect_readonly(path) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "calibrations" not in tables:
            return None
        rows = _rows(con, """SELECT * FROM calibrations WHERE judge_model = ? AND judge_recall IS NOT NULL
                             ORDER BY created_at DESC, id DESC LIMIT 1""", [judge_model])
    return Calibration.from_row(rows[0]) if rows else None
