"""Live fan-out of chat events: one pub/sub subscription per process, many local listeners.

:class:`ChatFeed` subscribes exactly the channels of the chats that have local listeners
and dispatches each event in-process to those listeners' bounded queues. On a single Redis
it owns one pub/sub connection (``SUBSCRIBE``); when the scripts publish sharded
(``BusKeys.cluster``: ``SPUBLISH``), it keeps one connection per node that owns a subscribed
chat (``SSUBSCRIBE``, :mod:`bus.shard_feed`). Guarantees, per chat, in both modes:

- Pub/sub itself is at most once. The feed makes delivery to a listener gap-free and
  duplicate-free anyway: every published event names its predecessor, so a missing event
  is read back from the chat log before the next one is dispatched, and after a reconnect
  every subscribed chat is backfilled from the log (on a cluster also after its slot
  moved, or its node failed over).
- Order within a chat is the log's order.
- A listener that falls ``queue_size`` events behind is marked overflowed and receives
  :class:`SlowConsumer`; it never slows the feed or other listeners.
- A chat log that restarted under a listener (Redis lost it: no persistence, or it
  expired) is never papered over: the listener receives :class:`LogRestarted` and its
  client starts again from the new log's first event. It is detected when the first
  event of a new log arrives (its predecessor is ``0-0``), when a gap is filled, and
  when the connection comes back (the log's ``epoch`` is newer than the last event seen,
  or the log is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.chatlog import ChatLog, EventRecord, compare_ids
from bus.errors import BusError, ResumeGap, translates_redis_errors
from bus.keys import BusKeys
from bus.shard_feed import ShardLinks
from bus.slot_map import ClusterSlots, SingleNode, SlotMap, abort_socket

__all__ = ["ChatFeed", "Listener", "LogRestarted", "SlowConsumer"]

log = logging.getLogger("bus.pubsub")

#: Reconnect backoff cap (seconds).
MAX_BACKOFF = 5.0
#: An idle feed connection is pinged this often (seconds) ...
PING_INTERVAL = 1.0
#: ... and dropped (then reconnected, and every chat backfilled) after this long in silence.
DEAD_AFTER = 10.0
#: A chat-log read the feed waits for (a confirmation's position, a gap's backfill) that
#: takes longer ends the connection it serves (seconds); its chats are confirmed again.
#: Longer than the client's own budget for one command on a hung node (socket timeout x
#: retries), so the client finds the cluster again before the feed gives up on it.
LOG_READ_TIMEOUT = 30.0
#: The feed's connection never reconnects by itself: a drop must reach :meth:`ChatFeed.run`,
#: which backfills every chat from its log (a silent reconnect would lose the gap).
_NO_RETRY = Retry(NoBackoff(), 0)


class SlowConsumer(BusError):
    """The listener fell too far behind; its client should reconnect and resume."""


class LogRestarted(ResumeGap):
    """The chat's log restarted under a live listener: follow it again from ``0-0``."""


class _Overflow:
    """Sentinel queued when a listener overflowed."""


class _Restarted:
    """Sentinel queued when the chat's log restarted."""


class Listener:
    """One local consumer of a chat's live events (typically one socket).

    Events wait in a queue (bounded by count and bytes) until :meth:`get` takes them, or,
    once a ``sink`` is installed (:meth:`ChatFeed.open_sink`), go straight to it inside the
    feed's dispatch: no task wakes up, the consumer writes or buffers the event itself.
    The queue is created on first use, so a listener with a sink holds none.
    """

    __slots__ = (
        "_items",
        "_last",
        "_waiter",
        "chat_id",
        "max_bytes",
        "on_overflow",
        "on_restart",
        "overflowed",
        "queue_size",
        "queued_bytes",
        "sink",
    )

    def __init__(
        self,
        chat_id: str,
        queue_size: int,
        on_overflow: Callable[[], None] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.chat_id = chat_id
        self.queue_size = queue_size
        self.on_overflow = on_overflow
        #: Bytes of event data queued at most (``None``: frames are the only bound).
        self.max_bytes = max_bytes
        self.overflowed = False
        self.queued_bytes = 0
        #: Takes each live event at once while nothing is queued (see :meth:`install`).
        self.sink: Callable[[EventRecord], None] | None = None
        #: Called when the log restarts under a listener that has a sink.
        self.on_restart: Callable[[], None] | None = None
        self._last: str | None = None
        self._items: deque[EventRecord | _Overflow | _Restarted] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        """Items queued (events and end markers)."""
        return len(self._items) if self._items else 0

    def install(
        self, sink: Callable[[EventRecord], None], last: str, on_restart: Callable[[], None]
    ) -> None:
        """Hand every later event above ``last`` to ``sink``; call only with nothing queued."""
        assert not self._items, "drain the queue before installing a sink"
        self._last = last
        self.on_restart = on_restart
        self.sink = sink

    def push(self, record: EventRecord) -> None:
        """Deliver or queue ``record`` without waiting; a full queue marks it overflowed."""
        if self.overflowed:
            return
        sink = self.sink
        if sink is not None:
            last = self._last
            if last is not None:
                # The replay read the log further than the feed had dispatched: skip the overlap.
                if compare_ids(record.event_id, last) <= 0:
                    return
                self._last = None  # ids only grow from here
            sink(record)
            return
        size = len(record.data)
        too_many_bytes = self.max_bytes is not None and self.queued_bytes + size > self.max_bytes
        if self.qsize() >= self.queue_size or too_many_bytes:
            self.overflowed = True
            self._put(_Overflow())
            if self.on_overflow is not None:
                self.on_overflow()
            return
        self.queued_bytes += size
        self._put(record)

    def restart(self) -> None:
        """The chat's log restarted: end this listener with :class:`LogRestarted`."""
        if self.overflowed:
            return
        self.overflowed = True  # nothing more is queued; there is room for the sentinel
        if self.sink is not None:
            self.sink = None
            if self.on_restart is not None:
                self.on_restart()
            return
        self._put(_Restarted())

    def _put(self, item: EventRecord | _Overflow | _Restarted) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> EventRecord:
        """The next queued record (``IndexError`` when none); raises like :meth:`get`."""
        if not self._items:
            raise IndexError("no queued event")
        item = self._items.popleft()
        if isinstance(item, _Overflow):
            raise SlowConsumer("listener queue overflowed")
        if isinstance(item, _Restarted):
            raise LogRestarted("the chat log restarted")
        self.queued_bytes -= len(item.data)
        return item

    async def get(self) -> EventRecord:
        """Next live record. Raises :class:`SlowConsumer` once overflowed and
        :class:`LogRestarted` once the chat's log restarted."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.get_nowait()


@dataclass(eq=False)
class _Chat:
    listeners: set[Listener] = field(default_factory=set)
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    last_id: str | None = None
    linger: asyncio.TimerHandle | None = None


@translates_redis_errors
class ChatFeed:
    """The process-wide subscription. Start :meth:`run` as a background task.

    ``sharded`` (default: ``keys.cluster``, as the scripts publish) subscribes with
    ``SSUBSCRIBE`` on each chat's node; it needs a :class:`RedisCluster`, or a single
    Redis 7 (one node).
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        keys: BusKeys,
        chat_log: ChatLog,
        *,
        queue_size: int = 1000,
        queue_bytes: int | None = None,
        linger_seconds: float = 15.0,
        confirm_timeout: float = 5.0,
        sharded: bool | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.log = chat_log
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.linger_seconds = linger_seconds
        self.confirm_timeout = confirm_timeout
        self._chats: dict[str, _Chat] = {}
        self._pubsub: PubSub | None = None
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()
        self._reconnects = 0
        self.gaps_filled = 0
        self.dispatched = 0
        self.restarts = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        #: Loop time of the connection's last answer (the watchdog's clock).
        self._last_read = 0.0
        #: Why another task ended the connection (silent, or a log read failed).
        self._ended: Exception | None = None
        #: The connection's log worker is handing messages over (the reader then queues
        #: every message behind them, even one in sequence).
        self._working = False
        self._shards: ShardLinks | None = None
        if keys.cluster if sharded is None else sharded:
            slots: SlotMap = (
                ClusterSlots(redis) if isinstance(redis, RedisCluster) else SingleNode(redis)  # type: ignore[arg-type]
            )
            self._shards = ShardLinks(
                slots,
                keys,
                on_confirmed=self._on_confirmed,
                on_message=self._on_message,
                on_message_now=self._on_message_now,
                on_lost=self._on_lost,
                timing=lambda: (PING_INTERVAL, DEAD_AFTER, LOG_READ_TIMEOUT),
            )
        elif isinstance(redis, RedisCluster):
            raise ValueError("a Redis Cluster needs the sharded feed (BusKeys.cluster)")

    @property
    def sharded(self) -> bool:
        """Whether chats are subscribed with ``SSUBSCRIBE`` on their nodes."""
        return self._shards is not None

    @property
    def reconnects(self) -> int:
        """Connections lost so far (each one followed by a backfill of its chats)."""
        return self._reconnects + (self._shards.reconnects if self._shards else 0)

    @property
    def homeless(self) -> int:
        """Sharded: chats waiting to be subscribed again on their node; else 0."""
        return self._shards.homeless if self._shards else 0

    @property
    def nodes(self) -> dict[str, int]:
        """Sharded: chats subscribed per node (``host:port``); else empty."""
        return self._shards.nodes if self._shards else {}

    @property
    def chat_count(self) -> int:
        """Chats currently subscribed by this process."""
        return len(self._chats)

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is believed healthy (sharded: the cluster
        answers; see :attr:`homeless` for chats still waiting for their node)."""
        if self._shards is not None:
            return self._shards.connected
        return self._connected.is_set()

    # --- subscription management --------------------------------------------

    @contextlib.asynccontextmanager
    async def listen(
        self, chat_id: str, on_overflow: Callable[[], None] | None = None
    ) -> AsyncIterator[Listener]:
        """Register a listener for ``chat_id`` until the block exits.

        On entry the chat's channel is subscribed and confirmed by Redis, so every event
        appended from then on reaches the listener (or marks it overflowed, calling
        ``on_overflow`` once: a writer stuck on a full socket never sees the queue).
        """
        listener = await self.open_listener(chat_id, on_overflow)
        try:
            yield listener
        finally:
            self.close_listener(listener)

    async def open_listener(
        self, chat_id: str, on_overflow: Callable[[], None] | None = None
    ) -> Listener:
        """A registered, confirmed listener (see :meth:`listen`); end it with close_listener."""
        listener = Listener(chat_id, self.queue_size, on_overflow, self.queue_bytes)
        try:
            chat = await self._attach(chat_id, listener)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
            # cancellation that races with an already-set event, leaving the caller
            # waiting on its queue forever.
            if not chat.confirmed.is_set():
                async with asyncio.timeout(self.confirm_timeout):
                    await chat.confirmed.wait()
        except BaseException:
            self.close_listener(listener)
            raise
        return listener

    def close_listener(self, listener: Listener) -> None:
        """Unregister ``listener`` (idempotent); the chat lingers subscribed a while."""
        listener.sink = None
        self._detach(listener.chat_id, listener)

    async def open_sink(
        self,
        chat_id: str,
        after: str | None,
        write: Callable[[EventRecord], Awaitable[None]],
        sink: Callable[[EventRecord], None],
        on_restart: Callable[[], None],
        *,
        on_overflow: Callable[[], None] | None = None,
        verify: bool = True,
        on_verified: Callable[[], None] | None = None,
    ) -> Listener:
        """Like :meth:`follow`, for a consumer that takes live events synchronously.

        Every event after ``after`` (or from now) is awaited through ``write`` (the replay
        from the log, then what arrived meanwhile); then, with nothing left queued, each
        later event goes to ``sink`` inside the feed's dispatch, in order, no duplicate.
        When the log restarts, ``on_restart`` is called and the sink gets nothing more:
        open a new one from ``0-0``. Raises like :meth:`follow` during the replay. The
        caller ends the returned listener with :meth:`close_listener`.
        """
        listener = await self.open_listener(chat_id, on_overflow)
        try:
            if after is None:
                last = await self.log.last_event_id(chat_id) or "0-0"
            else:
                if verify:
                    await self.log.check_resume(chat_id, after)
                    if on_verified is not None:
                        on_verified()
                last = after
                for record in await self.log.events_after(chat_id, after):
                    await write(record)
                    last = record.event_id
            while listener.qsize():
                record = listener.get_nowait()  # SlowConsumer, LogRestarted
                if compare_ids(record.event_id, last) > 0:
                    await write(record)
                    last = record.event_id
            # Nothing queued and no await since the check: from here the sink takes over.
            listener.install(sink, last, on_restart)
        except BaseException:
            self.close_listener(listener)
            raise
        return listener

    async def _attach(self, chat_id: str, listener: Listener) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = _Chat()
            self._chats[chat_id] = chat
            await self._subscribe([chat_id])
        if chat.linger is not None:
            chat.linger.cancel()
            chat.linger = None
        chat.listeners.add(listener)
        return chat

    def _detach(self, chat_id: str, listener: Listener) -> None:
        chat = self._chats.get(chat_id)
        if chat is None:
            return
        chat.listeners.discard(listener)
        if not chat.listeners and chat.linger is None:
            loop = asyncio.get_running_loop()
            chat.linger = loop.call_later(self.linger_seconds, self._expire, chat_id, chat)

    def _expire(self, chat_id: str, chat: _Chat) -> None:
        if self._chats.get(chat_id) is chat and not chat.listeners:
            del self._chats[chat_id]
            task = asyncio.get_running_loop().create_task(self._unsubscribe(chat_id))
            task.add_done_callback(_log_failure)

    async def _subscribe(self, chat_ids: list[str]) -> None:
        if self._shards is not None:
            for chat_id in chat_ids:
                await self._shards.subscribe(chat_id)
            return
        pubsub = self._pubsub
        if pubsub is None or not self.connected:
            return  # run() subscribes every known chat when it (re)connects
        try:
            await _send(pubsub, "SUBSCRIBE", *(self.keys.chat_channel(c) for c in chat_ids))
        except (RedisError, OSError):
            self._connected.clear()

    async def _unsubscribe(self, chat_id: str) -> None:
        if chat_id in self._chats:
            return  # someone came back meanwhile
        if self._shards is not None:
            await self._shards.unsubscribe(chat_id)
            return
        pubsub = self._pubsub
        if pubsub is not None and self.connected:
            try:
                await _send(pubsub, "UNSUBSCRIBE", self.keys.chat_channel(chat_id))
            except (RedisError, OSError):
                self._connected.clear()

    # --- the reader loop ---------------------------------------------------------

    def start(self) -> None:
        """Run :meth:`run` as a background task of the current loop."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name="bus.feed")

    async def close(self, grace_seconds: float = 5.0) -> None:
        """Stop the reader loop and close the connection (bounded in time)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        deadline = asyncio.get_running_loop().time() + grace_seconds
        while not task.done() and asyncio.get_running_loop().time() < deadline:
            task.cancel()  # again: redis-py may have swallowed the previous one
            await asyncio.wait({task}, timeout=0.05)

    async def run(self) -> None:
        """Read the pub/sub connection until :meth:`close`, reconnecting with capped backoff.

        redis-py may turn a cancellation inside its connect timeout into a TimeoutError,
        so the loop also checks an explicit stop flag rather than trusting cancellation.

        This task is the connection's only reader. Other tasks (sockets subscribing) only
        write to it, through :func:`_send`: redis-py's own ``subscribe`` may ping and read
        the answer, or reconnect and read the handshake, from the caller's task, which made
        two coroutines read one stream under socket churn (``RuntimeError: read() called
        while another coroutine is already waiting``). Sharded, each node's connection has
        its own reader task (:class:`~bus.shard_feed.ShardLinks`).
        """
        if self._shards is not None:
            await self._shards.run()
            return
        assert isinstance(self.redis, Redis)
        attempt = 0
        while not self._stopping:
            pubsub = self.redis.pubsub()
            self._pubsub = pubsub
            pool_retry: Retry | None = None
            pool_timeout: float | None = None
            pool_errors: list[type[Exception]] = []
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]
                connection = pubsub.connection
                if connection is None:
                    raise RedisConnectionError("no pub/sub connection")
                pool_retry, connection.retry = connection.retry, _NO_RETRY
                # Nor reconnect inside a read that failed (redis-py's PubSub does so for the
                # errors it may retry, whatever the retry budget): on a hung Redis that
                # handshake would wait for ever, unseen.
                pool_errors, connection.retry_on_error = connection.retry_on_error, []
                # Reads block without a timeout (an asyncio timeout per message cost ~9 % of
                # the gateway's CPU); the watchdog in _read pings and notices a dead peer.
                pool_timeout, connection.socket_timeout = connection.socket_timeout, None
                self._ended = None
                self._working = False  # a cancelled worker of the last connection
                chats = list(self._chats)
                for chat in self._chats.values():
                    chat.confirmed.clear()
                self._connected.set()
                if chats:
                    await _send(pubsub, "SUBSCRIBE", *(self.keys.chat_channel(c) for c in chats))
                else:
                    await _send(pubsub, "PING")
                attempt = 0
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Any failure, a chat-log read's BusUnavailable during a Redis restart included,
                # reconnects: the feed task must never end while the gateway serves sockets.
                self._connected.clear()
                if self._stopping:
                    return
                cause = self._ended or exc
                if not isinstance(cause, RedisError | OSError | BusError):
                    log.error("bus.feed_failed", exc_info=cause)
                self._reconnects += 1
                delay = min(MAX_BACKOFF, 0.2 * 2**attempt) * (0.5 + random.random() / 2)
                attempt += 1
                log.warning("bus.feed_disconnected", extra={"error": type(cause).__name__})
                await asyncio.sleep(delay)
            finally:
                self._connected.clear()
                self._pubsub = None
                if pubsub.connection is not None:
                    # No goodbye: a hung Redis reads nothing (a TLS close would wait for it).
                    abort_socket(pubsub.connection)
                if pool_retry is not None and pubsub.connection is not None:
                    pubsub.connection.retry = pool_retry  # it goes back to the pool
                    pubsub.connection.socket_timeout = pool_timeout
                    pubsub.connection.retry_on_error = pool_errors
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read(self, pubsub: PubSub) -> None:
        """Read the connection until it fails, the watchdog finds it silent or a log read
        fails; raise why.

        What a message needs from the chat log runs in a worker task, in order, so a log read
        that waits never stops the reading (nor the watchdog's hearing a live Redis), and a
        silent Redis ends the connection whatever waits: the reading task is cancelled."""
        loop = asyncio.get_running_loop()
        self._last_read = loop.time()
        inbox: deque[dict[str, Any]] = deque()
        pending = asyncio.Event()
        reader = loop.create_task(self._read_loop(pubsub, inbox, pending), name="bus.feed.read")
        worker = loop.create_task(self._work(pubsub, inbox, pending), name="bus.feed.log")
        watchdog = _Watchdog(self, pubsub, reader)
        try:
            await asyncio.wait((reader, worker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watchdog.stop()
            reader.cancel()  # neither is awaited: either may wait on the hung socket
            worker.cancel()  # its chats are confirmed and backfilled on the next connection
        if self._stopping:
            return
        if self._ended is not None:
            raise self._ended
        failure = None if reader.cancelled() or not reader.done() else reader.exception()
        if isinstance(failure, Exception):
            raise failure
        raise RedisConnectionError("the feed's connection dropped")

    async def _read_loop(
        self, pubsub: PubSub, inbox: deque[dict[str, Any]], pending: asyncio.Event
    ) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            connection = pubsub.connection
            if connection is None or not connection.is_connected:
                # A failed write (or the watchdog) dropped it; redis-py would reconnect
                # silently, and the gap would go unnoticed.
                raise RedisConnectionError("the feed's connection dropped")
            message = await pubsub.get_message(timeout=None)
            self._last_read = loop.time()
            if message is None:
                continue
            kind = message["type"]
            if (
                kind == "message"
                and not inbox
                and not pending.is_set()
                and not self._working
                and self._on_message_now(message["channel"], message["data"])
            ):
                continue  # in sequence, nothing before it waits: no hand-over (issue 10)
            if kind in ("message", "subscribe"):
                inbox.append(message)
                pending.set()

    async def _work(
        self, pubsub: PubSub, inbox: deque[dict[str, Any]], pending: asyncio.Event
    ) -> None:
        """Hand the connection's confirmations and events to the chats, in order. A failure
        (the log unreachable) or a log read longer than :data:`LOG_READ_TIMEOUT` ends the
        connection: the feed reconnects and backfills every chat."""
        try:
            while True:
                await pending.wait()
                self._working = True
                pending.clear()
                while inbox:
                    message = inbox.popleft()
                    async with asyncio.timeout(LOG_READ_TIMEOUT):
                        await self._on_pubsub(message)
                self._working = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                exc = RedisTimeoutError(f"a log read took over {LOG_READ_TIMEOUT} s")
            self._ended = self._ended or exc
            if pubsub.connection is not None:
                abort_socket(pubsub.connection)
            # Returning ends the connection (_read).

    async def _on_pubsub(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            await self._on_message(message["channel"], message["data"])
        elif kind == "subscribe":
            await self._on_confirmed(message["channel"])

    def _on_lost(self, chat_id: str) -> None:
        """Sharded: the chat's subscription is gone until its new node confirms it."""
        chat = self._chats.get(chat_id)
        if chat is not None:
            chat.confirmed.clear()

    async def _on_confirmed(self, channel: str) -> None:
        chat_id = self.keys.chat_id_from_channel(channel)
        chat = self._chats.get(chat_id) if chat_id else None
        if chat is None or chat_id is None:
            return
        if chat.last_id is None:
            chat.last_id = await self.log.last_event_id(chat_id) or "0-0"
        else:
            if await self._log_restarted(chat_id, chat.last_id):
                self._restart(chat_id, chat)
            await self._backfill(chat_id, chat, chat.last_id, None)
        chat.confirmed.set()

    def _on_message_now(self, channel: str, data: str) -> bool:
        """Dispatch an event that follows the chat's last one (or one already seen) at once,
        without the chat log; False when it needs the log (a gap, a new log): then it goes
        through :meth:`_on_message`, in order with what waits before it."""
        chat_id = self.keys.chat_id_from_channel(channel)
        chat = self._chats.get(chat_id) if chat_id else None
        if chat is None:
            return True
        prev_id, event_id, payload = data.split(" ", 2)
        last = chat.last_id or "0-0"
        if compare_ids(event_id, last) <= 0:
            return True  # already dispatched
        if prev_id != last:
            return False
        self._dispatch(chat, EventRecord(event_id, payload, prev_id))
        return True

    async def _on_message(self, channel: str, data: str) -> None:
        chat_id = self.keys.chat_id_from_channel(channel)
        chat = self._chats.get(chat_id) if chat_id else None
        if chat is None or chat_id is None:
            return
        prev_id, event_id, payload = data.split(" ", 2)
        last = chat.last_id or "0-0"
        # "Already covered" comes first: a new chat's first events may be counted by the
        # confirmation's position read while their pub/sub copies are still buffered; the
        # copy of the very first one (predecessor 0-0) is then a duplicate, not a new log.
        if compare_ids(event_id, last) <= 0:
            return  # already dispatched (backfill overlap, or read with the confirmation)
        if prev_id == "0-0" and last != "0-0":
            # The first event of a new log: the one this feed followed is gone.
            self._restart(chat_id, chat)
            last = "0-0"
        if prev_id != last and compare_ids(prev_id, last) > 0:
            if last != "0-0" and await self._log_restarted(chat_id, last):
                self._restart(chat_id, chat)
                last = "0-0"
            await self._backfill(chat_id, chat, last, prev_id)
        self._dispatch(chat, EventRecord(event_id, payload, prev_id))

    async def _log_restarted(self, chat_id: str, last: str) -> bool:
        """True when the chat's log is not the one whose event ``last`` this feed saw."""
        if last == "0-0":
            return False
        epoch, newest = await self.log.log_position(chat_id)
        if newest is None:
            return True  # gone (lost or expired); its next event starts a new log
        return epoch is not None and compare_ids(epoch, last) > 0

    def _restart(self, chat_id: str, chat: _Chat) -> None:
        self.restarts += 1
        log.warning("bus.feed_log_restarted", extra={"chat_id": chat_id})
        chat.last_id = "0-0"
        for listener in tuple(chat.listeners):  # a sink may close its listener
            listener.restart()

    async def _backfill(self, chat_id: str, chat: _Chat, after: str, until: str | None) -> None:
        if until is None:
            records = await self.log.events_after(chat_id, after)
        else:
            records = await self.log.events_between(chat_id, after, until)
        self.gaps_filled += len(records)
        for record in records:
            if compare_ids(record.event_id, chat.last_id or "0-0") > 0:
                self._dispatch(chat, record)

    def _dispatch(self, chat: _Chat, record: EventRecord) -> None:
        chat.last_id = record.event_id
        self.dispatched += 1
        for listener in tuple(chat.listeners):  # a sink may close its listener
            listener.push(record)

    # --- gap-free following for one client ----------------------------------------

    async def follow(
        self,
        chat_id: str,
        after: str | None,
        on_overflow: Callable[[], None] | None = None,
        *,
        verify: bool = True,
        on_verified: Callable[[], None] | None = None,
    ) -> AsyncIterator[EventRecord]:
        """Every event of ``chat_id`` after ``after`` (or from now), in order, then live.

        No gap and no duplicate: the listener is registered before the log is read, and
        live events at or below the last one yielded are skipped. Raises
        :class:`ResumeGap` if ``after`` is older than the log retains (unless ``verify``
        is false: the caller took ``after`` from the log itself a moment ago) and
        :class:`SlowConsumer` if the caller stops keeping up. ``on_verified`` is called
        once ``after`` passed that check.
        """
        async with self.listen(chat_id, on_overflow) as listener:
            if after is None:
                last = await self.log.last_event_id(chat_id) or "0-0"
            else:
                if verify:
                    await self.log.check_resume(chat_id, after)
                    if on_verified is not None:
                        on_verified()
                last = after
                for record in await self.log.events_after(chat_id, after):
                    yield record
                    last = record.event_id
            while True:
                record = await listener.get()
                if compare_ids(record.event_id, last) > 0:
                    last = record.event_id
                    yield record


class _Watchdog:
    """Pings the feed's connection after a second without traffic, and drops it when nothing
    came back for :data:`DEAD_AFTER` seconds (the reader then fails and reconnects); the
    silence is logged once, as the connection ends with it."""

    __slots__ = ("_feed", "_handle", "_pubsub", "_reader", "_sending")

    def __init__(self, feed: ChatFeed, pubsub: PubSub, reader: asyncio.Task[None]) -> None:
        self._feed = feed
        self._pubsub = pubsub
        self._reader = reader
        self._sending: asyncio.Task[None] | None = None
        self._handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            PING_INTERVAL, self._tick
        )

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._feed._last_read
        connection = self._pubsub.connection
        if connection is not None and idle >= DEAD_AFTER:
            self._handle = None
            log.warning("bus.feed_silent", extra={"seconds": round(idle, 1)})
            self._feed._ended = self._feed._ended or RedisTimeoutError(
                f"no answer for {idle:.1f} s"
            )
            abort_socket(connection)
            self._reader.cancel()  # wherever it waits (redis-py may be reconnecting in it)
            return  # the connection ends: nothing more to watch
        if idle >= PING_INTERVAL and (self._sending is None or self._sending.done()):
            self._sending = loop.create_task(self._ping())
        self._handle = loop.call_later(PING_INTERVAL, self._tick)

    async def _ping(self) -> None:
        with contextlib.suppress(RedisError, OSError):  # the reader sees a broken connection
            await _send(self._pubsub, "PING")

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._sending is not None:
            self._sending.cancel()


async def _send(pubsub: PubSub, *args: str) -> None:
    """Write one command on the feed's connection, from any task: never read, never reconnect.

    The answer (a subscribe confirmation, a pong) reaches :meth:`ChatFeed._read`.
    """
    connection = pubsub.connection
    if connection is None or not connection.is_connected:
        raise RedisConnectionError("the feed's connection is down")
    if args[0] == "SUBSCRIBE":
        pubsub.channels.update(dict.fromkeys(args[1:]))  # redis-py's view, for the record
    await connection.send_packed_command(connection.pack_command(*args), check_health=False)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("bus.feed_unsubscribe_failed", extra={"error": repr(task.exception())})
