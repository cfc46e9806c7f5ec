"""Token-bucket rate limits kept in Redis, so every gateway process shares them.

A :class:`Budget` of ``limit`` per ``window_ms`` is a bucket of ``limit`` tokens refilled
one every ``window_ms / limit``: a client may spend its whole budget at once, then one
request per refill interval. Unlike fixed windows there is no edge where twice the budget
fits in a moment. Each bucket is one Redis string (its theoretical arrival time, GCRA),
expiring when full again; Redis's clock is the only clock, so gateways may drift.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bus.errors import translates_redis_errors

__all__ = ["Budget", "RateDecision", "RateLimiter"]

#: KEYS: bucket... ARGV per key: interval_ms, limit, cost (0: look, do not spend).
#: Spends in every bucket only when every bucket allows it; returns per key
#: ``{allowed (1/0), retry_after_ms, tokens_left}``.
_SPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, plans, ok = {}, {}, true
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - interval * limit
  if cost == 0 then allow_at = allow_at + interval end
  local allowed = allow_at <= now
  if not allowed then ok = false end
  local left = math.floor((now - (new_tat - interval * limit)) / interval)
  out[#out + 1] = {allowed and 1 or 0, allowed and 0 or (allow_at - now), math.max(left, 0)}
  plans[i] = {key, new_tat, cost}
end
if ok then
  for _, p in ipairs(plans) do
    if p[3] > 0 then redis.call('SET', p[1], p[2], 'PX', math.max(1, p[2] - now)) end
  end
end
return out
"""


#: Redis 7 runs a script flagged ``allow-oom`` at ``maxmemory`` too. Redis still serves
#: reads there, so the buckets' few bytes (each expiring) are written and the reads limited
#: as usual, instead of every request refused because its bucket could not be saved.
ALLOW_OOM = "#!lua flags=allow-oom\n"


def knows_no_script_flags(error: ResponseError) -> bool:
    """Whether ``error`` is a server without script flags (Redis 6.2, fakeredis) reading
    the ``#!lua`` line as Lua: it then runs the plain script (refused at maxmemory)."""
    return "near '#'" in str(error)


@dataclass(frozen=True, slots=True)
class Budget:
    """``limit`` requests per ``window_ms``, spent at once or spread out."""

    limit: int
    window_ms: int

    @property
    def interval_ms(self) -> int:
        """Time for one token to come back, in whole milliseconds (at least 1)."""
        return max(1, self.window_ms // max(self.limit, 1))


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Outcome of one hit: allowed or not, and how long until the next one would be."""

    allowed: bool
    count: int
    retry_after_ms: int

    @property
    def retry_after_seconds(self) -> int:
        """``Retry-After`` in whole seconds, at least 1."""
        return max(1, -(-self.retry_after_ms // 1000))


@translates_redis_errors
class RateLimiter:
    """Token buckets in Redis: spend, or look without spending, in one round trip."""

    def __init__(self, redis: Redis) -> None:
        self._plain = redis.register_script(_SPEND)
        self._spend = redis.register_script(ALLOW_OOM + _SPEND)

    @staticmethod
    def window(window_ms: int, now_ms: int | None = None) -> int:
        """Index of the current fixed window (kept for callers that still name windows)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now // max(window_ms, 1)

    async def hit(self, key: str, limit: int, window_ms: int) -> RateDecision:
        """Spend one token of ``key``'s ``limit`` per ``window_ms`` bucket."""
        (decision,) = await self.spend([(key, Budget(limit, window_ms), 1)])
        return decision

    async def spend(self, buckets: list[tuple[str, Budget, int]]) -> list[RateDecision]:
        """Spend ``cost`` (0 to only look) in each bucket, all or none.

        Nothing is spent unless every bucket allows it, so a refused request costs no token.
        """
        keys = [key for key, _, _ in buckets]
        args: list[int] = []
        for _, budget, cost in buckets:
            args += [budget.interval_ms, budget.limit, cost]
        try:
            rows = await self._spend(keys=keys, args=args)
        except ResponseError as exc:
            if self._spend is self._plain or not knows_no_script_flags(exc):
                raise
            self._spend = self._plain  # for good: this server has no script flags
            rows = await self._spend(keys=keys, args=args)
        return [
            RateDecision(
                allowed=bool(int(allowed)),
                count=budget.limit - int(left),
                retry_after_ms=int(float(retry)),
            )
            for (allowed, retry, left), (_, budget, _) in zip(rows, buckets, strict=True)
        ]
