"""The per-client and global caps on open sockets (WebSocket and SSE) of one process, and
the turn their handshakes take."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from gateway.errors import json_error
from gateway.refusals import RETRY_SOCKET_SECONDS, too_many

__all__ = ["HANDSHAKES_AT_ONCE", "SocketSlots"]

#: Stream handshakes (their Redis reads, the upgrade, the start of the replay) in progress
#: at once in a process. A burst of visitors connecting at once otherwise grows the Redis
#: connection pool (up to its 64) and leaves the memory of 100 handshakes in flight
#: fragmented among the sockets that stay: +4.5 KiB per socket for 1,000 sockets opened
#: 100 at a time (benchmarks.fanout), against none for a queue of a few milliseconds.
HANDSHAKES_AT_ONCE = 8


@dataclass(slots=True)
class SocketSlots:
    """Open sockets (WebSocket and SSE) of this process, by client and in all."""

    per_client: int
    total: int
    in_use: int = 0
    _open: Counter[str] = field(default_factory=Counter)
    _turns: asyncio.Semaphore | None = None

    def take(self, client: str) -> None:
        """Hold a slot for ``client``, or raise 429 (its share) or 503 (the process's)."""
        if self._open[client] >= self.per_client:
            raise too_many("sockets", RETRY_SOCKET_SECONDS)
        if self.in_use >= self.total:
            raise json_error(
                503,
                "Terra has too many visitors connected right now. Please try again shortly.",
                headers={"Retry-After": str(RETRY_SOCKET_SECONDS)},
            )
        self._open[client] += 1
        self.in_use += 1

    def give_back(self, client: str) -> None:
        """Release a slot taken with :meth:`take`."""
        self.in_use -= 1
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]

    def held_by(self, client: str) -> int:
        """Sockets ``client`` holds now."""
        return self._open.get(client, 0)

    @contextlib.asynccontextmanager
    async def handshake(self, within: float) -> AsyncIterator[None]:
        """Hold one of :data:`HANDSHAKES_AT_ONCE` turns; ``TimeoutError`` (a 503) when none
        frees up ``within`` seconds."""
        if self._turns is None:
            self._turns = asyncio.Semaphore(HANDSHAKES_AT_ONCE)  # on the serving loop
        turns = self._turns
        async with asyncio.timeout(within):
            await turns.acquire()
        try:
            yield
        finally:
            turns.release()
