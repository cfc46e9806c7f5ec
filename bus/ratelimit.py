"""Fixed-window rate limits kept in Redis, so every gateway process shares them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from bus import scripts
from bus.errors import translates_redis_errors

__all__ = ["RateDecision", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Outcome of one hit: allowed or not, and when the window resets."""

    allowed: bool
    count: int
    retry_after_ms: int


@translates_redis_errors
class RateLimiter:
    """Counts hits per key in fixed windows of ``window_ms`` (one INCR round trip each)."""

    def __init__(self, redis: Redis) -> None:
        self._hit = redis.register_script(scripts.RATE_HIT)

    @staticmethod
    def window(window_ms: int, now_ms: int | None = None) -> int:
        """Index of the current window (part of the counter's key)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now // max(window_ms, 1)

    async def hit(self, key: str, limit: int, window_ms: int) -> RateDecision:
        """Count one hit on ``key``; not allowed once the count exceeds ``limit``."""
        count, ttl = await self._hit(keys=[key], args=[window_ms])
        count, ttl = int(count), int(ttl)
        return RateDecision(allowed=count <= limit, count=count, retry_after_ms=max(ttl, 0))
