"""The streaming agent call's read timeout (worker.agent_stream): a stream silent for the
timeout fails as ``timeout``, before or after its first event; a slow but steady one does
not, however long it runs; and the timeout costs no timer per packet (issue 10)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from worker.agent_stream import AgentStreamer
from worker.errors import AgentError

#: The read timeout's timer callbacks: aiohttp's (per packet) and worker.agent_stream's.
READ_TIMERS = {"ResponseHandler._on_read_timeout", "_Idle._check"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def event(text: str) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def tokens(count: int, gap: float, *, then_stall: bool = False) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(count):
            await resp.write(event(f"t{i} "))
            await asyncio.sleep(gap)
        if then_stall:
            await asyncio.Event().wait()
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return handler


async def no_headers(request: web.Request) -> web.StreamResponse:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/v1"))

    yield start
    for server in servers:
        await server.close()


async def collect(streamer: AgentStreamer) -> list[dict[str, Any]]:
    try:
        return [e async for e in streamer.events(b"{}")]
    finally:
        await streamer.aclose()


@pytest.mark.parametrize(
    "handler", [tokens(2, 0.0, then_stall=True), no_headers], ids=["mid-stream", "no-headers"]
)
async def test_a_silent_agent_times_out(
    serve: Callable[[Handler], Awaitable[str]], handler: Handler
) -> None:
    streamer = AgentStreamer(await serve(handler), None, timeout_seconds=0.3)
    with pytest.raises(AgentError) as failed:
        await asyncio.wait_for(collect(streamer), timeout=10)
    assert failed.value.category == "timeout"


async def test_a_slow_steady_stream_outlasts_the_timeout(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    streamer = AgentStreamer(await serve(tokens(8, 0.1)), None, timeout_seconds=1.0)
    events = await collect(streamer)  # 0.8 s at least, each gap far below the timeout
    assert len(events) == 8


async def test_the_read_timeout_sets_no_timer_per_packet(
    serve: Callable[[Handler], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await serve(tokens(60, 0.005))
    loop = asyncio.get_running_loop()
    timers = 0
    call_at = loop.call_at

    def counted(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        nonlocal timers
        if getattr(callback, "__qualname__", "") in READ_TIMERS:
            timers += 1
        return call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counted)
    events = await collect(AgentStreamer(url, None, timeout_seconds=30))
    assert len(events) == 60
    assert timers < 10  # a timer per packet would be ~60
