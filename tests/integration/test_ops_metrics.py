"""The gateway's and the worker's /metrics as a real Prometheus scrape reads them.

Found when Prometheus scraped both processes: the delivery-lag histogram counted frames
a resume replays (a visitor back after an hour read as an hour of lag), cumulative counts
were gauges, requests were not timed, nothing said which version ran, and labelled
counters had no series until their first event (panels showed "No data" instead of 0).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from bus import BusKeys, ChatLog
from bus.client import create_redis
from tests.integration.test_ops_console import CHAT, known_events, write_chat
from tests.support.redis_server import RedisServer, free_port
from tests.support.system import ACCESS_CODE
from worker.metrics import WorkerMetrics

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[str, float]:
    """``name{label="v",...}`` -> value, for every sample of an exposition."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def scrape(gateway: TestServer) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(gateway.make_url("/metrics")) as resp:
        assert resp.status == 200
        return samples(await resp.text())


@pytest.fixture
async def chatlog(redis_server: RedisServer) -> AsyncIterator[ChatLog]:
    redis = create_redis(redis_server.url, client_name="test")
    try:
        yield ChatLog(redis, BusKeys())
    finally:
        await redis.aclose()


async def test_a_resume_replay_is_not_delivery_lag(
    redis_server: RedisServer, gateway: TestServer, chatlog: ChatLog
) -> None:
    events = known_events(CHAT)
    await write_chat(redis_server.url, CHAT, events)  # appended months "ago"
    frames: list[dict[str, Any]] = []
    url = gateway.make_url(f"/terrarium/api/chat/{CHAT}/events")
    params = {"accessCode": ACCESS_CODE, "v": "2", "lastEventId": "0-0"}
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as resp:
        assert resp.status == 200

        async def read_until(count: int) -> None:
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    frames.append(json.loads(line[5:]))
                    if len(frames) >= count:
                        return

        await asyncio.wait_for(read_until(len(events)), 20)
        metrics = await scrape(gateway)
        assert metrics['terrarium_frames_replayed_total{kind="sse"}'] == len(events)
        assert metrics["terrarium_delivery_lag_seconds_count"] == 0
        # A live event on the same socket is delivery lag, and only it.
        await chatlog.accept_visitor_message(CHAT, "still there?")
        await asyncio.wait_for(read_until(len(events) + 2), 20)
        metrics = await scrape(gateway)
    assert metrics["terrarium_delivery_lag_seconds_count"] == 2
    assert metrics['terrarium_frames_sent_total{kind="sse"}'] == 2
    assert metrics['terrarium_frames_replayed_total{kind="sse"}'] == len(events)
    assert metrics['terrarium_delivery_lag_seconds_bucket{le="+Inf"}'] == 2


async def test_gateway_metrics_are_counters_timed_versioned_and_zero_when_healthy(
    gateway: TestServer,
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.make_url("/terrarium/api/config")) as resp:
            assert resp.status == 200
        text = await (await http.get(gateway.make_url("/metrics"))).text()
    metrics = samples(text)
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["terrarium_feed_reconnects"] == "counter"
    assert types["terrarium_feed_gap_events"] == "counter"
    assert "terrarium_feed_reconnects_total" in metrics
    route = 'method="GET",route="/terrarium/api/config"'
    assert metrics[f"terrarium_http_request_duration_seconds_count{{{route}}}"] == 1
    build = [name for name in metrics if name.startswith("terrarium_build_info{")]
    assert build == ['terrarium_build_info{component="gateway",version="0.1.0"}']
    assert not [name for name in metrics if name.endswith("_created") or "_created{" in name]
    assert metrics['terrarium_rate_limited_total{scope="ip"}'] == 0
    assert metrics['terrarium_resumes_total{outcome="resync"}'] == 0
    assert "process_open_fds" in metrics


def test_worker_metrics_are_versioned_and_zero_when_healthy() -> None:
    metrics = WorkerMetrics()
    port = free_port()
    metrics.serve(port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            found = samples(resp.read().decode())
    finally:
        metrics.close()
    assert found['terrarium_build_info{component="worker",version="0.1.0"}'] == 1
    assert found['terrarium_worker_jobs_total{outcome="dead_letter"}'] == 0
    assert found['terrarium_worker_agent_errors_total{category="timeout"}'] == 0
    assert not [name for name in found if "_created" in name]
    assert "process_open_fds" in found
