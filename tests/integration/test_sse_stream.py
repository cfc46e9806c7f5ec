"""The SSE stream on the direct-write path: a stalled reader is cut by bytes, pings keep an
idle stream alive, and the lifetime cap ends it so EventSource resumes without a gap."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bus import ChatLog
from gateway import sse
from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


async def test_a_stalled_sse_reader_is_cut_off_by_bytes(
    redis_server: RedisServer, chat_log: ChatLog
) -> None:
    settings = gateway_settings(
        redis_server.url, socket_queue_size=100_000, socket_buffer_bytes=256 * 1024
    )
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            posted = await s.post(
                server.make_url("/api/chat/stall/messages"),
                json={"content": "q", "accessCode": ACCESS_CODE},
            )
            msg = await posted.json()
            slow = await s.get(server.make_url(f"/api/chat/stall/events?accessCode={ACCESS_CODE}"))
            assert slow.status == 200
            assert slow.connection is not None
            assert slow.connection.transport is not None
            transport = slow.connection.transport
            transport.pause_reading()

            async def slow_consumers() -> bool:
                text = await (await s.get(server.make_url("/metrics"))).text()
                return "terrarium_slow_consumers_total 1.0" in text

            big = "x" * 4000
            for _ in range(3000):  # 12 MB: far past the budget
                await chat_log.append_chunk("stall", msg["id"], big)
            await wait_until(slow_consumers, timeout=20, message="stalled stream never cut off")
            transport.resume_reading()
            slow.close()
    finally:
        await server.close()


async def test_an_idle_stream_is_pinged_and_ends_at_its_lifetime_then_resumes(
    redis_server: RedisServer, chat_log: ChatLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "PING_SECONDS", 0.05)
    settings = gateway_settings(redis_server.url, sse_max_lifetime_seconds=1.0)
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            posted = await s.post(
                server.make_url("/api/chat/life/messages"),
                json={"content": "q", "accessCode": ACCESS_CODE},
            )
            msg = await posted.json()
            query = f"accessCode={ACCESS_CODE}&v=2"
            lines: list[bytes] = []
            last_id = msg["eventId"]
            async with s.get(
                server.make_url(f"/api/chat/life/events?{query}"),
                headers={"Last-Event-ID": last_id},
            ) as first:
                assert first.headers["Content-Type"] == "text/event-stream"
                async for line in first.content:  # until the gateway ends the stream
                    lines.append(line)
            assert lines[:2] == [b"retry: 1500\r\n", b"\r\n"]
            assert b": ping\r\n" in lines
            await chat_log.append_chunk("life", msg["id"], "while away")
            async with s.get(
                server.make_url(f"/api/chat/life/events?{query}"),
                headers={"Last-Event-ID": last_id},
            ) as again:
                async for line in again.content:
                    if line.startswith(b"data:"):
                        frame = json.loads(line[5:])
                        if frame.get("type") == "assistantChunk":
                            break
            assert frame["content"] == "while away"
    finally:
        await server.close()
