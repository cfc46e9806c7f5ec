"""Slow clients are cut off with the right answer (issue 11, item 4).

A body that never finishes arriving used to get ``503 Service temporarily unavailable``,
logged as ``gateway.redis_unavailable``: Redis was fine, the client was slow.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.keys import AppKeys
from tests.integration.conftest import gateway_settings
from tests.support.raw_http import parse_response
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE, System
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


async def test_a_body_that_stalls_gets_408_not_503(redis_server: RedisServer) -> None:
    settings = gateway_settings(redis_server.url, request_timeout_seconds=0.5)
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        assert server.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /api/chat/slow/messages HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"content":'
        )
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read(4096)  # the answer comes while the body is still open
        writer.close()
        response = parse_response(raw)
        assert response.status == 408
        assert b"arrived too slowly" in response.body
    finally:
        await server.close()


@pytest.mark.parametrize(
    "sent", [b"", b"GET /api/config HTTP/1.1\r\nHost: t\r\n"], ids=["idle", "partial-headers"]
)
async def test_idle_and_trickling_connections_are_closed(system: System, sent: bytes) -> None:
    gw = system.gateway(KEEPALIVE_TIMEOUT_SECONDS="0.5")
    assert gw.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(sent)
    await writer.drain()
    async with asyncio.timeout(20):  # generous: the gateway closes after 0.5 s
        rest = await reader.read()  # returns at EOF: the gateway hung up
    writer.close()
    assert b"200 OK" not in rest


HANDSHAKES = {
    "sse": b"GET /api/chat/gone/events?accessCode=" + ACCESS_CODE.encode() + b" HTTP/1.1\r\n"
    b"Host: t\r\n\r\n",
    "ws": b"GET /api/chat?chatId=gone&accessCode=" + ACCESS_CODE.encode() + b" HTTP/1.1\r\n"
    b"Host: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
}
ROUTES = {"sse": "/api/chat/{chat_id}/events", "ws": "/api/chat"}


@pytest.mark.parametrize("kind", ["sse", "ws"])
async def test_a_client_gone_during_a_handshake_is_no_500_or_503(
    redis_server: RedisServer, kind: str
) -> None:
    """Found by tests/guarantees: aiohttp-sse asserted on a transport already closed (500),
    and a WebSocket upgrade to a closed socket was a 503 logged as Redis being down."""
    server = TestServer(create_app(gateway_settings(redis_server.url)))
    await server.start_server()
    try:
        assert server.port is not None
        tries = 30
        for i in range(tries):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(HANDSHAKES[kind])
            await writer.drain()
            await asyncio.sleep(0.002 * (i % 3))  # before, during and after the Redis read
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()  # a reset, as a browser tab that is closed
        metrics = server.app[AppKeys.metrics]

        def statuses() -> dict[str, float]:
            found: dict[str, float] = {}
            for family in metrics.http_requests.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total") and ROUTES[kind] == sample.labels["route"]:
                        found[sample.labels["status"]] = sample.value
            return found

        connections = server.app[AppKeys.connections]
        streaming = connections.streams if kind == "sse" else connections.websockets

        def settled() -> bool:  # each request answered, or streaming (until its next ping)
            return sum(statuses().values()) + len(streaming) >= tries

        await wait_until(settled, 20, "every handshake answered or streaming")
        assert "500" not in statuses()
        assert "503" not in statuses()
    finally:
        await server.close()
