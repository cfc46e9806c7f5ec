"""The per-client and global caps on open sockets (WebSocket and SSE) of one process."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gateway.errors import json_error
from gateway.refusals import RETRY_SOCKET_SECONDS, too_many

__all__ = ["SocketSlots"]


@dataclass(slots=True)
class SocketSlots:
    """Open sockets (WebSocket and SSE) of this process, by client and in all."""

    per_client: int
    total: int
    in_use: int = 0
    _open: Counter[str] = field(default_factory=Counter)

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
