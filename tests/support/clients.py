"""Visitor-side helpers for fault tests: a reconnecting chat client, a socket that never
reads, plain HTTP calls, and the check that a client saw the chat log exactly.

The client behaves like the widget: it follows one chat over WebSocket or SSE, keeps the
last ``eventId`` it applied, and on any disconnect reconnects (to the next gateway in its
list) with ``lastEventId``. Every frame is kept with its arrival time, so a test can say
what a visitor saw and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from benchmarks.stalled import StalledSocket
from bus.chatlog import EventRecord, compare_ids
from bus.schemas import EVENT_TYPES_V1
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

__all__ = [
    "ChatClient",
    "Frame",
    "Posted",
    "StalledSocket",
    "StreamCheck",
    "cancel",
    "check_stream",
    "open_stalled_socket",
    "post_message",
    "readyz",
]

Transport = Literal["ws", "sse"]


@dataclass(slots=True)
class Frame:
    """One frame a client received, with its arrival time (``time.monotonic()``)."""

    data: dict[str, Any]
    at: float
    connection: int

    @property
    def type(self) -> str:
        return str(self.data.get("type", "message"))

    @property
    def event_id(self) -> str | None:
        value = self.data.get("eventId")
        return str(value) if value is not None else None


@dataclass
class ChatClient:
    """Follows ``chat_id`` on the gateways at ``ports`` (in turn), reconnecting like the widget."""

    ports: list[int]
    chat_id: str
    transport: Transport = "ws"
    v2: bool = True
    #: Start from this event id (``None``: from the handshake).
    after: str | None = None
    reconnect_delay: float = 0.1
    frames: list[Frame] = field(default_factory=list)
    #: ``(connection number, close code or reason, time)`` of every disconnect.
    closes: list[tuple[int, int | str | None, float]] = field(default_factory=list)
    connects: list[tuple[int, float]] = field(default_factory=list)
    last_event_id: str | None = None
    _task: asyncio.Task[None] | None = None
    _stop: bool = False
    _port_index: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, connected_within: float = 10.0) -> ChatClient:
        """Connect and return once the first connection is established."""
        self.last_event_id = self.after
        self._task = asyncio.create_task(self._run(), name=f"client:{self.chat_id}")
        await self.wait_for(lambda: bool(self.connects), within=connected_within, what="connect")
        return self

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def __aenter__(self) -> ChatClient:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def use_ports(self, ports: list[int]) -> None:
        """Reconnect to these gateways from now on."""
        self.ports = ports
        self._port_index = 0

    # --- waiting on what arrived ---------------------------------------------------------------

    async def wait_for(self, probe: Any, *, within: float = 20.0, what: str = "condition") -> Any:
        """Wait until ``probe()`` is truthy (re-checked on each frame and every 50 ms)."""
        message = f"{self.chat_id}: {what}"
        return await wait_until(probe, within, message, interval=0.05, wake=self._changed)

    def of_type(self, kind: str) -> list[Frame]:
        return [f for f in self.frames if f.type == kind]

    def reply(self, reply_to: str) -> Frame | None:
        """Terra's final Message answering ``reply_to``, if it arrived."""
        for frame in self.frames:
            data = frame.data
            if frame.type == "message" and data.get("replyTo") == reply_to:
                return frame
        return None

    def replies(self, reply_to: str) -> list[Frame]:
        return [f for f in self.frames if f.type == "message" and f.data.get("replyTo") == reply_to]

    def chunks(self, reply_to: str | None = None, *, with_text: bool = True) -> list[Frame]:
        return [
            f
            for f in self.frames
            if f.type == "assistantChunk"
            and (reply_to is None or f.data.get("replyTo") == reply_to)
            and (f.data.get("content") or not with_text)
        ]

    async def wait_reply(self, reply_to: str, within: float = 30.0) -> Frame:
        frame: Frame = await self.wait_for(
            lambda: self.reply(reply_to), within=within, what=f"the reply to {reply_to}"
        )
        return frame

    # --- the connection loop -----------------------------------------------------------------

    async def _run(self) -> None:
        connection = 0
        async with aiohttp.ClientSession() as session:
            while not self._stop:
                port = self.ports[self._port_index % len(self.ports)]
                connection += 1
                outcome: int | str | None
                try:
                    if self.transport == "ws":
                        outcome = await self._run_ws(session, port, connection)
                    else:
                        outcome = await self._run_sse(session, port, connection)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    outcome = type(exc).__name__
                self.closes.append((connection, outcome, time.monotonic()))
                self._changed.set()
                if self._stop or outcome == 1008:
                    return
                self._port_index += 1  # try the next gateway, as behind a load balancer
                await asyncio.sleep(self.reconnect_delay)

    def _query(self) -> dict[str, str]:
        query = {"accessCode": ACCESS_CODE}
        if self.v2:
            query["v"] = "2"
        if self.last_event_id is not None:
            query["lastEventId"] = self.last_event_id
        return query

    def _apply(self, data: dict[str, Any], connection: int) -> None:
        self.frames.append(Frame(data, time.monotonic(), connection))
        event_id = data.get("eventId")
        if event_id is not None:
            self.last_event_id = str(event_id)
        self._changed.set()

    async def _run_ws(
        self, session: aiohttp.ClientSession, port: int, connection: int
    ) -> int | str | None:
        query = {"chatId": self.chat_id, **self._query()}
        async with session.ws_connect(
            f"ws://127.0.0.1:{port}/api/chat", params=query, heartbeat=None, autoping=True
        ) as ws:
            self.connects.append((connection, time.monotonic()))
            self._changed.set()
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._apply(json.loads(msg.data), connection)
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                    break
            return ws.close_code

    async def _run_sse(
        self, session: aiohttp.ClientSession, port: int, connection: int
    ) -> int | str | None:
        query = self._query()
        query.pop("lastEventId", None)
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        url = f"http://127.0.0.1:{port}/api/chat/{self.chat_id}/events"
        async with session.get(url, params=query, headers=headers) as resp:
            if resp.status != 200:
                return f"HTTP {resp.status}"
            self.connects.append((connection, time.monotonic()))
            self._changed.set()
            data: list[str] = []
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif not line and data:
                    self._apply(json.loads("\n".join(data)), connection)
                    data = []
            return "EOF"


# --- what a client should have seen -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamCheck:
    """How a client's frames compare with the chat log (after its start point)."""

    expected: int
    received: int
    lost: int
    duplicates: int
    out_of_order: int
    resyncs: int

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.out_of_order == 0


def check_stream(
    client: ChatClient, events: list[EventRecord], *, start: str | None = None
) -> StreamCheck:
    """Compare ``client``'s frames with the log ``events``: lost, duplicated, reordered.

    ``start`` is the last event id the client did NOT need (default: the event before
    its first received frame). v1 clients are expected to get the v1 types only (and
    streamReset, which they receive as a done chunk).
    """
    ids = [f.event_id for f in client.frames if f.event_id is not None]
    if start is None:
        start = _before(events, ids[0]) if ids else (events[-1].event_id if events else "0-0")
    wanted = [
        e.event_id
        for e in events
        if compare_ids(e.event_id, start) > 0
        and (client.v2 or e.type in EVENT_TYPES_V1 or e.type == "streamReset")
    ]
    seen = set(ids)
    out_of_order = sum(1 for a, b in itertools.pairwise(ids) if compare_ids(b, a) <= 0)
    return StreamCheck(
        expected=len(wanted),
        received=len(ids),
        lost=sum(1 for event_id in wanted if event_id not in seen),
        duplicates=len(ids) - len(seen),
        out_of_order=out_of_order,
        resyncs=len(client.of_type("resync")),
    )


def has_caught_up(client: ChatClient, events: list[EventRecord]) -> bool:
    """True once ``client`` received the last event of ``events`` its protocol version is owed."""
    owed = [
        e.event_id
        for e in events
        if client.v2 or e.type in EVENT_TYPES_V1 or e.type == "streamReset"
    ]
    if not owed:
        return True
    return client.last_event_id is not None and compare_ids(client.last_event_id, owed[-1]) >= 0


def _before(events: list[EventRecord], event_id: str) -> str:
    previous = "0-0"
    for event in events:
        if event.event_id == event_id:
            return previous
        previous = event.event_id
    return previous


# --- plain HTTP ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Posted:
    """Outcome of one visitor POST."""

    status: int | str
    body: dict[str, Any]
    retry_after: str | None
    seconds: float

    @property
    def message_id(self) -> str:
        return str(self.body["id"])


async def post_message(
    port: int,
    chat_id: str,
    content: str,
    *,
    client_message_id: str | None = None,
    within: float = 30.0,
) -> Posted:
    body: dict[str, Any] = {"content": content, "accessCode": ACCESS_CODE}
    if client_message_id is not None:
        body["clientMessageId"] = client_message_id
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as session,
            session.post(f"http://127.0.0.1:{port}/api/chat/{chat_id}/messages", json=body) as r,
        ):
            data = await r.json(content_type=None)
            return Posted(r.status, data, r.headers.get("Retry-After"), time.monotonic() - started)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return Posted(type(exc).__name__, {}, None, time.monotonic() - started)


async def cancel(port: int, chat_id: str, message_id: str | None = None) -> int:
    body: dict[str, Any] = {"accessCode": ACCESS_CODE}
    if message_id is not None:
        body["messageId"] = message_id
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/api/chat/{chat_id}/cancel", json=body) as r,
    ):
        return r.status


async def readyz(port: int) -> int | str:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as r,
        ):
            return r.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return type(exc).__name__


# --- a socket that never reads ----------------------------------------------------------------


async def open_stalled_socket(port: int, chat_id: str) -> StalledSocket:
    """A v=2 socket on ``chat_id`` that never reads (see :mod:`benchmarks.stalled`)."""
    return await StalledSocket.open(
        port, f"/api/chat?chatId={chat_id}&accessCode={ACCESS_CODE}&v=2"
    )
