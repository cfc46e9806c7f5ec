"""Bus error translation: a Redis connection uvloop closed under a command is an outage.

The guarantee checker's long mode (seed 7, Redis restarts) logged two unhandled
``RuntimeError('unable to perform operation on <TCPTransport closed=True ...>; the handler
is closed')``: on uvloop, a write to a Redis connection whose peer went away raises that
instead of an OSError, so redis-py passed it through and a WebSocket's follow task and an
SSE stream failed with a traceback instead of closing with "try again later".
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bus.errors import BusUnavailable, translates_redis_errors

UVLOOP_CLOSED = RuntimeError(
    "unable to perform operation on <TCPTransport closed=True reading=False 0x5559>; "
    "the handler is closed"
)


@translates_redis_errors
class Part:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def command(self) -> None:
        raise self.error

    async def items(self) -> AsyncIterator[int]:
        yield 1
        raise self.error


async def test_a_write_on_a_connection_uvloop_closed_is_an_outage() -> None:
    with pytest.raises(BusUnavailable):
        await Part(UVLOOP_CLOSED).command()
    with pytest.raises(BusUnavailable):
        async for _ in Part(UVLOOP_CLOSED).items():
            pass


async def test_other_runtime_errors_are_not_taken_for_an_outage() -> None:
    with pytest.raises(RuntimeError, match="a bug"):
        await Part(RuntimeError("a bug")).command()
