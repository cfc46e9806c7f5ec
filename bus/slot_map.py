"""Where a sharded channel lives: the slot map of the live feed's node connections.

:class:`ClusterSlots` reads a Redis Cluster's masters by slot (``CLUSTER SLOTS``) over a
short-lived connection of its own, to a node of its last map or a seed of the client, never
through the cluster client: a client command routed to a dead master closes every connection
of that client, commands in flight included. :class:`SingleNode` is one Redis 7 (sharded
pub/sub works there too). Both build connections with the client's options (TLS, ACL user,
client name) that never retry and read without a timeout: the feed's links.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

__all__ = ["QUERY_TIMEOUT", "ClusterSlots", "SingleNode", "SlotMap", "abort_socket"]

#: A node connected to (handshake included) or asked for the slot map answers within this
#: (seconds), or it counts as down.
QUERY_TIMEOUT = 3.0
#: The feed's connections never retry a command or reconnect by themselves.
_NO_RETRY = Retry(NoBackoff(), 0)


class SlotMap:
    """Where a channel's node is, and how to connect to a node like the client does."""

    async def refresh(self) -> None:
        """Read the slot map again (after a ``MOVED``, a moved slot or a lost node); raises
        when no node answers."""
        raise NotImplementedError

    def node_of(self, channel: str) -> str | None:
        """The name (``host:port``) of the master serving ``channel``, if known."""
        raise NotImplementedError

    def connection(self, node: str) -> AbstractConnection:
        """A new, unconnected connection to ``node`` with the client's options (TLS, ACL
        user, client name), which never retries and reads without a timeout."""
        raise NotImplementedError

    async def _ask(self, node: str, *command: str) -> Any:
        """One command's answer from ``node`` over a connection of its own, closed after."""
        connection = self.connection(node)
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                await connection.connect()  # type: ignore[no-untyped-call]
                await connection.send_command(*command, check_health=False)
                return await connection.read_response()
        finally:
            abort_socket(connection)  # no goodbye awaited from a node that may be hung
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)


def abort_socket(connection: AbstractConnection) -> None:
    """Drop ``connection``'s socket at once, unsent bytes and TLS goodbye included: a hung
    node reads nothing, so a graceful close would wait for it (asyncio's TLS shutdown: 30 s).
    A read waiting on the socket ends with a connection error."""
    writer = connection._writer
    if writer is not None:
        transport = writer.transport
        if hasattr(transport, "abort"):
            transport.abort()
        else:  # not a socket (fakeredis's in-process transport)
            writer.close()


def _private(cls: type[AbstractConnection], kwargs: dict[str, Any]) -> AbstractConnection:
    options = {
        key: value
        for key, value in kwargs.items()
        if key not in ("connection_class", "max_connections", "response_callbacks")
    }
    # Reads block without a timeout; the watchdog pings and notices a silent peer.
    options.update(retry=_NO_RETRY, socket_timeout=None, health_check_interval=0)
    return cls(**options)


class SingleNode(SlotMap):
    """One Redis (not a cluster): every channel is on it."""

    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool
        kwargs = self._pool.connection_kwargs
        self._name = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    async def refresh(self) -> None:
        await self._ask(self._name, "PING")  # only tells whether it is reachable

    def node_of(self, channel: str) -> str | None:
        return self._name

    def connection(self, node: str) -> AbstractConnection:
        return _private(self._pool.connection_class, self._pool.connection_kwargs)


class ClusterSlots(SlotMap):
    """The masters of a Redis Cluster by slot: ``CLUSTER SLOTS`` of any node that answers.

    A private map, read over a short-lived connection of its own (the client's options) to
    a node of the last map or a seed of the client: refreshing the client's own map
    (``NodesManager.initialize``), or a command routed by it to a dead node, closes every
    connection of the client, commands in flight included.
    """

    def __init__(self, redis: RedisCluster) -> None:
        self._redis = redis
        #: The client's seed nodes (REDIS_URL's), kept: redis-py drops the ones that fail.
        self._seeds = list(redis.nodes_manager.startup_nodes)
        self._starts: list[int] = []
        self._ranges: list[tuple[int, int, str]] = []
        #: Nodes that did not answer their last question: asked last (a hung one costs
        #: QUERY_TIMEOUT each time, and it is usually the node the feed just lost).
        self._failed: set[str] = set()

    async def refresh(self) -> None:
        known = [node for _start, _end, node in self._ranges]
        known += [*self._seeds, *self._redis.nodes_manager.startup_nodes]
        candidates = list(dict.fromkeys(known))
        random.shuffle(candidates)  # gateways spread their questions over the nodes
        candidates.sort(key=lambda node: node in self._failed)  # stable: still shuffled
        error: Exception | None = None
        for node in candidates:
            try:
                reply = await self._ask(node, "CLUSTER", "SLOTS")
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed.add(node)
                error = exc
                continue
            self._failed.discard(node)
            self._load(reply, node)
            return
        raise RedisConnectionError("no cluster node answered CLUSTER SLOTS") from error

    def _load(self, reply: Any, asked: str) -> None:
        remap = self._redis.nodes_manager.remap_host_port
        ranges = []
        for start, end, primary, *_replicas in reply:
            host = primary[0] or asked.rpartition(":")[0]  # "": the node asked
            host, port = remap(host, int(primary[1]))
            ranges.append((int(start), int(end), f"{host}:{port}"))
        ranges.sort()
        self._ranges = ranges
        self._starts = [start for start, _end, _node in ranges]

    def node_of(self, channel: str) -> str | None:
        slot = key_slot(channel.encode())
        index = bisect.bisect_right(self._starts, slot) - 1
        if index < 0:
            return None
        start, end, node = self._ranges[index]
        return node if start <= slot <= end else None

    def connection(self, node: str) -> AbstractConnection:
        host, _, port = node.rpartition(":")
        kwargs = dict(self._redis.get_connection_kwargs())
        cls: type[AbstractConnection] = kwargs["connection_class"]  # type: ignore[assignment]
        return _private(cls, {**kwargs, "host": host, "port": int(port)})
