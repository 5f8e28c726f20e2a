"""`synth report` on a main-job dataset: one self-contained HTML file whose maps and tables render in
a real browser (Debian's headless Chromium), embeddings that need nothing downloaded, and a
report that reads while a writer holds the dataset between flushes.

The dataset is what a user's first job makes: real MCP tools imported (`synth tools import-mcp`),
then `synth run` against the scripted fake backend (which also stores the near-duplicate groups).
The fake backend's random replies are all rejected, so the judged fixture trajectories of
`tests.test_dataset.build_dataset` (accepted and rejected, with model-call rows) are added to the
same file, and `synth dedup` is run again, as after a second run.
Without Chromium the browser test skips, unless SYNTH_REQUIRE_BACKEND=1 (CI), where it fails:
`scripts/install.sh` installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.llm.fake_server import FakeOpenAIServer
from synth.report import EmbeddingEndpoint, embed_texts, write_report
from synth.report.embeddings import hashed_tfidf, project_2d
from synth.stats import dataset_stats
from synth.store import connect_readonly
from tests.test_dataset import build_dataset

REAL_TOOLS = {"tools": [
    {"name": "get_current_weather", "description": "Current temperature, wind and conditions for a city.",
     "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_air_quality", "description": "Air quality index and pollutants for a city.",
     "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_sunrise_sunset", "description": "Sunrise and sunset times for a city on a date.",
     "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}, "date": {"type": "string"}},
                     "required": ["city", "date"]}},
]}
TRAJECTORIES = 6


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("SYNTH_REQUIRE_BACKEND") == "1":
        pytest.fail("headless Chromium is required (SYNTH_REQUIRE_BACKEND=1) but not installed: "
                    "scripts/install.sh installs Debian's chromium package")
    pytest.skip("chromium not installed (apt-get install chromium; scripts/install.sh does it as root)")


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("main_job")
    db = tmp / "synth.duckdb"
    config = tmp / "synth.toml"
    config.write_text(f'[run]\ntools_per_domain = 4\n[cache]\ndir = "{tmp / "cache"}"\n')
    tools_file = tmp / "weather_tools.json"
    tools_file.write_text(json.dumps(REAL_TOOLS))
    runner = CliRunner()
    imported = runner.invoke(app, ["tools", "import-mcp", str(tools_file), "--domain", "weather", "--db", str(db)])
    assert imported.exit_code == 0, imported.output
    server = FakeOpenAIServer().start()
    try:
        result = runner.invoke(app, ["run", "--domains", "weather,order_management", "--db", str(db),
                                     "--trajectories", str(TRAJECTORIES), "--config", str(config),
                                     "--base-url", server.base_url, "--no-ray", "--quiet"])
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    build_dataset(db)
    assert runner.invoke(app, ["dedup", "--db", str(db)]).exit_code == 0
    yield db


def _png_pixels(path: Path) -> tuple[int, int, np.ndarray]:
    """Width, height and RGB(A) rows of an 8-bit PNG (Chromium writes RGBA, filter per row)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    channels = 4 if colour == 6 else 3
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * channels)
    out = np.zeros((height, width * channels), dtype=np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        prev = out[y - 1] if y else np.zeros_like(line)
        if kind == 0:
            out[y] = line
        elif kind == 2:
            out[y] = (line + prev) % 256
        else:  # sub, average, paeth: need the left neighbour, pixel by pixel
            row = np.zeros_like(line)
            for x in range(line.size):
                left = row[x - channels] if x >= channels else 0
                up, up_left = prev[x], (prev[x - channels] if x >= channels else 0)
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + up) // 2
                else:
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                row[x] = (line[x] + pred) % 256
            out[y] = row
    return width, height, out.reshape(height, width, channels)


def test_report_renders_in_headless_chromium(main_job: Path, tmp_path: Path):
    chromium = _chromium()
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--db", str(main_job), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    html = out.read_text("utf-8")
    assert summary["bytes"] == len(html.encode())
    # Self-contained: nothing to fetch when the page opens (the SVG namespace is a name, not a fetch).
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html) + re.findall(r"url\(([^)]*)\)", html)
    assert refs == [], refs
    assert "<script src" not in html and "@import" not in html and "<link" not in html

    stats = dataset_stats(main_job)
    accepted = stats["stages"]["trajectories"]["accepted"]
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*browser, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    for heading in ("Coverage map of the tool repository", "Coverage map of the tasks", "Yield by stage",
                    "Yield by category", "Yield by domain", "Rejection reasons", "Check failure rates",
                    "LLM judge: calibration and vote", "Cost per accepted trajectory", "Task pass rates",
                    "Near-duplicates", "Accepted trajectories", "Rejected trajectories"):
        assert f">{heading}</h2>" in page, heading
    assert re.search(rf'<b id="accepted-count">{accepted:,}</b>', page)
    tools = stats["stages"]["tools"]["accepted"]
    assert f"{tools} of {tools} drawn" in page  # every tool of a small repository is on the map
    assert page.count('class="pt') >= tools + 1  # tool dots and task dots rendered as SVG circles
    real = len(REAL_TOOLS["tools"])
    assert f"mcp ({real})" in page and f"synthetic ({tools - real})" in page
    for domain in ("weather", "order_management", "retail", "travel"):
        assert f'<td class="l">{domain}</td>' in page
    assert 'class="pt used"' in page  # tools called in accepted trajectories are marked
    assert page.count('<span class="ok">accepted</span>') == min(accepted, 3)
    assert page.count('<span class="bad">rejected</span>') == 3
    assert "tool</span>get_order" in page  # a tool result, folded under the tool's name

    shot = tmp_path / "report.png"
    run = subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1200,2000", out.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (1200, 2000)
    colours = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"screenshot nearly blank: {len(colours)} colours"
    # The tool map (top left of the page) holds the two source colours of the dots.
    region = pixels[250:1100, :700, :3].reshape(-1, 3)
    for rgb in ((0xD9, 0x5F, 0x02), (0x1B, 0x9E, 0x77)):
        assert (np.abs(region - np.array(rgb)).sum(axis=1) < 30).any(), f"no dot of colour {rgb} on the map"


_WRITER = """
import sys, time
from pathlib import Path
from synth.store import Dataset
db, stop = Path(sys.argv[1]), Path(sys.argv[2])
writer = Dataset(db)
n = 0
while not stop.exists():
    writer.add("llm_calls", {"id": f"late-{n}", "run_id": "r", "role": "agent", "model": "m", "ok": True,
                             "prompt_tokens": 1, "completion_tokens": 1, "latency_s": 0.1})
    writer.flush()
    n += 1
    print(n, flush=True)
    time.sleep(0.005)
"""


def test_report_reads_while_a_writer_flushes(main_job: Path, tmp_path: Path):
    """A run's writer (another process, as in `synth run`) flushes every few milliseconds, holding
    the file only inside each flush, while the report reads: both go through."""
    copy = tmp_path / "live.duckdb"
    shutil.copy(main_job, copy)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(copy), str(stop)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    lines: list[str] = []
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "1"  # it holds and flushes
        reader = threading.Thread(target=lambda: lines.extend(writer.stdout or []), daemon=True)
        reader.start()
        # Three reports back to back, each begun while the writer flushes; after each the writer must
        # get in again (within 30 s), so neither side locks the other out. (Counting flushes during
        # one report failed on a loaded CI machine: the report's connections follow each other
        # closely, and a writer backing off may only get in once the report has finished.)
        for _ in range(3):
            before = len(lines)
            summary = write_report(copy, tmp_path / "live.html")
            deadline = time.monotonic() + 30
            while len(lines) == before and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(lines) > before, "the writer did not flush again after a report"
    finally:
        stop.touch()
        writer.wait(timeout=120)
    reader.join(timeout=30)  # stdout is read by the thread alone, to its end
    err = writer.stderr.read() if writer.stderr is not None else ""
    assert writer.returncode == 0, err[-2000:]
    flushed = 1 + len(lines)
    assert summary.trajectories == dataset_stats(main_job)["stages"]["trajectories"]["total"]
    assert flushed >= 4, "the writer did not keep flushing across the reports"
    with connect_readonly(copy) as con:
        assert con.execute("SELECT count(*) FROM llm_calls WHERE id LIKE 'late-%'").fetchall() == [(flushed,)]


class _EmbeddingsHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/embeddings answering [len(text), 1, index in the batch] per input."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/embeddings" and body["model"] == "any-model"
        data = [{"index": i, "embedding": [float(len(t)), 1.0, float(i)]} for i, t in enumerate(body["input"])]
        reply = json.dumps({"object": "list", "data": data[::-1]}).encode()  # out of order: sorted by index
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


def test_embeddings_offline_and_from_an_endpoint():
    texts = ["get_weather forecast for a city", "weather forecast of a city for tomorrow",
             "create_invoice for a customer order", "refund an order payment"]
    vectors = embed_texts(texts)
    assert vectors.shape == (4, 1024) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[1, 3]
    xy = project_2d(hashed_tfidf(texts))
    assert xy.shape == (4, 2) and xy.min() >= 0 and xy.max() <= 1

    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = EmbeddingEndpoint(f"http://127.0.0.1:{server.server_port}/v1", "any-model", batch_size=3)
        got = embed_texts(texts, endpoint)
    finally:
        server.shutdown()
    assert got.tolist() == [[float(len(t)), 1.0, float(i % 3)] for i, t in enumerate(texts)]
