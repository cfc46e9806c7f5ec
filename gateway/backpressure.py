"""How many bytes a visitor's connection has not taken yet, counted where they wait.

A reader that stops reading leaves frames in three places: the live listener's queue
(bounded in bytes by the bus), asyncio's transport buffer, and the kernel's send buffer
(which autotunes to several MB on fast links). :class:`SendBudget` adds the last two after
each write, so a stalled socket is cut off by bytes, not by how many frames it has.
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import sys
import termios
from typing import cast

__all__ = ["SendBudget", "unsent_kernel_bytes"]

_OUTQ = getattr(termios, "TIOCOUTQ", None) if sys.platform.startswith("linux") else None


def unsent_kernel_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes in the socket's kernel send queue (Linux ``SIOCOUTQ``; 0 where unknown)."""
    sock = transport.get_extra_info("socket")
    if sock is None or _OUTQ is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", raw)[0])


class SendBudget:
    """Flags a connection once more than ``limit`` bytes wait in its send buffers.

    :meth:`wrote` is the cheap per-frame check: the transport's buffer every time, the
    kernel's queue (a system call) only once per ``limit / 8`` bytes written, so a socket is
    flagged within that many bytes of its limit.
    """

    __slots__ = ("_check_every", "_since_check", "_transport", "limit")

    def __init__(self, transport: asyncio.BaseTransport | None, limit: int) -> None:
        # Duck-typed: uvloop's transports are not asyncio.WriteTransport subclasses. The
        # transport, not its bound get_write_buffer_size: one object less per socket.
        buffered = transport is not None and hasattr(transport, "get_write_buffer_size")
        self._transport = cast("asyncio.WriteTransport", transport) if buffered else None
        self.limit = limit
        self._check_every = max(1, limit // 8)
        self._since_check = 0

    def exceeded(self) -> bool:
        """True when the transport's and the kernel's unsent bytes exceed the limit."""
        transport = self._transport
        if transport is None:
            return False
        waiting = transport.get_write_buffer_size()
        if waiting > self.limit:
            return True
        return waiting + unsent_kernel_bytes(transport) > self.limit

    def wrote(self, size: int) -> bool:
        """Count ``size`` bytes just written; True when the connection is over its limit."""
        transport = self._transport
        if transport is None:
            return False
        waiting = transport.get_write_buffer_size()
        if waiting > self.limit:
            return True
        self._since_check += size
        if self._since_check < self._check_every:
            return False
        self._since_check = 0
        return waiting + unsent_kernel_bytes(transport) > self.limit
