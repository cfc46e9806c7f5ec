"""Small asyncio helpers that stay correct on Python 3.11.

On 3.11 ``asyncio.wait_for`` can swallow a cancellation when its inner operation finishes
at the same moment (fixed in 3.12), and redis-py uses it on every command write. So a
single ``task.cancel()`` may be lost: loops here also check a stop flag, and
:func:`cancel_and_wait` repeats the cancel until the tasks are really done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

__all__ = ["ClosingWriter", "cancel_and_wait", "wait_event"]


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True if it is set."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, within: float = 5.0, every: float = 0.05
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` (again every ``every`` s) until done; return those still running."""
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=every)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: the task logged it or it does not matter
    return pending


class ClosingWriter:
    """Base of the batch writers used as ``async with``: leaving the block normally or
    with an ordinary exception calls :meth:`close` (writes the rest); leaving it cancelled,
    or with the writer's own failed write (``_error``), :meth:`abort` (drops it)."""

    _error: BaseException | None = None

    async def close(self) -> None:
        """Write what is still buffered and stop."""
        raise NotImplementedError

    async def abort(self) -> None:
        """Stop at once, dropping anything not yet written."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cancelled = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        if cancelled or (self._error is not None and exc is self._error):
            await self.abort()
        else:
            await self.close()
