"""The operators' front end to the bus: read chats, jobs and dead letters; requeue one.

Everything here but :meth:`OpsBus.requeue` is a plain read command (SCAN, XRANGE, XREVRANGE,
XPENDING, XINFO, HMGET, XLEN, SUBSCRIBE), so the console runs as the read-only ``ops``
Redis user. ``requeue`` writes (one Lua script) and needs a user allowed to: ``admin``.
Every operation raises only :mod:`bus.errors` exceptions.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bus import scripts
from bus.access_codes import AccessCode, AccessCodeStore, new_code
from bus.chatlog import ChatLog, EventRecord, parse_id
from bus.client import create_redis
from bus.errors import BusError, translates_redis_errors
from bus.frontend import FrontEnd
from bus.keys import CHAT_ID_PATTERN, BusKeys, is_valid_chat_id
from bus.migrate import LayoutMigration, MigrationReport
from bus.schemas import (
    AnswerMessage,
    MessagePosted,
    WorkerStateChanged,
    decode_job,
    encode,
    iso_now,
)
from bus.settings import BusSettings

__all__ = [
    "AmbiguousChat",
    "ChatSummary",
    "Conversation",
    "DeadLetter",
    "JobEntry",
    "LayoutRefused",
    "OpsBus",
    "RequeueRefused",
    "Requeued",
    "UnknownChat",
    "job_problems",
    "open_ops_bus",
]

#: ``requeue``'s mark in the chat log (a ``workerState`` event): a second reply follows.
REQUEUE_DETAIL = "requeued by an operator: a second reply to {message_id} follows"

#: KEYS: events, meta, messages, replies, memory, dead letters, jobs.
#: ARGV: channel, marker event, maxlen, msg_maxlen, ttl_ms, dead-letter id, message id, job,
#:       jobs_maxlen (unused: an operator's requeue is never refused nor trims other jobs)
#: -> {'ok', job entry id, marker event id} | {'gone'}
#: The dead letter is removed in the same round trip as the job is added, so one dead
#: letter is requeued at most once.
REQUEUE = (
    scripts._APPEND_FN
    + """
if #redis.call('XRANGE', KEYS[6], ARGV[6], ARGV[6]) == 0 then return {'gone'} end
local jid = redis.call('XADD', KEYS[7], '*', 'd', ARGV[8])  -- never trims: see JOBS_ACK
redis.call('HDEL', KEYS[4], ARGV[7])
local mid = append(ARGV[1], ARGV[2], 'state', ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[6], ARGV[6])
refresh(ARGV[5])
return {'ok', jid, mid}
"""
)


class UnknownChat(BusError):
    """No chat has this id, nor an id starting with it."""


class AmbiguousChat(BusError):
    """Several chats' ids start with this prefix (``candidates`` lists them)."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        super().__init__(f"{len(candidates)} chats start with {prefix!r}")
        self.candidates = candidates


class RequeueRefused(BusError):
    """The dead letter cannot be requeued (the reason says why)."""


class LayoutRefused(BusError):
    """The key layout cannot be migrated here, or a verb cannot run on it (the reason says
    why)."""


@dataclass(frozen=True, slots=True)
class ChatSummary:
    """One chat as ``chats`` lists it."""

    chat_id: str
    last_event_id: str
    first_event_id: str | None
    messages: int
    state: str
    detail: str | None

    @property
    def last_activity_ms(self) -> int:
        """Unix time (ms) of the chat's newest event."""
        return parse_id(self.last_event_id)[0]


@dataclass(frozen=True, slots=True)
class JobEntry:
    """A job in the jobs stream: waiting (never delivered) or pending (delivered, not acked)."""

    entry_id: str
    raw: str
    job: AnswerMessage | None
    consumer: str | None = None
    idle_ms: int | None = None
    deliveries: int = 0
    #: The partition whose jobs stream holds it (0 in the legacy layout).
    partition: int = 0
    #: Still in its client's lane (fair queueing), not yet in the stream: ``entry_id`` is
    #: then the time it was enqueued.
    in_lane: bool = False

    @property
    def enqueued_ms(self) -> int:
        """Unix time (ms) the job was added to the stream."""
        return parse_id(self.entry_id)[0]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter stream, with the job's problems spelled out."""

    dead_id: str
    job_entry_id: str
    reason: str
    deliveries: int
    consumer: str
    at: str
    raw: str
    job: AnswerMessage | None
    problems: list[str] = field(default_factory=list)
    #: The chat and message the job names, read from it even when it is malformed.
    chat_id: str | None = None
    message_id: str | None = None
    #: The partition whose dead-letter stream holds it (0 in the legacy layout).
    partition: int = 0
    #: Whether the layout is partitioned: the letter's id then names its partition.
    partitioned: bool = False

    @property
    def ref(self) -> str:
        """How operators name it: the stream id, ``<partition>/<id>`` when partitioned."""
        return f"{self.partition}/{self.dead_id}" if self.partitioned else self.dead_id


@dataclass(frozen=True, slots=True)
class Requeued:
    """What :meth:`OpsBus.requeue` did."""

    job_entry_id: str
    marker_event_id: str
    chat_id: str
    message_id: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """What the worker reads to answer one visitor message."""

    messages: list[MessagePosted]
    target: MessagePosted
    target_event_id: str
    tool_turns: dict[str, list[dict[str, Any]]]


def job_problems(raw: str) -> list[str]:
    """Why ``raw`` is not a valid job, one readable line per problem (empty when valid)."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        return [f"not JSON ({exc.msg} at character {exc.pos})"]
    try:
        AnswerMessage.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in err["loc"]) or "job"
            problems.append(f"{where}: {err['msg']}")
        return problems
    return []


def _named_ids(raw: str) -> tuple[str | None, str | None]:
    """``(chat_id, message_id)`` a job names, when readable (malformed jobs included)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    chat_id, message_id = data.get("chat_id"), data.get("message_id")
    return (
        chat_id if isinstance(chat_id, str) and is_valid_chat_id(chat_id) else None,
        message_id if isinstance(message_id, str) and len(message_id) <= 64 else None,
    )


def _decode(raw: str) -> AnswerMessage | None:
    try:
        return decode_job(raw)
    except BusError:
        return None


class _ChatKeyShape:
    """Globs over one per-chat key name, derived from :class:`BusKeys` (no name spelled here).

    Legacy names carry the chat id as the hash tag (``<head>{<chatId>}<tail>``); partitioned
    names end with it after the partition's tag (``<head>{<tag>}<middle><chatId>``).
    """

    def __init__(self, factory: Callable[[str], str]) -> None:
        name = factory("x")
        head, sep, tail = name.partition("{x}")
        if sep:
            self._head, self._tail = head + "{", "}" + tail
            self._pattern = re.compile(re.escape(self._head) + "(.+)" + re.escape(self._tail))
        elif name.endswith("x") and re.search(r"\{[^}]*\}", name):
            before = name[:-1]
            self._head, self._tail = re.sub(r"\{[^}]*\}", "{*}", before, count=1), ""
            parts = re.split(r"\{[^}]*\}", before, maxsplit=1)
            self._pattern = re.compile(
                re.escape(parts[0]) + r"\{[^}]*\}" + re.escape(parts[1]) + "(.+)"
            )
        else:
            raise ValueError("per-chat key names must carry the chat id or a partition tag")

    def glob(self, id_prefix: str = "") -> str:
        """SCAN/PSUBSCRIBE pattern for chats whose id starts with ``id_prefix``."""
        return f"{self._head}{id_prefix}*{self._tail}"

    def family(self) -> str:
        """Pattern of every per-chat name (``<prefix>:chat:*``). For PSUBSCRIBE: Redis ACLs
        allow a pattern subscription only when it equals an allowed pattern, and the
        ``ops`` user's is ``&<prefix>:chat:*``."""
        return self._head.partition("{")[0] + "*"

    def chat_id(self, name: str) -> str | None:
        """The chat id inside ``name``, or ``None`` for another kind of name."""
        match = self._pattern.fullmatch(name)
        if match is None:
            return None
        chat_id = match.group(1)
        return chat_id if is_valid_chat_id(chat_id) else None


@translates_redis_errors
class OpsBus(FrontEnd):
    """Operators' reads (and one write) over a deployment's chats, jobs and dead letters."""

    def __init__(self, redis: Redis, settings: BusSettings) -> None:
        super().__init__(redis)
        self._keys = settings.bus_keys
        self._limits = settings.limits
        self._log = ChatLog(redis, self._keys, settings.limits)
        self._meta = _ChatKeyShape(self._keys.chat_meta)
        self._channels = _ChatKeyShape(self._keys.chat_channel)
        self._requeue = redis.register_script(scripts.for_layout(REQUEUE, self._keys.cluster))
        self._codes = AccessCodeStore(redis, self._keys)

    # --- chats ---------------------------------------------------------------------------
    async def _chat_ids(self, id_prefix: str = "") -> list[str]:
        found: set[str] = set()
        async for name in self._redis.scan_iter(match=self._meta.glob(id_prefix), count=1000):
            chat_id = self._meta.chat_id(str(name))
            if chat_id is not None:
                found.add(chat_id)
        return sorted(found)

    async def chats(self) -> list[ChatSummary]:
        """Every chat Redis still holds, newest activity first."""
        ids = await self._chat_ids()
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for chat_id in ids:
            pipe.hmget(self._keys.chat_meta(chat_id), ["last", "epoch", "state"])
            pipe.xlen(self._keys.chat_messages(chat_id))
        replies = await pipe.execute()
        out: list[ChatSummary] = []
        for index, chat_id in enumerate(ids):
            (last, epoch, state_raw), count = replies[2 * index], replies[2 * index + 1]
            if last is None:
                continue  # expired between SCAN and HMGET
            state = json.loads(state_raw) if state_raw else {}
            out.append(
                ChatSummary(
                    chat_id=chat_id,
                    last_event_id=str(last),
                    first_event_id=str(epoch) if epoch is not None else None,
                    messages=int(count),
                    state=str(state.get("state", "idle")),
                    detail=state.get("detail"),
                )
            )
        out.sort(key=lambda chat: parse_id(chat.last_event_id), reverse=True)
        return out

    async def resolve_chat(self, text: str) -> str:
        """The chat whose id is ``text``, or the only one whose id starts with it.

        Raises :class:`UnknownChat` or :class:`AmbiguousChat`.
        """
        if not CHAT_ID_PATTERN.fullmatch(text):
            raise UnknownChat(f"not a chat id: {text!r} (letters, digits, '-' and '_' only)")
        if await self._redis.exists(self._keys.chat_meta(text)):
            return text
        candidates = await self._chat_ids(text)
        if not candidates:
            raise UnknownChat(f"no chat {text!r}")
        if len(candidates) > 1:
            raise AmbiguousChat(text, candidates)
        return candidates[0]

    async def messages(self, chat_id: str) -> list[dict[str, Any]]:
        """The chat's Messages (as frames), oldest first."""
        return await self._log.history(chat_id, self._limits.messages_maxlen)

    async def events(self, chat_id: str, after: str = "0-0") -> list[EventRecord]:
        """The chat's events after ``after``, oldest first."""
        return await self._log.events_after(chat_id, after)

    async def follow(
        self, chat_id: str | None, *, on_ready: Callable[[], None] | None = None
    ) -> AsyncIterator[tuple[str, EventRecord]]:
        """New events of ``chat_id`` (or of every chat when ``None``), as they are appended.

        Pub/sub only says that a chat moved; the events themselves are read from the log
        after the last one yielded, so none is skipped or repeated. A chat followed by id
        starts after its newest event; with ``None`` a chat starts at the first event
        announced for it. ``on_ready`` is called once the subscription is confirmed.
        """
        if self._keys.cluster:  # sharded pub/sub: one connection per node, not built here
            raise LayoutRefused("follow does not run on a cluster yet: use 'show'")
        pubsub = self._redis.pubsub()
        last: dict[str, str] = {}
        try:
            if chat_id is not None:
                await pubsub.subscribe(self._keys.chat_channel(chat_id))
            else:
                await pubsub.psubscribe(self._channels.family())
            while True:  # the confirmation: from here on, no announcement is missed
                message = await pubsub.get_message(timeout=5.0)
                if message is not None and message["type"] in ("subscribe", "psubscribe"):
                    break
            if chat_id is not None:
                last[chat_id] = await self._log.last_event_id(chat_id) or "0-0"
            if on_ready is not None:
                on_ready()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                if message is None or message["type"] not in ("message", "pmessage"):
                    continue
                moved = self._keys.chat_id_from_channel(str(message["channel"]))
                if moved is None:
                    continue
                if moved not in last:
                    last[moved] = str(message["data"]).split(" ", 1)[0]
                for record in await self._log.events_after(moved, last[moved]):
                    last[moved] = record.event_id
                    yield moved, record
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def conversation(self, chat_id: str, message_id: str | None) -> Conversation:
        """The chat's Messages, the visitor message ``message_id`` (default: the newest one)
        and the tool turns saved for the visitor messages before it.

        Raises :class:`UnknownChat` when the message is not in the chat.
        """
        entries = await self._redis.xrange(
            self._keys.chat_messages(chat_id), count=self._limits.messages_maxlen
        )
        pairs = [(str(eid), MessagePosted.model_validate_json(f["d"])) for eid, f in entries]
        visitors = [(eid, m) for eid, m in pairs if m.sender == "Visitor"]
        chosen = [
            (eid, m)
            for eid, m in visitors
            if message_id is None or m.id == message_id or m.id.startswith(message_id)
        ]
        if not chosen or (message_id is not None and len(chosen) > 1):
            what = "no visitor message" if message_id is None else f"no message {message_id!r}"
            if len(chosen) > 1:
                what = f"{len(chosen)} messages start with {message_id!r}"
            raise UnknownChat(f"{what} in chat {chat_id}")
        event_id, target = chosen[-1]
        earlier = [m.id for eid, m in visitors if parse_id(eid) < parse_id(event_id)]
        return Conversation(
            messages=[m for _, m in pairs],
            target=target,
            target_event_id=event_id,
            tool_turns=await self._log.tool_turns(chat_id, earlier),
        )

    # --- jobs ----------------------------------------------------------------------------
    @property
    def partitioned(self) -> bool:
        """Whether the deployment's key layout is partitioned (jobs then name a partition)."""
        return self._keys.partitioned

    async def jobs(self, limit: int = 1000) -> tuple[list[JobEntry], list[JobEntry]]:
        """``(waiting, in_progress)``: jobs no worker has taken yet, and jobs delivered to a
        worker and not acked (with the worker, idle time and delivery count), oldest first,
        over every partition (at most ``limit`` of each kind per partition)."""
        waiting: list[JobEntry] = []
        in_progress: list[JobEntry] = []
        for partition in self._keys.partitions:
            ready, taken = await self._jobs_in(partition, limit)
            waiting += ready
            in_progress += taken
        waiting.sort(key=lambda e: parse_id(e.entry_id))
        in_progress.sort(key=lambda e: parse_id(e.entry_id))
        return waiting, in_progress

    async def _jobs_in(self, partition: int, limit: int) -> tuple[list[JobEntry], list[JobEntry]]:
        stream, group = self._keys.jobs_stream(partition), self._keys.jobs_group
        lanes = await self._lane_jobs(partition, limit)
        try:
            groups = await self._redis.xinfo_groups(stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return lanes, []
            raise
        info = next((g for g in groups if str(g["name"]) == group), None)
        if info is None:  # no worker ever ran: everything waits
            entries = await self._redis.xrange(stream, count=limit)
            return [self._job(eid, f, partition=partition) for eid, f in entries] + lanes, []
        delivered = str(info["last-delivered-id"])
        waiting = [
            self._job(eid, f, partition=partition)
            for eid, f in await self._redis.xrange(stream, min=f"({delivered}", count=limit)
        ]
        rows = await self._redis.xpending_range(stream, group, min="-", max="+", count=limit)
        pipe = self._redis.pipeline(transaction=False)
        for row in rows:
            pipe.xrange(stream, min=row["message_id"], max=row["message_id"])
        bodies = await pipe.execute()
        in_progress = []
        for row, body in zip(rows, bodies, strict=True):
            fields = body[0][1] if body else {}
            in_progress.append(
                self._job(
                    str(row["message_id"]),
                    fields,
                    consumer=str(row["consumer"]),
                    idle_ms=int(row["time_since_delivered"]),
                    deliveries=int(row["times_delivered"]),
                    partition=partition,
                )
            )
        return waiting + lanes, in_progress

    async def _lane_jobs(self, partition: int, limit: int) -> list[JobEntry]:
        """Jobs still in the clients' lanes of ``partition`` (not yet in its stream)."""
        out: list[JobEntry] = []
        ring: list[Any] = await self._redis.zrange(self._keys.queue_ring(partition), 0, -1)
        for client in ring:
            lane = self._keys.queue_lane(partition, str(client))
            raws: list[Any] = await self._redis.lrange(lane, 0, limit - 1)  # type: ignore[misc]
            for raw in raws:
                job = _decode(str(raw))
                at = int(job.enqueued_at * 1000) if job is not None else 0
                out.append(JobEntry(f"{at}-0", str(raw), job, partition=partition, in_lane=True))
        return out

    @staticmethod
    def _job(entry_id: Any, fields: dict[str, Any] | None, **extra: Any) -> JobEntry:
        raw = str((fields or {}).get("d", ""))
        return JobEntry(str(entry_id), raw, _decode(raw), **extra)

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        """Dead-lettered jobs of every partition, newest first, each with its problems
        spelled out."""
        letters: list[DeadLetter] = []
        for partition in self._keys.partitions:
            stream = self._keys.dead_letters_stream(partition)
            entries = await self._redis.xrevrange(stream, count=limit)
            letters += [self._dead_letter(str(eid), fields, partition) for eid, fields in entries]
        letters.sort(key=lambda d: parse_id(d.dead_id), reverse=True)
        return letters[:limit]

    async def dead_letter(self, ref: str) -> DeadLetter | None:
        """One dead letter by its :attr:`DeadLetter.ref` (``<partition>/<id>``, or the bare
        id: searched in every partition), or ``None``. Raises :class:`RequeueRefused` for a
        bare id found in several partitions."""
        head, sep, dead_id = ref.rpartition("/")
        if sep and (not head.isdigit() or int(head) not in self._keys.partitions):
            return None
        if not re.fullmatch(r"\d+-\d+", dead_id):
            return None
        partitions = [int(head)] if sep else list(self._keys.partitions)
        found: list[DeadLetter] = []
        for partition in partitions:
            stream = self._keys.dead_letters_stream(partition)
            entries = await self._redis.xrange(stream, min=dead_id, max=dead_id)
            found += [self._dead_letter(str(e[0]), e[1], partition) for e in entries]
        if len(found) > 1:
            refs = ", ".join(d.ref for d in found)
            raise RequeueRefused(f"dead letter {dead_id} is in several partitions: use {refs}")
        return found[0] if found else None

    def _dead_letter(self, dead_id: str, fields: dict[str, Any], partition: int) -> DeadLetter:
        raw = str(fields.get("d", ""))
        try:
            deliveries = int(fields.get("deliveries", 0))
        except ValueError:
            deliveries = 0
        chat_id, message_id = _named_ids(raw)
        return DeadLetter(
            chat_id=chat_id,
            message_id=message_id,
            dead_id=dead_id,
            job_entry_id=str(fields.get("entry_id", "")),
            reason=str(fields.get("reason", "")),
            deliveries=deliveries,
            consumer=str(fields.get("consumer", "")),
            at=str(fields.get("at", "")),
            raw=raw,
            job=_decode(raw),
            problems=job_problems(raw),
            partition=partition,
            partitioned=self._keys.partitioned,
        )

    async def requeue(self, ref: str) -> Requeued:
        """Put a dead-lettered job back on the jobs stream, once, as a new job.

        The visitor already got the apology the dead letter produced; the worker now writes
        a second reply to the same message: the one deliberate exception to one reply per
        message, marked in the chat log by a ``workerState`` ``queued`` event whose detail
        says so. Refused (:class:`RequeueRefused`) for an unknown or malformed dead letter,
        a message no longer in the chat, or one that already has a reply that is not an
        apology (``status: "error"``).
        """
        dead = await self.dead_letter(ref)
        if dead is None:
            raise RequeueRefused(f"no dead letter {ref} (already requeued?)")
        if dead.job is None:
            raise RequeueRefused("the job is malformed: " + "; ".join(dead.problems))
        chat_id, message_id = dead.job.chat_id, dead.job.message_id
        partition = self._keys.partition_of(chat_id)
        if partition != dead.partition:  # one script, one slot: migrate the layout first
            raise RequeueRefused(
                f"dead letter {ref} is in partition {dead.partition}, its chat in {partition}: "
                "run 'terrarium-ops layout migrate' first"
            )
        scan = self._limits.messages_maxlen
        if await self._log.message_event_id(chat_id, message_id, scan) is None:
            raise RequeueRefused(f"message {message_id} is no longer in chat {chat_id}")
        reply_id = await self._log.reply_event_id(chat_id, message_id)
        if reply_id is not None:
            entries = await self._redis.xrange(
                self._keys.chat_messages(chat_id), min=reply_id, max=reply_id
            )
            if entries and MessagePosted.model_validate_json(entries[0][1]["d"]).status != "error":
                raise RequeueRefused(f"message {message_id} already has a reply ({reply_id})")
        job = AnswerMessage(
            job_id=str(uuid.uuid4()),
            chat_id=chat_id,
            message_id=message_id,
            request_id=dead.job.request_id,
            enqueued_at=time.time(),
        )
        marker = WorkerStateChanged(
            chatId=chat_id,
            state="queued",
            detail=REQUEUE_DETAIL.format(message_id=message_id),
            updatedAt=iso_now(),
        )
        k, lim = self._keys, self._limits
        result = await self._requeue(
            keys=[
                k.chat_events(chat_id),
                k.chat_meta(chat_id),
                k.chat_messages(chat_id),
                k.chat_replies(chat_id),
                k.chat_memory(chat_id),
                k.dead_letters_stream(partition),
                k.jobs_stream(partition),
            ],
            args=[
                k.chat_channel(chat_id),
                encode(marker),
                lim.events_maxlen,
                lim.messages_maxlen,
                lim.retention_ms,
                dead.dead_id,
                message_id,
                encode(job),
                lim.jobs_maxlen,
            ],
        )
        if result[0] != "ok":
            raise RequeueRefused(f"no dead letter {ref} (already requeued?)")
        return Requeued(str(result[1]), str(result[2]), chat_id, message_id)

    # --- the key layout (writes: admin) ---------------------------------------------------
    async def migrate_layout(self, partitions: int, *, dry_run: bool = False) -> MigrationReport:
        """Move this Redis's chats, jobs and dead letters to the layout of ``partitions``
        partitions (:mod:`bus.migrate`). Raises :class:`LayoutRefused` on a cluster and
        :class:`bus.migrate.WorkersAlive` while a worker runs."""
        if self._keys.cluster:
            raise LayoutRefused("a cluster starts partitioned: layout migrate runs on one Redis")
        target = BusKeys(self._keys.prefix, partitions)
        return await LayoutMigration(self._redis, target).run(dry_run=dry_run)

    # --- visitor access codes (add and revoke write: admin) ------------------------------
    async def access_codes(self) -> list[AccessCode]:
        """Stored access codes, oldest first (digests only: a code is never kept)."""
        return await self._codes.all()

    async def add_access_code(self, label: str, expires_ms: int | None) -> tuple[str, AccessCode]:
        """A new random code (returned once, never stored) and its stored record."""
        code = new_code()
        record = await self._codes.add(
            code, label=label, created_ms=int(time.time() * 1000), expires_ms=expires_ms
        )
        return code, record

    async def revoke_access_code(self, code_id: str) -> bool:
        """Delete stored code ``code_id``; False when there is none."""
        return await self._codes.revoke(code_id)


def open_ops_bus(settings: BusSettings) -> OpsBus:
    """The operators' bus for ``settings`` (no I/O: the first operation connects)."""
    redis = create_redis(
        settings.redis_url.get_secret_value(),
        client_name="terrarium-ops",
        options=settings.redis_options(max_connections=8),
        cluster=settings.redis_cluster,
    )
    return OpsBus(redis, settings)
