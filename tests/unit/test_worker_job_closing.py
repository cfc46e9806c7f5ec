"""ChatHolds with a job whose last reply releases its chat's lease (issue 10's FINISH_CLOSE):
no renewal once the release is sent, none released twice, and the OPEN round trip taking
the lease in place of ``ChatLease.acquire``."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass

from worker.chat_holds import ChatHolds


class Leases:
    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.acquired: list[str] = []
        self.released: list[str] = []

    async def acquire(self, chat_id: str, *, departed: Collection[str] = ()) -> bool:
        self.acquired.append(chat_id)
        self.held[chat_id] = "me"
        return True

    async def release(self, chat_id: str) -> None:
        self.released.append(chat_id)
        self.held.pop(chat_id, None)


@dataclass
class Job:
    closing: bool = False
    closed: bool = False


def holds_of(leases: Leases) -> ChatHolds:
    return ChatHolds(leases, 2, lease_wait_seconds=10, stopping=asyncio.Event())  # type: ignore[arg-type]


async def test_a_closed_job_leaves_its_lease_alone() -> None:
    leases = Leases()
    holds = holds_of(leases)
    job = Job()
    async with holds.hold("c", job=job):
        await holds.renew()
        assert leases.acquired == ["c", "c"]  # taken, renewed
        job.closing = True
        await holds.renew()
        assert leases.acquired == ["c", "c"]  # closing: no renewal
        job.closed = True
    assert leases.released == []  # the reply's script released it


async def test_a_renewal_racing_the_close_gives_the_lease_back() -> None:
    leases = Leases()
    holds = holds_of(leases)
    job = Job()

    async def acquire(chat_id: str, *, departed: Collection[str] = ()) -> bool:
        job.closing = True  # the last reply went out while the renewal was on its way
        leases.held[chat_id] = "me"
        return True

    async with holds.hold("c", job=job):
        leases.acquire = acquire  # type: ignore[method-assign]
        await holds.renew()
        assert leases.released == ["c"]
        job.closed = True


async def test_a_failed_close_releases_as_usual() -> None:
    leases = Leases()
    holds = holds_of(leases)
    job = Job(closing=True)  # sent, but never went through (closed stays False)
    async with holds.hold("c", job=job):
        pass
    assert leases.released == ["c"]


async def test_the_opening_round_trip_takes_the_lease() -> None:
    leases = Leases()
    holds = holds_of(leases)
    tries: list[list[str]] = []

    async def opening(departed: list[str]) -> bool:
        tries.append(departed)
        return len(tries) > 1  # busy once, then free

    holds.mark_departed("dead", 30)
    async with holds.hold("c", acquire=opening):
        pass
    assert tries == [["dead"], ["dead"]]
    assert leases.acquired == []
