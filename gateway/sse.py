"""The visitor SSE stream: ``GET /api/chat/{chatId}/events`` (``id:`` is the eventId)."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiohttp import web
from aiohttp_sse import sse_response

from bus import BusError, SlowConsumer
from gateway.auth import check_origin, require_code
from gateway.backpressure import SendBudget
from gateway.keys import AppKeys
from gateway.limits import client_of
from gateway.rest import chat_id_of
from gateway.streaming import (
    follow_frames,
    handshake_point,
    parse_resume_point,
    run_until_stalled,
)

__all__ = ["chat_events"]

log = structlog.get_logger("gateway.sse")

#: Tells EventSource how long to wait before reconnecting (ms).
RECONNECT_MS = 1500
#: A write blocked this long means the reader stalled.
SEND_TIMEOUT_SECONDS = 30.0


async def chat_events(request: web.Request) -> web.StreamResponse:
    """Stream a chat's frames as Server-Sent Events; resumes from ``Last-Event-ID``."""
    settings = request.app[AppKeys.settings]
    check_origin(request, settings)
    chat_id = chat_id_of(request)
    require_code(request.query.get("accessCode"), request)
    after = parse_resume_point(
        request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    )
    v2 = request.query.get("v") == "2"
    slots = request.app[AppKeys.sockets]
    client = client_of(request)
    slots.take(client)  # 429 (this client's share) or 503 (the process's), before streaming
    try:
        return await _serve(request, chat_id, after, v2=v2)
    finally:
        slots.give_back(client)


async def _serve(
    request: web.Request, chat_id: str, after: str | None, *, v2: bool
) -> web.StreamResponse:
    settings = request.app[AppKeys.settings]
    metrics = request.app[AppKeys.metrics]
    connections = request.app[AppKeys.connections]
    now = None
    if after is None:
        async with asyncio.timeout(settings.request_timeout_seconds):  # 503 past it
            now = await handshake_point(request.app, chat_id, v2=v2)
    stalled = asyncio.Event()
    if request.transport is None or request.transport.is_closing():
        # The client left while the handshake read Redis: nobody reads an answer (aiohttp-sse
        # would assert on the missing transport). Nothing awaits between here and prepare().
        log.info("gateway.sse_client_gone", chat_id=chat_id)
        return web.Response(status=499, reason="Client Closed Request")

    async with sse_response(
        request,
        headers={"X-Accel-Buffering": "no"},
        ping_interval=15,
        send_timeout=SEND_TIMEOUT_SECONDS,
    ) as stream:
        connections.streams.add(stream)
        metrics.connections.labels("sse").inc()
        deliveries = metrics.deliveries("sse", resumed=after is not None)
        first = True
        budget = SendBudget(request.transport, settings.socket_buffer_bytes)

        async def pump() -> None:
            nonlocal first
            async for event_id, frame in follow_frames(
                request.app, chat_id, after, v2=v2, on_overflow=stalled.set, now=now
            ):
                await stream.send(frame, id=event_id, retry=RECONNECT_MS if first else None)
                first = False
                if budget.exceeded():
                    stalled.set()
                    return
                if event_id is not None:
                    deliveries.observe(event_id)

        log.info("gateway.sse_connected", chat_id=chat_id, v2=v2, resume=after is not None)
        try:
            async with asyncio.timeout(settings.sse_max_lifetime_seconds):
                outcome = await run_until_stalled(pump(), stalled, stream.wait())
            if outcome == "stalled":
                metrics.slow_consumers.inc()
                if request.transport is not None:
                    request.transport.abort()
        except SlowConsumer:
            metrics.slow_consumers.inc()
        except (TimeoutError, BusError, ConnectionError):
            pass  # lifetime cap or Redis trouble: EventSource reconnects with Last-Event-ID
        finally:
            metrics.connections.labels("sse").dec()
            connections.streams.discard(stream)
        with contextlib.suppress(Exception):
            stream.stop_streaming()
    return stream
