"""A Redis too busy to confirm a subscription in time does not cost the visitor the socket.

The feed waits ``confirm_timeout`` for Redis to confirm a chat's subscription. On a
saturated box that wait can run out while Redis and the feed's connection are fine, just
late: the socket (or SSE stream) stays open, waits again, and replays from the log what it
missed once the subscription is confirmed. Only a feed that lost Redis gives up (1013).
Redis is made late for real: SIGSTOPped at the moment the socket starts subscribing.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bus import BusError, ChatLog
from bus.pubsub import ChatFeed, Listener
from gateway.app import create_app
from gateway.keys import AppKeys
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


class LateRedis:
    """Stops Redis when a listener starts subscribing; counts the confirmations given up."""

    def __init__(self, feed: ChatFeed, redis_server: RedisServer) -> None:
        assert redis_server.proc is not None
        self.proc = redis_server.proc
        self.real = feed.open_listener
        self.stopped = False
        self.given_up = 0

    async def open_listener(
        self, chat_id: str, on_overflow: Callable[[], None] | None = None
    ) -> Listener:
        if not self.stopped:
            self.stopped = True
            self.proc.send_signal(signal.SIGSTOP)  # alive, connections open, answers nothing
        try:
            return await self.real(chat_id, on_overflow)
        except BusError:
            self.given_up += 1
            raise

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


async def frames(transport: str, s: aiohttp.ClientSession, url: str) -> AsyncIterator[Any]:
    """The frames a v2 client of ``transport`` receives; raises when the server ends it."""
    if transport == "ws":
        async with s.ws_connect(url) as ws:
            async for msg in ws:
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                yield json.loads(msg.data)
        raise AssertionError(f"the socket was closed: {ws.close_code}")
    async with s.get(url) as response:
        assert response.status == 200
        async for line in response.content:
            if line.startswith(b"data:"):
                yield json.loads(line[5:])
    raise AssertionError("the stream ended")


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_a_subscription_confirmed_late_keeps_the_socket_and_replays_the_gap(
    redis_server: RedisServer,
    chat_log: ChatLog,
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    server = TestServer(create_app(gateway_settings(redis_server.url)))
    await server.start_server()
    late: LateRedis | None = None
    try:
        feed: ChatFeed = server.app[AppKeys.bus]._feed
        monkeypatch.setattr(feed, "confirm_timeout", 0.2)
        late = LateRedis(feed, redis_server)
        monkeypatch.setattr(feed, "open_listener", late.open_listener)
        chat = f"late-{transport}"
        async with aiohttp.ClientSession() as s:
            posted = await s.post(
                server.make_url(f"/api/chat/{chat}/messages"),
                json={"content": "q", "accessCode": ACCESS_CODE},
            )
            msg = await posted.json()
            await chat_log.append_chunk(chat, msg["id"], "before")
            query = f"accessCode={ACCESS_CODE}&v=2&lastEventId={msg['eventId']}"
            path = f"/api/chat?chatId={chat}&" if transport == "ws" else f"/api/chat/{chat}/events?"
            url = str(server.make_url(path + query))
            received: list[Any] = []

            async def read() -> None:
                async for frame in frames(transport, s, url):
                    received.append(frame)

            reader = asyncio.ensure_future(read())
            try:
                await wait_until(lambda: late.given_up > 0 or reader.done(), 10, "a confirm wait")
                late.resume()

                def got(content: str) -> bool:
                    return reader.done() or any(f.get("content") == content for f in received)

                await wait_until(lambda: got("before"), 15, "the replay")
                await chat_log.append_chunk(chat, msg["id"], "after")
                await wait_until(lambda: got("after"), 15, "a live frame")
                if reader.done():
                    reader.result()  # the reason the socket ended
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        assert late.given_up >= 1  # the wait did run out while Redis was stopped
        chunks = [f["content"] for f in received if f["type"] == "assistantChunk"]
        assert chunks == ["before", "after"]  # the gap replayed, then live; once each
        ids = [f["eventId"] for f in received]
        assert len(ids) == len(set(ids))
    finally:
        if late is not None:
            late.resume()
        await server.close()
