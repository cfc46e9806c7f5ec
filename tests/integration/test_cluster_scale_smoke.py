"""The scale benchmark runs end to end with ``--quick`` (no assertion on timings)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from demo.launcher import find_redis_server, redis_major

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

_BINARY = find_redis_server()


@pytest.mark.slow
@pytest.mark.skipif(
    _BINARY is None or redis_major(_BINARY) < 7 or shutil.which("redis-cli") is None,
    reason="needs redis-server 7+ and redis-cli (sharded pub/sub, cluster create)",
)
@pytest.mark.timeout(180)
def test_quick_scale_benchmark_answers_every_message_on_one_redis_and_on_a_cluster(
    tmp_path: Path,
) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cluster_scale", "--quick", "--json-out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "chunk appended -> frame p99 (ms)" in done.stdout
    assert "bound by:" in done.stdout

    report = json.loads(out.read_text())
    setups = {s["setup"]: s for s in report["setups"]}
    assert set(setups) == {"single", "cluster-3"}
    for name, s in setups.items():
        assert s["posted"] > 0, name
        assert s["post_errors"] == {}, name
        assert s["answered"] == s["posted"], (name, s["unanswered"], s["post_errors"])
        assert s["answered_twice"] == 0, name
        assert s["answers_not_complete"] == {}, name
        assert s["frames_per_s"] > 0, name
        assert s["lag_p99_ms"] is not None, name
        assert s["commands_per_exchange"] > 0, name
        assert len(s["cpu_pct"]) > 0, name
        assert s["bound"], name
    cluster = setups["cluster-3"]
    assert len(cluster["nodes"]) == 3
    assert all(node["commands"] > 0 for node in cluster["nodes"]), cluster["nodes"]
    assert cluster["cluster_bus_per_event"] is not None
