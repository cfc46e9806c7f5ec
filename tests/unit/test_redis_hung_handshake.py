"""A Redis that accepts connections and never answers (SIGSTOPped) fails a command in bounded time.

redis-py 5.3.1 health-checks a connection inside its own handshake: ``on_connect`` sends
``CLIENT SETNAME`` with the health check on, and a new connection has never been checked,
so it PINGs first. On a node that accepts the TCP connection and then says nothing, the PING
times out, the retry reconnects from within the PING, whose handshake PINGs again: one
socket timeout deeper each time, for as long as the node hangs. A cluster client whose map
still names a hung master (before it notices the failover) waited there for ever, and the
live feed's confirmation read with it. The project's connections skip the health check
while the handshake runs (the socket was just opened).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from bus.client import RedisOptions, create_redis
from bus.connection import QuickWriteConnection


class HungNode:
    """A TCP server that accepts every connection and never answers (a SIGSTOPped Redis)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def _hold(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)  # open, silent

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
async def hung_node() -> AsyncIterator[HungNode]:
    node = HungNode()
    server = await asyncio.start_server(node._hold, "127.0.0.1", 0)
    node.port = server.sockets[0].getsockname()[1]
    try:
        yield node
    finally:
        for writer in node._writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_new_connection_to_a_hung_node_times_out_instead_of_recursing(
    hung_node: HungNode,
) -> None:
    connection = QuickWriteConnection(
        host="127.0.0.1",
        port=hung_node.port,
        socket_timeout=0.1,
        socket_connect_timeout=0.1,
        health_check_interval=15,
        client_name="hung-test",
        retry=Retry(NoBackoff(), 1),
    )
    try:
        async with asyncio.timeout(30):  # a guard against the recursion, not a measure
            with pytest.raises(RedisError):
                await connection.send_command("GET", "k")
    finally:
        await connection.disconnect(nowait=True)
    assert hung_node.accepted == 1  # one handshake, timed out: no reconnect from within it


async def test_a_cluster_client_whose_seed_hangs_fails_in_bounded_time(
    hung_node: HungNode,
) -> None:
    options = RedisOptions(socket_timeout=0.1, connect_timeout=0.1, retries=1)
    client = create_redis(hung_node.url, client_name="hung-test", options=options, cluster=True)
    try:
        async with asyncio.timeout(30):  # a guard against the recursion, not a measure
            with pytest.raises((RedisError, RedisClusterException)):
                await client.get("k")
    finally:
        await client.aclose()
    # Each attempt of the client's (initialize, retried) is one handshake, never a chain.
    assert 1 <= hung_node.accepted <= 1 + options.retries
