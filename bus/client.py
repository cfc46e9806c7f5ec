"""The one Redis client factory of the project."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.connection import ClusterConnection, ClusterSSLConnection, connection_class_for

__all__ = ["RedisOptions", "create_redis", "is_cluster_client"]

#: Reconnect backoff never waits longer than this between attempts (seconds).
MAX_BACKOFF_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Connection tuning shared by the gateway and the worker.

    ``socket_timeout`` must exceed any blocking command's own timeout (XREADGROUP
    BLOCK); pass ``None`` for a connection reserved for pub/sub.
    """

    socket_timeout: float | None = 5.0
    connect_timeout: float = 3.0
    retries: int = 3
    health_check_interval: int = 15
    max_connections: int = 64
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: More cluster nodes to discover the cluster from, besides the URL's (``host, port``).
    seeds: tuple[tuple[str, int], ...] = ()


class _ClusterClient(RedisCluster):
    """redis-py 5.3.1's asyncio cluster client with two repairs.

    - It finds the cluster again after a failover. On every connection error it drops that
      node from its startup nodes and closes all its connections (in-flight commands on the
      healthy nodes then fail too and drop theirs): after a master dies under load the
      startup nodes can be empty, and every later command fails with "Redis Cluster cannot
      be connected" for good (redis/redis-py#3693, the fix not released). Before each
      re-discovery, the seed node of ``REDIS_URL`` and every node it has known go back.
    - A burst over a node's ``max_connections`` waits for a free connection instead of
      failing at once (:meth:`execute_command`).
    - A node that accepts connections and never answers (hung) fails a command after one
      handshake's timeout, not an endless chain of them (:mod:`bus.connection`).
    """

    def __init__(self, *args: Any, pool_wait: float = 3.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tls = issubclass(self.connection_kwargs["connection_class"], SSLConnection)
        node_class = ClusterSSLConnection if tls else ClusterConnection
        self.connection_kwargs["connection_class"] = node_class  # the nodes found later
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = node_class
        #: How long a command waits for a free connection of a node's full pool (seconds).
        self.pool_wait = pool_wait
        self._seeds = dict(self.nodes_manager.startup_nodes)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """As redis-py's, except that a node whose pool is at ``max_connections`` makes the
        command wait for a free connection (up to :attr:`pool_wait`), as the single-Redis
        client's retry does for "Too many connections", instead of failing at once. Nothing
        was sent when the pool refused, so trying again is safe."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pool_wait
        delay = 0.001
        while True:
            try:
                return await super().execute_command(*args, **kwargs)
            except MaxConnectionsError:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    async def initialize(self) -> RedisCluster:
        """Re-discover the cluster from every node ever known, then as redis-py does."""
        if self._initialize:
            manager = self.nodes_manager
            for name, node in [*self._seeds.items(), *manager.nodes_cache.items()]:
                manager.startup_nodes.setdefault(name, node)
        return await super().initialize()


def create_redis(
    url: str, *, client_name: str, options: RedisOptions | None = None, cluster: bool = False
) -> Redis:
    """Build an asyncio Redis client for ``url`` (``redis://`` or ``rediss://``).

    The client decodes responses to ``str``, retries a failed command on connection errors
    and timeouts with jittered exponential backoff capped at :data:`MAX_BACKOFF_SECONDS`,
    pings idle connections before use (``health_check_interval``) and names itself
    ``client_name`` (visible in ``CLIENT LIST``). With ``rediss://`` the server certificate
    is verified against ``ssl_ca_certs`` (or the system store). No I/O happens here: the
    first command connects.

    With ``cluster`` (``REDIS_CLUSTER``), ``url`` names any one node and the client is a
    :class:`redis.asyncio.cluster.RedisCluster` with the same options on every node
    connection (``max_connections`` per node): it finds the other nodes, routes each
    command by its keys' slot and follows MOVED/ASK. It serves the command API the bus's
    parts use (typed as :class:`Redis`, so they take either); the two things it lacks,
    pub/sub and MULTI, the bus never asks of it (the live feed opens its own shard
    connections; no MULTI anywhere: see :func:`is_cluster_client`).
    """
    opts = options or RedisOptions()
    retry = Retry(
        ExponentialWithJitterBackoff(cap=MAX_BACKOFF_SECONDS, base=0.05),
        opts.retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )
    extra: dict[str, Any] = {}
    if url.startswith("rediss://"):
        extra = {
            "ssl_cert_reqs": "required",  # redis-py 5 wants the string form
            "ssl_ca_certs": opts.ssl_ca_certs,
            "ssl_certfile": opts.ssl_certfile,
            "ssl_keyfile": opts.ssl_keyfile,
            "ssl_check_hostname": True,
        }
    common: dict[str, Any] = {
        "decode_responses": True,
        "client_name": client_name,
        "socket_timeout": opts.socket_timeout,
        "socket_connect_timeout": opts.connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": opts.health_check_interval,
        "retry": retry,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "max_connections": opts.max_connections,
        **extra,
    }
    if cluster:
        nodes = _ClusterClient.from_url(
            url,
            startup_nodes=[ClusterNode(host, port) for host, port in opts.seeds],
            connection_error_retry_attempts=opts.retries,
            pool_wait=opts.connect_timeout,
            require_full_coverage=True,
            **common,
        )
        return cast("Redis", nodes)  # the same command API; see the docstring
    client: Redis = Redis.from_url(url, **common)
    # No Task per command (bus.connection; issue 10). Set on the pool, not passed to
    # from_url, which would put SSLConnection back for rediss://.
    client.connection_pool.connection_class = connection_class_for(url)
    return client


def is_cluster_client(redis: object) -> bool:
    """True for a client :func:`create_redis` built for a cluster."""
    return isinstance(redis, RedisCluster)
