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
    """Flags a connection once more than ``limit`` bytes wait in its send buffers."""

    def __init__(self, transport: asyncio.BaseTransport | None, limit: int) -> None:
        self._transport = transport
        self.limit = limit

    def exceeded(self) -> bool:
        """True when the transport's and the kernel's unsent bytes exceed the limit."""
        transport = self._transport
        if transport is None or not isinstance(transport, asyncio.WriteTransport):
            return False
        waiting = transport.get_write_buffer_size()
        if waiting > self.limit:
            return True
        return waiting + unsent_kernel_bytes(transport) > self.limit
