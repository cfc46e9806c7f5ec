"""A raw-socket HTTP/1.1 client: sends exactly the bytes given, reads one response.

aiohttp's client normalises what it sends (it escapes paths, refuses lone surrogates,
validates headers); a client mistake or an attack does not. Tests of the gateway's
answers to malformed requests go through this instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

__all__ = ["RawResponse", "raw_request", "request_bytes"]


@dataclass(frozen=True, slots=True)
class RawResponse:
    """One HTTP response as read off the socket (``status`` 0: closed without a status)."""

    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


def request_bytes(
    method: str,
    target: bytes | str,
    *,
    headers: dict[str, bytes | str] | None = None,
    body: bytes = b"",
) -> bytes:
    """An HTTP/1.1 request with ``Host``, ``Connection: close`` and ``Content-Length``."""
    path = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: gateway.test"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + (value.encode() if isinstance(value, str) else value))
    lines.append(b"Connection: close")
    if body or method in ("POST", "PUT"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def raw_request(port: int, data: bytes, *, within: float = 10.0) -> RawResponse:
    """Send ``data`` to ``127.0.0.1:port`` and read until the server closes or a body ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(within):
            raw = await _read_response(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return parse_response(raw)


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = b""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    except ConnectionError:
        return head
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    try:
        if length is not None:
            return head + await reader.readexactly(length)
        if head.startswith(b"HTTP/1.1 101") or b"text/event-stream" in head.lower():
            return head  # a socket or a stream that started: its status is the answer
        return head + await reader.read(1 << 20)
    except (asyncio.IncompleteReadError, ConnectionError):
        return head


def parse_response(raw: bytes) -> RawResponse:
    """Split a raw response into status, headers (lower-cased names) and body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ") if lines and lines[0] else []
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return RawResponse(status=status, headers=headers, body=body, raw=raw)
