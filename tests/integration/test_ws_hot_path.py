"""The WebSocket hot path (issue 10): the feed writes frames, a socket holds one task.

Before, every socket ran a pump task, a drain task and a stall watcher besides its handler,
and every frame woke the pump through a queue and two async generators.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bus import ChatLog
from gateway.app import create_app
from gateway.metrics import GatewayMetrics
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

SOCKETS = 40
CHATS = 4


@pytest.fixture
async def roomy_gateway(redis_server: RedisServer) -> AsyncIterator[TestServer]:
    settings = gateway_settings(redis_server.url, max_sockets_per_client=SOCKETS + 10)
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def _next_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    frame: dict[str, object] = json.loads(msg.data)
    return frame


async def test_an_open_socket_holds_one_task_and_gets_live_frames_in_order(
    roomy_gateway: TestServer, chat_log: ChatLog
) -> None:
    chats = [f"hot-{i}" for i in range(CHATS)]
    async with aiohttp.ClientSession() as session:
        before = len([t for t in asyncio.all_tasks() if not _aiohttp_task(t)])
        sockets = []
        for n in range(SOCKETS):
            path = f"/api/chat?chatId={chats[n % CHATS]}&accessCode={ACCESS_CODE}&v=2"
            sockets.append(await session.ws_connect(roomy_gateway.make_url(path)))
        # Every socket is live once it received an event appended after it connected.
        sent = {chat: [await chat_log.append_event(chat, _state("queued"))] for chat in chats}
        for n, ws in enumerate(sockets):
            assert (await _next_frame(ws))["eventId"] == sent[chats[n % CHATS]][0]

        # aiohttp runs two tasks per connection (its protocol's and the handler's), as it
        # does for the bare forwarder; the gateway adds none once a socket is live.
        ours = [t for t in asyncio.all_tasks() if not _aiohttp_task(t)]
        assert len(ours) - before <= 2, sorted(map(_name, ours))
        # And no middleware's coroutine stays suspended for the socket's lifetime.
        waiting = {name for t in asyncio.all_tasks() for name in _awaiting(t)}
        assert not {n for n in waiting if "middleware" in n}, sorted(waiting)

        for chat in chats:
            for state in ("processing", "responded"):
                sent[chat].append(await chat_log.append_event(chat, _state(state)))
        for n, ws in enumerate(sockets):
            got = [(await _next_frame(ws))["eventId"] for _ in range(2)]
            assert got == sent[chats[n % CHATS]][1:]
        for ws in sockets:
            await ws.close()


def _name(task: asyncio.Task[object]) -> str:
    return getattr(task.get_coro(), "__qualname__", "?")


def _awaiting(task: asyncio.Task[object]) -> list[str]:
    """The qualified names of the coroutines suspended in ``task``, outermost first."""
    names, coro = [], task.get_coro()
    while coro is not None and hasattr(coro, "cr_await"):
        names.append(getattr(coro, "__qualname__", "?"))
        coro = coro.cr_await
    return names


def _aiohttp_task(task: asyncio.Task[object]) -> bool:
    return _name(task).startswith("RequestHandler.")


def _state(state: str) -> str:
    return json.dumps({"type": "workerState", "state": state, "updatedAt": "2026-01-01T00:00:00Z"})


async def test_live_frames_counted_per_turn_read_as_one_observation_per_frame() -> None:
    """One histogram update per event and turn, with the values one per frame would give."""
    one_by_one, batched = GatewayMetrics(), GatewayMetrics()
    now_ms = int(time.time() * 1000)
    lags = {now_ms - 3000: 3.0, now_ms - 300: 0.3}  # buckets 5.0 and 0.5, whatever the delay
    for _ in range(3):
        for appended_ms, lag in lags.items():
            one_by_one.frames_sent.labels("ws").inc(2)
            one_by_one.delivery_lag.observe(lag)
            one_by_one.delivery_lag.observe(lag)
            batched.live_frames.add("ws", appended_ms)
            batched.live_frames.add("ws", appended_ms)
    await wait_until(
        lambda: _counts(batched).get("terrarium_frames_sent_total ws") == 12,
        timeout=5,
        message="the turn's flush",
    )
    assert _counts(batched) == _counts(one_by_one)


def _counts(metrics: GatewayMetrics) -> dict[str, float]:
    """Frames sent and the lag histogram's buckets and count (not its sum, which is timing)."""
    out = {}
    for family in metrics.registry.collect():
        if family.name in ("terrarium_frames_sent", "terrarium_delivery_lag_seconds"):
            for sample in family.samples:
                if not sample.name.endswith("_sum"):
                    labels = " ".join(v for _, v in sorted(sample.labels.items()))
                    out[f"{sample.name} {labels}"] = sample.value
    return out
