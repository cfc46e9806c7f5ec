"""One timer that pings every SSE stream of a process (gateway.sse)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Protocol

__all__ = ["PING_GROUPS", "PingWheel", "Pinged"]

#: Streams are pinged in this many groups, one group every ``period / PING_GROUPS``.
PING_GROUPS = 15


class Pinged(Protocol):
    """What the wheel visits: a stream that pings its visitor (or ends) at ``now``."""

    def tick(self, now: float) -> None: ...


class PingWheel:
    """Visits every stream of a process about every ``period`` seconds from one timer.

    The streams are spread over :data:`PING_GROUPS` groups, one group visited every
    ``period / PING_GROUPS`` seconds (the timer runs only while a stream is registered):
    a process with thousands of streams pings a few hundred at a time, and a stream costs
    a set entry instead of a timer handle and a copy of its context (about 0.25 KiB).
    """

    __slots__ = ("_count", "_groups", "_next", "_timer", "period")

    def __init__(self, period: float) -> None:
        self.period = period
        self._groups: list[set[Pinged]] = [set() for _ in range(PING_GROUPS)]
        self._next = 0  # the group visited next
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Pinged]:
        """The registered streams, group by group."""
        for group in self._groups:
            yield from group

    @property
    def running(self) -> bool:
        """True while the wheel's timer is scheduled (only while a stream is registered)."""
        return self._timer is not None

    def add(self, stream: Pinged) -> None:
        """Visit ``stream`` about every ``period`` from now on (first in at most ``period``)."""
        if any(stream in group for group in self._groups):
            return
        # The group visited last from here: a whole turn away.
        self._groups[(self._next - 1) % PING_GROUPS].add(stream)
        self._count += 1
        if self._timer is None:
            self._schedule()

    def discard(self, stream: Pinged) -> None:
        """Visit ``stream`` no more (idempotent); the timer stops with the last stream."""
        for group in self._groups:
            if stream in group:
                group.discard(stream)
                self._count -= 1
                break
        if not self._count and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.period / PING_GROUPS, self._visit)

    def _visit(self) -> None:
        self._timer = None
        group = self._groups[self._next]
        self._next = (self._next + 1) % PING_GROUPS
        now = asyncio.get_running_loop().time()
        for stream in list(group):  # a visit may end a stream (and discard it)
            stream.tick(now)
        if self._count:
            self._schedule()
