"""arq's scheduled jobs stay off the cluster: they run on ARQ_REDIS_URL, a standalone Redis.

The worker's bus is on a real 3-master cluster (``REDIS_CLUSTER``); arq cannot be (its
client is single-node and its enqueue a WATCH/MULTI across slots: the first test shows
the cluster refusing it), so the content refresh runs against a standalone redis-server
named by ``ARQ_REDIS_URL``, and a worker configured for a cluster without one refuses to
start with one line naming the setting.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.exceptions import RedisClusterException, ResponseError

from bus import open_arq_redis
from bus.client import create_redis
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from tools.scheduled_refresh import JOB_NAME
from tools.settings import ToolSettings
from worker import Worker
from worker.scheduled import ArqRedisUnusable, ScheduledJobs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AGENT = "http://127.0.0.1:9"  # never called: no visitor message in these tests


@pytest.fixture
async def arq_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "arq-redis").start()
    try:
        yield server
    finally:
        server.stop()


def _site(tmp_path: Path) -> ToolSettings:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><body><h1>Home</h1><p>Hello moss.</p></body></html>")
    return ToolSettings(
        _env_file=None,
        content_dir=tmp_path / "content",
        content_refresh_enabled=True,
        content_refresh_site_root=str(site),
    )


def _keys_on_cluster(cluster: RedisCluster, pattern: str) -> list[str]:
    found: list[str] = []
    for node in cluster.masters():
        found += [str(k) for k in cluster.command(node, "KEYS", pattern)]
    return found


async def test_arq_cannot_enqueue_on_a_cluster(redis_cluster: RedisCluster) -> None:
    """Why arq has its own Redis: its enqueue is refused by a cluster node."""
    settings = fast_settings(redis_cluster.url, AGENT, redis_cluster=True)
    arq = open_arq_redis(settings, client_name="test-arq-on-cluster", url=settings.redis_url)
    try:
        # arq:job:<id>, arq:result:<id> and the queue hash to different slots.
        with pytest.raises((ResponseError, RedisClusterException), match=r"CROSSSLOT|MOVED"):
            await arq.enqueue_job(JOB_NAME, _job_id="job-1", _queue_name="terra:arq")
    finally:
        await arq.aclose(close_connection_pool=True)


async def test_refresh_runs_on_arq_redis_while_the_bus_is_on_the_cluster(
    redis_cluster: RedisCluster,
    arq_redis: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # arq polls its queue every 5 s (ScheduledJobs.poll_delay): the job enqueued just after
    # the start waited for the next poll. The same poll, sooner.
    monkeypatch.setattr(ScheduledJobs, "poll_delay", 0.05)
    tool_settings = _site(tmp_path)
    settings = fast_settings(
        redis_cluster.url, AGENT, redis_cluster=True, arq_redis_url=arq_redis.url
    )
    jobs = ScheduledJobs(settings, tool_settings)
    bus = create_redis(redis_cluster.url, client_name="test", cluster=True)
    standalone = create_redis(arq_redis.url, client_name="test")
    try:
        async with Worker(settings):
            # The worker's bus is on the cluster: its heartbeat lands there.
            async def beating() -> bool:
                beats = await bus.hgetall(settings.bus_keys.workers)  # type: ignore[misc]
                return settings.worker_name in beats

            await wait_until(beating, timeout=10, message="the worker's heartbeat on the cluster")
            await jobs.start()
            producer = jobs.create_redis()
            try:
                await producer.enqueue_job(
                    JOB_NAME, _job_id="refresh-1", _queue_name=jobs.queue_name
                )

                async def refreshed() -> bool:
                    return (tool_settings.content_dir / "index.txt").exists()

                await wait_until(refreshed, timeout=20, interval=0.2, message="the new bundle")
                # arq's job (in progress, then its result) and health check: on ARQ_REDIS_URL.
                assert await standalone.keys("arq:*:refresh-1")
                assert await standalone.exists(f"{jobs.queue_name}:health-check")
            finally:
                await producer.aclose(close_connection_pool=True)
                await jobs.stop()
    finally:
        await bus.aclose()
        await standalone.aclose()
    assert "Hello moss." in (tool_settings.content_dir / "index.txt").read_text()
    assert _keys_on_cluster(redis_cluster, "arq:*") == []
    assert _keys_on_cluster(redis_cluster, "terra:arq*") == []


def test_a_cluster_worker_with_the_refresh_and_no_arq_redis_refuses_to_start(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    secret_url = redis_cluster.url.replace("redis://", "redis://worker:s3cret-pw@")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQ_"))},
        "REDIS_URL": secret_url,
        "REDIS_CLUSTER": "true",
        "CONTENT_REFRESH_ENABLED": "true",
        "CONTENT_DIR": str(tmp_path / "content"),
        "AGENT_API_URL": f"{AGENT}/v1/chat/completions",
    }
    result = subprocess.run(
        [sys.executable, "-m", "worker"],
        cwd=tmp_path,  # no .env file from the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    (refusal,) = [line for line in result.stderr.splitlines() if "configuration" in line]
    assert refusal.startswith("worker: invalid configuration: ARQ_REDIS_URL ("), refusal
    assert "Traceback" not in result.stderr
    assert "s3cret-pw" not in result.stderr
    assert _keys_on_cluster(redis_cluster, "*arq*") == []


async def test_arq_redis_url_naming_a_cluster_node_is_refused_at_start(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    """An operator who copies REDIS_URL into ARQ_REDIS_URL is told, not left without refreshes."""
    settings = fast_settings(
        redis_cluster.url, AGENT, redis_cluster=True, arq_redis_url=redis_cluster.url
    )
    jobs = ScheduledJobs(settings, _site(tmp_path))
    with pytest.raises(ArqRedisUnusable, match="a Redis Cluster node") as refused:
        await jobs.start()
    assert refused.value.setting == "ARQ_REDIS_URL"
    await jobs.stop()  # nothing started: a no-op
    assert _keys_on_cluster(redis_cluster, "*arq*") == []


def test_a_worker_whose_arq_redis_is_a_cluster_node_refuses_to_start(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ARQ_"))},
        "REDIS_URL": redis_cluster.url,
        "REDIS_CLUSTER": "true",
        "ARQ_REDIS_URL": redis_cluster.url,
        "CONTENT_REFRESH_ENABLED": "true",
        "CONTENT_DIR": str(tmp_path / "content"),
        "AGENT_API_URL": f"{AGENT}/v1/chat/completions",
        "WORKER_NAME": "arq-at-a-node",
    }
    result = subprocess.run(
        [sys.executable, "-m", "worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    (refusal,) = [line for line in result.stderr.splitlines() if "configuration" in line]
    assert refusal.startswith("worker: invalid configuration: ARQ_REDIS_URL ("), refusal
    assert "Traceback" not in result.stderr
    assert _keys_on_cluster(redis_cluster, "*arq*") == []
