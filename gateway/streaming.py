"""What WebSocket and SSE share: following a chat's frames with resume, resync and patience."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
import structlog
from aiohttp import web

from bus import (
    BusError,
    BusUnavailable,
    EventRecord,
    LogRestarted,
    ResumeGap,
    SlowConsumer,
    is_stream_id,
)
from bus.pubsub import Listener
from bus.schemas import EVENT_TYPES_V1
from gateway.errors import json_error
from gateway.keys import AppKeys

if TYPE_CHECKING:  # gateway.outbox renders v1 frames with this module's v1_frame
    from gateway.outbox import SocketOutbox

__all__ = [
    "Ending",
    "Subscription",
    "handshake_point",
    "parse_resume_point",
    "v1_frame",
    "v1_frame_json",
]

log = structlog.get_logger("gateway.streaming")

#: Why a subscription ended its socket: the visitor fell behind ("slow"), Redis could not
#: be followed ("unavailable").
Ending = Literal["slow", "unavailable"]

#: How long a socket waits for its chat's subscription while the feed's connection is up
#: (a saturated Redis or gateway confirms late, it is not down); each try waits the feed's
#: ``confirm_timeout``.
FOLLOW_PATIENCE_SECONDS = 120.0
#: Pause between tries that failed at once.
RETRY_PAUSE_SECONDS = 0.5


def parse_resume_point(value: str | None) -> str | None:
    """A validated ``lastEventId`` (400 if malformed); ``None`` when absent."""
    if value is None or value == "":
        return None
    if not is_stream_id(value):
        raise json_error(400, "Invalid lastEventId")
    ms, _, seq = value.partition("-")
    return f"{int(ms)}-{int(seq)}"  # as Redis spells it: "00-01" is "0-1"


def v1_frame(record: EventRecord) -> dict[str, Any] | None:
    """The frame a v1 client gets for ``record``, or ``None`` when it gets none (protocol
    9.7): its own frame for the original types; a ``streamReset`` becomes an empty
    ``assistantChunk`` with ``done: true``, which clears the streaming bubble. The one v1
    translation, shared by the WebSocket (:mod:`gateway.outbox`) and SSE encoders."""
    if record.type in EVENT_TYPES_V1:
        return record.frame()
    if record.type == "streamReset":
        fields = record.fields
        return {
            "type": "assistantChunk",
            "chatId": fields.get("chatId"),
            "content": "",
            "done": True,
            "emittedAt": fields.get("emittedAt"),
            "replyTo": fields.get("replyTo"),
            "eventId": record.event_id,
        }
    return None


def v1_frame_json(record: EventRecord) -> str | None:
    """:func:`v1_frame` as JSON text (the original types' frames encoded once)."""
    if record.type in EVENT_TYPES_V1:
        return record.frame_json()
    frame = v1_frame(record)
    return None if frame is None else json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


async def handshake_point(app: web.Application, chat_id: str, *, v2: bool = True) -> str:
    """The chat's newest event id ("0-0" when empty), read before a handshake completes.

    A client that connects and then posts must see its own message: its stream starts
    after this point, not when the subscription happens to be confirmed. A v1 client (the
    original front end, which never resumes) joining in the middle of a reply starts at
    that reply's first chunk, so it shows the whole partial answer.
    """
    return await app[AppKeys.bus].resume_point(chat_id, from_reply_start=not v2)


class Subscription:
    """One socket's (or SSE stream's) following of a chat: a replay, then the live feed.

    The replay runs in a task; once it is done no task of the subscription runs: the feed
    writes through the :class:`~gateway.outbox.SocketOutbox`. A task exists only while
    replaying (at the start, or after the chat's log restarted). A subclass builds the
    outbox and says how its socket ends (:meth:`end`).

    A subscription Redis confirms late (a saturated box) is waited for again while the
    feed's connection is up, for up to :data:`FOLLOW_PATIENCE_SECONDS`; the replay then
    sends what the socket missed. A feed that lost Redis ends the socket ("unavailable").
    """

    __slots__ = ("_tasks", "app", "chat_id", "listener", "outbox", "v2")

    #: The transport, in log event names ("ws", "sse").
    kind: ClassVar[str] = "socket"

    def __init__(self, app: web.Application, chat_id: str, outbox: SocketOutbox, *, v2: bool):
        self.app = app
        self.chat_id = chat_id
        self.v2 = v2
        self.outbox = outbox
        self.listener: Listener | None = None
        self._tasks: set[asyncio.Task[None]] | None = None  # only while replaying

    def end(self, why: Ending) -> None:
        """End the socket (called once the subscription cannot go on)."""
        raise NotImplementedError

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a replay as a task (cancelled by :meth:`stop`)."""
        task = asyncio.ensure_future(coro)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
            if not self._tasks:
                self._tasks = None

    async def follow(self, start: str, *, verify: bool) -> None:
        """Replay from ``start`` and hand the socket to the feed; ends the socket on failure."""
        try:
            await self._follow(start, verify)
        except SlowConsumer:
            self.end("slow")
        except (BusError, OSError, TimeoutError) as exc:
            log.info(
                f"gateway.{self.kind}_follow_failed", chat_id=self.chat_id, error=type(exc).__name__
            )
            self.end("unavailable")

    async def _follow(self, start: str, verify: bool) -> None:
        bus = self.app[AppKeys.bus]
        metrics = self.app[AppKeys.metrics]
        outbox = self.outbox
        loop = asyncio.get_running_loop()
        waiting_since: float | None = None

        async def write(record: EventRecord) -> None:
            nonlocal start, verify
            await outbox.write(record)
            start, verify = record.event_id, False  # a retry goes on after it

        while True:
            tried_at = loop.time()
            try:
                self.listener = await bus.open_sink(
                    self.chat_id,
                    start,
                    write,
                    outbox.deliver,
                    self._on_restart,
                    on_overflow=outbox.on_stall,
                    verify=verify,
                    on_verified=metrics.resumes.labels("ok").inc,
                )
            except ResumeGap as gap:
                restarted = isinstance(gap, LogRestarted)
                metrics.resumes.labels("restarted" if restarted else "resync").inc()
                await self._resync(str(gap))
                # After a restart every event of the new log is still to be sent.
                start = "0-0" if restarted else await bus.resume_point(self.chat_id)
                verify = False
                continue
            except BusUnavailable as exc:
                now = loop.time()
                if waiting_since is None:
                    waiting_since = now
                    log.info(
                        f"gateway.{self.kind}_follow_waiting", chat_id=self.chat_id, reason=str(exc)
                    )
                if not bus.feed_status.connected or now - waiting_since > FOLLOW_PATIENCE_SECONDS:
                    raise  # Redis is really out of reach (or has been for too long)
                await asyncio.sleep(max(0.0, RETRY_PAUSE_SECONDS - (now - tried_at)))
                continue
            if waiting_since is not None:
                seconds = round(loop.time() - waiting_since, 3)
                log.info(f"gateway.{self.kind}_follow_late", chat_id=self.chat_id, seconds=seconds)
            return

    async def _resync(self, reason: str) -> None:
        if self.v2:
            resync = {"type": "resync", "chatId": self.chat_id, "reason": reason}
            await self.outbox.write_payload(orjson.dumps(resync))

    def _on_restart(self) -> None:
        """The feed saw the chat's log restart: start again from the new log's first event."""
        if self.listener is not None:
            self.app[AppKeys.bus].close_listener(self.listener)
            self.listener = None
        self.app[AppKeys.metrics].resumes.labels("restarted").inc()

        async def again() -> None:
            try:
                await self._resync("the chat log restarted")
            except SlowConsumer:
                self.end("slow")
                return
            except OSError:
                return  # the socket is gone
            await self.follow("0-0", verify=False)

        self.spawn(again())

    def _on_stall(self) -> None:
        self.end("slow")

    def stop(self) -> None:
        """The socket is done: unsubscribe and cancel any replay still running."""
        if self.listener is not None:
            self.app[AppKeys.bus].close_listener(self.listener)
            self.listener = None
        for task in list(self._tasks or ()):
            task.cancel()
