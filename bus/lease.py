"""Per-chat leases: at most one worker answers a given chat at a time."""

from __future__ import annotations

from collections.abc import Collection

from redis.asyncio import Redis

from bus import scripts
from bus.errors import translates_redis_errors
from bus.keys import BusKeys

__all__ = ["ChatLease"]


@translates_redis_errors
class ChatLease:
    """A renewable lease on one chat, held by ``owner``.

    Guarantee: while the owner keeps renewing within ``ttl_ms``, nobody else acquires it;
    if the owner dies the lease expires by itself after ``ttl_ms``.
    """

    def __init__(self, redis: Redis, keys: BusKeys, owner: str, ttl_ms: int = 30_000) -> None:
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.keys = keys
        self._acquire = redis.register_script(scripts.LEASE_ACQUIRE)
        self._release = redis.register_script(scripts.LEASE_RELEASE)

    async def acquire(self, chat_id: str, *, departed: Collection[str] = ()) -> bool:
        """Take (or renew) the lease on ``chat_id``; False if someone else holds it.

        A lease held by one of ``departed`` (workers whose liveness lapsed) is taken at once
        instead of after its TTL.
        """
        got = await self._acquire(
            keys=[self.keys.chat_lease(chat_id)], args=[self.owner, self.ttl_ms, *departed]
        )
        return bool(int(got))

    async def release(self, chat_id: str) -> None:
        """Give the lease back if still held by this owner."""
        await self._release(keys=[self.keys.chat_lease(chat_id)], args=[self.owner])
