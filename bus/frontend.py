"""What every role's front end has in common: one Redis client it owns, a ping, a close."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from redis.asyncio import Redis

from bus.errors import translates_redis_errors

__all__ = ["FrontEnd"]


@translates_redis_errors
class FrontEnd:
    """Base of the role front ends; ``async with`` closes the client on exit."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def ping(self) -> None:
        """Round trip to Redis; raises :class:`bus.errors.BusUnavailable` when it fails."""
        await self._redis.ping()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
