"""The cluster client finds the cluster again after a master fails over under load (issue 13).

redis-py 5.3.1's asyncio RedisCluster drops a node from its startup nodes on every connection
error and closes all its connections; after a failover under concurrent commands it could be
left with none and fail every later command for good (redis/redis-py#3693).
``bus.client.create_redis`` re-seeds it before each re-discovery.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from redis.exceptions import RedisClusterException, RedisError

from bus.client import create_redis
from bus.settings import BusSettings
from demo.launcher import free_port
from tests.support.redis_cluster import RedisCluster
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

CLUSTER_REPLICAS = 1  # tests/cluster/conftest.py: a replica per master, to fail over


async def test_the_client_answers_again_after_a_master_fails_over_under_load(
    redis_cluster: RedisCluster,
) -> None:
    client = create_redis(redis_cluster.url, client_name="test-failover", cluster=True)
    keys = [f"{{k{n}}}" for n in range(30)]  # spread over every master
    stop = asyncio.Event()
    answered = 0

    async def hammer(key: str) -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                await client.incr(key)
                answered += 1
            except (RedisError, RedisClusterException, OSError, AttributeError):
                await asyncio.sleep(0.02)  # the failover: errors are expected meanwhile

    tasks = [asyncio.create_task(hammer(k)) for k in keys]
    try:
        await wait_until(lambda: answered > 100, timeout=10, message="load before the kill")
        seed = redis_cluster.live_nodes()[0]
        victim = next(m for m in redis_cluster.masters() if m is not seed)
        redis_cluster.kill(victim)
        await asyncio.to_thread(redis_cluster.wait_failover, victim)

        async def every_key_answers() -> bool:
            with contextlib.suppress(RedisError, RedisClusterException, OSError, AttributeError):
                await asyncio.gather(*(client.incr(k) for k in keys))
                return True
            return False

        await wait_until(every_key_answers, timeout=20, message="the client after the failover")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await client.aclose()


async def test_a_process_finds_the_cluster_through_another_node_when_its_seed_is_down(
    redis_cluster: RedisCluster,
) -> None:
    """``REDIS_URL`` names one node; a gateway or worker starting while that node is down
    finds the cluster through ``REDIS_CLUSTER_NODES`` (the other nodes' ``host:port``)."""
    down = f"redis://127.0.0.1:{free_port()}"
    nodes = ",".join(node.address for node in redis_cluster.masters())
    alone = BusSettings(redis_url=down, redis_cluster=True)
    seeded = BusSettings(
        redis_url=down,
        redis_cluster=True,
        redis_cluster_nodes=nodes,
    )
    for settings, finds in ((alone, False), (seeded, True)):
        client = create_redis(
            settings.redis_url.get_secret_value(),
            client_name="test-seeds",
            options=settings.redis_options(),
            cluster=True,
        )
        try:
            if finds:
                assert await client.set("{seeds}", "found")
                assert await client.get("{seeds}") == "found"
            else:
                with pytest.raises((RedisClusterException, RedisError)):
                    await client.get("{seeds}")
        finally:
            await client.aclose()
