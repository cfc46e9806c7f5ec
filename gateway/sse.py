"""The visitor SSE stream: ``GET /api/chat/{chatId}/events`` (``id:`` is the eventId).

Served like the WebSocket (:mod:`gateway.ws`): the live feed writes each event straight to
the stream's transport (:class:`~gateway.outbox.StreamOutbox`), so a stream runs no task of
its own once its replay is done, and holds no queue; the handler returns once the headers
are out, and the stream lives in :meth:`_LiveStream.write_eof`, with no middleware frame
kept alive. A comment line every :data:`PING_SECONDS` (one timer for all, not a task) keeps proxies
from closing an idle stream and notices a visitor who left. A stream ends, and EventSource
reconnects with ``Last-Event-ID``: after ``SSE_MAX_LIFETIME_SECONDS``, when Redis cannot be
followed, on shutdown, or (cut) when ``SOCKET_BUFFER_BYTES`` wait unsent.

Not aiohttp-sse's ``EventSourceResponse`` (which the gateway used before issue 10): it runs
a ping task per stream and sends each event through the response's writer from the
stream's own task, where the feed writes events directly and a stream holds no task once
replayed (2.6x bare CPU per frame and 3.2x bare memory per stream before, 1.2x and 1.5x after:
``python -m benchmarks.fanout --transport sse``).

Pings come from one timer for the whole process (:class:`gateway.pings.PingWheel`), not one
per stream: a timer handle and its context were about 0.25 KiB of every stream, and each
cancelled handshake timeout stayed in the loop's heap among the live timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Literal

import structlog
from aiohttp import HttpVersion11, web

from gateway.auth import check_origin, require_code
from gateway.backpressure import SendBudget
from gateway.keys import AppKeys
from gateway.limits import client_of
from gateway.outbox import PlainStreamOutbox, StreamOutbox, http_chunk
from gateway.rest import chat_id_of
from gateway.streaming import Ending, Subscription, handshake_point, parse_resume_point

__all__ = ["chat_events"]

log = structlog.get_logger("gateway.sse")

#: Tells EventSource how long to wait before reconnecting (ms).
RECONNECT_MS = 1500
#: A write the visitor's TCP stack does not acknowledge this long means the reader is gone
#: (``TCP_USER_TIMEOUT``: the kernel aborts the connection).
SEND_TIMEOUT_SECONDS = 30.0
#: A comment line this often (seconds).
PING_SECONDS = 15.0

_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)
_RETRY = f"retry: {RECONNECT_MS}\r\n\r\n".encode()
_PING = b": ping\r\n\r\n"
_PING_CHUNK = http_chunk(_PING)

#: Why a stream ended, beyond :data:`~gateway.streaming.Ending`.
_End = Ending | Literal["gone", "lifetime", "restart"]


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
        async with slots.handshake(settings.request_timeout_seconds):
            response = await _serve(request, chat_id, after, v2=v2, client=client)
    except BaseException:
        slots.give_back(client)
        raise
    if not isinstance(response, _LiveStream) or response.life is None:
        slots.give_back(client)  # answered or ended at once; otherwise the stream's life does
    return response


class _LiveStream(web.StreamResponse):
    """An SSE response whose handler returns once the headers are out (see
    :class:`gateway.ws._LiveSocket`): its life runs in :meth:`write_eof`."""

    # Slots, not instance attributes: a key more in the response's __dict__ resizes it.
    __slots__ = ("life", "session")

    def __init__(self) -> None:
        super().__init__(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                "X-Accel-Buffering": "no",
            }
        )
        #: The session whose life :meth:`write_eof` runs; ``None`` once run (or when ended).
        self.life: _Stream | None = None
        self.session: _Stream | None = None

    def stop_streaming(self) -> None:
        """End the stream (on shutdown); EventSource reconnects elsewhere."""
        if self.session is not None:
            self.session.end("restart")

    async def write_eof(self, data: bytes = b"") -> None:
        life, self.life = self.life, None
        if life is not None:
            await life.live(self)
        with contextlib.suppress(ConnectionError):  # the visitor left, or the stream was cut
            await super().write_eof(data)


async def _serve(
    request: web.Request,
    chat_id: str,
    after: str | None,
    *,
    v2: bool,
    client: str,
) -> web.StreamResponse:
    """Send the headers and start following the chat; the stream's life is left in ``life``."""
    settings = request.app[AppKeys.settings]
    metrics = request.app[AppKeys.metrics]
    connections = request.app[AppKeys.connections]
    now = None
    if after is None:
        async with asyncio.timeout(settings.request_timeout_seconds):  # 503 past it
            now = await handshake_point(request.app, chat_id, v2=v2)
    transport = request.transport
    if transport is None or transport.is_closing():
        # The client left while the handshake read Redis: nobody reads an answer.
        log.info("gateway.sse_client_gone", chat_id=chat_id)
        return web.Response(status=499, reason="Client Closed Request")
    stream = _LiveStream()
    _abort_unacknowledged(transport)
    await stream.prepare(request)  # chunked for HTTP/1.1 (no Content-Length), as aiohttp does
    await stream.write(_RETRY)  # the headers go out with it: frames follow, written directly
    # Sent, and nothing reads them again: their table (and what serialising it cached) is
    # about 1 KiB of every stream's memory for its whole life.
    stream.headers.clear()
    # No next request on this connection (EventSource reconnects on a new one, as a
    # WebSocket's does): this also drops aiohttp's keep-alive timer, a timer per stream for
    # its first KEEPALIVE_TIMEOUT_SECONDS (0.5 KiB on uvloop).
    request.protocol.keep_alive(False)
    if connections.closing:
        return stream

    connections.streams.add(stream)
    metrics.connections.labels("sse").inc()
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    session = _Stream(
        request,
        stream,
        chat_id,
        v2=v2,
        resumed=after is not None,
        client=client,
        request_id=request_id,
    )
    stream.session = session
    log.info("gateway.sse_connected", chat_id=chat_id, v2=v2, resume=after is not None)
    session.spawn(session.follow(after or now or "0-0", verify=after is not None))
    stream.life = session
    return stream


def _abort_unacknowledged(transport: asyncio.BaseTransport) -> None:
    """Let the kernel abort the connection once a write stays unacknowledged for
    :data:`SEND_TIMEOUT_SECONDS` (Linux): a hung peer is noticed at the next ping."""
    sock = transport.get_extra_info("socket")
    if _TCP_USER_TIMEOUT is None or sock is None:
        return
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, int(SEND_TIMEOUT_SECONDS * 1000))


class _Stream(Subscription):
    """One SSE stream's subscription (see :class:`~gateway.streaming.Subscription`), its
    pings (by the process's :class:`~gateway.pings.PingWheel`) and its lifetime cap; :attr:`ended`
    resolves with why it ended."""

    __slots__ = (
        "_expiry",
        "budget",
        "client",
        "deadline",
        "ended",
        "ping",
        "pings",
        "request",
        "request_id",
        "transport",
    )
    kind = "sse"

    def __init__(
        self,
        request: web.Request,
        stream: web.StreamResponse,
        chat_id: str,
        *,
        v2: bool,
        resumed: bool,
        client: str,
        request_id: str | None,
    ) -> None:
        app = request.app
        settings = app[AppKeys.settings]
        meter = app[AppKeys.metrics].deliveries("sse", resumed=resumed)
        self.request = request
        self.transport = request.transport
        self.budget = SendBudget(self.transport, settings.socket_buffer_bytes)
        chunked = request.version >= HttpVersion11  # aiohttp's own choice for a stream
        self.ping = _PING_CHUNK if chunked else _PING
        outbox = (StreamOutbox if chunked else PlainStreamOutbox)(
            stream,
            self.transport,
            self.budget,
            meter,
            v2=v2,
            on_stall=self._on_stall,
        )
        super().__init__(app, chat_id, outbox, v2=v2)
        #: Whose socket slot this is (given back when the stream ends).
        self.client = client
        #: The handshake's request id, named in the closing log line (no context is bound
        #: for the hours a stream may last: 272 bytes a stream).
        self.request_id = request_id
        loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[_End] = loop.create_future()
        self.deadline = loop.time() + settings.sse_max_lifetime_seconds
        #: A timer of its own only within a ping interval of the lifetime cap.
        self._expiry: asyncio.TimerHandle | None = None
        self.pings = app[AppKeys.pings]
        self.pings.add(self)
        self._near_the_end(loop)

    async def live(self, stream: _LiveStream) -> None:
        """The stream's life: wait until it ends. The feed writes the frames, the process's
        ping wheel pings."""
        request = self.request
        app = request.app
        metrics = app[AppKeys.metrics]
        try:
            why = await self.ended
        finally:
            self.stop()
            stream.session = None
            metrics.connections.labels("sse").dec()
            app[AppKeys.connections].streams.discard(stream)
            app[AppKeys.sockets].give_back(self.client)
        if why == "slow":
            metrics.slow_consumers.inc()
            if request.transport is not None:
                request.transport.abort()
        log.info("gateway.sse_closed", chat_id=self.chat_id, reason=why, request_id=self.request_id)

    def end(self, why: _End) -> None:
        if not self.ended.done():
            self.ended.set_result(why)

    def tick(self, now: float) -> None:
        """Ping (and notice a visitor who left), or end the stream at its lifetime cap."""
        if now >= self.deadline:
            self.end("lifetime")
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            self.end("gone")
            return
        transport.write(self.ping)
        if self.budget.wrote(len(self.ping)):
            self.end("slow")
            return
        self._near_the_end(asyncio.get_running_loop())

    def _near_the_end(self, loop: asyncio.AbstractEventLoop) -> None:
        """Within a ping interval of the cap, a timer of its own ends the stream on time."""
        if self._expiry is None and self.deadline - loop.time() <= self.pings.period:
            self._expiry = loop.call_at(self.deadline, self.end, "lifetime")

    def stop(self) -> None:
        super().stop()
        self.pings.discard(self)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
