"""The cluster tier: real Redis Clusters (``tests.support.redis_cluster``), one per module.

A module sets ``CLUSTER_REPLICAS = 1`` for a replica per master (failover tests); the
default is 3 masters without replicas. Skipped without redis-server >= 7 and redis-cli.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from demo.launcher import redis_major
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import redis_server_binary


def cluster_unavailable() -> str | None:
    """Why no test cluster can start here (``None`` when it can)."""
    binary = redis_server_binary()
    if binary is None or redis_major(binary) < 7:
        return "needs redis-server >= 7 (sharded pub/sub, cluster-port)"
    if shutil.which("redis-cli") is None:
        return "needs redis-cli (redis-cli --cluster create)"
    return None


@pytest.fixture(scope="module")
def redis_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisCluster]:
    """A 3-master cluster for the module (``CLUSTER_REPLICAS`` replicas per master)."""
    reason = cluster_unavailable()
    if reason is not None:
        pytest.skip(reason)
    replicas = int(getattr(request.module, "CLUSTER_REPLICAS", 0))
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"), replicas=replicas).start()
    try:
        yield cluster
    finally:
        cluster.stop()
