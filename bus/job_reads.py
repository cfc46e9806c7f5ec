"""A worker's blocking read for new jobs across the partitions' streams.

One Redis: one XREADGROUP BLOCK names every partition's stream (in the caller's rotating
order), so the first job in any partition wakes it. Redis Cluster: one XREADGROUP cannot
span slots, so each partition has its own blocking read, all at once. They outlive one
:meth:`BlockingReads.read`: the reads that did not answer stay in flight for the next call
(no reconnect per job: cancelling a blocking command costs its connection), and one that
ended without jobs is started again. When the consumer has no room left it calls
:meth:`BlockingReads.stop`: the reads still in flight are cancelled, and whatever they took
is handed back (no delivery spent): the jobs a read returned anyway (redis-py's cluster client
can miss a cancel that lands while it connects; that read ends after ``block_ms``), or, when
the cancel cut a read off as Redis served it, the jobs pending under this consumer that were
never handed out.

On one connection the read also reports whether any lane held a job when it returned
(:attr:`BlockingReads.nothing_waits`): the lanes' ``waiting`` counters are read in the same
pipeline, right after the XREADGROUP. When none did, the take a consumer makes before its
next blocking read could only read what is already in the streams, which that blocking
read returns at once, and promote nothing; a job accepted after the look is promoted by its
accept when nothing is undelivered, or waits behind one that a blocking read takes, whose
reader then refills. So the take's round trip is skipped (issue 10: a short exchange costs
3 round trips).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bus.keys import BusKeys

__all__ = ["BlockingReads", "Reply"]

#: One entry read: its partition, its entry id and its fields (``None``: deleted meanwhile).
Reply = tuple[int, str, dict[str, str] | None]


class _NoGroup(Exception):
    """A partition's consumer group is missing (Redis restarted without persistence)."""


class BlockingReads:
    """Blocking reads of new jobs for consumer ``consumer`` (see the module doc).

    ``seen`` is told synchronously of every entry a read returns (before anything else can
    run), so ``orphans`` can tell entries delivered to no one from those being handed out;
    ``release`` hands back what a read returned after it was abandoned.
    """

    def __init__(
        self,
        redis: Redis,
        keys: BusKeys,
        consumer: str,
        *,
        per_partition: bool,
        seen: Callable[[list[Reply]], None],
        orphans: Callable[[Collection[int]], Awaitable[None]],
        release: Callable[[list[Reply]], Awaitable[object]],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.per_partition = per_partition
        self._seen = seen
        self._orphans = orphans
        self._release = release
        self._partition_of = {keys.jobs_stream(p): p for p in keys.partitions}
        #: The blocking read of each partition in flight (per-partition reads only).
        self._reads: dict[int, asyncio.Task[list[Reply]]] = {}
        #: Handing back what stopped reads took.
        self._abandoned: set[asyncio.Task[None]] = set()
        #: The last read returned while no lane held a job and no stream had more for
        #: this consumer (one-connection reads only; False when unknown).
        self.nothing_waits = False

    async def read(self, partitions: list[int], count: int, block_ms: int) -> list[Reply] | None:
        """Up to ``count`` new jobs per partition read, in ``partitions`` order, waiting up
        to ``block_ms`` for the first; ``None`` when a consumer group is missing."""
        self.nothing_waits = False
        try:
            if self.per_partition and len(partitions) > 1:
                return await self._read_each(partitions, count, block_ms)
            return await self._xreadgroup(partitions, count, block_ms)
        except _NoGroup:
            return None

    def stop(self) -> None:
        """Cancel the reads in flight; what they took is handed back (see the module doc)."""
        reads, self._reads = self._reads, {}
        for partition, task in reads.items():
            task.cancel()
            reaper = asyncio.create_task(self._reap(partition, task))
            self._abandoned.add(reaper)
            reaper.add_done_callback(self._abandoned.discard)

    async def settle(self) -> None:
        """:meth:`stop`, then wait until what the reads took is handed back."""
        self.stop()
        while self._abandoned:
            await asyncio.gather(*self._abandoned, return_exceptions=True)

    async def _xreadgroup(self, partitions: list[int], count: int, block_ms: int) -> list[Reply]:
        streams: dict[Any, Any] = {self.keys.jobs_stream(p): ">" for p in partitions}
        group, consumer = self.keys.jobs_group, self.consumer
        waiting: list[object] = []
        try:
            if self.per_partition:  # a cluster: the read alone (its own slot)
                reply = await self.redis.xreadgroup(
                    group, consumer, streams, count=count, block=block_ms
                )
            else:
                pipe = self.redis.pipeline(transaction=False)
                pipe.xreadgroup(group, consumer, streams, count=count, block=block_ms)
                for p in partitions:
                    pipe.get(self.keys.queue_waiting(p))
                reply, *waiting = await pipe.execute()
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise _NoGroup from exc
            raise
        if waiting:
            self.nothing_waits = all(not w or str(w) == "0" for w in waiting)
        out = [
            (self._partition_of[str(stream)], str(entry_id), fields)
            for stream, entries in reply or []
            for entry_id, fields in entries
        ]
        self._seen(out)
        return out

    async def _read_each(self, partitions: list[int], count: int, block_ms: int) -> list[Reply]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while True:
            for p in partitions:
                task = self._reads.get(p)
                if task is None or _ended_empty(task):  # (re)start this partition's read
                    self._reads[p] = asyncio.create_task(self._xreadgroup([p], count, block_ms))
            tasks = [self._reads[p] for p in partitions]
            remaining = deadline - loop.time()
            if remaining <= 0 or any(t.done() for t in tasks):
                break
            await asyncio.wait(tasks, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        out: list[Reply] = []
        error: BaseException | None = None
        for p in partitions:
            task = self._reads[p]
            if not task.done():
                continue  # still blocking: it serves the next call
            del self._reads[p]
            if task.cancelled():
                continue
            if task.exception() is not None:
                error = error or task.exception()
                continue
            out += task.result()
        if error is not None and not out:
            raise error
        return out

    async def _reap(self, partition: int, task: asyncio.Task[list[Reply]]) -> None:
        """Hand back what a stopped read took: its entries if it ended with some, and any
        entry Redis delivered to a read that never arrived (a cancel cut it off)."""
        with contextlib.suppress(Exception):
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is None and task.result():
                await self._release(task.result())
            await self._orphans([partition])


def _ended_empty(task: asyncio.Task[list[Reply]]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None and not task.result()
