"""The worker's front end to the bus: take and hand back jobs, write answers, beat.

The worker never holds a Redis client or spells a key: it opens a :class:`WorkerBus` with
:func:`open_worker_bus`. Its parts split along the worker's own seam:

- scheduling: :attr:`WorkerBus.jobs` (take, renew, reclaim, ack, dead-letter, hand back),
  :attr:`WorkerBus.leases` (one worker per chat) and :attr:`WorkerBus.presence` (heartbeats);
- answering: :attr:`WorkerBus.chats` (read the conversation, stream chunks, finish a reply).

Every operation raises only :mod:`bus.errors` exceptions.
"""

from __future__ import annotations

from redis.asyncio import Redis

from bus.answering import ChatAnswering
from bus.chatlog import ChatLog
from bus.client import create_redis
from bus.errors import translates_redis_errors
from bus.frontend import FrontEnd
from bus.jobs import JobQueue
from bus.lease import ChatLease
from bus.presence import Presence
from bus.settings import BusSettings

__all__ = ["WorkerBus", "open_worker_bus"]


@translates_redis_errors
class WorkerBus(FrontEnd):
    """One worker process's bus (several workers may share a Redis; names must differ)."""

    def __init__(
        self, redis: Redis, settings: BusSettings, *, name: str, lease_ttl_ms: int = 30_000
    ) -> None:
        super().__init__(redis)
        self.name = name
        keys = settings.bus_keys
        #: The chat logs: conversation reads, chunk and event writes, replies, tool memory.
        self.chats = ChatLog(redis, keys, settings.limits)
        #: The jobs stream as this consumer sees it.
        self.jobs = JobQueue(redis, keys, consumer=name)
        #: Per-chat leases held by this worker.
        self.leases = ChatLease(redis, keys, owner=name, ttl_ms=lease_ttl_ms)
        #: An answer's first and last round trips, lease included (issue 10).
        self.answers = ChatAnswering(self.chats, self.leases)
        #: Worker heartbeats.
        self.presence = Presence(redis, keys)


def open_worker_bus(
    settings: BusSettings, *, name: str, lease_ttl_ms: int = 30_000, block_ms: int = 2000
) -> WorkerBus:
    """The bus of worker ``name`` (no I/O: the first operation connects).

    The client's socket timeout leaves room for blocking job reads of ``block_ms``.
    """
    redis = create_redis(
        settings.redis_url.get_secret_value(),
        client_name=f"terrarium-worker:{name}",
        options=settings.redis_options(socket_timeout=max(5.0, block_ms / 1000 + 5.0)),
        cluster=settings.redis_cluster,
    )
    return WorkerBus(redis, settings, name=name, lease_ttl_ms=lease_ttl_ms)
