"""One timer pings every SSE stream of a process (gateway.pings): each stream about once a
period, spread over groups, none once discarded, and no timer left with no stream."""

from __future__ import annotations

import asyncio

from gateway.pings import PING_GROUPS, PingWheel
from tests.support.wait import wait_until


class _Stream:
    def __init__(self, wheel: PingWheel | None = None) -> None:
        self.ticks: list[float] = []
        self.wheel = wheel

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        if self.wheel is not None:  # a stream that ends at its first visit
            self.wheel.discard(self)


async def test_every_stream_is_visited_once_a_turn_and_a_discarded_one_no_more() -> None:
    wheel = PingWheel(period=0.3)
    first, second = _Stream(), _Stream()
    wheel.add(first)
    wheel.add(first)  # twice: still one entry
    assert len(wheel) == 1
    await wait_until(lambda: first.ticks, 5, "first stream never visited")
    wheel.add(second)
    await wait_until(lambda: len(first.ticks) >= 3 and second.ticks, 5, "visits stopped")
    # Once a turn: a stream is never visited twice within the same turn.
    turns = [b - a for a, b in zip(first.ticks, first.ticks[1:], strict=False)]
    assert all(gap >= 0.3 * (PING_GROUPS - 1) / PING_GROUPS for gap in turns)
    wheel.discard(first)
    wheel.discard(first)  # idempotent
    assert len(wheel) == 1
    seen = len(first.ticks)
    later = len(second.ticks) + 2
    await wait_until(lambda: len(second.ticks) >= later, 5, "second stream no longer visited")
    assert len(first.ticks) == seen
    wheel.discard(second)
    assert len(wheel) == 0
    assert not wheel.running


async def test_a_stream_ending_at_its_visit_leaves_the_wheel_idle() -> None:
    wheel = PingWheel(period=0.15)
    gone = _Stream(wheel)
    wheel.add(gone)
    assert wheel.running
    await wait_until(lambda: gone.ticks, 5, "never visited")
    assert len(wheel) == 0
    assert not wheel.running
    await asyncio.sleep(0)
