"""The fan-out benchmark runs end to end with tiny numbers (no assertion on timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.redis_server import redis_server_binary

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.mark.slow
@pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")
@pytest.mark.timeout(180)
def test_fanout_benchmark_prints_figures_and_frames_arrive(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = ["--sockets", "20", "--chats", "2", "--duration", "1", "--warmup", "0.5"]
    args += ["--posts", "10", "--post-warmup", "2", "--client-procs", "1"]
    args += ["--stalled-reader", "--stall-wait", "0", "--json-out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.fanout", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    table = done.stdout
    for label in ("POST -> job pickup p99", "chunk -> WS frame p99", "frames/s delivered"):
        assert label in table
    assert "server RSS per socket (KiB)" in table
    assert "stalled reader" in table
    assert "summary: gateway vs raw:" in table

    report = json.loads(out.read_text())
    figures = {figure["key"]: figure for figure in report["figures"]}
    for key in ("pickup_p50_ms", "pickup_p99_ms", "frame_p50_ms", "frame_p99_ms"):
        assert figures[key]["gateway"] is not None, key
        assert figures[key]["raw"] is not None, key
    (only_round,) = report["rounds"]
    for kind in ("gateway", "raw"):
        assert only_round["pickup"][kind]["n"] == 10
        window = only_round["fanout"][kind]["window"]
        assert window["delivered_frames"] > 0, kind
        assert window["frames_per_s"] > 0, kind
    assert report["stalled"]["others_with"]["delivered_frames"] > 0
