"""The one way tests wait for something: poll a probe until it is truthy, or fail with a message.

Every wait has a deadline, checked after every probe whatever it returned or raised, so a
probe that keeps saying "not yet" ends in a ``TimeoutError`` naming what was awaited, never
in pytest's global timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

__all__ = ["wait_until", "wait_until_sync"]

T = TypeVar("T")


def _timeout_error(
    timeout: float, message: str, last: object, error: BaseException | None
) -> TimeoutError:
    detail = f"last error: {error!r}" if error is not None else f"last value: {last!r}"
    return TimeoutError(f"timed out after {timeout}s waiting for {message} ({detail})")


@overload
async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float = ...,  # noqa: ASYNC109
    message: str = ...,
    *,
    interval: float = ...,
    ignore: tuple[type[Exception], ...] = ...,
    wake: asyncio.Event | None = ...,
) -> T: ...


@overload
async def wait_until(
    probe: Callable[[], T | None],
    timeout: float = ...,  # noqa: ASYNC109
    message: str = ...,
    *,
    interval: float = ...,
    ignore: tuple[type[Exception], ...] = ...,
    wake: asyncio.Event | None = ...,
) -> T: ...


async def wait_until(
    probe: Callable[[], object],
    timeout: float = 10.0,  # noqa: ASYNC109 - the deadline of a polling loop, by design
    message: str = "condition",
    *,
    interval: float = 0.02,
    ignore: tuple[type[Exception], ...] = (),
    wake: asyncio.Event | None = None,
) -> object:
    """Call ``probe()`` (sync or async) until it returns something truthy, and return that.

    Exceptions of the ``ignore`` types count as "not yet" (say, Redis restarting); any other
    exception propagates at once. Between probes it sleeps ``interval`` seconds, or less when
    ``wake`` is set (an event the producer of the awaited state sets on every change).
    Raises ``TimeoutError`` naming ``message`` and the last value or error after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    error: Exception | None = None
    while True:
        try:
            result = probe()
            value = await result if inspect.isawaitable(result) else result
            error = None
        except ignore as exc:
            value, error = None, exc
        if value:
            return value
        last = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout_error(timeout, message, last, error) from error
        pause = min(interval, remaining)
        if wake is None:
            await asyncio.sleep(pause)
            continue
        wake.clear()
        try:
            async with asyncio.timeout(pause):
                await wake.wait()
        except TimeoutError:
            pass


def wait_until_sync(
    probe: Callable[[], T | None],
    timeout: float = 10.0,
    message: str = "condition",
    *,
    pause: Callable[[float], object] = time.sleep,
    interval: float = 0.1,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """``wait_until`` for synchronous tests; ``pause(seconds)`` runs between probes.

    Pass ``pause=lambda s: page.wait_for_timeout(s * 1000)`` with Playwright's sync API so
    the page's event handlers run while waiting. ``ignore`` as for :func:`wait_until`.
    """
    deadline = time.monotonic() + timeout
    while True:
        error: Exception | None = None
        try:
            value = probe()
        except ignore as exc:
            value, error = None, exc
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout_error(timeout, message, value, error) from error
        pause(min(interval, remaining))
