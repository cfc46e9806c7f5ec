"""Frames on their way to one visitor WebSocket or SSE stream, written straight from the feed.

The live feed hands each event to :meth:`SocketOutbox.deliver` of every socket of the chat,
inside its dispatch loop: the frame is encoded once per event (shared by the chat's sockets
of one transport) and written to the socket's transport at once, with no task woken and
nothing queued. Under backpressure the transport's own buffer holds what the visitor has not
taken yet; the :class:`~gateway.backpressure.SendBudget` bounds it (with the kernel's send
queue) by bytes, and a socket past ``SOCKET_BUFFER_BYTES`` is stalled: ``on_stall`` ends it
(a WebSocket with 4000; an SSE stream is cut, and EventSource resumes).
:class:`StreamOutbox` is the same for an SSE stream (``text/event-stream``, chunked).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import cast

import orjson
from aiohttp import WSMsgType, web

from bus import EventRecord, SlowConsumer
from gateway.backpressure import SendBudget
from gateway.metrics import DeliveryMeter
from gateway.streaming import v1_frame

__all__ = [
    "PlainStreamOutbox",
    "SocketOutbox",
    "StreamOutbox",
    "frame_payload",
    "http_chunk",
    "sse_event",
    "text_frame",
]

_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")
_FIN_TEXT = 0x80 | WSMsgType.TEXT


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, uncompressed WebSocket text frame (server to client)."""
    n = len(payload)
    if n < 126:
        return bytes((_FIN_TEXT, n)) + payload
    if n < 1 << 16:
        return _LEN16.pack(_FIN_TEXT, 126, n) + payload
    return _LEN64.pack(_FIN_TEXT, 127, n) + payload


def sse_event(payload: bytes, event_id: str | None) -> bytes:
    """``payload`` (one line of JSON: orjson escapes every line break) as one SSE event."""
    if event_id is None:
        return b"data: " + payload + b"\r\n\r\n"
    return b"id: " + event_id.encode() + b"\r\ndata: " + payload + b"\r\n\r\n"


def http_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP/1.1 body (what aiohttp's writer would add)."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _ws_wire(payload: bytes, event_id: str | None) -> bytes:
    return text_frame(payload)


def _sse_wire(payload: bytes, event_id: str | None) -> bytes:
    return http_chunk(sse_event(payload, event_id))


def frame_payload(record: EventRecord, v2: bool) -> bytes | None:
    """The frame a v2 (or v1) client gets for ``record`` as UTF-8 JSON; ``None``: none."""
    frame = record.frame() if v2 else v1_frame(record)
    return None if frame is None else orjson.dumps(frame)


class _FrameCache:
    """The last event's encoded frames: the feed hands one event to all its sockets in a row.

    ``wire`` turns a frame's JSON (and its event id) into the bytes its transport writes.
    """

    __slots__ = ("frames", "record", "wire")

    def __init__(self, wire: Callable[[bytes, str | None], bytes]) -> None:
        self.record: EventRecord | None = None
        self.frames: dict[bool, bytes | None] = {}
        self.wire = wire

    def get(self, record: EventRecord, v2: bool) -> bytes | None:
        if record is not self.record:
            self.record = record
            self.frames = {}
        frames = self.frames
        if v2 in frames:
            return frames[v2]
        payload = frame_payload(record, v2)
        frame = None if payload is None else self.wire(payload, record.event_id)
        frames[v2] = frame
        return frame


class SocketOutbox:
    """Writes one socket's frames: directly while it keeps up, bounded in bytes when not."""

    __slots__ = ("_budget", "_meter", "_response", "_transport", "_v2", "on_stall", "stalled")

    #: Frames as written to a WebSocket's transport.
    _cache = _FrameCache(_ws_wire)

    def __init__(
        self,
        response: web.StreamResponse,
        transport: asyncio.Transport | None,
        budget: SendBudget,
        meter: DeliveryMeter,
        *,
        v2: bool,
        on_stall: Callable[[], None],
    ) -> None:
        self._response = response
        self._transport = transport
        self._budget = budget
        self._meter = meter
        self._v2 = v2
        #: Called once when the socket falls past its byte budget (the subscription passes
        #: this same callable to its listener: one bound method per socket, not two).
        self.on_stall = on_stall
        #: Set once the socket fell past its byte budget; nothing more is written.
        self.stalled = False

    def deliver(self, record: EventRecord) -> None:
        """The feed's sink: write ``record``'s frame now. Never raises, never waits."""
        if self.stalled or self._closed():
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        frame = self._cache.get(record, self._v2)
        if frame is None:
            return
        transport.write(frame)
        if self._budget.wrote(len(frame)):
            self._stall()
            return
        self._meter.observe(record.event_id)

    async def write(self, record: EventRecord) -> None:
        """Replay ``record``'s frame, waiting while the socket's buffers are full.

        Raises :class:`~bus.SlowConsumer` past the byte budget.
        """
        payload = frame_payload(record, self._v2)
        if payload is None:
            return
        await self.write_payload(payload, record.event_id)
        self._meter.observe(record.event_id)

    async def write_payload(self, payload: bytes, event_id: str | None = None) -> None:
        """Send one text frame the way :meth:`write` does (a ``resync``, for one).

        Raises ``ConnectionResetError`` when the socket is gone (uvloop says so with a
        ``RuntimeError`` once the transport is closed), :class:`~bus.SlowConsumer` past the
        byte budget.
        """
        if self.stalled:
            raise SlowConsumer("socket over its buffer budget")
        try:
            await self._send(payload, event_id)
        except RuntimeError as exc:  # uvloop: "unable to perform operation on <...closed=True>"
            raise ConnectionResetError("the socket is gone") from exc
        if self._budget.wrote(len(payload)):
            self._stall()
            raise SlowConsumer("socket over its buffer budget")

    def _stall(self) -> None:
        if not self.stalled:
            self.stalled = True
            self.on_stall()

    def _closed(self) -> bool:
        """No more frames may go out (a WebSocket's close frame has been sent)."""
        return cast(web.WebSocketResponse, self._response).closed

    async def _send(self, payload: bytes, event_id: str | None) -> None:
        await cast(web.WebSocketResponse, self._response).send_frame(payload, WSMsgType.TEXT)


class StreamOutbox(SocketOutbox):
    """:class:`SocketOutbox` for an SSE stream: events in chunks of the HTTP response.

    Live frames go to the transport as whole chunks (the response's headers were written
    first); a replayed one goes through the response's own writer, which adds the chunk.
    """

    __slots__ = ()

    #: Frames as written to an SSE stream's transport (event and HTTP chunk).
    _cache = _FrameCache(_sse_wire)

    def _closed(self) -> bool:
        return False  # the stream ends by its transport closing, checked by deliver

    async def _send(self, payload: bytes, event_id: str | None) -> None:
        await self._response.write(sse_event(payload, event_id))


class PlainStreamOutbox(StreamOutbox):
    """:class:`StreamOutbox` for an HTTP/1.0 client: the body is not chunked."""

    __slots__ = ()

    _cache = _FrameCache(sse_event)
