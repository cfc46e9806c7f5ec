"""Errors raised by the bus, and the one place where Redis failures become them.

::

    BusError
    ├── SchemaError        a stored or received entry does not match its schema
    ├── BusUnavailable     Redis cannot be reached or timed out (after the client's retries)
    ├── BusRejected        Redis answered but refused (ACL, auth, wrong type, cluster redirect)
    ├── BacklogFull        too many unfinished jobs: nothing was stored, try again later
    │   └── StorageFull    Redis is above its memory budget: nothing was stored
    ├── TooManyWaiting     this client already has its cap of messages waiting
    ├── QuotaExceeded      this client's (or chat's) stored bytes are at their cap
    ├── ChatModeConflict   the chat is Terra's and the message is BYO, or the other way round
    └── ResumeGap          a resume point is older than what the chat log retains

Callers outside ``bus`` never see a ``redis`` exception: every public coroutine of the bus's
classes is wrapped by :func:`translates_redis_errors` (cause chained), as httpx maps its
transport's errors at the boundary.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import AuthenticationError, NoPermissionError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "BacklogFull",
    "BusError",
    "BusRejected",
    "BusUnavailable",
    "ChatModeConflict",
    "QuotaExceeded",
    "ResumeGap",
    "SchemaError",
    "StorageFull",
    "TooManyWaiting",
    "as_bus_error",
    "translates_redis_errors",
]

P = ParamSpec("P")
T = TypeVar("T")
C = TypeVar("C", bound=type)


class BusError(Exception):
    """Base class of every error the bus raises."""


class SchemaError(BusError):
    """An entry does not match its schema (never retried: the entry is bad)."""


class BusUnavailable(BusError):
    """Redis is unreachable or timed out; the caller may retry later."""


class BusRejected(BusError):
    """Redis answered and refused the command: a configuration problem, not an outage."""


class BacklogFull(BusError):
    """The jobs backlog is at its cap: the message was not stored; the caller backs off."""


class StorageFull(BacklogFull):
    """Redis is above the memory budget for new messages: nothing was stored; back off."""


class TooManyWaiting(BusError):
    """This client already has ``waiting`` messages queued for Terra: nothing was stored."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} messages of this client are already waiting")
        self.waiting = waiting


class QuotaExceeded(BusError):
    """Nothing was stored: the client's bytes for this window (``scope`` "client", retry
    after ``retry_after_ms``) or the chat's bytes over its life (``scope`` "chat") are spent."""

    def __init__(self, scope: str, retry_after_ms: int = 0) -> None:
        super().__init__(f"the {scope}'s storage quota is spent")
        self.scope = scope
        self.retry_after_ms = retry_after_ms


class ChatModeConflict(BusError):
    """Nothing was stored: the chat is ``mode`` ("terra" or "byo") and the message is not."""

    def __init__(self, mode: str) -> None:
        super().__init__(f"the chat is in {mode} mode")
        self.mode = mode


class ResumeGap(BusError):
    """The requested resume point is no longer in the chat log; refetch history."""


def as_bus_error(exc: BaseException) -> BusError:
    """The bus error for a Redis (or socket) failure; the message never holds a secret."""
    if isinstance(exc, BusError):
        return exc
    kind = type(exc).__name__
    if isinstance(exc, AuthenticationError):
        return BusRejected(f"Redis refused the credentials ({kind})")
    if isinstance(exc, NoPermissionError):  # the ACL: its message has no leading NOPERM
        return BusRejected("Redis refused the command (NOPERM)")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError | TimeoutError):
        return BusUnavailable(f"Redis unreachable ({kind})")
    first_word = str(exc).split(" ", 1)[0] if str(exc) else kind
    if first_word.isupper():  # NOPERM, WRONGTYPE, MOVED, CROSSSLOT, NOSCRIPT, ...
        return BusRejected(f"Redis refused the command ({first_word})")
    return BusError(f"Redis error ({kind})")


_TRANSLATED = (RedisError, OSError, TimeoutError)


def _closed_under_us(exc: RuntimeError) -> bool:
    """uvloop's error for a write on a transport already closed (Redis went away): where
    asyncio's own loop drops the write and the next read sees the end, uvloop raises this."""
    return str(exc).startswith("unable to perform operation on <")


def _wrap_coroutine(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except BusError:
            raise
        except _TRANSLATED as exc:
            raise as_bus_error(exc) from exc
        except RuntimeError as exc:
            if _closed_under_us(exc):
                raise BusUnavailable("Redis unreachable (connection closed)") from exc
            raise

    return wrapper


def _wrap_async_generator(
    func: Callable[P, AsyncIterator[T]],
) -> Callable[P, AsyncIterator[T]]:
    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        try:
            async with contextlib.aclosing(func(*args, **kwargs)) as items:  # type: ignore[type-var]
                async for item in items:
                    yield item
        except BusError:
            raise
        except _TRANSLATED as exc:
            raise as_bus_error(exc) from exc
        except RuntimeError as exc:
            if _closed_under_us(exc):
                raise BusUnavailable("Redis unreachable (connection closed)") from exc
            raise

    return wrapper


def translates_redis_errors(cls: C) -> C:
    """Class decorator: public coroutines and async generators of ``cls`` raise bus errors only.

    Redis's ``ConnectionError``/``TimeoutError`` (and socket errors, and uvloop's
    ``RuntimeError`` for a write on a closed connection) become :class:`BusUnavailable`;
    refusals (ACL, auth, wrong type, cluster redirects) become :class:`BusRejected`;
    anything else from redis becomes :class:`BusError`.
    """
    for name, member in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        wrapped: Any
        if inspect.iscoroutinefunction(member):
            wrapped = _wrap_coroutine(member)
        elif inspect.isasyncgenfunction(member):
            wrapped = _wrap_async_generator(member)
        else:
            continue
        setattr(cls, name, wrapped)
    return cls
