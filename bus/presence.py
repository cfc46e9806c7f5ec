"""Worker heartbeats: who is alive, and what they know of the agent and the model."""

from __future__ import annotations

import contextlib
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bus.errors import SchemaError, translates_redis_errors
from bus.keys import BusKeys
from bus.schemas import WorkerHeartbeat

__all__ = ["Presence"]

#: Heartbeats older than this are pruned when read (a worker gone for a day).
PRUNE_AFTER_MS = 24 * 3600 * 1000


@translates_redis_errors
class Presence:
    """Writes and reads worker heartbeats (one hash, one field per consumer)."""

    def __init__(self, redis: Redis, keys: BusKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def beat(self, heartbeat: WorkerHeartbeat, *, alive_ms: int | None = None) -> None:
        """Publish ``heartbeat`` for its consumer (overwrites the previous one).

        With ``alive_ms``, the consumer also counts as alive for that long by Redis's clock
        (no skew between hosts): a worker that stops beating is seen :meth:`departed`.
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.workers, heartbeat.consumer, heartbeat.model_dump_json())
        if alive_ms is not None:
            pipe.set(self.keys.worker_alive(heartbeat.consumer), "1", px=alive_ms)
        await pipe.execute()

    async def forget(self, consumer: str) -> None:
        """Remove a consumer's heartbeat and liveness (clean shutdown, or after a takeover)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(self.keys.workers, consumer)
        pipe.delete(self.keys.worker_alive(consumer))
        await pipe.execute()

    async def departed(self) -> list[str]:
        """Consumers with a heartbeat whose liveness lapsed: they died without a goodbye."""
        consumers = [str(c) for c in await self.redis.hkeys(self.keys.workers)]  # type: ignore[misc]
        if not consumers:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for consumer in consumers:
            pipe.exists(self.keys.worker_alive(consumer))
        alive = await pipe.execute()
        return [c for c, present in zip(consumers, alive, strict=True) if not present]

    async def freshest(self) -> WorkerHeartbeat | None:
        """The most recent heartbeat of any worker, or ``None`` if none ever beat.

        Read-only (the gateway's Redis user may only read heartbeats). Raises ``redis``
        errors to the caller, and :class:`SchemaError` for a malformed heartbeat.
        """
        raw = await self.redis.hgetall(self.keys.workers)  # type: ignore[misc]
        best: WorkerHeartbeat | None = None
        for value in raw.values():
            try:
                hb = WorkerHeartbeat.model_validate_json(value)
            except ValueError as exc:
                raise SchemaError("malformed heartbeat") from exc
            if best is None or hb.seen_at_ms > best.seen_at_ms:
                best = hb
        return best

    async def prune(self, older_than_ms: int = PRUNE_AFTER_MS) -> int:
        """Delete heartbeats of workers silent for ``older_than_ms`` (run by workers)."""
        raw = await self.redis.hgetall(self.keys.workers)  # type: ignore[misc]
        now_ms = int(time.time() * 1000)
        stale = []
        for consumer, value in raw.items():
            try:
                seen = WorkerHeartbeat.model_validate_json(value).seen_at_ms
            except ValueError:
                seen = 0
            if now_ms - seen > older_than_ms:
                stale.append(consumer)
        if stale:
            with contextlib.suppress(RedisError):
                await self.redis.hdel(self.keys.workers, *stale)  # type: ignore[misc]
        return len(stale)
