"""The visitor WebSocket: ``/api/chat?chatId=&accessCode=[&lastEventId=][&v=2]``."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import WSMsgType, web
from aiohttp_sse import EventSourceResponse

from bus import BusError, SlowConsumer, is_valid_chat_id
from gateway.auth import access_holds, check_origin
from gateway.backpressure import SendBudget
from gateway.errors import CloseCode, json_error
from gateway.keys import AppKeys
from gateway.limits import client_of, note_failed_code
from gateway.settings import GatewaySettings
from gateway.streaming import (
    follow_frames,
    handshake_point,
    parse_resume_point,
    run_until_stalled,
)

__all__ = ["chat_socket"]

log = structlog.get_logger("gateway.ws")

#: A stalled socket gets this long to take the close frame before the transport is cut.
CLOSE_GRACE_SECONDS = 1.0


async def chat_socket(request: web.Request) -> web.StreamResponse:
    """Stream a chat's frames to one browser socket (client frames are ignored)."""
    settings = request.app[AppKeys.settings]
    check_origin(request, settings)
    chat_id = request.query.get("chatId", "")
    if chat_id and not is_valid_chat_id(chat_id):
        raise json_error(400, "Invalid chat id")
    after = parse_resume_point(request.query.get("lastEventId"))
    v2 = request.query.get("v") == "2"
    # The code is checked before anything is read from Redis: a guess costs no Redis read.
    code_ok = access_holds(request, request.query.get("accessCode"))
    if not code_ok:
        await note_failed_code(request)
    if not chat_id or not code_ok:
        refused = _socket(settings)
        await refused.prepare(request)
        await refused.close(code=CloseCode.POLICY, message=b"Unauthorized")
        return refused
    slots = request.app[AppKeys.sockets]
    client = client_of(request)
    slots.take(client)  # 429 (this client's share) or 503 (the process's), before upgrading
    try:
        return await _serve(request, chat_id, after, v2=v2)
    finally:
        slots.give_back(client)


def _socket(settings: GatewaySettings) -> web.WebSocketResponse:
    # No permessage-deflate: frames are ~200 bytes, and a compressor per socket costs
    # ~120 KiB of memory (measured by benchmarks/fanout.py --ws-compress).
    return web.WebSocketResponse(
        heartbeat=settings.ws_heartbeat_seconds, max_msg_size=4096, compress=False
    )


async def _serve(
    request: web.Request, chat_id: str, after: str | None, *, v2: bool
) -> web.WebSocketResponse:
    settings = request.app[AppKeys.settings]
    metrics = request.app[AppKeys.metrics]
    connections = request.app[AppKeys.connections]
    now = None
    if after is None:
        async with asyncio.timeout(settings.request_timeout_seconds):  # 503 past it
            now = await handshake_point(request.app, chat_id, v2=v2)
    ws = _socket(settings)
    await ws.prepare(request)
    if connections.closing:
        await ws.close(code=CloseCode.SERVICE_RESTART, message=b"Service restart")
        return ws

    connections.websockets.add(ws)
    metrics.connections.labels("ws").inc()
    deliveries = metrics.deliveries("ws", resumed=after is not None)
    stalled = asyncio.Event()

    budget = SendBudget(request.transport, settings.socket_buffer_bytes)

    async def pump() -> None:
        async for event_id, frame in follow_frames(
            request.app, chat_id, after, v2=v2, on_overflow=stalled.set, now=now
        ):
            await ws.send_str(frame)
            if budget.exceeded():
                stalled.set()
                return
            if event_id is not None:
                deliveries.observe(event_id)

    async def drain_client() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                return

    log.info("gateway.ws_connected", chat_id=chat_id, v2=v2, resume=after is not None)
    code, reason = CloseCode.NORMAL, b""
    try:
        outcome = await run_until_stalled(pump(), stalled, drain_client())
        if outcome == "stalled":
            metrics.slow_consumers.inc()
            code, reason = CloseCode.SLOW_CONSUMER, b"Slow consumer; resume"
    except SlowConsumer:
        metrics.slow_consumers.inc()
        code, reason = CloseCode.SLOW_CONSUMER, b"Slow consumer; resume"
    except (BusError, OSError, TimeoutError):
        code, reason = CloseCode.TRY_AGAIN_LATER, b"Temporarily unavailable"
    finally:
        metrics.connections.labels("ws").dec()
        connections.websockets.discard(ws)
    if not ws.closed:
        if connections.closing:
            code, reason = CloseCode.SERVICE_RESTART, b"Service restart"
        try:
            async with asyncio.timeout(CLOSE_GRACE_SECONDS):
                await ws.close(code=code, message=reason)
        except (TimeoutError, ConnectionError):
            if request.transport is not None:
                request.transport.abort()
    log.info("gateway.ws_closed", chat_id=chat_id, code=int(code))
    return ws


async def close_all(app: web.Application) -> None:
    """on_shutdown: tell every socket to reconnect elsewhere (1012), then end SSE streams.

    An ended SSE stream makes EventSource reconnect (after ``retry``) with
    ``Last-Event-ID``, to another gateway behind the load balancer.
    """
    connections = app[AppKeys.connections]
    connections.closing = True
    for stream in list(connections.streams):
        if isinstance(stream, EventSourceResponse):
            stream.stop_streaming()
    closers = [
        ws.close(code=CloseCode.SERVICE_RESTART, message=b"Service restart")
        for ws in list(connections.websockets)
    ]
    if closers:
        await asyncio.wait(
            [asyncio.ensure_future(c) for c in closers], timeout=CLOSE_GRACE_SECONDS * 2
        )
