"""A client's stored bytes per window (CLIENT_BYTES_PER_DAY) on the partitioned layout.

On one partition the accept scripts charge the client's counter themselves, atomically with
the message. Partitioned, a client's chats fall in several partitions (on a cluster, several
slots), and its one counter cannot be in each accept script; so the charge is reserved
before the accept, in one script on the counter (refused when it would pass the cap, so two
accepts racing never both pass it), and given back when the accept stores nothing. A
process dying between the two keeps the charge: the budget can only be over-counted.
"""

from __future__ import annotations

from redis.asyncio import Redis

from bus import scripts
from bus.keys import BusKeys

__all__ = ["ClientBytes"]


class ClientBytes:
    """Reserve and give back a client's stored bytes (partitioned layout)."""

    def __init__(self, redis: Redis, keys: BusKeys) -> None:
        self._keys = keys
        self._reserve = redis.register_script(scripts.CLIENT_BYTES)
        self._refund = redis.register_script(scripts.CLIENT_BYTES_REFUND)

    async def reserve(self, client_tag: str, charge: int, cap: int, window_ms: int) -> int | None:
        """Charge ``charge`` bytes to the client: ``None`` when done, else the milliseconds
        until its window frees room (nothing charged). Raises ``redis`` errors."""
        allowed, retry_ms = await self._reserve(
            keys=[self._keys.client_bytes(client_tag)], args=[charge, cap, window_ms]
        )
        return None if int(allowed) else max(0, int(retry_ms))

    async def refund(self, client_tag: str, charge: int) -> None:
        """Give back a reservation the accept did not use. Raises ``redis`` errors."""
        await self._refund(keys=[self._keys.client_bytes(client_tag)], args=[charge])
