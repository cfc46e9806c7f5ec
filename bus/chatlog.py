"""The chat event log: append, history, resume and the worker state of a chat.

Guarantees:

- Every append is one atomic Lua round trip that writes the log entry and publishes it;
  the entry id is the event's ``eventId``. Ids are strictly increasing within a chat, so
  the log gives a total order of a chat's events.
- The log is the source of truth: pub/sub delivery is at most once, and anything missed
  live can be read back with :meth:`ChatLog.events_after` while the log retains it.
- Retention: the log is capped (``MAXLEN ~``) and a chat's keys expire after
  ``retention_ms`` without any append.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bus import scripts
from bus.chunk_pipeline import ChunkItem, ChunkResult, write_chunks
from bus.client_bytes import ClientBytes
from bus.errors import (
    BacklogFull,
    ChatModeConflict,
    QuotaExceeded,
    ResumeGap,
    StorageFull,
    TooManyWaiting,
    as_bus_error,
    translates_redis_errors,
)
from bus.keys import BusKeys
from bus.schemas import (
    AnswerMessage,
    ChunkProduced,
    MessagePosted,
    StreamReset,
    WorkerState,
    WorkerStateChanged,
    encode,
    iso_now,
    render_frame,
)

__all__ = ["AcceptedMessage", "ChatLimits", "ChatLog", "EventRecord", "compare_ids"]

DEFAULT_WORKER_STATE: dict[str, Any] = {
    "state": "idle",
    "detail": None,
    "updatedAt": "1970-01-01T00:00:00.000Z",
}


#: Parsed Messages a ChatLog keeps (by entry id and stored JSON), oldest dropped first.
MESSAGE_CACHE_SIZE = 4096
#: The first page of :meth:`ChatLog.unanswered_until`: the worker's prompt reads as many
#: (``MAX_TURNS`` 16 x 4 Messages per turn), so it is served from the same read.
RECENT_MESSAGES = 64


def client_tag(prefix: str, client: str) -> str:
    """A client's lane tag: a short digest, so no address is kept in Redis in clear."""
    return hashlib.sha256(f"{prefix}:{client}".encode()).hexdigest()[:16]


def parse_id(event_id: str) -> tuple[int, int]:
    """A stream id as ``(ms, seq)``, for ordering."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def compare_ids(a: str, b: str) -> int:
    """Compare two stream ids: negative if ``a < b``, zero if equal, positive if greater."""
    pa, pb = parse_id(a), parse_id(b)
    return (pa > pb) - (pa < pb)


_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})", re.ASCII)


def is_stream_id(value: str) -> bool:
    """True for a well-formed stream id ``<ms>-<seq>``: ASCII digits, each part < 2**64."""
    match = _STREAM_ID.fullmatch(value)
    return match is not None and all(int(part) < 2**64 for part in match.groups())


@dataclass(slots=True)
class EventRecord:
    """One event of a chat's log, with its frame rendered once and shared by all sockets."""

    event_id: str
    data: str
    prev_id: str | None = None
    _fields: dict[str, Any] | None = field(default=None, repr=False)
    _frame: str | None = field(default=None, repr=False)

    @property
    def fields(self) -> dict[str, Any]:
        """The stored event as a dict (parsed once)."""
        if self._fields is None:
            self._fields = json.loads(self.data)
        return self._fields

    @property
    def type(self) -> str:
        """The event's ``type`` discriminator."""
        return str(self.fields.get("type", "message"))

    def frame(self) -> dict[str, Any]:
        """The wire frame (see :func:`bus.schemas.render_frame`)."""
        return render_frame(self.fields, self.event_id)

    def frame_json(self) -> str:
        """The wire frame as JSON text (encoded once)."""
        if self._frame is None:
            self._frame = json.dumps(self.frame(), ensure_ascii=False, separators=(",", ":"))
        return self._frame


@dataclass(frozen=True, slots=True)
class ChatLimits:
    """Caps and retention of the per-chat keys."""

    events_maxlen: int = 5000
    messages_maxlen: int = 1000
    retention_ms: int = 3 * 24 * 3600 * 1000
    idempotency_ttl_ms: int = 24 * 3600 * 1000
    jobs_maxlen: int = 10_000
    #: Messages one client may have waiting for Terra (in its lane) before a 429.
    queued_per_client: int = 10
    #: New messages are refused above this many bytes of Redis ``used_memory``; 0 means
    #: ``memory_budget_fraction`` of Redis's ``maxmemory`` (none set: no budget), -1 off
    #: (the default here; ``BusSettings`` derives it from ``maxmemory`` by default).
    memory_budget_bytes: int = -1
    memory_budget_fraction: float = 0.8
    #: Bytes one client may have stored per window: each message's JSON (message, state,
    #: job) plus ``reply_bytes_reserved`` for the reply it will get (its chunks and Message).
    client_bytes_per_window: int = 4 * 1024 * 1024
    client_bytes_window_ms: int = 24 * 3600 * 1000
    reply_bytes_reserved: int = 16 * 1024
    #: Bytes of visitor messages a chat may hold over its life.
    chat_max_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """Result of :meth:`ChatLog.accept_visitor_message`."""

    message: dict[str, Any]
    duplicate: bool
    job_id: str | None = None


@translates_redis_errors
class ChatLog:
    """Reads and writes chats' event logs. Cheap to build; share one per process."""

    def __init__(self, redis: Redis, keys: BusKeys, limits: ChatLimits | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits or ChatLimits()
        cluster = keys.cluster
        self._append = redis.register_script(scripts.for_layout(scripts.APPEND, cluster))
        self._chunk = redis.register_script(scripts.for_layout(scripts.CHUNK, cluster))
        self._accept = redis.register_script(scripts.for_layout(scripts.ACCEPT, cluster))
        self._finish = redis.register_script(scripts.for_layout(scripts.FINISH, cluster))
        self._begin = redis.register_script(scripts.for_layout(scripts.BEGIN, cluster))
        self._save_turns = redis.register_script(scripts.SAVE_TOOL_TURNS)
        self._client_bytes = ClientBytes(redis, keys)
        #: Unfinished jobs one partition may hold: JOBS_MAXLEN shared evenly (chats spread
        #: evenly over partitions), so the whole backlog stays about JOBS_MAXLEN.
        self._jobs_cap = -(-self.limits.jobs_maxlen // keys.partition_count)
        self._messages: dict[tuple[str, str], MessagePosted] = {}
        #: Per chat: the newest Messages unanswered_until read, and whether that was all.
        self._recent: dict[str, tuple[list[tuple[str, MessagePosted]], bool]] = {}

    def _message(self, entry_id: str, data: str) -> MessagePosted:
        """A stored Message, validated once per process: a log entry never changes, so the
        worker's repeated history reads (every job) skip pydantic after the first (issue 10).
        """
        key = (entry_id, data)
        message = self._messages.get(key)
        if message is None:
            message = MessagePosted.model_validate_json(data)
            if len(self._messages) >= MESSAGE_CACHE_SIZE:
                del self._messages[next(iter(self._messages))]  # the oldest entry
            self._messages[key] = message
        return message

    def chat_keys(self, chat_id: str) -> list[str]:
        """The chat's keys in the order every chat script takes them (events, meta, messages,
        replies, memory, cancel)."""
        k = self.keys
        return [
            k.chat_events(chat_id),
            k.chat_meta(chat_id),
            k.chat_messages(chat_id),
            k.chat_replies(chat_id),
            k.chat_memory(chat_id),
            k.chat_cancel(chat_id),
        ]

    # --- writes -----------------------------------------------------------------

    async def accept_visitor_message(
        self,
        chat_id: str,
        content: str,
        *,
        client_message_id: str | None = None,
        request_id: str | None = None,
        client: str | None = None,
    ) -> AcceptedMessage:
        """Store a visitor message, set the chat ``queued`` and enqueue its job, atomically.

        With ``client_message_id`` a retry within the idempotency window returns the
        Message stored the first time (``duplicate=True``) and enqueues nothing. The job
        waits in ``client``'s lane (the chat's own lane, uncapped, without a client) and
        reaches the workers round robin across clients (see :data:`bus.scripts.ACCEPT`).
        Raises, with nothing stored: :class:`StorageFull` above the memory budget,
        :class:`BacklogFull` when ``jobs_maxlen`` jobs are unfinished,
        :class:`TooManyWaiting` when ``queued_per_client`` of the client's jobs wait,
        :class:`QuotaExceeded` past the client's bytes per window or the chat's bytes,
        (partitioned layout: the backlog cap is ``jobs_maxlen`` shared evenly by the
        partitions, a client's waiting jobs are counted per partition, its bytes exactly:
        see :mod:`bus.client_bytes`),
        :class:`ChatModeConflict` on a BYO chat; and :class:`BusUnavailable` if Redis cannot
        be reached.
        """
        lim = self.limits
        message = MessagePosted(
            id=str(uuid.uuid4()),
            chatId=chat_id,
            sender="Visitor",
            content=content,
            createdAt=iso_now(),
        )
        state = WorkerStateChanged(chatId=chat_id, state="queued", updatedAt=iso_now())
        job = AnswerMessage(
            job_id=str(uuid.uuid4()),
            chat_id=chat_id,
            message_id=message.id,
            request_id=request_id or str(uuid.uuid4()),
            enqueued_at=time.time(),
        )
        keys = self.chat_keys(chat_id)[:5]
        idem = (
            self.keys.chat_idempotency(chat_id, client_message_id) if client_message_id else keys[0]
        )
        part = self.keys.partition_of(chat_id)  # the chat's partition: one slot for it all
        tag = client_tag(self.keys.prefix, client) if client else f"chat-{chat_id}"
        data = (encode(message), encode(state), encode(job))
        # Partitioned, the client's bytes are charged apart (bus.client_bytes): ``charge``.
        charge = None
        if client and self.keys.partitioned:
            charge = sum(len(d.encode()) for d in data) + lim.reply_bytes_reserved
        try:
            if charge is not None:
                retry_ms = await self._client_bytes.reserve(
                    tag, charge, lim.client_bytes_per_window, lim.client_bytes_window_ms
                )
                if retry_ms is not None:
                    stored = await self.redis.get(idem) if client_message_id else None
                    if stored is None:  # not a retry of a stored message: refuse it
                        raise QuotaExceeded("client", retry_ms)
                    event_id, _, stored_data = str(stored).partition(" ")
                    return AcceptedMessage(render_frame(stored_data, event_id), duplicate=True)
            result = await self._accept(
                keys=[
                    *keys,
                    idem,
                    self.keys.jobs_stream(part),
                    self.keys.queue_ring(part),
                    self.keys.queue_waiting(part),
                    self.keys.queue_clock(part),
                ],
                args=[
                    self.keys.chat_channel(chat_id),
                    data[0],
                    data[1],
                    lim.events_maxlen,
                    lim.messages_maxlen,
                    lim.retention_ms,
                    lim.idempotency_ttl_ms,
                    "1" if client_message_id else "0",
                    data[2],
                    self._jobs_cap,
                    self.keys.jobs_group,
                    self.keys.queue_lane_prefix(part),
                    tag,
                    lim.queued_per_client if client else lim.jobs_maxlen,
                    lim.memory_budget_bytes,
                    lim.memory_budget_fraction,
                    -1 if charge is not None else lim.client_bytes_per_window if client else 2**62,
                    lim.client_bytes_window_ms,
                    lim.chat_max_bytes,
                    lim.reply_bytes_reserved,
                ],
            )
        except RedisError as exc:  # an outage, a refusal (NOPERM, ...), or maxmemory: full
            raise as_bus_error(exc) from exc
        if charge is not None and result[0] != "new":  # nothing stored: give the bytes back
            await self._client_bytes.refund(tag, charge)
        if result[0] == "byo":
            raise ChatModeConflict("byo")
        if result[0] == "memory":
            raise StorageFull("Redis is above its memory budget for new messages")
        if result[0] == "full":
            raise BacklogFull(f"{self._jobs_cap} unfinished jobs: the backlog is full")
        if result[0] == "busy":
            raise TooManyWaiting(int(result[1]))
        if result[0] == "client_bytes":
            raise QuotaExceeded("client", max(0, int(result[1])))
        if result[0] == "chat_bytes":
            raise QuotaExceeded("chat")
        if result[0] == "dup":
            event_id, _, stored_data = str(result[1]).partition(" ")
            return AcceptedMessage(message=render_frame(stored_data, event_id), duplicate=True)
        return AcceptedMessage(
            message=render_frame(data[0], str(result[1])),
            duplicate=False,
            job_id=job.job_id,
        )

    async def set_worker_state(
        self, chat_id: str, state: WorkerState, detail: str | None = None
    ) -> str:
        """Record and broadcast the chat's worker state. Returns the event id."""
        event = WorkerStateChanged(chatId=chat_id, state=state, detail=detail, updatedAt=iso_now())
        return await self._append_event(chat_id, encode(event), "state")

    async def begin_reply(self, chat_id: str, reply_to: str) -> tuple[bool, bool]:
        """Set the chat ``processing`` for answering ``reply_to``, in one round trip.

        Returns ``(streaming, cancel_requested)``: whether chunks of an earlier attempt at
        this reply are in the log without its final Message (see :meth:`streaming_reply`),
        and whether the visitor asked to stop it (see :meth:`cancel_requested`).
        """
        event = WorkerStateChanged(chatId=chat_id, state="processing", updatedAt=iso_now())
        lim = self.limits
        try:
            _, streaming, cancelled = await self._begin(
                keys=self.chat_keys(chat_id),
                args=[
                    self.keys.chat_channel(chat_id),
                    encode(event),
                    lim.events_maxlen,
                    lim.messages_maxlen,
                    lim.retention_ms,
                    reply_to,
                ],
            )
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)
        return bool(int(streaming)), bool(int(cancelled))

    async def append_event(self, chat_id: str, data: str) -> str:
        """Append an already-encoded event of a type with no side table. Returns its id."""
        return await self._append_event(chat_id, data, "other")

    async def _append_event(self, chat_id: str, data: str, kind: str) -> str:
        lim = self.limits
        try:
            event_id = await self._append(
                keys=self.chat_keys(chat_id)[:5],
                args=[
                    self.keys.chat_channel(chat_id),
                    data,
                    kind,
                    lim.events_maxlen,
                    lim.messages_maxlen,
                    lim.retention_ms,
                ],
            )
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)
        return str(event_id)

    async def append_chunk(
        self, chat_id: str, reply_to: str, content: str, *, done: bool = False
    ) -> tuple[str, bool]:
        """Append and broadcast a reply chunk.

        Returns ``(event_id, cancel_requested)``: the second value is true once the
        visitor asked to stop the reply to ``reply_to``, so the caller learns it without
        an extra round trip.
        """
        chunk = ChunkProduced(
            chatId=chat_id, content=content, done=done, emittedAt=iso_now(), replyTo=reply_to
        )
        lim = self.limits
        try:
            event_id, cancelled = await self._chunk(
                keys=self.chat_keys(chat_id),
                args=[
                    self.keys.chat_channel(chat_id),
                    encode(chunk),
                    lim.events_maxlen,
                    lim.messages_maxlen,
                    lim.retention_ms,
                    reply_to,
                ],
            )
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)
        return str(event_id), bool(int(cancelled))

    async def append_chunks(self, items: Sequence[ChunkItem]) -> list[ChunkResult]:
        """:meth:`append_chunk` for many chats in one round trip (see :mod:`bus.chunk_pipeline`).

        ``items`` are ``(chat_id, reply_to, content)``; one result per item, in order: its
        ``(event_id, cancel_requested)`` or the bus error of that chat's call.
        """
        return await write_chunks(self, items)

    async def finish_reply(
        self,
        chat_id: str,
        reply_to: str,
        content: str,
        *,
        status: Literal["complete", "stopped", "error", "truncated"] = "complete",
        state: WorkerState = "responded",
        detail: str | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store Terra's final reply to ``reply_to``, end its stream and set the state.

        At most one reply per visitor message is ever stored: if one exists, nothing is
        written and ``(existing frame stub, True)`` is returned. Otherwise writes, in one
        round trip and in this order, the Message, a ``done`` chunk and the worker state.
        ``provider`` and ``model`` name a bring-your-own-model answer's source.
        """
        message = MessagePosted(
            id=str(uuid.uuid4()),
            chatId=chat_id,
            sender="Terra",
            content=content,
            createdAt=iso_now(),
            replyTo=reply_to,
            status=None if status == "complete" else status,
            provider=provider,
            model=model,
        )
        done = ChunkProduced(
            chatId=chat_id, content="", done=True, emittedAt=iso_now(), replyTo=reply_to
        )
        state_event = WorkerStateChanged(
            chatId=chat_id, state=state, detail=detail, updatedAt=iso_now()
        )
        lim = self.limits
        self._recent.pop(chat_id, None)  # a new Message: the snapshot is stale
        try:
            result = await self._finish(
                keys=self.chat_keys(chat_id),
                args=[
                    self.keys.chat_channel(chat_id),
                    encode(message),
                    reply_to,
                    encode(done),
                    encode(state_event),
                    lim.events_maxlen,
                    lim.messages_maxlen,
                    lim.retention_ms,
                ],
            )
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)
        if result[0] == "dup":
            return {"eventId": str(result[1])}, True
        return render_frame(encode(message), str(result[1])), False

    async def reset_stream(self, chat_id: str, reply_to: str, reason: str) -> str:
        """Append a ``streamReset``: the reply to ``reply_to`` starts again from scratch.

        Written before a new attempt at a reply whose earlier attempt already put chunks in
        the log (see :meth:`streaming_reply`). Returns the event id.
        """
        event = StreamReset(chatId=chat_id, replyTo=reply_to, reason=reason, emittedAt=iso_now())
        return await self._append_event(chat_id, encode(event), "other")

    async def streaming_reply(self, chat_id: str) -> str | None:
        """Visitor message id whose reply has chunks in the log but no final Message yet."""
        try:
            value = await self.redis.hget(self.keys.chat_meta(chat_id), "streaming")  # type: ignore[misc]
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)
        return str(value) if value is not None else None

    async def request_cancel(self, chat_id: str, message_id: str, ttl_ms: int = 600_000) -> None:
        """Ask the worker to stop the reply to ``message_id`` (seen at its next chunk)."""
        try:
            await self.redis.set(self.keys.chat_cancel(chat_id), message_id, px=ttl_ms)
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)

    async def cancel_requested(self, chat_id: str, message_id: str) -> bool:
        """True when the visitor asked to stop the reply to ``message_id``."""
        current = await self.redis.get(self.keys.chat_cancel(chat_id))
        return bool(current == message_id)

    # --- the model's memory of tool turns ---------------------------------------

    async def save_tool_turns(
        self, chat_id: str, message_id: str, turns: Sequence[Mapping[str, Any]]
    ) -> None:
        """Keep the tool turns (assistant ``tool_calls`` + ``tool`` messages) that answering
        the visitor message ``message_id`` took, replacing any saved before.

        They expire with the chat's other keys. Raises :class:`BusUnavailable`.
        """
        data = json.dumps(list(turns), ensure_ascii=False, separators=(",", ":"))
        try:
            await self._save_turns(
                keys=[self.keys.chat_memory(chat_id)],
                args=[message_id, data, self.limits.retention_ms],
            )
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)

    async def tool_turns(
        self, chat_id: str, message_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Saved tool turns of those visitor messages that have some (unreadable entries are
        skipped). Raises :class:`BusUnavailable`."""
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return {}
        try:
            values = await self.redis.hmget(self.keys.chat_memory(chat_id), ids)  # type: ignore[misc]
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)
        found: dict[str, list[dict[str, Any]]] = {}
        for message_id, raw in zip(ids, values, strict=True):
            if raw is None:
                continue
            try:
                turns = json.loads(raw)
            except ValueError:
                continue
            if isinstance(turns, list) and all(isinstance(t, dict) for t in turns):
                found[message_id] = turns
        return found

    # --- reads ------------------------------------------------------------------

    async def history(self, chat_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """The newest ``limit`` Messages of the chat, oldest first, as frames."""
        entries = await self.redis.xrevrange(self.keys.chat_messages(chat_id), count=limit)
        return [render_frame(fields["d"], entry_id) for entry_id, fields in reversed(entries)]

    def _keep_recent(
        self, chat_id: str, newest_first: list[tuple[str, MessagePosted]], *, complete: bool
    ) -> None:
        if len(self._recent) >= MESSAGE_CACHE_SIZE // 4:
            self._recent.clear()  # snapshots nobody used (duplicates): drop them all
        self._recent[chat_id] = (newest_first, complete)

    async def messages_until(self, chat_id: str, event_id: str, count: int) -> list[MessagePosted]:
        """Up to ``count`` Messages with ids up to and including ``event_id``, oldest first.

        ``"+"`` right after :meth:`unanswered_until` of the same chat is served, once, from
        the newest Messages that call read (issue 10: the worker's prompt needs no second
        read; a Message this ChatLog stores since then drops the snapshot). Messages posted
        by others meanwhile are newer than the one being answered and not in its prompt.
        """
        if event_id == "+":
            snapshot = self._recent.pop(chat_id, None)
            if snapshot is not None and (snapshot[1] or len(snapshot[0]) >= count):
                return [m for _, m in reversed(snapshot[0][:count])]
        entries = await self.redis.xrevrange(
            self.keys.chat_messages(chat_id), max=event_id, count=count
        )
        return [self._message(str(eid), f["d"]) for eid, f in reversed(entries)]

    async def message_event_id(self, chat_id: str, message_id: str, scan: int = 1000) -> str | None:
        """Event id of the Message ``message_id`` among the newest ``scan`` Messages."""
        entries = await self.redis.xrevrange(self.keys.chat_messages(chat_id), count=scan)
        for entry_id, fields in entries:
            if json.loads(fields["d"]).get("id") == message_id:
                return str(entry_id)
        return None

    async def unanswered_until(
        self, chat_id: str, message_id: str, page: int = 50
    ) -> list[tuple[str, MessagePosted]]:
        """Visitor messages up to and including ``message_id`` that have no reply yet.

        Oldest first, as ``(event_id, message)``. Empty when ``message_id`` is unknown or
        already answered. Replies are written in order, so the scan walks back from the
        newest Messages and stops at the first answered visitor message: the cost follows
        the backlog, not the length of the chat.
        """
        key = self.keys.chat_messages(chat_id)
        newest_first: list[tuple[str, MessagePosted]] = []
        found = False
        cursor = "+"
        while True:
            count = max(page, RECENT_MESSAGES) if cursor == "+" else page
            entries = await self.redis.xrevrange(key, max=cursor, count=count)
            messages = [(str(eid), self._message(str(eid), f["d"])) for eid, f in entries]
            if cursor == "+":
                self._keep_recent(chat_id, messages, complete=len(entries) < count)
            asked = [m.id for _, m in messages if m.sender == "Visitor"]
            replied = (
                await self.redis.hmget(self.keys.chat_replies(chat_id), asked)  # type: ignore[misc]
                if asked
                else []
            )
            answered = {mid for mid, reply in zip(asked, replied, strict=True) if reply}
            for event_id, msg in messages:
                found = found or msg.id == message_id
                if not found or msg.sender != "Visitor":
                    continue
                if msg.id in answered:
                    return newest_first[::-1]
                newest_first.append((event_id, msg))
            if len(entries) < count:
                return newest_first[::-1] if found else []
            cursor = f"({entries[-1][0]}"

    async def oldest_unanswered(self, chat_id: str, scan: int = 200) -> str | None:
        """Id of the oldest visitor message without a reply: the one being answered now.

        Replies are written in order, so the scan stops at the first answered message.
        """
        entries = await self.redis.xrevrange(self.keys.chat_messages(chat_id), count=scan)
        replies = await self.redis.hgetall(self.keys.chat_replies(chat_id))  # type: ignore[misc]
        oldest: str | None = None
        for _entry_id, fields in entries:
            msg = MessagePosted.model_validate_json(fields["d"])
            if msg.sender != "Visitor":
                continue
            if msg.id in replies:
                break
            oldest = msg.id
        return oldest

    async def reply_event_id(self, chat_id: str, message_id: str) -> str | None:
        """Event id of Terra's final reply to ``message_id``, if one was stored."""
        value = await self.redis.hget(self.keys.chat_replies(chat_id), message_id)  # type: ignore[misc]
        return str(value) if value is not None else None

    async def worker_state(self, chat_id: str) -> dict[str, Any]:
        """``{state, detail, updatedAt}`` of the chat; idle at the epoch when unknown."""
        raw = await self.redis.hget(self.keys.chat_meta(chat_id), "state")  # type: ignore[misc]
        if raw is None:
            return dict(DEFAULT_WORKER_STATE)
        data = json.loads(raw)
        return {
            "state": data["state"],
            "detail": data.get("detail"),
            "updatedAt": data["updatedAt"],
        }

    async def reply_start(self, chat_id: str) -> str | None:
        """The event just before the first chunk of the reply being streamed, if any."""
        streaming, after = await self.redis.hmget(  # type: ignore[misc]
            self.keys.chat_meta(chat_id), ["streaming", "streaming_after"]
        )
        return str(after) if streaming is not None and after is not None else None

    async def last_event_id(self, chat_id: str) -> str | None:
        """Id of the chat's newest event, or ``None`` for an empty or expired chat."""
        value = await self.redis.hget(self.keys.chat_meta(chat_id), "last")  # type: ignore[misc]
        return str(value) if value is not None else None

    async def log_position(self, chat_id: str) -> tuple[str | None, str | None]:
        """``(epoch, last)``: the first and the newest event id of the chat's current log.

        A log recreated after a loss has a newer ``epoch``; both are ``None`` when the log
        is gone or was never written.
        """
        epoch, last = await self.redis.hmget(self.keys.chat_meta(chat_id), ["epoch", "last"])  # type: ignore[misc]
        return (
            str(epoch) if epoch is not None else None,
            str(last) if last is not None else None,
        )

    async def events_after(
        self, chat_id: str, after: str, count: int | None = None
    ) -> list[EventRecord]:
        """Events with ids strictly greater than ``after``, in order (``count`` caps it)."""
        entries = await self.redis.xrange(
            self.keys.chat_events(chat_id), min=f"({after}", count=count
        )
        return [EventRecord(str(eid), f["d"]) for eid, f in entries]

    async def events_between(self, chat_id: str, after: str, until: str) -> list[EventRecord]:
        """Events with ``after < id <= until``, in order."""
        entries = await self.redis.xrange(
            self.keys.chat_events(chat_id), min=f"({after}", max=until
        )
        return [EventRecord(str(eid), f["d"]) for eid, f in entries]

    async def check_resume(self, chat_id: str, after: str) -> None:
        """Raise :class:`ResumeGap` unless every event after ``after`` is still in the log.

        ``0-0`` means "from the start" and only fails if the log was trimmed. Detects a
        trimmed log (``after`` older than the newest trimmed entry), an expired
        chat, and a log that vanished and was recreated (for example Redis restarted
        without persistence): its ``epoch`` is newer than ``after``.
        """
        events_key = self.keys.chat_events(chat_id)
        try:
            info = await self.redis.xinfo_stream(events_key)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise  # a refusal (MOVED, NOPERM, WRONGTYPE): misconfigured, not a gap
            raise ResumeGap("the chat log is gone") from exc
        epoch = await self.redis.hget(self.keys.chat_meta(chat_id), "epoch")  # type: ignore[misc]
        trimmed = str(info.get("max-deleted-entry-id", "0-0"))  # Redis >= 7
        if compare_ids(after, trimmed) < 0:
            raise ResumeGap("events after the resume point were trimmed")
        first = info.get("first-entry")
        if first and epoch is not None and compare_ids(str(first[0]), str(epoch)) > 0:
            # Entries before the first one were trimmed (works on Redis 6.2 too).
            if compare_ids(after, str(first[0])) < 0 and compare_ids(after, str(epoch)) >= 0:
                raise ResumeGap("events after the resume point were trimmed")
            if after == "0-0":
                raise ResumeGap("the start of the chat log was trimmed")
        if after != "0-0" and epoch is not None and compare_ids(after, str(epoch)) < 0:
            raise ResumeGap("the chat log was recreated")
        last = str(info.get("last-generated-id", "0-0"))
        if compare_ids(after, last) > 0:
            raise ResumeGap("the resume point is newer than the chat log")
