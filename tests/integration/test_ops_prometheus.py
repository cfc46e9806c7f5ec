"""The Grafana dashboard's expressions against a real Prometheus scraping a gateway and a
worker: every panel but Redis's (redis_exporter is not run here) has data when the system is
healthy and idle, and the error panels read 0, not "No data".

Needs the ``prometheus`` binary (Debian: ``apt-get install prometheus``); skipped without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.support.redis_server import free_port
from tests.support.wait import wait_until
from worker.metrics import WorkerMetrics

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "infra/grafana/dashboards/terrarium.json"
#: Panels that must read exactly 0 on a healthy, idle system.
ZERO_WHEN_HEALTHY = {
    "5xx ratio",
    "Rate-limited / s",
    "Agent errors / s by category",
    "Jobs finished / s by outcome",
    "Resumes and slow consumers",
}


def dashboard_targets() -> list[tuple[str, str]]:
    """``(panel title, expression)`` of every Prometheus target of the dashboard."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in walk(board["panels"])
        for target in panel.get("targets", [])
    ]


@pytest.fixture
def worker_metrics_port() -> Iterator[int]:
    metrics = WorkerMetrics()
    port = free_port()
    metrics.serve(port)
    try:
        yield port
    finally:
        metrics.close()


@pytest.fixture
def prometheus(tmp_path: Path, gateway: TestServer, worker_metrics_port: int) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("needs the prometheus binary (apt-get install prometheus)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    jobs = {"terrarium-gateway": gateway.port, "terrarium-worker": worker_metrics_port}
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n"
        + "".join(
            f"  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{p}']}}]\n"
            for job, p in jobs.items()
        )
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


async def query(http: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


async def test_every_panel_has_data_and_error_panels_read_zero(prometheus: str) -> None:
    async with aiohttp.ClientSession() as http:

        async def scraped_enough() -> bool:
            try:
                # Three scrapes of both targets: rate() has points to work with.
                result = await query(http, prometheus, "count_over_time(up[1m]) >= 3")
            except (aiohttp.ClientError, AssertionError):
                return False
            return len(result) == 2 and all(r["value"][1] != "0" for r in result)

        await wait_until(scraped_enough, 60, "Prometheus to scrape the gateway and worker 3 times")
        missing, not_zero = [], []
        for title, expr in dashboard_targets():
            if "redis_" in expr:
                continue
            result = await query(http, prometheus, expr)
            if not result:
                missing.append((title, expr))
            elif title in ZERO_WHEN_HEALTHY and any(float(r["value"][1]) != 0 for r in result):
                not_zero.append((title, expr, result))
        assert missing == []
        assert not_zero == []
