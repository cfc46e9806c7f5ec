"""Which chats this worker is answering: a local lock per chat, a concurrency slot, and the
chat's lease in Redis (one worker per chat across the deployment).

A job for a chat this worker already answers waits on the chat's local lock and holds no
slot. Then it takes a slot and the chat's lease, waiting with capped backoff while another
worker holds it (up to :data:`LEASE_WAIT_LEASES` lease lifetimes). :meth:`ChatHolds.renew`
keeps held leases alive; a lease found taken by another worker cancels the job holding it.

A reply taken over from a departed worker (``heir=True``) takes a heir slot instead: the
dead worker's capacity left the fleet with it, so the heir runs those replies beside its own
(up to as many again) rather than leaving their visitors watching a frozen answer until one
of its own long replies ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import structlog

from bus import BusError, ChatLease

__all__ = ["LEASE_WAIT_LEASES", "ChatHolds", "LeaseUnavailable"]

logger = structlog.get_logger("worker")

#: A job waits for a chat held by another worker up to this many lease lifetimes.
LEASE_WAIT_LEASES = 10
#: First and longest wait between two tries for a busy chat lease (seconds).
LEASE_RETRY_FIRST_SECONDS = 0.05
LEASE_RETRY_MAX_SECONDS = 1.0


class Closing(Protocol):
    """A job that may release its chat's lease itself, with its last reply (issue 10)."""

    @property
    def closing(self) -> bool:
        """The release was sent: stop renewing the lease."""
        ...

    @property
    def closed(self) -> bool:
        """The release went through: nothing to release."""
        ...


class LeaseUnavailable(Exception):
    """The chat could not be held (busy elsewhere too long, or stopping); the job stays pending."""


class ChatHolds:
    """The chats held by this worker's running jobs (see the module doc)."""

    def __init__(
        self,
        leases: ChatLease,
        slots: int,
        *,
        lease_wait_seconds: float,
        stopping: asyncio.Event,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.leases = leases
        self.lease_wait_seconds = lease_wait_seconds * LEASE_WAIT_LEASES
        self._stopping = stopping
        #: Called when a chat is taken (the heartbeat reports active jobs).
        self.on_change = on_change
        self._slots = asyncio.Semaphore(slots)
        #: Slots for replies taken over from departed workers (see the module doc).
        self._heir_slots = asyncio.Semaphore(slots)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._held: dict[str, asyncio.Task[Any]] = {}
        self._jobs: dict[str, Closing] = {}
        #: Tasks cancelled because another worker took their chat.
        self._lost: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        #: Departed workers (liveness lapsed) whose leases may be taken, until when.
        self._departed: dict[str, float] = {}

    def mark_departed(self, worker: str, for_seconds: float) -> None:
        """Take ``worker``'s chat leases at once for ``for_seconds`` (they expire after)."""
        self._departed[worker] = asyncio.get_running_loop().time() + for_seconds

    def _departed_now(self) -> list[str]:
        now = asyncio.get_running_loop().time()
        for worker in [w for w, until in self._departed.items() if until < now]:
            del self._departed[worker]
        return list(self._departed)

    @property
    def active(self) -> int:
        """Chats held now (jobs answering)."""
        return len(self._held)

    def running_tasks(self) -> set[asyncio.Task[Any]]:
        """The tasks holding a chat."""
        return set(self._held.values())

    def lost_lease(self, task: asyncio.Task[Any] | None) -> bool:
        """True when ``task`` was cancelled because another worker took its chat."""
        return task is not None and task in self._lost

    @contextlib.asynccontextmanager
    async def hold(
        self,
        chat_id: str,
        *,
        heir: bool = False,
        job: Closing | None = None,
        acquire: Callable[[list[str]], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[None]:
        """Hold ``chat_id`` for the current task: its local lock, a slot, then its lease.

        ``heir``: the job was taken from a departed worker; it takes a heir slot.
        ``job``: once it is ``closing`` its lease is not renewed, and once ``closed`` it is
        not released here (its last reply released it). ``acquire(departed)`` takes the
        lease instead of ``ChatLease.acquire`` (the job's OPEN round trip; issue 10).

        Raises :class:`LeaseUnavailable` when the lease stays busy or a stop is requested,
        and bus errors untouched.
        """
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("ChatHolds.hold() must run inside an asyncio task")
        lock, users = self._locks.get(chat_id, (asyncio.Lock(), 0))
        self._locks[chat_id] = (lock, users + 1)
        try:
            slots = self._heir_slots if heir else self._slots
            async with lock:
                await self._acquire(chat_id, slots, acquire)  # holds a slot once it returns
                self._held[chat_id] = task
                if job is not None:
                    self._jobs[chat_id] = job
                if self.on_change is not None:
                    self.on_change()
                try:
                    yield
                finally:
                    del self._held[chat_id]
                    self._jobs.pop(chat_id, None)
                    slots.release()
                    if job is None or not job.closed:
                        with contextlib.suppress(BusError):
                            await asyncio.shield(self.leases.release(chat_id))
        finally:
            lock, users = self._locks[chat_id]
            if users <= 1:
                del self._locks[chat_id]
            else:
                self._locks[chat_id] = (lock, users - 1)

    async def renew(self) -> None:
        """Renew every held lease; cancel the job of a chat another worker took."""
        for chat_id, task in list(self._held.items()):
            job = self._jobs.get(chat_id)
            if job is not None and job.closing:
                continue  # its last reply releases the lease
            if not await self.leases.acquire(chat_id, departed=self._departed_now()):
                logger.warning("worker.lease_lost", chat_id=chat_id)
                self._lost.add(task)
                task.cancel()
            elif job is not None and job.closing:
                # The renewal may have run after the last reply released the lease.
                await self.leases.release(chat_id)

    async def _acquire(
        self,
        chat_id: str,
        slots: asyncio.Semaphore,
        acquire: Callable[[list[str]], Awaitable[bool]] | None = None,
    ) -> None:
        """Take a slot and the chat's lease. A slot is never held while the lease is busy:
        between tries the job waits without one, so other chats keep the worker's slots."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lease_wait_seconds
        delay = LEASE_RETRY_FIRST_SECONDS
        while True:
            await slots.acquire()
            try:
                departed = self._departed_now()
                if acquire is not None:
                    got = await acquire(departed)
                else:
                    got = await self.leases.acquire(chat_id, departed=departed)
            except BaseException:
                slots.release()
                raise
            if got and not self._stopping.is_set():
                return
            slots.release()
            if got:
                await self.leases.release(chat_id)
                raise LeaseUnavailable("stopping")
            if self._stopping.is_set():
                raise LeaseUnavailable("stopping while waiting for the chat lease")
            if loop.time() > deadline:
                raise LeaseUnavailable("chat lease busy for too long")
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, LEASE_RETRY_MAX_SECONDS)
