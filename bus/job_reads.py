"""A worker's blocking read for new jobs across the partitions' streams.

One Redis: one XREADGROUP BLOCK names every partition's stream (in the caller's rotating
order), so the first job in any partition wakes it. Redis Cluster: one XREADGROUP cannot
span slots, so each partition gets its own blocking read, all at once; when one answers
with jobs the others are cancelled. A read cancelled just as Redis served it leaves jobs
pending under this consumer that nobody holds; ``orphans`` is called with the cancelled
partitions to hand those back (no delivery spent). Without jobs, every read ends by itself
after ``block_ms`` and none is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bus.keys import BusKeys

__all__ = ["BlockingReads", "Reply"]

#: One entry read: its partition, its entry id and its fields (``None``: deleted meanwhile).
Reply = tuple[int, str, dict[str, str] | None]


class _NoGroup(Exception):
    """A partition's consumer group is missing (Redis restarted without persistence)."""


class BlockingReads:
    """Blocking reads of new jobs for consumer ``consumer`` (see the module doc)."""

    def __init__(
        self,
        redis: Redis,
        keys: BusKeys,
        consumer: str,
        *,
        per_partition: bool,
        orphans: Callable[[Collection[int]], Awaitable[None]],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.per_partition = per_partition
        self._orphans = orphans
        self._partition_of = {keys.jobs_stream(p): p for p in keys.partitions}

    async def read(self, partitions: list[int], count: int, block_ms: int) -> list[Reply] | None:
        """Up to ``count`` new jobs per partition read (fewer once one read answers), in
        ``partitions`` order; ``None`` when a consumer group is missing."""
        try:
            if self.per_partition and len(partitions) > 1:
                return await self._read_each(partitions, count, block_ms)
            return await self._xreadgroup(partitions, count, block_ms)
        except _NoGroup:
            return None

    async def _xreadgroup(self, partitions: list[int], count: int, block_ms: int) -> list[Reply]:
        try:
            reply = await self.redis.xreadgroup(
                self.keys.jobs_group,
                self.consumer,
                {self.keys.jobs_stream(p): ">" for p in partitions},
                count=count,
                block=block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise _NoGroup from exc
            raise
        return [
            (self._partition_of[str(stream)], str(entry_id), fields)
            for stream, entries in _streams(reply)
            for entry_id, fields in entries
        ]

    async def _read_each(self, partitions: list[int], count: int, block_ms: int) -> list[Reply]:
        tasks = {p: asyncio.create_task(self._xreadgroup([p], count, block_ms)) for p in partitions}
        try:
            pending = set(tasks.values())
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.exception() is not None or t.result() for t in done):
                    break
        finally:
            cancelled = [p for p, t in tasks.items() if t.cancel()]
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        if cancelled:
            with contextlib.suppress(RedisError):
                await self._orphans(cancelled)
        out: list[Reply] = []
        for p in partitions:
            task = tasks[p]
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                raise error
            out += task.result()
        return out


def _streams(reply: Any) -> list[tuple[Any, list[tuple[Any, dict[str, str] | None]]]]:
    """XREADGROUP's reply as ``[(stream, entries)]`` (RESP2)."""
    return list(reply or [])
