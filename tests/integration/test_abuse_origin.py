"""The gateway's own origin is always accepted on handshakes (issue 11, item 11).

The original deployment's nginx block sets ``Host $host`` (no port): on any port but 443,
a browser's ``Origin: https://chat.example.org:8443`` never equalled the Host, so the
WebSocket got 403 while REST worked. And a non-empty ALLOWED_ORIGINS (to embed the widget
elsewhere) silently stopped accepting the gateway's own pages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.keys import AppKeys
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.integration

PROXY_WITHOUT_PORT = {"Host": "chat.example.org", "X-Forwarded-Host": "chat.example.org"}


@pytest.fixture(params=[[], ["https://site.example"]], ids=["no-allow-list", "allow-list"])
async def server(request: Any, redis_server: RedisServer) -> AsyncIterator[TestServer]:
    settings = gateway_settings(
        redis_server.url, trusted_proxies=["127.0.0.1"], allowed_origins=request.param
    )
    srv = TestServer(create_app(settings))
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


async def handshake(server: TestServer, headers: dict[str, str]) -> int:
    """The WebSocket handshake's status (101 when upgraded)."""
    target = str(server.make_url(f"/api/chat?chatId=o&accessCode={ACCESS_CODE}"))
    async with aiohttp.ClientSession() as s:
        try:
            async with s.ws_connect(target, headers=headers) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def sse_status(server: TestServer, headers: dict[str, str]) -> int:
    target = str(server.make_url(f"/api/chat/o/events?accessCode={ACCESS_CODE}"))
    async with aiohttp.ClientSession() as s, s.get(target, headers=headers) as r:
        return r.status


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        # Behind a proxy on 8443 that forwards the host without its port.
        ({**PROXY_WITHOUT_PORT, "Origin": "https://chat.example.org:8443"}, 101),
        ({**PROXY_WITHOUT_PORT, "Origin": "https://CHAT.example.org"}, 101),
        ({**PROXY_WITHOUT_PORT, "Origin": "https://evil.example:8443"}, 403),
        ({**PROXY_WITHOUT_PORT, "Origin": "null"}, 403),
        # A proxy that names the port: it must match.
        (
            {
                **PROXY_WITHOUT_PORT,
                "X-Forwarded-Port": "8443",
                "Origin": "https://chat.example.org:8443",
            },
            101,
        ),
        (
            {
                **PROXY_WITHOUT_PORT,
                "X-Forwarded-Port": "8443",
                "Origin": "https://chat.example.org",
            },
            403,
        ),
        (
            {
                "Host": "gw",
                "X-Forwarded-Host": "chat.example.org:8443",
                "Origin": "https://chat.example.org:8443",
            },
            101,
        ),
        # Default ports are the same origin with or without them.
        (
            {
                "Host": "gw",
                "X-Forwarded-Host": "chat.example.org:443",
                "Origin": "https://chat.example.org",
            },
            101,
        ),
        (
            {
                "Host": "gw",
                "X-Forwarded-Host": "chat.example.org:8443",
                "Origin": "https://chat.example.org",
            },
            403,
        ),
    ],
)
async def test_own_origin_through_a_proxy(
    server: TestServer, headers: dict[str, str], status: int
) -> None:
    assert await handshake(server, headers) == status
    assert await sse_status(server, headers) == (200 if status == 101 else 403)


async def test_the_allow_list_is_still_honoured(server: TestServer) -> None:
    headers = {**PROXY_WITHOUT_PORT, "Origin": "https://site.example"}
    listed = bool(server.app[AppKeys.settings].allowed_origins)
    assert await handshake(server, headers) == (101 if listed else 403)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "gw.test:4100", "Origin": "http://gw.test:4100"}, 101),
        ({"Host": "gw.test:4100", "Origin": "http://gw.test:4101"}, 403),
        ({"Host": "gw.test", "Origin": "http://gw.test:80"}, 101),
        ({"Host": "gw.test", "Origin": "http://gw.test:8080"}, 403),
        # Not a trusted proxy: its forwarded host is ignored.
        (
            {
                "Host": "gw.test",
                "X-Forwarded-Host": "evil.example",
                "Origin": "http://evil.example",
            },
            403,
        ),
    ],
)
async def test_own_origin_without_a_proxy(
    redis_server: RedisServer, headers: dict[str, str], status: int
) -> None:
    settings = gateway_settings(redis_server.url, allowed_origins=["https://site.example"])
    srv = TestServer(create_app(settings))
    await srv.start_server()
    try:
        assert await handshake(srv, headers) == status
    finally:
        await srv.close()
