"""Time `synth tools import-mcp` on the Toucan dump (870 servers, 6,044 tools) into a fresh
DuckDB file, then again (idempotent re-run). Prints timings and the report's counts.

    python bench/bench_import_mcp.py [PATH] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner

from synth.cli import app

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mcp" / "toucan_mcp_servers.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?", default=str(DEFAULT))
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "bench.duckdb"
    runner = CliRunner()
    for label in ("first import", "re-run"):
        started = time.perf_counter()
        result = runner.invoke(app, ["tools", "import-mcp", args.path, "--db", str(db), "--json"])
        elapsed = time.perf_counter() - started
        if result.exit_code != 0:
            raise SystemExit(result.output)
        report = json.loads(result.stdout)
        share = report["imported"] / max(report["tools_seen"], 1)
        print(f"{label}: {elapsed:.1f}s  seen={report['tools_seen']} imported={report['imported']} ({share:.1%}) "
              f"distinct={report['distinct_tools']} merged={report['merged_duplicates']} "
              f"repaired={report['repaired']} rejected={report['rejected']} rows_added={report['rows_added']}")
    print(f"db: {db}")


if __name__ == "__main__":
    main()
