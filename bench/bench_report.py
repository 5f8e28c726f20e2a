"""Time and peak memory of `synth dedup`, `synth report` and `synth stats` on a generated dataset
(100,000 trajectories by default).

The dataset is generated with DuckDB SQL in seconds: `--tools` tools over 60 taxonomy domains
(a fifth of them "real" MCP tools), agents of four tools of one domain, two tasks per agent (a tenth
rejected), `--trajectories` trajectories of five messages with one tool call each (about a third
accepted, the others failing one check), one judgment each plus a re-judgment of every tenth, five
model-call rows per trajectory, and reworded copies of every 50th task and every 60th trajectory
(the near-duplicates `synth dedup` must find). Each command then runs in a fresh process, and its wall time
and peak resident memory (the child's `ru_maxrss`) are printed.

    python bench/bench_report.py [--trajectories N] [--db PATH] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VERBS = ["get", "list", "create", "update", "delete", "search", "cancel", "book", "send", "track"]
NOUNS = ["order", "invoice", "flight", "ticket", "event", "note", "payment", "shipment", "forecast", "account",
         "customer", "report", "booking", "message", "product", "review", "playlist", "route", "policy", "claim"]
_WORDS_TEXT = """fast reliable secure daily weekly detailed summary status history balance price stock region city
date user team project priority owner label tag filter limit page currency amount language format channel"""
WORDS = _WORDS_TEXT.split()
assert len(VERBS) == 10 and len(NOUNS) == 20 and len(WORDS) == 30


def _checks_variants() -> list[tuple[str, str, str]]:
    """(checks JSON, failed_checks JSON, reasons JSON) for every check failing alone, then all passing."""
    from synth.judges.checks import CHECK_NAMES

    out = []
    for failing in [*CHECK_NAMES, None]:
        checks = [{"name": c, "passed": c != failing, "detail": f"{c} failed on message 3" if c == failing else ""}
                  for c in CHECK_NAMES]
        failed = [failing] if failing else []
        reasons = [f"check {failing}: {failing} failed on message 3 (call_0_0_0)"] if failing else []
        out.append((json.dumps(checks), json.dumps(failed), json.dumps(reasons)))
    return out


def generate(db: Path, trajectories: int, tools: int) -> float:
    """Write the dataset (see the module docstring); returns seconds taken."""
    import duckdb

    from synth.domains import load_taxonomy
    from synth.store import Dataset

    started = time.perf_counter()
    Dataset(db)  # the schema

    taxonomy = load_taxonomy()
    domains = [d.name for d in taxonomy.domains][::6][:60]
    agents = max(trajectories // 5, 1)
    tasks = agents * 2
    con = duckdb.connect(str(db))
    con.execute("CREATE TEMP TABLE vocab AS SELECT ?::VARCHAR[] AS verbs, ?::VARCHAR[] AS nouns, "
                "?::VARCHAR[] AS words, ?::VARCHAR[] AS domains", [VERBS, NOUNS, WORDS, domains])
    variants = _checks_variants()
    con.execute("CREATE TEMP TABLE variants (k INTEGER, checks JSON, failed JSON, reasons JSON)")
    con.executemany("INSERT INTO variants VALUES (?, ?, ?, ?)", [[k, *v] for k, v in enumerate(variants)])
    n_var = len(variants)
    nd = len(domains)
    con.execute(f"""
        INSERT INTO tools (id, run_id, domain, application, name, description, input_schema, output_schema,
                           side_effect, error_modes, source, provenance, status, reason, created_at)
        SELECT 'tool_' || i, 'run_bench', domains[1 + i % {nd}], 'app' || (i % 7),
               verbs[1 + (i // {nd}) % 10] || '_' || nouns[1 + (i * 7) % 20] || '_' || i,
               'Tool to ' || verbs[1 + (i // {nd}) % 10] || ' the ' || nouns[1 + (i * 7) % 20] || ' with ' ||
               words[1 + i % 30] || ' ' || words[1 + (i * 3) % 30] || ' ' || words[1 + (i * 11) % 30] || ' in ' ||
               replace(domains[1 + i % {nd}], '_', ' '),
               json_object('type', 'object', 'properties',
                           json_object(nouns[1 + (i * 7) % 20] || '_id', json_object('type', 'string'),
                                       words[1 + i % 30], json_object('type', 'string'))),
               NULL, CASE WHEN i % 3 = 0 THEN 'write' ELSE 'read' END, '[]',
               CASE WHEN i % 5 = 0 THEN 'mcp' ELSE 'synthetic' END, '{{}}', 'accepted', NULL,
               TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND
        FROM range({tools}) r(i), vocab""")
    per_domain = tools // nd
    con.execute(f"""
        INSERT INTO agents (id, run_id, domain, name, system_prompt, tool_ids, traits, status, reason, created_at,
                            policy_source)
        SELECT 'agent_' || a, 'run_bench', domains[1 + a % {nd}], 'agent ' || a,
               'You are a ' || replace(domains[1 + a % {nd}], '_', ' ') || ' assistant.',
               to_json([ 'tool_' || (a % {nd} + {nd} * ((a * 7 + j * 13) % {per_domain})) FOR j IN range(4)]),
               '{{}}', 'accepted', NULL, TIMESTAMP '2026-01-02' + INTERVAL (a) SECOND, 'code'
        FROM range({agents}) r(a), vocab""")
    con.execute(f"""
        INSERT INTO tasks (id, run_id, agent_id, domain, kind, difficulty, goal, persona, withheld, initial_state,
                           rubric, status, reason, created_at, goal_source)
        SELECT 'task_' || k, 'run_bench', 'agent_' || (k % {agents}), domains[1 + (k % {agents}) % {nd}],
               'tool', 'easy',
               'Please ' || verbs[1 + k % 10] || ' ' || nouns[1 + (k * 3) % 20] || ' ' || nouns[1 + k % 20][1:3] ||
               '-' || k || ' for the ' || words[1 + k % 30] || ' ' || words[1 + (k * 7) % 30] || ' team.',
               '{{}}', '[]', '{{}}', '{{"success_criteria": ["done"]}}',
               CASE WHEN k % 10 = 9 THEN 'rejected' ELSE 'accepted' END,
               CASE WHEN k % 10 = 9 THEN 'goal ''x'' is too short (1 word(s))' END,
               TIMESTAMP '2026-01-03' + INTERVAL (k) SECOND, 'model'
        FROM range({tasks}) r(k), vocab""")
    # Every 50th task again, its goal reworded (same agent, same values): a near-duplicate task.
    con.execute("""
        INSERT INTO tasks (id, run_id, agent_id, domain, kind, difficulty, goal, persona, withheld, initial_state,
                           rubric, status, reason, created_at, goal_source)
        SELECT id || '_copy', run_id, agent_id, domain, kind, difficulty,
               replace(replace(goal, 'Please ', 'Could you '), ' for the ', ' please, it is for our '),
               persona, withheld, initial_state, rubric, status, reason, created_at + INTERVAL 1 DAY, goal_source
        FROM tasks WHERE CAST(split_part(id, '_', 2) AS BIGINT) % 50 = 0""")
    message = """to_json([
        {{'role': 'system', 'content': 'You are a helpful assistant.', 'tool_calls': NULL, 'tool_call_id': NULL}},
        {{'role': 'user', 'content': {user}, 'tool_calls': NULL, 'tool_call_id': NULL}},
        {{'role': 'assistant', 'content': '', 'tool_calls': [{{'id': 'call_0_0_0', 'type': 'function',
          'function': {{'name': tl.name, 'arguments': '{{"id": "' || {value} || '"}}'}}}}], 'tool_call_id': NULL}},
        {{'role': 'tool', 'content': '{{"id": "' || {value} || '", "status": "ok", "total": ' || (t % 997) || '}}',
          'tool_calls': NULL, 'tool_call_id': 'call_0_0_0'}},
        {{'role': 'assistant', 'content': {reply}, 'tool_calls': NULL, 'tool_call_id': NULL}}])"""
    value = "nouns[1 + k % 20][1:3] || '-' || t"
    original = message.format(
        value=value, user="'Hi, can you ' || verbs[1 + k % 10] || ' my ' || nouns[1 + (k * 3) % 20] || ' ' || "
                          f"{value} || ' please? It is for the ' || words[1 + k % 30] || ' team.'",
        reply=f"'Done: ' || nouns[1 + (k * 3) % 20] || ' ' || {value} || ' is ok, total ' || (t % 997) || '.'")
    reworded = message.format(
        value=value, user="'Hello! Please ' || verbs[1 + k % 10] || ' the ' || nouns[1 + (k * 3) % 20] || ' ' || "
                          f"{value} || ' for me, for the ' || words[1 + k % 30] || ' team.'",
        reply=f"'All done, ' || nouns[1 + (k * 3) % 20] || ' ' || {value} || ' is ok; the total is ' || (t % 997)")
    base = f"""
        SELECT t, t % {tasks} AS k, 'agent_' || ((t % {tasks}) % {agents}) AS agent_id,
               t % 3 = 0 AS accepted FROM range({trajectories}) r(t)"""
    for label, body, where in (("", original, ""), ("_copy", reworded, f"WHERE t % 60 = 0 AND t + 1 < {trajectories}")):
        con.execute(f"""
            INSERT INTO trajectories (id, run_id, task_id, agent_id, domain, messages, tools, steps, state_log,
                                      final_state, termination, n_turns, n_tool_calls, prompt_tokens,
                                      completion_tokens, created_at, seed)
            SELECT 'traj_' || t || '{label}', 'run_bench', 'task_' || k, b.agent_id,
                   domains[1 + (k % {agents}) % {nd}], {body}, '[]', '[]', '[]', '{{}}', 'user_done', 1, 1,
                   300 + t % 200, 80 + t % 50, TIMESTAMP '2026-01-04' + INTERVAL (t) SECOND, t
            FROM ({base}) b JOIN agents a ON a.id = b.agent_id
            JOIN tools tl ON tl.id = a.tool_ids->>0, vocab {where}""")
    con.execute(f"""
        INSERT INTO judgments (id, run_id, trajectory_id, task_id, accepted, score, checks, failed_checks, criteria,
                               reasons, judge, created_at, well_formed)
        SELECT 'judg_' || tr.id, 'run_bench', tr.id, tr.task_id, v.k = {n_var - 1}, CASE WHEN v.k = {n_var - 1}
               THEN 1.0 ELSE 0.4 END, v.checks, v.failed, '[]', v.reasons,
               '{{"vote": "advisory", "model": "bench-judge", "vote_reason": "no calibration stored"}}',
               TIMESTAMP '2026-01-05' + INTERVAL (tr.seed) SECOND, v.k > 4
        FROM trajectories tr JOIN variants v
          ON v.k = CASE WHEN tr.seed % 3 = 0 THEN {n_var - 1} ELSE tr.seed % {n_var - 1} END""")
    con.execute("""
        INSERT INTO judgments (id, run_id, trajectory_id, task_id, accepted, score, checks, failed_checks, criteria,
                               reasons, judge, created_at, well_formed)
        SELECT 'judg2_' || trajectory_id, run_id, trajectory_id, task_id, accepted, score, checks, failed_checks,
               criteria, reasons, '{"vote": "off"}', created_at + INTERVAL 1 DAY, well_formed
        FROM judgments WHERE hash(trajectory_id) % 10 = 0""")
    roles = ["generator", "user", "agent", "environment", "judge"]
    con.execute("CREATE TEMP TABLE roles AS SELECT ?::VARCHAR[] AS r", [roles])
    con.execute(f"""
        INSERT INTO llm_calls (id, run_id, role, model, endpoint, prompt_tokens, completion_tokens, latency_s, retries,
                               structured_attempts, cache_hit, ok, error, created_at, cached_prompt_tokens)
        SELECT 'call_' || c, 'run_bench', r[1 + c % 5], 'bench-model', 'http://x/v1', 200 + c % 300, 40 + c % 90,
               0.2 + (c % 17) / 10.0, 0, 1, c % 11 = 0, c % 97 <> 0, NULL,
               TIMESTAMP '2026-01-06' + INTERVAL (c) SECOND, 0
        FROM range({trajectories * 5}) x(c), roles""")
    con.execute("INSERT INTO runs (id, run_id, started_at, status, domains, target_trajectories, config, usage) "
                "VALUES ('run_bench', 'run_bench', now(), 'finished', ?, ?, '{}', '{}')",
                [json.dumps(domains), trajectories])
    con.close()
    return time.perf_counter() - started


def measure(label: str, argv: list[str]) -> dict[str, float]:
    """Run `python -m synth ARGV` in a fresh process; its wall time and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "synth", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    out, err = proc.stdout.read() if proc.stdout else "", proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label} failed:\n{err[-3000:]}")
    peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    print(f"{label:<28} {elapsed:7.1f} s   peak RSS {peak_mb:7.0f} MB   {out.strip()[:160]}", flush=True)
    return {"seconds": round(elapsed, 1), "peak_rss_mb": round(peak_mb)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=100_000)
    parser.add_argument("--tools", type=int, default=6_000)
    parser.add_argument("--db", default=None, help="Reuse (or create) this dataset file.")
    parser.add_argument("--keep", action="store_true", help="Keep the generated files.")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_report_"))
    db = Path(args.db) if args.db else workdir / "bench.duckdb"
    if args.generate_only:
        seconds = generate(db, args.trajectories, args.tools)
        print(f"generated {db} ({db.stat().st_size / 1e6:.0f} MB) in {seconds:.1f} s", flush=True)
        return
    if not db.exists():
        # In its own process: a child forked from a parent that grew while generating would count the
        # parent's pages in its peak RSS.
        subprocess.run([sys.executable, __file__, "--generate-only", "--db", str(db), "--trajectories",
                        str(args.trajectories), "--tools", str(args.tools)], check=True)
    results = {
        "dedup": measure("synth dedup", ["dedup", "--db", str(db)]),
        "stats": measure("synth stats --json", ["stats", "--db", str(db), "--json"]),
        "report": measure("synth report", ["report", "--db", str(db), "--out", str(workdir / "report.html")]),
    }
    size = (workdir / "report.html").stat().st_size
    print(f"report: {workdir / 'report.html'} ({size / 1e6:.1f} MB)")
    print(json.dumps({"trajectories": args.trajectories, **results}))
    if not args.keep and not args.db:
        for path in workdir.iterdir():
            if path.suffix != ".html":
                path.unlink()


if __name__ == "__main__":
    main()
