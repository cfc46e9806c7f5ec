"""What WebSocket and SSE share: following a chat's frames with resume and resync."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from bus import EventRecord, LogRestarted, ResumeGap, is_stream_id
from bus.schemas import EVENT_TYPES_V1
from gateway.errors import json_error
from gateway.keys import AppKeys

__all__ = [
    "Frame",
    "follow_frames",
    "handshake_point",
    "parse_resume_point",
    "run_until_stalled",
    "v1_frame",
    "v1_frame_json",
]

#: ``(eventId or None, frame JSON)``; resync frames have no event id.
Frame = tuple[str | None, str]


def parse_resume_point(value: str | None) -> str | None:
    """A validated ``lastEventId`` (400 if malformed); ``None`` when absent."""
    if value is None or value == "":
        return None
    if not is_stream_id(value):
        raise json_error(400, "Invalid lastEventId")
    ms, _, seq = value.partition("-")
    return f"{int(ms)}-{int(seq)}"  # as Redis spells it: "00-01" is "0-1"


async def follow_frames(
    app: web.Application,
    chat_id: str,
    after: str | None,
    *,
    v2: bool,
    on_overflow: Callable[[], None],
    now: str | None = None,
) -> AsyncIterator[Frame]:
    """Frames of ``chat_id`` after ``after`` (or from now), gap-free, then live.

    v1 clients receive only the frame types of the original relay (a ``streamReset`` is
    rendered for them as an empty ``assistantChunk`` with ``done: true``, which clears
    their streaming bubble). When the resume point is no longer in the log, v2 clients
    first get ``{"type": "resync"}`` (refetch history), then live frames; v1 clients
    simply continue live. When the log restarts under a live stream (Redis lost it), the
    same happens, and the stream goes on from the new log's first event. ``now`` is the chat's
    last event id read by the caller before the handshake completed (see
    :func:`handshake_point`).
    """
    bus = app[AppKeys.bus]
    metrics = app[AppKeys.metrics]
    # Without a resume point, "from now" means from the handshake: anything appended
    # after this read is delivered even if the subscription confirms a moment later.
    start = after
    verify = after is not None
    if start is None:
        start = now or await handshake_point(app, chat_id, v2=v2)
    resumed = metrics.resumes.labels("ok")
    while True:
        try:
            async for record in bus.follow(
                chat_id, start, on_overflow, verify=verify, on_verified=resumed.inc
            ):
                if v2:
                    yield record.event_id, record.frame_json()
                else:
                    frame = v1_frame_json(record)
                    if frame is not None:
                        yield record.event_id, frame
            return
        except ResumeGap as gap:
            restarted = isinstance(gap, LogRestarted)
            metrics.resumes.labels("restarted" if restarted else "resync").inc()
            if v2:
                yield None, json.dumps({"type": "resync", "chatId": chat_id, "reason": str(gap)})
            # After a restart every event of the new log is still to be sent.
            start = "0-0" if restarted else await bus.resume_point(chat_id)
            verify = False


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


async def run_until_stalled(
    pump: Awaitable[None], stalled: asyncio.Event, *others: Awaitable[None]
) -> str:
    """Run ``pump`` and ``others`` until the first finishes or ``stalled`` is set.

    Returns ``"stalled"``, ``"pump"`` or ``"other"``; cancels everything still running.
    A pump blocked on a full socket never notices its queue overflowing, hence the event.
    """
    tasks: dict[asyncio.Future[Any], str] = {
        asyncio.ensure_future(pump): "pump",
        asyncio.ensure_future(stalled.wait()): "stalled",
        **{asyncio.ensure_future(o): "other" for o in others},
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if stalled.is_set():
        return "stalled"
    finished = next(iter(done))
    outcome = tasks[finished]
    if outcome == "pump" and not finished.cancelled():
        error = finished.exception()
        if error is not None:
            raise error
    return outcome
