"""The live feed's sharded subscriptions: one connection per node, ``SSUBSCRIBE`` per chat.

On Redis Cluster the chat scripts ``SPUBLISH`` each event to the chat's channel, which hashes
to the chat's slot: only the node that owns the slot carries it (no cluster-bus message, where
a classic ``PUBLISH`` is copied to every node). A subscriber therefore ``SSUBSCRIBE``\\ s each
chat's channel on the master that owns it. :class:`ShardLinks` keeps one connection (a
*link*) per master that owns at least one subscribed chat and hands what it reads to the
:class:`~bus.pubsub.ChatFeed`, which keeps its guarantees per chat (gap detection by
``prevId``, confirmation read, log restarts, slow consumers).

- Each link is read by its own task only; other tasks only write to it (:meth:`_send`, which
  never waits on the node), and it never reconnects by itself, so every loss is seen.
- A link's reader only reads. What its replies need from the chat log (a confirmation's
  position read, a gap's backfill) runs in the link's own worker task, in the order the
  replies came: a log read that waits (the log's client stalled by a hung node) never stops
  the reader, so the watchdog hears a healthy node answer its pings, and a silent node's link
  ends within ``dead_after`` whatever a log read waits for. A log read that takes longer than
  ``log_read_timeout`` ends the link too (its chats are confirmed and backfilled again).
- A link ends without a goodbye: its socket is aborted, never awaited (a hung node reads
  nothing, and a TLS close would wait for its answer).
- A chat loses its subscription when its link drops (node down, watchdog), when the node
  pushes ``sunsubscribe`` (its slot moved away) or answers ``SSUBSCRIBE`` with ``MOVED`` /
  ``ASK``. It is then *homeless*: the supervisor (:meth:`run`) refreshes the slot map
  (:mod:`bus.slot_map`) and subscribes it on its owner, whose confirmation backfills it
  from the log. A node's connection that fails is retried soon, then ever slower
  (capped backoff per node, reset by the node's next confirmation).
- Links are independent: a node going down stalls only the chats it owned.

On a single Redis 7 the same code runs with one node (``SSUBSCRIBE`` works there too).
redis-py 5.3.1 has neither asyncio shard pub/sub nor ``smessage`` parsing, hence the raw
connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.errors import BusError, as_bus_error
from bus.keys import BusKeys
from bus.slot_map import QUERY_TIMEOUT, SlotMap, abort_socket

__all__ = ["ShardLinks"]

log = logging.getLogger("bus.pubsub")

#: Re-subscription backoff cap after failures (seconds).
MAX_BACKOFF = 5.0


class _Link:
    """One subscriber connection to one node and the chats subscribed (or due) on it."""

    __slots__ = (
        "chats",
        "connection",
        "ended",
        "inbox",
        "last_read",
        "leaving",
        "node",
        "pending",
        "ready",
        "task",
        "worker",
        "working",
    )

    def __init__(self, node: str, connection: AbstractConnection) -> None:
        self.node = node
        self.connection = connection
        #: Connected and handshaken: commands may be written.
        self.ready = False
        self.chats: set[str] = set()
        #: Channels whose SUNSUBSCRIBE we sent and whose answer has not come yet.
        self.leaving: Counter[str] = Counter()
        self.last_read = 0.0
        self.task: asyncio.Task[None] | None = None
        #: Replies the worker hands to the feed, in order: (channel, message), where a
        #: message of ``None`` is the channel's subscription confirmation.
        self.inbox: deque[tuple[str, str | None]] = deque()
        self.pending = asyncio.Event()
        self.worker: asyncio.Task[None] | None = None
        #: The worker is handing replies over: new ones queue behind them.
        self.working = False
        #: Why another task ended the link (its node went silent, its worker failed).
        self.ended: Exception | None = None


class ShardLinks:
    """The sharded subscriptions of one :class:`~bus.pubsub.ChatFeed` (see the module)."""

    def __init__(
        self,
        slots: SlotMap,
        keys: BusKeys,
        *,
        on_confirmed: Callable[[str], Awaitable[None]],
        on_message: Callable[[str, str], Awaitable[None]],
        on_message_now: Callable[[str, str], bool] = lambda _channel, _data: False,
        on_lost: Callable[[str], None],
        timing: Callable[[], tuple[float, float, float]],
    ) -> None:
        self._slots = slots
        self._keys = keys
        self._on_confirmed = on_confirmed
        self._on_message = on_message
        #: Dispatches an event in sequence without the log (False: it needs the worker).
        self._on_message_now = on_message_now
        self._on_lost = on_lost
        #: (ping after this much silence, drop after this much, longest log read a link
        #: waits for), read when a link starts.
        self._timing = timing
        self._links: dict[str, _Link] = {}
        self._home: dict[str, _Link] = {}
        self._homeless: set[str] = set()
        self._mapped = False
        #: Whether the last slot map refresh found a node answering.
        self._reachable = False
        self._stale = False
        #: Failed slot map reads in a row, and when the next may be tried (loop time).
        self._map_failures = 0
        self._map_retry_at = 0.0
        #: Per node: links lost since its last confirmed subscription, and when a new link
        #: may be tried (a killed connection is retried at once, a dead node ever slower).
        self._node_failures: Counter[str] = Counter()
        self._node_retry_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        #: Links lost (dropped, or gone silent) so far.
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        """The slot map is read and the last refresh found the cluster answering.

        Not "every chat subscribed": while one master fails over, the chats of the others
        are served, and a gateway must not leave the load balancer for that.
        """
        return self._mapped and self._reachable

    @property
    def homeless(self) -> int:
        """Chats waiting to be subscribed again on their node (after a move or a loss)."""
        return len(self._homeless)

    @property
    def nodes(self) -> dict[str, int]:
        """Chats subscribed (or due) per node, for operators and tests."""
        return {node: len(link.chats) for node, link in self._links.items()}

    # --- subscriptions (from any task) -----------------------------------------------------
    async def subscribe(self, chat_id: str) -> None:
        """Subscribe ``chat_id`` on its node; its confirmation reaches ``on_confirmed``.

        Sent again when the chat is homed already: the feed forgot it (its linger expired)
        and took it back before the unsubscription ran, and waits for a new confirmation.
        """
        link = self._home.get(chat_id)
        if link is None:
            link = self._place(chat_id)
        elif not link.ready:
            link = None  # connecting: it subscribes its chats once connected
        if link is not None:
            self._send(link, ("SSUBSCRIBE", self._keys.chat_channel(chat_id)))

    async def unsubscribe(self, chat_id: str) -> None:
        """Drop ``chat_id``'s subscription; a link left without chats is closed."""
        self._homeless.discard(chat_id)
        link = self._home.pop(chat_id, None)
        if link is None:
            return
        link.chats.discard(chat_id)
        if not link.chats:
            self._close(link)
        elif link.ready:
            channel = self._keys.chat_channel(chat_id)
            link.leaving[channel] += 1
            self._send(link, ("SUNSUBSCRIBE", channel))

    def _place(self, chat_id: str) -> _Link | None:
        """Home ``chat_id`` on its node's link; the link if SSUBSCRIBE is to be written now
        (a new link subscribes its chats itself once connected)."""
        node = self._slots.node_of(self._keys.chat_channel(chat_id)) if self._mapped else None
        if node is None:
            self._lose(chat_id)
            return None
        link = self._links.get(node)
        if link is None and self._node_retry_at.get(node, 0.0) > asyncio.get_running_loop().time():
            self._homeless.add(chat_id)  # its node failed lately: the supervisor retries it
            self._wake.set()
            return None
        self._homeless.discard(chat_id)
        fresh = link is None
        if link is None:
            link = _Link(node, self._slots.connection(node))
            self._links[node] = link
        link.chats.add(chat_id)
        self._home[chat_id] = link
        if fresh:
            # A fresh context: the link outlives the socket whose subscription opened it,
            # and must not log with that request's id.
            link.task = asyncio.get_running_loop().create_task(
                self._serve(link), name=f"bus.feed.{node}", context=contextvars.Context()
            )
            return None
        return link if link.ready else None

    def _lose(self, chat_id: str, *, stale: bool = False) -> None:
        """``chat_id`` has no subscription any more: the supervisor finds it a new home."""
        link = self._home.pop(chat_id, None)
        if link is not None:
            link.chats.discard(chat_id)
            if not link.chats and self._links.get(link.node) is link:
                self._close(link)  # no chat of its node left
        self._homeless.add(chat_id)
        self._stale = self._stale or stale
        self._on_lost(chat_id)
        self._wake.set()

    def _close(self, link: _Link) -> None:
        if self._links.get(link.node) is link:
            del self._links[link.node]
        if link.task is not None:
            link.task.cancel()

    def _send(self, link: _Link, *commands: tuple[str, ...]) -> None:
        """Write commands on ``link`` from any task: never read, never reconnect, never wait.

        The bytes go to the socket's buffer; a node that does not read them goes silent for
        the watchdog, which ends the link. A failed write leaves the connection closed; the
        link's reader then ends and its chats are subscribed again elsewhere.
        """
        connection = link.connection
        writer = connection._writer
        if not link.ready or writer is None or not connection.is_connected:
            return  # the reader is failing over: the chats will move
        # RuntimeError: uvloop's refusal to write on a transport closed under us.
        with contextlib.suppress(OSError, RuntimeError):
            writer.writelines(connection.pack_commands(commands))

    def _end(self, link: _Link, why: Exception) -> None:
        """End ``link`` from another task (the watchdog, the worker): its socket is aborted,
        so its reader's read ends at once, whatever else waits."""
        if link.ended is None:
            link.ended = why
        abort_socket(link.connection)

    # --- the links' readers ----------------------------------------------------------------
    async def _serve(self, link: _Link) -> None:
        connection = link.connection
        loop = asyncio.get_running_loop()
        watchdog: _Watchdog | None = None
        ping_interval, dead_after, log_read_timeout = self._timing()
        try:
            # Bounded: reads have no timeout, and a hung node accepts the TCP connection
            # and then never answers the handshake (AUTH, CLIENT SETNAME).
            async with asyncio.timeout(QUERY_TIMEOUT):
                await connection.connect()  # type: ignore[no-untyped-call]
            link.ready = True
            link.last_read = loop.time()
            link.worker = loop.create_task(
                self._work(link, log_read_timeout), name=f"bus.feed.{link.node}.log"
            )
            commands: list[tuple[str, ...]] = [
                ("SSUBSCRIBE", self._keys.chat_channel(c)) for c in link.chats
            ]
            self._send(link, *(commands or [("PING",)]))
            watchdog = _Watchdog(self, link, ping_interval, dead_after)
            while not self._stopping:
                if not connection.is_connected:
                    # A failed write (or the watchdog) closed it; never reconnect silently.
                    raise RedisConnectionError("the feed's connection dropped")
                try:
                    reply = await connection.read_response(disconnect_on_error=True)
                except (MovedError, AskError) as exc:
                    link.last_read = loop.time()
                    self._misrouted(link, exc.slot_id)
                    continue
                link.last_read = loop.time()
                self._on_reply(link, reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._stopping:
                return
            self._failed(link, link.ended or exc)
        finally:
            if watchdog is not None:
                watchdog.stop()
            if link.worker is not None:
                link.worker.cancel()  # its log read is for chats that lose their home now
            link.ready = False
            if self._links.get(link.node) is link:
                del self._links[link.node]
            for chat_id in tuple(link.chats):
                self._lose(chat_id, stale=True)
            abort_socket(connection)
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)  # no I/O: the socket is gone

    def _failed(self, link: _Link, exc: Exception) -> None:
        """The link was lost: its node is tried again later, ever slower."""
        self.reconnects += 1
        failures = self._node_failures[link.node] = self._node_failures[link.node] + 1
        self._node_retry_at[link.node] = asyncio.get_running_loop().time() + _backoff(failures)
        if isinstance(exc, RedisError | OSError):
            as_bus_error(exc)  # a refusal (NOPERM, AUTH) is counted as bus.misconfigured
        elif not isinstance(exc, BusError):
            log.error("bus.feed_failed", exc_info=exc)
        log.warning("bus.feed_disconnected", extra={"node": link.node, "error": type(exc).__name__})

    def _on_reply(self, link: _Link, reply: Any) -> None:
        """Sort one reply of the link's node: what needs the chat log goes to the worker."""
        if not isinstance(reply, list) or len(reply) < 3:
            return  # PONG
        kind, channel = reply[0], reply[1]
        if kind == "smessage":
            if link.inbox or link.pending.is_set() or link.working:
                self._queue(link, channel, reply[2])  # behind what waits: in order
            elif not self._on_message_now(channel, reply[2]):
                self._queue(link, channel, reply[2])  # it needs the chat log
            return
        chat_id = self._keys.chat_id_from_channel(channel)
        if chat_id is None:
            return
        if kind == "ssubscribe":
            if self._home.get(chat_id) is link:
                self._node_failures.pop(link.node, None)  # the node serves: no more backoff
                self._node_retry_at.pop(link.node, None)
                self._queue(link, channel, None)
        elif kind == "sunsubscribe":
            if link.leaving[channel] > 0:
                link.leaving[channel] -= 1  # the answer to ours
                if not link.leaving[channel]:
                    del link.leaving[channel]
            elif self._home.get(chat_id) is link:
                # Pushed by the node: the chat's slot moved away from it.
                log.info("bus.feed_slot_moved", extra={"chat_id": chat_id, "node": link.node})
                self._lose(chat_id, stale=True)

    @staticmethod
    def _queue(link: _Link, channel: str, message: str | None) -> None:
        link.inbox.append((channel, message))
        link.pending.set()

    async def _work(self, link: _Link, log_read_timeout: float) -> None:
        """Hand the link's confirmations and events to the feed, in order, off the reader.

        A failure (the log unreachable) or a log read longer than ``log_read_timeout`` ends
        the link: its chats are subscribed, confirmed and backfilled again.
        """
        inbox = link.inbox
        try:
            while True:
                await link.pending.wait()
                link.working = True
                link.pending.clear()
                while inbox:
                    channel, message = inbox.popleft()
                    async with asyncio.timeout(log_read_timeout):
                        if message is not None:
                            await self._on_message(channel, message)
                        else:
                            chat_id = self._keys.chat_id_from_channel(channel)
                            if chat_id is not None and self._home.get(chat_id) is link:
                                await self._on_confirmed(channel)
                link.working = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                exc = RedisTimeoutError(f"a log read took over {log_read_timeout} s")
            self._end(link, exc)

    def _misrouted(self, link: _Link, slot: int) -> None:
        """A ``MOVED``/``ASK`` answer to SSUBSCRIBE: the chats of ``slot`` go elsewhere."""
        for chat_id in tuple(link.chats):
            if key_slot(self._keys.chat_channel(chat_id).encode()) == slot:
                self._lose(chat_id, stale=True)

    # --- the supervisor ------------------------------------------------------------------------
    async def run(self) -> None:
        """Find every homeless chat its node until cancelled (see the module's text)."""
        try:
            while not self._stopping:
                self._wake.clear()
                delay = await self._rehome() if not self._mapped or self._homeless else None
                if delay is None:
                    await self._wake.wait()
                elif delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
        finally:
            self._stopping = True
            tasks = [link.task for link in self._links.values() if link.task is not None]
            for task in tasks:
                task.cancel()
            if tasks:
                with contextlib.suppress(BaseException):
                    await asyncio.wait(tasks, timeout=1.0)

    async def _rehome(self) -> float | None:
        """One round: read the slot map if stale, then subscribe every homeless chat whose
        node may be tried now. Returns the seconds until the next round is due (``None``:
        nothing is due until something changes)."""
        now = asyncio.get_running_loop().time()
        if self._map_retry_at > now:
            return self._map_retry_at - now
        if self._stale or not self._mapped:
            try:
                await self._slots.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._reachable = False
                self._map_failed()
                if not isinstance(exc, RedisError | OSError | BusError):
                    log.exception("bus.feed_failed")
                log.warning("bus.feed_slot_map_failed", extra={"error": type(exc).__name__})
                return self._map_retry_at - now
            self._stale = False
            self._mapped = self._reachable = True
            self._map_failures = 0
        waits: list[float] = []
        for chat_id in tuple(self._homeless):
            node = self._slots.node_of(self._keys.chat_channel(chat_id))
            if node is None:  # a slot without a master: the cluster is failing over
                if not self._stale:
                    self._stale = True
                    self._map_failed()
                waits.append(self._map_retry_at - now)
            elif self._node_retry_at.get(node, 0.0) > now and node not in self._links:
                waits.append(self._node_retry_at[node] - now)
            else:
                await self.subscribe(chat_id)
        return min(waits) if waits else None

    def _map_failed(self) -> None:
        self._map_failures += 1
        self._map_retry_at = asyncio.get_running_loop().time() + _backoff(self._map_failures)


def _backoff(failures: int) -> float:
    """Seconds before retrying after ``failures`` failures in a row (jittered, capped)."""
    cap: float = min(MAX_BACKOFF, 0.1 * 2.0 ** (failures - 1))
    return cap * (0.5 + random.random() / 2)


class _Watchdog:
    """Pings a link after ``ping_interval`` seconds without traffic and ends it after
    ``dead_after`` seconds of silence (its reader then fails and the chats move); the
    silence is logged once, as the link ends with it."""

    __slots__ = ("_dead_after", "_handle", "_link", "_ping_interval", "_shards")

    def __init__(
        self, shards: ShardLinks, link: _Link, ping_interval: float, dead_after: float
    ) -> None:
        self._shards = shards
        self._link = link
        self._ping_interval = ping_interval
        self._dead_after = dead_after
        self._handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            ping_interval, self._tick
        )

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._link.last_read
        if idle >= self._dead_after:
            self._handle = None
            log.warning(
                "bus.feed_silent", extra={"seconds": round(idle, 1), "node": self._link.node}
            )
            self._shards._end(self._link, RedisTimeoutError(f"no answer for {idle:.1f} s"))
            return  # the link ends: nothing more to watch
        if idle >= self._ping_interval:
            self._shards._send(self._link, ("PING",))
        self._handle = loop.call_later(self._ping_interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
