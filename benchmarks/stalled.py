"""A WebSocket client that completes its handshake and then never reads.

It stands in for a visitor whose tab froze: the gateway must cut it at its buffer cap while
everyone else keeps receiving. Used by the fan-out benchmark and the fault tests.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket

__all__ = ["StalledSocket", "close_code"]


class StalledSocket:
    """A WebSocket that completes its handshake and then never reads (tiny receive buffer)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def open(cls, port: int, path: str) -> StalledSocket:
        """Connect to ``127.0.0.1:port``, upgrade ``path`` and read only the handshake."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(sock, 1)  # byte by byte: leave the frames unread
            if not chunk:
                raise RuntimeError("stalled socket: handshake failed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"stalled socket: {head[:80]!r}")
        return cls(sock)

    async def drain(self, within: float = 5.0) -> tuple[int | None, str]:
        """Read everything left: ``(close code, how the connection ended)``."""
        loop = asyncio.get_running_loop()
        data = bytearray()
        end = "still open"
        deadline = loop.time() + within
        try:
            while loop.time() < deadline:
                try:
                    async with asyncio.timeout(0.5):
                        chunk = await loop.sock_recv(self.sock, 1 << 16)
                except TimeoutError:
                    continue
                if not chunk:
                    end = "EOF"
                    break
                data += chunk
        except ConnectionResetError:
            end = "reset"
        finally:
            self.sock.close()
        return close_code(bytes(data)), end


def close_code(data: bytes) -> int | None:
    """The code of the first close frame in a stream of server (unmasked) frames."""
    i = 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif length == 127:
            length, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        if opcode == 0x8 and length >= 2 and i + 2 <= len(data):
            return int.from_bytes(data[i : i + 2], "big")
        i += length
    return None
