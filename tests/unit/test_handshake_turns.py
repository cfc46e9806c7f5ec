"""Stream handshakes take turns: a burst of visitors connecting at once is queued, not run
all at once (the Redis pool and the memory left fragmented among the sockets that stay)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.sockets import HANDSHAKES_AT_ONCE, SocketSlots
from tests.support.wait import wait_until


async def test_a_burst_of_handshakes_runs_a_few_at_a_time_and_a_wait_is_bounded() -> None:
    slots = SocketSlots(per_client=100, total=100)
    inside = peak = 0
    done = asyncio.Event()

    async def handshake() -> None:
        nonlocal inside, peak
        async with slots.handshake(30):
            inside += 1
            peak = max(peak, inside)
            await done.wait()
            inside -= 1

    burst = [asyncio.ensure_future(handshake()) for _ in range(HANDSHAKES_AT_ONCE + 5)]
    try:
        await wait_until(lambda: inside == HANDSHAKES_AT_ONCE, 5, "every turn taken")
        with pytest.raises(TimeoutError):  # no turn can free up: every holder waits on done
            async with slots.handshake(0.01):
                pass
        done.set()
        await asyncio.gather(*burst)
    finally:
        for task in burst:
            task.cancel()
    assert peak == HANDSHAKES_AT_ONCE
    assert inside == 0
