"""The visitor WebSocket: ``/api/chat?chatId=&accessCode=[&lastEventId=][&v=2]``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from bus import is_valid_chat_id
from gateway.auth import access_holds, check_origin
from gateway.backpressure import SendBudget
from gateway.errors import CloseCode, json_error
from gateway.keys import AppKeys
from gateway.limits import client_of, note_failed_code
from gateway.outbox import SocketOutbox
from gateway.settings import GatewaySettings
from gateway.streaming import Ending, Subscription, handshake_point, parse_resume_point

__all__ = ["chat_socket"]

log = structlog.get_logger("gateway.ws")

#: A stalled socket gets this long to take the close frame before the transport is cut.
CLOSE_GRACE_SECONDS = 1.0
#: An empty ping frame, server to client (FIN, opcode 0x9, unmasked, length 0).
_PING_FRAME = b"\x89\x00"
#: Closes started by the feed's side (a stalled socket): held until they finish.
_CLOSING: set[asyncio.Future[None]] = set()


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
        async with slots.handshake(settings.request_timeout_seconds):
            ws = await _serve(request, chat_id, after, v2=v2, client=client)
    except BaseException:
        slots.give_back(client)
        raise
    if ws.life is None:  # closed at once; otherwise its life gives the slot back
        slots.give_back(client)
    return ws


class _LiveSocket(web.WebSocketResponse):
    """A WebSocket whose handler returns once the handshake is done.

    aiohttp calls :meth:`write_eof` after the handler (and every middleware around it)
    returned; the socket's life runs there. So no middleware's coroutine frame stays alive
    for the hours a socket may stay open (about 2.4 KiB per socket).
    """

    # A slot, not an instance attribute: one more key in the response's __dict__ made
    # aiohttp's next attribute write resize it (+1.5 KiB per socket).
    __slots__ = ("life",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The session whose life :meth:`write_eof` runs; ``None`` once run (or when closed).
        #: The session itself, not a closure over it: a partial and its arguments cost
        #: about 0.5 KiB per socket for as long as the socket lives.
        self.life: _Session | None = None

    async def write_eof(self) -> None:  # type: ignore[override]
        life, self.life = self.life, None
        if life is not None:
            await life.live()
        await super().write_eof()


def _socket(settings: GatewaySettings) -> _LiveSocket:
    # No permessage-deflate: frames are ~200 bytes, and a compressor per socket costs
    # ~120 KiB of memory (measured by benchmarks/fanout.py --ws-compress).
    # No aiohttp heartbeat: its timer per socket (about 0.6 KiB on uvloop, with the context
    # it keeps) is replaced by the process's heartbeat wheel (_Session.tick), so pongs and
    # pings come to the session (autoping off).
    return _LiveSocket(max_msg_size=4096, compress=False, autoping=False)


async def _serve(
    request: web.Request,
    chat_id: str,
    after: str | None,
    *,
    v2: bool,
    client: str,
) -> _LiveSocket:
    """Upgrade and start following the chat; the socket's life is left in ``ws.life``."""
    settings = request.app[AppKeys.settings]
    metrics = request.app[AppKeys.metrics]
    connections = request.app[AppKeys.connections]
    now = None
    if after is None:
        async with asyncio.timeout(settings.request_timeout_seconds):  # 503 past it
            now = await handshake_point(request.app, chat_id, v2=v2)
    ws = _socket(settings)
    await ws.prepare(request)
    # The 101's headers are on their way (serialised by prepare) and nothing reads them
    # again: their table is about 0.3 KiB of every socket's memory for its whole life.
    ws.headers.clear()
    if connections.closing:
        await ws.close(code=CloseCode.SERVICE_RESTART, message=b"Service restart")
        return ws

    connections.websockets.add(ws)
    metrics.connections.labels("ws").inc()
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    session = _Session(
        request, ws, chat_id, v2=v2, resumed=after is not None, client=client, request_id=request_id
    )
    log.info("gateway.ws_connected", chat_id=chat_id, v2=v2, resume=after is not None)
    try:
        session.spawn(session.follow(after or now or "0-0", verify=after is not None))
    except BaseException:
        _ended(request, ws, session)
        raise
    ws.life = session
    return ws


def _ended(request: web.Request, ws: web.WebSocketResponse, session: _Session) -> None:
    session.stop()
    request.app[AppKeys.metrics].connections.labels("ws").dec()
    request.app[AppKeys.connections].websockets.discard(ws)


async def _close(request: web.Request, ws: web.WebSocketResponse, code: int, reason: bytes) -> None:
    """Close with ``code``; a socket that does not take the close frame in time is cut."""
    try:
        async with asyncio.timeout(CLOSE_GRACE_SECONDS):
            await ws.close(code=code, message=reason)
    except (TimeoutError, ConnectionError, RuntimeError):  # RuntimeError: uvloop, transport closed
        if request.transport is not None:
            request.transport.abort()


class _Session(Subscription):
    """One socket's subscription (see :class:`~gateway.streaming.Subscription`), its
    heartbeat, and how it closes: 4000 when the visitor fell behind, 1013 when Redis cannot
    be followed; cut (1006) when it stopped answering pings."""

    __slots__ = ("client", "code", "reason", "request", "request_id", "unanswered", "ws")
    kind = "ws"

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        chat_id: str,
        *,
        v2: bool,
        resumed: bool,
        client: str,
        request_id: str | None,
    ) -> None:
        app = request.app
        settings = app[AppKeys.settings]
        meter = app[AppKeys.metrics].deliveries("ws", resumed=resumed)
        budget = SendBudget(request.transport, settings.socket_buffer_bytes)
        outbox = SocketOutbox(ws, request.transport, budget, meter, v2=v2, on_stall=self._on_stall)
        super().__init__(app, chat_id, outbox, v2=v2)
        self.request = request
        self.ws = ws
        #: Whose socket slot this is (given back when the socket ends).
        self.client = client
        #: The handshake's request id, named in the closing log line. Not bound as a log
        #: context for the socket's life: that context costs every socket its memory.
        self.request_id = request_id
        self.code: CloseCode | None = None
        self.reason = b""
        #: A ping went out and nothing came back since.
        self.unanswered = False

    async def live(self) -> None:
        """The socket's life: read the client's frames (pongs, pings, close) until it ends.

        The feed writes the frames, the heartbeat wheel pings; this only reads. Runs in
        :meth:`_LiveSocket.write_eof`, after the middlewares returned.
        """
        request, ws = self.request, self.ws
        app = request.app
        heartbeats = app[AppKeys.heartbeats]
        heartbeats.add(self)
        try:
            async for msg in ws:
                self.unanswered = False  # any frame shows the visitor is there
                if msg.type == WSMsgType.PING:  # answered as aiohttp's autoping did
                    with contextlib.suppress(ConnectionError, RuntimeError):  # gone: EOF next
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            heartbeats.discard(self)
            _ended(request, ws, self)
            app[AppKeys.sockets].give_back(self.client)
        code, reason = self.code or CloseCode.NORMAL, self.reason
        if code == CloseCode.SLOW_CONSUMER:
            app[AppKeys.metrics].slow_consumers.inc()
        if not ws.closed and code != CloseCode.ABNORMAL:
            if app[AppKeys.connections].closing:
                code, reason = CloseCode.SERVICE_RESTART, b"Service restart"
            await _close(request, ws, code, reason)
        log.info(
            "gateway.ws_closed", chat_id=self.chat_id, code=int(code), request_id=self.request_id
        )

    def tick(self, now: float) -> None:
        """The heartbeat (every ``WS_HEARTBEAT_SECONDS``): cut a socket whose last ping got
        no answer (as aiohttp's heartbeat did: 1006, no close frame), else ping it."""
        transport = self.request.transport
        if self.ws.closed or self.code is not None or transport is None:
            return
        if self.unanswered:
            self.code, self.reason = CloseCode.ABNORMAL, b""
            transport.abort()  # its life then ends: the reader sees the connection go
            return
        if not transport.is_closing():
            transport.write(_PING_FRAME)
            self.unanswered = True

    def end(self, why: Ending) -> None:
        if why == "slow":
            self._end(CloseCode.SLOW_CONSUMER, b"Slow consumer; resume")
        else:
            self._end(CloseCode.TRY_AGAIN_LATER, b"Temporarily unavailable")

    def _end(self, code: CloseCode, reason: bytes) -> None:
        """Close the socket with ``code`` (once); its handler then finishes."""
        if self.code is not None:
            return
        self.code, self.reason = code, reason
        if self.listener is not None:
            self.app[AppKeys.bus].close_listener(self.listener)
            self.listener = None
        if self.app[AppKeys.connections].closing:
            code, reason = CloseCode.SERVICE_RESTART, b"Service restart"
        closing = asyncio.ensure_future(_close(self.request, self.ws, code, reason))
        _CLOSING.add(closing)  # not cancelled by stop(): the close must go out
        closing.add_done_callback(_CLOSING.discard)


async def close_all(app: web.Application) -> None:
    """on_shutdown: tell every socket to reconnect elsewhere (1012), then end SSE streams.

    An ended SSE stream makes EventSource reconnect (after ``retry``) with
    ``Last-Event-ID``, to another gateway behind the load balancer.
    """
    connections = app[AppKeys.connections]
    connections.closing = True
    for stream in list(connections.streams):
        stop = getattr(stream, "stop_streaming", None)
        if stop is not None:
            stop()
    closers = [
        ws.close(code=CloseCode.SERVICE_RESTART, message=b"Service restart")
        for ws in list(connections.websockets)
    ]
    if closers:
        await asyncio.wait(
            [asyncio.ensure_future(c) for c in closers], timeout=CLOSE_GRACE_SECONDS * 2
        )
