"""What an idle WebSocket or SSE stream keeps for its life (issue 10: memory per socket):
no response header table once the headers are out, no timer per socket (one wheel pings the
SSE streams, one the WebSockets; the lifetime cap still ends a stream on time, a socket that
stops answering pings is still cut), and its slot back at the end."""

from __future__ import annotations

import asyncio
import json
from typing import cast

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bus import ChatLog
from gateway import sse
from gateway.app import create_app
from gateway.keys import AppKeys
from gateway.streaming import Subscription
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

QUERY = f"accessCode={ACCESS_CODE}&v=2"


async def test_idle_sockets_keep_no_header_table_and_streams_no_timer_of_their_own(
    redis_server: RedisServer,
) -> None:
    server = TestServer(create_app(gateway_settings(redis_server.url)))
    await server.start_server()
    app = server.app
    assert app is not None
    connections, pings, slots = app[AppKeys.connections], app[AppKeys.pings], app[AppKeys.sockets]
    try:
        async with aiohttp.ClientSession() as s:
            streams = [
                await s.get(server.make_url(f"/api/chat/idle-{i}/events?{QUERY}")) for i in range(3)
            ]
            sockets = [
                await s.ws_connect(server.make_url(f"/api/chat?chatId=idle-{i}&{QUERY}"))
                for i in range(3)
            ]
            for stream in streams:  # the headers went out before the server let go of them
                assert stream.status == 200
                assert stream.headers["Content-Type"] == "text/event-stream"
                assert stream.headers["Cache-Control"] == "no-cache"
                assert stream.headers["X-Accel-Buffering"] == "no"
            await wait_until(
                lambda: len(connections.streams) == 3 and len(connections.websockets) == 3,
                10,
                "every socket open",
            )
            for response in [*connections.streams, *connections.websockets]:
                assert len(response.headers) == 0
            assert len(pings) == 3
            assert pings.running
            for served in connections.streams:
                session = getattr(served, "session", None)
                assert session is not None
                assert session._expiry is None  # an hour from its cap: no timer of its own
                # ... nor aiohttp's keep-alive timer (there is no next request to wait for)
                assert session.request.protocol._keepalive_handle is None
            assert len(app[AppKeys.heartbeats]) == 3  # the WebSockets: one wheel, no timer each
            sessions = [*pings, *app[AppKeys.heartbeats]]
            assert all(isinstance(session, Subscription) for session in sessions)
            followed = [cast(Subscription, session) for session in sessions]
            await wait_until(
                lambda: all(session.listener for session in followed), 10, "replays never done"
            )
            for pinged in followed:
                assert pinged.listener is not None  # one stall callback, shared
                assert pinged.listener.on_overflow is pinged.outbox.on_stall
            for stream in streams:
                stream.close()
            for ws in sockets:
                await ws.close()
            await wait_until(lambda: slots.in_use == 0, 10, "every slot given back")
            await wait_until(lambda: not connections.streams, 10, "streams still registered")
            assert len(pings) == 0
            assert not pings.running
    finally:
        await server.close()


async def test_the_lifetime_cap_ends_a_stream_on_time_between_pings(
    redis_server: RedisServer,
) -> None:
    assert sse.PING_SECONDS >= 10  # the cap falls between two of the wheel's visits
    settings = gateway_settings(redis_server.url, sse_max_lifetime_seconds=0.5)
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            timeout = aiohttp.ClientTimeout(total=sse.PING_SECONDS / 2)
            async with s.get(
                server.make_url(f"/api/chat/brief/events?{QUERY}"), timeout=timeout
            ) as stream:
                assert stream.status == 200
                body = await stream.content.read()  # until the gateway ends the stream
            assert body.startswith(b"retry: 1500\r\n\r\n")
            assert b": ping" not in body
    finally:
        await server.close()


async def test_a_socket_is_pinged_while_it_answers_and_cut_once_it_stops(
    redis_server: RedisServer,
) -> None:
    server = TestServer(create_app(gateway_settings(redis_server.url, ws_heartbeat_seconds=0.3)))
    await server.start_server()
    app = server.app
    assert app is not None
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(
                server.make_url(f"/api/chat?chatId=beat&{QUERY}"), autoping=False, heartbeat=None
            ) as ws,
        ):
            await ws.ping(b"are you there")  # the visitor's own ping is answered
            pings = 0
            while True:
                msg = await ws.receive(timeout=10)
                if msg.type == aiohttp.WSMsgType.PONG:
                    assert msg.data == b"are you there"
                    break
                assert msg.type == aiohttp.WSMsgType.PING
                pings += 1
                await ws.pong(msg.data)
            while pings < 3:  # answered: the gateway keeps pinging, the socket stays
                msg = await ws.receive(timeout=10)
                if msg.type == aiohttp.WSMsgType.PING:
                    pings += 1
                    await ws.pong(msg.data)
            assert len(app[AppKeys.heartbeats]) == 1
            while True:  # no more answers: cut, with no close frame
                msg = await ws.receive(timeout=10)
                if msg.type != aiohttp.WSMsgType.PING:
                    break
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        await wait_until(lambda: app[AppKeys.sockets].in_use == 0, 10, "slot never given back")
        assert len(app[AppKeys.heartbeats]) == 0
        assert not app[AppKeys.heartbeats].running
    finally:
        await server.close()


async def test_an_http10_stream_gets_plain_events_and_pings_and_ends_at_its_cap(
    redis_server: RedisServer, chat_log: ChatLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "PING_SECONDS", 0.05)  # before create_app: the wheel's period
    server = TestServer(create_app(gateway_settings(redis_server.url, sse_max_lifetime_seconds=2)))
    await server.start_server()
    app = server.app
    assert app is not None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /api/chat/h10/events?{QUERY} HTTP/1.0\r\nHost: t\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
        assert b"chunked" not in head.lower()
        pings = app[AppKeys.pings]
        await wait_until(lambda: len(pings) == 1, 10, "stream never registered")
        (session,) = list(pings)
        assert isinstance(session, Subscription)
        await wait_until(lambda: session.listener is not None, 10, "replay never done")
        await chat_log.append_chunk("h10", "m-1", "plain")
        body = await asyncio.wait_for(reader.read(), 20)  # until the cap closes the stream
        writer.close()
        assert body.startswith(b"retry: 1500\r\n\r\n")  # no chunk sizes: HTTP/1.0 framing
        assert b": ping\r\n\r\n" in body
        data = [line for line in body.split(b"\r\n") if line.startswith(b"data: ")]
        assert [json.loads(line[6:])["content"] for line in data] == ["plain"]
    finally:
        await server.close()
