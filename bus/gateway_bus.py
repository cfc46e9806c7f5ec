"""The gateway's front end to the bus: what a public gateway may do, and nothing else.

The gateway never holds a Redis client or spells a key: it opens a :class:`GatewayBus`
with :func:`open_gateway_bus` and calls its operations. Every operation raises only
:mod:`bus.errors` exceptions.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from redis.asyncio import Redis

from bus.access_codes import AccessCode, AccessCodeStore
from bus.byo import ByoAccepted, ByoLog
from bus.chatlog import AcceptedMessage, ChatLog, EventRecord
from bus.client import create_redis
from bus.errors import translates_redis_errors
from bus.frontend import FrontEnd
from bus.jobs import JobQueue
from bus.presence import Presence
from bus.pubsub import ChatFeed, Listener
from bus.ratelimit import Budget, RateDecision, RateLimiter
from bus.schemas import WorkerHeartbeat, render_frame
from bus.settings import BusSettings
from bus.thoughts import read_thoughts

__all__ = ["FeedStatus", "GatewayBus", "open_gateway_bus"]


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """The process-wide live subscription, as readiness and metrics see it."""

    connected: bool
    chats: int
    reconnects: int
    gaps_filled: int
    #: Redis Cluster: chats waiting to be subscribed again on their node (a failover).
    homeless: int = 0
    #: Redis Cluster: chats subscribed per node (``host:port``); empty on one Redis.
    nodes: dict[str, int] = field(default_factory=dict)


@translates_redis_errors
class GatewayBus(FrontEnd):
    """Accept visitors' messages, read chats, follow them live, count rate limits."""

    def __init__(
        self,
        redis: Redis,
        settings: BusSettings,
        *,
        queue_size: int = 1000,
        queue_bytes: int | None = None,
    ) -> None:
        super().__init__(redis)
        self._keys = settings.bus_keys
        self._log = ChatLog(redis, self._keys, settings.limits)
        self._feed = ChatFeed(
            redis, self._keys, self._log, queue_size=queue_size, queue_bytes=queue_bytes
        )
        self._limiter = RateLimiter(redis)
        self._presence = Presence(redis, self._keys)
        self._jobs = JobQueue(redis, self._keys, consumer="gateway-stats")
        self._byo = ByoLog(redis, self._log)
        self._codes = AccessCodeStore(redis, self._keys)

    # --- access codes ----------------------------------------------------------------
    async def access_codes(self) -> list[AccessCode]:
        """The stored visitor access codes (digests only; expired ones included)."""
        return await self._codes.all()

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the live feed's background subscription."""
        self._feed.start()

    async def aclose(self) -> None:
        """Stop the live feed and close the connection pool."""
        await self._feed.close()
        await super().aclose()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    # --- visitors' messages ------------------------------------------------------------
    async def accept_message(
        self,
        chat_id: str,
        content: str,
        *,
        client_message_id: str | None = None,
        request_id: str | None = None,
        client: str | None = None,
    ) -> AcceptedMessage:
        """Store a visitor message and enqueue its job in one script (idempotent per id).

        ``client`` (an address or IPv6 prefix) names the lane the job waits in: jobs are
        served round robin across clients. See :meth:`ChatLog.accept_visitor_message`.
        """
        return await self._log.accept_visitor_message(
            chat_id,
            content,
            client_message_id=client_message_id,
            request_id=request_id,
            client=client,
        )

    async def stop_reply(self, chat_id: str, message_id: str | None) -> str | None:
        """Ask the worker to stop the reply to ``message_id`` (default: the one in progress).

        Returns the message whose reply will stop, or ``None`` when nothing is in progress.
        """
        if message_id is None:
            message_id = await self._log.oldest_unanswered(chat_id)
        elif await self._log.reply_event_id(chat_id, message_id) is not None:
            message_id = None
        if message_id is not None:
            await self._log.request_cancel(chat_id, message_id)
        return message_id

    async def count_hit(self, scope: str, subject: str, limit: int, window_ms: int) -> RateDecision:
        """Spend one token of ``subject``'s budget in ``scope`` ("ip" or "chat")."""
        if scope == "ip":
            key = self._keys.client_budget("post", subject)
        elif scope == "chat":
            key = self._keys.chat_budget(subject)
        else:
            raise ValueError(f"unknown rate-limit scope {scope!r}")
        return await self._limiter.hit(key, limit, window_ms)

    async def admit(
        self, client: str, family: str, budget: Budget, failures: Budget | None = None
    ) -> list[RateDecision]:
        """Spend one of ``client``'s tokens for ``family``, in one round trip.

        With ``failures``, the client's failed access-code bucket is looked at too (not
        spent) and must have a token left. Returns the family's decision, then the failed
        codes' one; nothing is spent when either refuses.
        """
        buckets = [(self._keys.client_budget(family, client), budget, 1)]
        if failures is not None:
            buckets.append((self._keys.client_budget("failed-code", client), failures, 0))
        return await self._limiter.spend(buckets)

    async def charge_failed_code(self, client: str, failures: Budget) -> RateDecision:
        """Spend one of ``client``'s failed access-code attempts."""
        (decision,) = await self._limiter.spend(
            [(self._keys.client_budget("failed-code", client), failures, 1)]
        )
        return decision

    # --- bring-your-own-model chats (the gateway streams the answer; bus.byo) -----------
    async def chat_mode(self, chat_id: str) -> Literal["terra", "byo"] | None:
        """Whose chat this is: ``terra``, ``byo``, or ``None`` while it has no message."""
        return await self._byo.mode(chat_id)

    async def accept_byo_message(
        self,
        chat_id: str,
        content: str,
        *,
        provider: str,
        model: str,
        lease_ms: int,
        client: str | None = None,
    ) -> ByoAccepted:
        """Store a BYO visitor message (no job); raises ChatModeConflict, ReplyInProgress.

        ``client`` is charged the message's bytes, as for Terra's (CLIENT_BYTES_PER_DAY).
        """
        return await self._byo.accept(
            chat_id, content, provider=provider, model=model, lease_ms=lease_ms, client=client
        )

    async def renew_byo_lease(self, chat_id: str, message_id: str, lease_ms: int) -> bool:
        """Keep the chat's BYO answer to ``message_id`` marked as in progress."""
        return await self._byo.renew(chat_id, message_id, lease_ms)

    async def append_byo_chunk(self, chat_id: str, reply_to: str, content: str) -> bool:
        """Append a piece of a BYO answer; True once the visitor asked to stop it."""
        _event_id, cancelled = await self._log.append_chunk(chat_id, reply_to, content)
        return cancelled

    async def byo_stop_requested(self, chat_id: str, message_id: str) -> bool:
        """True when the visitor asked to stop the answer to ``message_id``."""
        return await self._log.cancel_requested(chat_id, message_id)

    async def finish_byo_reply(
        self,
        chat_id: str,
        reply_to: str,
        content: str,
        *,
        provider: str,
        model: str,
        status: Literal["complete", "stopped", "error", "truncated"] = "complete",
        state: Literal["responded", "error", "processing"] = "responded",
        detail: str | None = None,
    ) -> dict[str, Any]:
        """Store the BYO answer to ``reply_to`` (once), end its stream and set the state."""
        return await self._byo.finish(
            chat_id,
            reply_to,
            content,
            provider=provider,
            model=model,
            status=status,
            state=state,
            detail=detail,
        )

    # --- reading chats -----------------------------------------------------------------
    async def history(
        self, chat_id: str, limit: int, *, before: str | None = None
    ) -> list[dict[str, Any]]:
        """The chat's newest ``limit`` messages (older than event ``before``), oldest first."""
        if before is None:
            return await self._log.history(chat_id, limit)
        if before == "0-0":  # nothing is older (and Redis refuses the range "(0-0")
            return []
        entries = await self._redis.xrevrange(
            self._keys.chat_messages(chat_id), max=f"({before}", count=limit
        )
        return [render_frame(fields["d"], entry_id) for entry_id, fields in reversed(entries)]

    async def reply_thoughts(
        self, chat_id: str, first: str, last: str
    ) -> dict[str, dict[str, Any]]:
        """Tool calls and reasoning of the Terra Messages from ``first`` to ``last``, by id.

        Read back from the event log (bounded; see :mod:`bus.thoughts`).
        """
        return await read_thoughts(self._redis, self._keys, chat_id, first, last)

    async def worker_state(self, chat_id: str) -> dict[str, Any]:
        """The chat's current worker state ``{state, detail, updatedAt}``."""
        return await self._log.worker_state(chat_id)

    async def resume_point(self, chat_id: str, *, from_reply_start: bool = False) -> str:
        """The chat's newest event id ("0-0" when empty): where "from now" starts.

        With ``from_reply_start``, a reply being streamed is included from its first chunk
        (for clients that cannot resume and would otherwise show only its tail).
        """
        if from_reply_start:
            start = await self._log.reply_start(chat_id)
            if start is not None:
                return start
        return await self._log.last_event_id(chat_id) or "0-0"

    async def follow(
        self,
        chat_id: str,
        after: str | None,
        on_overflow: Callable[[], None] | None = None,
        *,
        verify: bool = True,
        on_verified: Callable[[], None] | None = None,
    ) -> AsyncIterator[EventRecord]:
        """Every event after ``after``, gap-free and in order, then live (see ChatFeed.follow)."""
        records = self._feed.follow(
            chat_id, after, on_overflow, verify=verify, on_verified=on_verified
        )
        async with contextlib.aclosing(records):  # type: ignore[type-var]
            async for record in records:
                yield record

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
        """Replay through ``write``, then live events straight to ``sink`` (ChatFeed.open_sink)."""
        return await self._feed.open_sink(
            chat_id,
            after,
            write,
            sink,
            on_restart,
            on_overflow=on_overflow,
            verify=verify,
            on_verified=on_verified,
        )

    def close_listener(self, listener: Listener) -> None:
        """End a listener :meth:`open_sink` returned (idempotent)."""
        self._feed.close_listener(listener)

    # --- health ----------------------------------------------------------------------------
    async def freshest_worker(self) -> WorkerHeartbeat | None:
        """The most recent worker heartbeat, or ``None`` if no worker ever beat."""
        return await self._presence.freshest()

    async def job_stats(self) -> dict[str, Any]:
        """Queue depth, pending count and dead letters."""
        return await self._jobs.stats()

    @property
    def on_cluster(self) -> bool:
        """Whether Redis is a cluster (REDIS_CLUSTER)."""
        return self._keys.cluster

    @property
    def feed_status(self) -> FeedStatus:
        """The live subscription's state (no I/O)."""
        feed = self._feed
        return FeedStatus(
            feed.connected,
            feed.chat_count,
            feed.reconnects,
            feed.gaps_filled,
            homeless=feed.homeless,
            nodes=feed.nodes,
        )


def open_gateway_bus(
    settings: BusSettings, *, queue_size: int = 1000, queue_bytes: int | None = None
) -> GatewayBus:
    """The gateway's bus for ``settings`` (no I/O: the first operation connects).

    Each live listener holds at most ``queue_size`` events and ``queue_bytes`` bytes.
    """
    redis = create_redis(
        settings.redis_url.get_secret_value(),
        client_name="terrarium-gateway",
        options=settings.redis_options(),
        cluster=settings.redis_cluster,
    )
    return GatewayBus(redis, settings, queue_size=queue_size, queue_bytes=queue_bytes)
