"""A WebSocket whose transport uvloop closed under us ends as "socket gone", not a task error.

A sibling of what the guarantee checker's long mode (seed 7) logged from
``_Session.follow``: on uvloop, a write on a closed transport raises ``RuntimeError('unable
to perform operation on <TCPTransport closed=True ...>; the handler is closed')``. There it
was the Redis connection (``tests/unit/test_bus_errors.py``); the visitor's own socket meets
the same error when it drops during a replay or a close, where only OSError meant "gone".
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.backpressure import SendBudget
from gateway.outbox import SocketOutbox


class ClosedUnderUs:
    """A WebSocket whose transport was closed by uvloop after the last check."""

    closed = False

    async def send_frame(self, payload: bytes, kind: Any) -> None:
        raise RuntimeError(
            "unable to perform operation on <TCPTransport closed=True reading=False>; "
            "the handler is closed"
        )


class Meter:
    def observe(self, event_id: str) -> None:
        raise AssertionError("nothing was written")


async def test_a_write_to_a_transport_closed_under_a_replay_means_the_socket_is_gone() -> None:
    outbox = SocketOutbox(
        ClosedUnderUs(),  # type: ignore[arg-type]
        None,
        SendBudget(None, 1 << 20),
        Meter(),  # type: ignore[arg-type]
        v2=True,
        on_stall=lambda: None,
    )
    with pytest.raises(ConnectionResetError):
        await outbox.write_payload(b'{"type":"resync"}')


class Transport:
    aborted = False

    def abort(self) -> None:
        self.aborted = True


class Request:
    def __init__(self) -> None:
        self.transport = Transport()


class CloseOnClosedTransport:
    async def close(self, *, code: int, message: bytes) -> bool:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")


async def test_closing_a_socket_whose_transport_uvloop_closed_cuts_it_quietly() -> None:
    """The sibling: the close frame written by ``_close`` meets the same closed transport."""
    from gateway.ws import _close

    request = Request()
    await _close(request, CloseOnClosedTransport(), 4000, b"Slow consumer; resume")  # type: ignore[arg-type]
    assert request.transport.aborted
