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


def done_then_end_later(peers: list[Any], ended: asyncio.Event) -> Handler:
    """Two tokens and ``[DONE]``; the body's end (chunked terminator) follows in a later
    packet, as from a server that writes ``[DONE]`` and then returns the response."""

    async def handler(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            await resp.write(event("hi ") + event("there") + b"data: [DONE]\n\n")
            await asyncio.sleep(0.05)  # [DONE] reaches the client before the body's end
            await resp.write_eof()
        finally:  # also when the client dropped the connection
            ended.set()
        return resp

    return handler


async def test_replies_reuse_the_agent_connection_when_the_body_ends_after_done(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    """A reply that stops reading at ``[DONE]`` must still give its connection back: a
    new TCP (and TLS) connection per reply cost the worker ~10 % of its CPU per short
    exchange (issue 10) and the agent host a handshake per answer."""
    peers: list[Any] = []
    ended = asyncio.Event()
    streamer = AgentStreamer(await serve(done_then_end_later(peers, ended)), None, 30)
    try:
        for _ in range(3):
            ended.clear()
            events = [e async for e in streamer.events(b"{}")]
            assert len(events) == 2
            await ended.wait()
            await streamer.settled()  # the body's end was read: the connection is idle
        assert len(peers) == 3
        assert len(set(peers)) == 1, f"one connection per reply: {peers}"
    finally:
        await streamer.aclose()


async def test_a_body_that_never_ends_after_done_drops_its_connection(
    serve: Callable[[Handler], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ``[DONE]`` the answer is complete at once; a body that then never ends is
    dropped after a bound instead of being kept for the next reply."""
    monkeypatch.setattr("worker.agent_stream.DRAIN_SECONDS", 0.2)
    peers: list[Any] = []

    async def never_ends(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(event("hi") + b"data: [DONE]\n\n")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    streamer = AgentStreamer(await serve(never_ends), None, 30)
    try:
        for _ in range(2):
            events = await asyncio.wait_for(collect_open(streamer), timeout=10)
            assert len(events) == 1
            await streamer.settled()
        assert len(set(peers)) == 2  # the stuck connection was not reused
    finally:
        await streamer.aclose()


async def collect_open(streamer: AgentStreamer) -> list[dict[str, Any]]:
    return [e async for e in streamer.events(b"{}")]
