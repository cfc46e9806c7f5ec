"""ChatHolds: a job waiting for another worker's chat lease holds no slot, and a departed
worker's lease is taken at once."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from worker.chat_holds import ChatHolds


class FakeLeases:
    """Leases in memory: ``held`` maps chat -> owner; this worker is ``me``."""

    def __init__(self, held: dict[str, str]) -> None:
        self.held = held
        self.me = "me"
        self.refused = asyncio.Event()  # set once a try found the lease busy

    async def acquire(self, chat_id: str, *, departed: Collection[str] = ()) -> bool:
        holder = self.held.get(chat_id)
        if holder in (None, self.me) or holder in departed:
            self.held[chat_id] = self.me
            return True
        self.refused.set()
        return False

    async def release(self, chat_id: str) -> None:
        if self.held.get(chat_id) == self.me:
            del self.held[chat_id]


async def test_waiting_for_a_busy_lease_leaves_the_slot_to_other_chats() -> None:
    leases = FakeLeases({"busy": "other-worker"})
    holds = ChatHolds(leases, 1, lease_wait_seconds=60, stopping=asyncio.Event())  # type: ignore[arg-type]
    answered = asyncio.Event()

    async def wait_for_busy() -> None:
        async with holds.hold("busy"):
            pass

    async def answer_free() -> None:
        async with holds.hold("free"):
            answered.set()

    waiting = asyncio.create_task(wait_for_busy())
    await asyncio.wait_for(leases.refused.wait(), 10)  # the busy job waits for its lease
    await asyncio.wait_for(asyncio.create_task(answer_free()), timeout=10)
    assert answered.is_set()
    leases.held["busy"] = "me"  # the other worker let go
    await asyncio.wait_for(waiting, timeout=10)


async def test_a_departed_workers_lease_is_taken_on_first_try() -> None:
    leases = FakeLeases({"c": "dead-worker"})
    holds = ChatHolds(leases, 1, lease_wait_seconds=60, stopping=asyncio.Event())  # type: ignore[arg-type]
    holds.mark_departed("dead-worker", 30)
    async with holds.hold("c"):
        assert leases.held["c"] == "me"


async def test_a_reply_taken_from_a_departed_worker_does_not_wait_for_a_busy_slot() -> None:
    """The guarantee soak: a worker SIGKILLed mid-answer while every slot of the heir was busy
    with long replies; the taken-over reply waited ~23 s for a slot, its visitor watching a
    frozen answer (takeover 29.8 s against 10 s). The dead worker's slots are gone from the
    fleet, so the heir runs its replies beside its own, up to as many again."""
    leases = FakeLeases({"c": "dead-worker"})
    holds = ChatHolds(leases, 1, lease_wait_seconds=60, stopping=asyncio.Event())  # type: ignore[arg-type]
    holds.mark_departed("dead-worker", 30)
    busy = asyncio.Event()
    release = asyncio.Event()

    async def long_reply() -> None:
        async with holds.hold("own"):
            busy.set()
            await release.wait()

    own = asyncio.create_task(long_reply())
    await asyncio.wait_for(busy.wait(), 10)
    async with asyncio.timeout(10):
        async with holds.hold("c", heir=True):
            assert leases.held["c"] == "me"
    release.set()
    await asyncio.wait_for(own, 10)
