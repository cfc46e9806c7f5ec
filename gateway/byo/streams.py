"""The BYO answers this process is streaming: concurrency caps, and their end at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Coroutine
from typing import Any

__all__ = ["ByoStreams"]


class ByoStreams:
    """Slots for BYO answers (per client and in all) and the tasks that stream them."""

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self._by_client: Counter[str] = Counter()
        self._reserved = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False

    @property
    def active(self) -> int:
        """Answers streaming now."""
        return len(self._tasks)

    def reserve(self, client: str) -> str | None:
        """Take a slot of ``client`` before the message is stored; None when taken, else why
        not (``"client"``: its cap, ``"total"``: the process's, or shutting down). A taken
        slot is given back by :meth:`release` or, once started, when the answer ends."""
        if self.closing or self._reserved >= self.total:
            return "total"
        if self._by_client[client] >= self.per_client:
            return "client"
        self._reserved += 1
        self._by_client[client] += 1
        return None

    def release(self, client: str) -> None:
        """Give back a slot :meth:`reserve` took."""
        self._reserved -= 1
        self._by_client[client] -= 1
        if self._by_client[client] <= 0:
            del self._by_client[client]

    def start(self, client: str, answer: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``answer`` in the slot :meth:`reserve` took for ``client``."""
        task = asyncio.create_task(answer)
        self._tasks.add(task)

        def ended(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            self.release(client)

        task.add_done_callback(ended)
        return task

    async def close(self, grace_seconds: float) -> None:
        """Refuse new answers and cancel the running ones: each ends its reply as
        interrupted (gateway.byo.answer). Waits up to ``grace_seconds`` for those writes."""
        self.closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_seconds):
                    await asyncio.gather(*tasks, return_exceptions=True)
