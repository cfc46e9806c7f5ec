"""Limits by client on every route family, failed codes, open sockets (issue 11, items 1-4, 10).

The gateway runs in-process against a real redis-server; clients are told apart by the
X-Forwarded-For a trusted proxy (127.0.0.1 here) sets, as nginx does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bus import GatewayBus
from bus.client import create_redis
from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@asynccontextmanager
async def serving(redis_server: RedisServer, **overrides: Any) -> AsyncIterator[TestServer]:
    settings = gateway_settings(redis_server.url, trusted_proxies=["127.0.0.1"], **overrides)
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


def from_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


async def _post(s: aiohttp.ClientSession, server: TestServer, ip: str, i: int) -> int:
    r = await s.post(
        url(server, f"/api/chat/flood{i}/messages"),
        json={"content": "x", "accessCode": ACCESS_CODE},
        headers=from_ip(ip),
    )
    return r.status


async def test_rotating_addresses_inside_one_ipv6_64_share_one_budget(
    redis_server: RedisServer,
) -> None:
    async with (
        serving(redis_server, rate_limit_max_per_ip=3) as server,
        aiohttp.ClientSession() as s,
    ):
        statuses = [await _post(s, server, f"2001:db8:1:2::{i:x}", i) for i in range(1, 6)]
        assert statuses == [200, 200, 200, 429, 429]
        # Another /64 (another subscriber) is unaffected.
        assert await _post(s, server, "2001:db8:1:3::1", 9) == 200


async def test_the_ipv6_prefix_is_configurable(redis_server: RedisServer) -> None:
    async with (
        serving(redis_server, rate_limit_max_per_ip=1, rate_limit_ipv6_prefix=128) as srv,
        aiohttp.ClientSession() as s,
    ):
        statuses = [await _post(s, srv, f"2001:db8:1:2::{i:x}", i) for i in range(1, 4)]
        assert statuses == [200, 200, 200]


@pytest.mark.parametrize(
    "path",
    [
        "/api/chat/r/messages",
        "/api/chat/r/transcript",
        "/api/chat/r/worker-state",
        "/api/health",
    ],
)
async def test_reads_have_a_budget_with_retry_after_and_a_sentence(
    redis_server: RedisServer, path: str
) -> None:
    async with (
        serving(redis_server, rate_limit_reads_per_ip=2) as server,
        aiohttp.ClientSession() as s,
    ):
        params = {"accessCode": ACCESS_CODE}
        responses = [
            await s.get(url(server, path), params=params, headers=from_ip("192.0.2.1"))
            for _ in range(3)
        ]
        assert [r.status for r in responses] == [200, 200, 429]
        refused = responses[-1]
        assert int(refused.headers["Retry-After"]) == 30  # one token back: 60 s / 2
        body = await refused.json()
        assert body["error"] == (
            "Too many requests from your network. Please wait 30 seconds and try again."
        )
        other = await s.get(url(server, path), params=params, headers=from_ip("192.0.2.2"))
        assert other.status == 200


async def test_stream_handshakes_have_a_budget(redis_server: RedisServer) -> None:
    async with (
        serving(redis_server, rate_limit_streams_per_ip=2) as server,
        aiohttp.ClientSession() as s,
    ):
        for _ in range(2):
            async with s.ws_connect(
                url(server, f"/api/chat?chatId=st&accessCode={ACCESS_CODE}"),
                headers=from_ip("192.0.2.3"),
            ) as ws:
                await ws.close()
        sse = await s.get(
            url(server, "/api/chat/st/events"),
            params={"accessCode": ACCESS_CODE},
            headers=from_ip("192.0.2.3"),
        )
        assert sse.status == 429
        assert "Retry-After" in sse.headers
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(
                url(server, f"/api/chat?chatId=st&accessCode={ACCESS_CODE}"),
                headers=from_ip("192.0.2.3"),
            )
        assert refused.value.status == 429


async def test_failed_codes_lock_the_client_out_of_every_route_family(
    redis_server: RedisServer,
) -> None:
    async with (
        serving(redis_server, rate_limit_failed_codes_per_ip=3) as server,
        aiohttp.ClientSession() as s,
    ):
        guesser = from_ip("2001:db8:9:9::1")
        wrong = {"accessCode": "guess"}
        assert (
            await s.get(url(server, "/api/health"), params=wrong, headers=guesser)
        ).status == 401
        async with s.ws_connect(
            url(server, "/api/chat?chatId=g&accessCode=guess2"), headers=guesser
        ) as ws:
            await ws.receive(timeout=5)
            assert ws.close_code == 1008
        sse = await s.get(url(server, "/api/chat/g/events"), params=wrong, headers=guesser)
        assert sse.status == 401
        # Three failures spent: even the right code is refused for a while, on any route.
        for path in ("/api/health", "/api/chat/g/messages"):
            locked = await s.get(
                url(server, path), params={"accessCode": ACCESS_CODE}, headers=guesser
            )
            assert locked.status == 429
            assert (await locked.json())["error"].startswith(
                "Too many wrong access codes from your network."
            )
        post = await s.post(
            url(server, "/api/chat/g/messages"),
            json={"content": "x", "accessCode": ACCESS_CODE},
            headers=from_ip("2001:db8:9:9::2"),  # same /64
        )
        assert post.status == 429
        other = await s.get(
            url(server, "/api/health"),
            params={"accessCode": ACCESS_CODE},
            headers=from_ip("2001:db8:9:a::1"),
        )
        assert other.status == 200


async def test_open_sockets_are_capped_per_client_and_in_all(redis_server: RedisServer) -> None:
    async with (
        serving(redis_server, max_sockets_per_client=2, max_sockets=3) as server,
        aiohttp.ClientSession() as s,
    ):

        def socket_url(chat: str) -> str:
            return url(server, f"/api/chat?chatId={chat}&accessCode={ACCESS_CODE}")

        a1 = await s.ws_connect(socket_url("a"), headers=from_ip("192.0.2.10"))
        a2 = await s.ws_connect(socket_url("a"), headers=from_ip("192.0.2.10"))
        with pytest.raises(aiohttp.WSServerHandshakeError) as per_client:
            await s.ws_connect(socket_url("a"), headers=from_ip("192.0.2.10"))
        assert per_client.value.status == 429
        sse = await s.get(
            url(server, "/api/chat/a/events"),
            params={"accessCode": ACCESS_CODE},
            headers=from_ip("192.0.2.10"),
        )
        assert sse.status == 429
        b1 = await s.ws_connect(socket_url("b"), headers=from_ip("192.0.2.11"))
        with pytest.raises(aiohttp.WSServerHandshakeError) as in_all:
            await s.ws_connect(socket_url("b"), headers=from_ip("192.0.2.12"))
        assert in_all.value.status == 503
        await a1.close()

        async def reopened() -> aiohttp.ClientWebSocketResponse | None:
            try:
                return await s.ws_connect(socket_url("a"), headers=from_ip("192.0.2.10"))
            except aiohttp.WSServerHandshakeError:
                return None

        a3 = await wait_until(reopened, 10, "a slot given back on close")
        for ws in (a2, b1, a3):
            await ws.close()


class CountingBus(GatewayBus):
    """The real gateway bus, counting the reads a WebSocket handshake makes."""

    reads = 0

    async def resume_point(self, chat_id: str, *, from_reply_start: bool = False) -> str:
        CountingBus.reads += 1
        return await super().resume_point(chat_id, from_reply_start=from_reply_start)


async def test_websocket_checks_the_code_before_reading_redis(redis_server: RedisServer) -> None:
    settings = gateway_settings(redis_server.url)
    bus = CountingBus(create_redis(redis_server.url, client_name="test"), settings)
    server = TestServer(create_app(settings, bus=bus))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url(server, "/api/chat?chatId=c&accessCode=wrong")) as ws:
                await ws.receive(timeout=5)
                assert ws.close_code == 1008
            assert CountingBus.reads == 0
            async with s.ws_connect(
                url(server, f"/api/chat?chatId=c&accessCode={ACCESS_CODE}")
            ) as ws:
                await ws.close()
            assert CountingBus.reads == 1
    finally:
        await server.close()


class HeldHistoryBus(GatewayBus):
    """The real gateway bus, whose history reads wait until the test lets them go."""

    release = asyncio.Event()
    waiting = 0

    async def history(
        self, chat_id: str, limit: int, *, before: str | None = None
    ) -> list[dict[str, Any]]:
        HeldHistoryBus.waiting += 1
        await HeldHistoryBus.release.wait()
        return await super().history(chat_id, limit, before=before)


async def test_one_client_has_a_few_reads_in_flight_at_most(redis_server: RedisServer) -> None:
    settings = gateway_settings(
        redis_server.url, trusted_proxies=["127.0.0.1"], reads_in_flight_per_client=2
    )
    bus = HeldHistoryBus(create_redis(redis_server.url, client_name="test"), settings)
    server = TestServer(create_app(settings, bus=bus))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:

            async def read(ip: str) -> int:
                async with s.get(
                    url(server, "/api/chat/h/messages"),
                    params={"accessCode": ACCESS_CODE},
                    headers=from_ip(ip),
                ) as r:
                    return r.status

            held = [asyncio.ensure_future(read("192.0.2.50")) for _ in range(2)]
            await wait_until(lambda: HeldHistoryBus.waiting == 2, 10, "two reads in flight")
            assert await read("192.0.2.50") == 429  # a third, same client, at once
            other = asyncio.ensure_future(read("192.0.2.51"))  # another client is not held up
            await wait_until(lambda: HeldHistoryBus.waiting == 3, 10, "the other client's read")
            HeldHistoryBus.release.set()
            assert await asyncio.gather(*held, other) == [200, 200, 200]
            assert await read("192.0.2.50") == 200  # slots given back
    finally:
        await server.close()
