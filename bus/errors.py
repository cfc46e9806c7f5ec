"""Errors raised by the bus, and the one place where Redis failures become them.

::

    BusError
    ├── SchemaError        a stored or received entry does not match its schema
    ├── BusUnavailable     Redis cannot be reached or timed out (after the client's retries)
    ├── BusRejected        Redis answered but refused (ACL, auth, wrong type, cluster redirect):
    │                      Terra is misconfigured; counted by kind (:func:`misconfigurations`)
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
import logging
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    ClusterCrossSlotError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "MISCONFIG_KINDS",
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
    "misconfigurations",
    "translates_redis_errors",
]

log = logging.getLogger("bus")
log.addHandler(logging.NullHandler())  # a library's logger: the process decides where it goes

#: The kinds of refusal counted as misconfiguration (``terrarium_redis_misconfig_total``):
#: a cluster redirect a client did not follow (MOVED, ASK: a plain client at a cluster
#: node), keys of several slots in one command (CROSSSLOT, also redis-py's own refusal of
#: one), the ACL (NOPERM), a key of another type (WRONGTYPE), a script Redis lost again
#: after a reload (NOSCRIPT), credentials (AUTH), a cluster client at a server without
#: cluster mode (CLUSTER), and any other refusal (OTHER).
MISCONFIG_KINDS = (
    "MOVED",
    "ASK",
    "CROSSSLOT",
    "NOPERM",
    "WRONGTYPE",
    "NOSCRIPT",
    "AUTH",
    "CLUSTER",
    "OTHER",
)
_misconfig: Counter[str] = Counter()

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
    """Redis answered and refused the command: a configuration problem, not an outage.

    ``kind`` is one of :data:`MISCONFIG_KINDS`; the message carries Redis's own words
    (never a secret: Redis does not echo credentials or values in its errors).
    """

    def __init__(self, message: str, kind: str = "OTHER") -> None:
        super().__init__(message)
        self.kind = kind if kind in MISCONFIG_KINDS else "OTHER"


class BacklogFull(BusError):
    """The jobs backlog is at its cap: the message was not stored; the caller backs off."""


class StorageFull(BacklogFull):
    """Redis is above the memory budget for new messages, or at its maxmemory (any write):
    nothing was stored; back off."""


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


def misconfigurations() -> dict[str, int]:
    """Refusals translated by this process since it started, by kind (every kind listed)."""
    return {kind: _misconfig[kind] for kind in MISCONFIG_KINDS}


#: Replies of a Redis that is between states, not refusing: a blocking read whose key a
#: reshard moved (or a restart lost) under it, a master that failed over and now serves
#: as a replica (redis-py's ReadOnlyError), a dataset still loading. Retried as outages.
_PASSING_STATES = ("UNBLOCKED", "READONLY", "LOADING", "MASTERDOWN")
_CLUSTER_OUTAGE = ("cannot be connected", "not covered", "clusterdown", "node is down")
_SECRETISH = re.compile(r"\w+://\S*@\S*")  # a URL with credentials, should one ever appear


def _rejected(kind: str, text: str) -> BusRejected:
    """A :class:`BusRejected` of ``kind``, counted and logged (``bus.misconfigured``)."""
    text = _SECRETISH.sub("<url>", " ".join(text.split()))[:300]
    words = text.removeprefix(kind).strip() if text.split(" ", 1)[0] == kind else text
    error = BusRejected(
        f"Redis refused the command ({kind})" + (f": {words}" if words else ""), kind
    )
    _misconfig[error.kind] += 1
    log.error("bus.misconfigured kind=%s error=%s", error.kind, text)
    return error


_PARSED: tuple[tuple[type[Exception], str], ...] = (
    (MovedError, "MOVED"),  # before AskError: MovedError is one
    (AskError, "ASK"),
    (ClusterCrossSlotError, "CROSSSLOT"),
    (NoScriptError, "NOSCRIPT"),
)


def _refusal_kind(first_word: str, text: str) -> str:
    if first_word in MISCONFIG_KINDS:
        return first_word
    if "same slot" in text or "same key slot" in text or "transaction is deprecated" in text:
        return "CROSSSLOT"
    if "cluster" in text.lower():
        return "CLUSTER"
    return "OTHER"


def as_bus_error(exc: BaseException) -> BusError:
    """The bus error for a Redis (or socket) failure; the message never holds a secret.

    Outages (unreachable, timed out, a cluster without a master for a slot) become
    :class:`BusUnavailable`; refusals become :class:`BusRejected`, counted by kind and
    logged once here with Redis's words as ``bus.misconfigured``; a write refused at
    ``maxmemory`` (noeviction) becomes :class:`StorageFull`.
    """
    if isinstance(exc, BusError):
        return exc
    kind = type(exc).__name__
    text = str(exc)
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return _rejected("AUTH", f"{kind}: {text}")
    if isinstance(exc, NoPermissionError):  # the ACL: its message has no leading NOPERM
        return _rejected("NOPERM", f"NOPERM {text}")
    if isinstance(exc, OutOfMemoryError):  # noeviction at maxmemory: full, not misconfigured
        return StorageFull("Redis is at its maxmemory")
    for cls, word in _PARSED:  # redis-py strips the error code of these: put it back
        if isinstance(exc, cls):
            return _rejected(word, f"{word} {text}")
    if isinstance(exc, ClusterDownError | TryAgainError | SlotNotCoveredError):
        return BusUnavailable(f"Redis Cluster unavailable ({kind})")
    if isinstance(exc, ReadOnlyError) or text.startswith(_PASSING_STATES):
        return BusUnavailable(f"Redis in transition ({text.split(' ', 1)[0]})")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError | TimeoutError):
        return BusUnavailable(f"Redis unreachable ({kind})")
    if isinstance(exc, RedisClusterException):  # redis-py's cluster client, not the server
        if any(word in text.lower() for word in _CLUSTER_OUTAGE):
            return BusUnavailable(f"Redis Cluster unreachable ({kind})")
        return _rejected(_refusal_kind("", text), text)
    first_word = text.split(" ", 1)[0] if text else kind
    if first_word.isupper():  # NOPERM, WRONGTYPE, MOVED, CROSSSLOT, NOSCRIPT, ...
        return _rejected(_refusal_kind(first_word, text), text)
    return BusError(f"Redis error ({kind})")


_TRANSLATED = (RedisError, RedisClusterException, OSError, TimeoutError)


def _closed_under_us(exc: RuntimeError) -> bool:
    """uvloop's error for a write on a transport already closed (Redis went away): where
    asyncio's own loop drops the write and the next read sees the end, uvloop raises this."""
    return str(exc).startswith("unable to perform operation on <")


def _torn_down_under_us(exc: AttributeError) -> bool:
    """redis-py's cluster client, closing every connection after a node failed, leaves a
    command in flight writing to a connection whose writer is gone (``'NoneType' object has
    no attribute 'writelines'``, raised inside redis-py): an outage, not a bug of ours."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}redis{os.sep}" in tb.tb_frame.f_code.co_filename


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
        except AttributeError as exc:
            if _torn_down_under_us(exc):
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
        except AttributeError as exc:
            if _torn_down_under_us(exc):
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
