"""Redis connections that send a command without an asyncio Task of its own (issue 10).

redis-py 5.3 wraps every write in ``asyncio.wait_for`` when ``socket_timeout`` is set, and
on Python 3.11 ``wait_for`` runs the write in a new Task: measured on this project's 2-core
box (uvloop), a GET costs 45-57 µs of CPU that way and 29-33 µs without it, and the worker
sends several commands per exchange. The write itself never waits while the socket takes
the bytes (the transport's buffer is then empty and ``drain`` returns at once), so the
timeout is armed only when the buffer holds something, with the same ``TimeoutError`` and
disconnect as before. Reads keep redis-py's own timeout.

Taking a connection from the pool, redis-py asks whether unread data waits on it (a reply
left over, or the server's close) by reading with a zero timeout: with hiredis that is a
timer, a future and a turn of the event loop for every command. Whatever has arrived is
already in the connection's stream buffer (the protocol moves it there as it comes), so
:meth:`_QuickWrites.can_read_destructive` looks there instead, with the same answers.

Every connection of the project's clients (cluster nodes included) skips redis-py's health
check while its handshake runs (:class:`_HandshakeWithoutPing`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "ClusterConnection",
    "ClusterSSLConnection",
    "QuickWriteConnection",
    "QuickWriteSSLConnection",
    "connection_class_for",
]


class _HandshakeWithoutPing:
    """No health check inside the handshake of a socket just opened.

    redis-py 5.3.1 sends the handshake (``AUTH``, ``CLIENT SETNAME``, ...) with its health
    check on, and a new connection has never been checked: it PINGs first. On a node that
    accepts the connection and never answers (SIGSTOPped, hung) that PING times out, and the
    check's retry reconnects from within it, whose handshake PINGs again: one socket timeout
    deeper each time, for as long as the node hangs (a cluster client still routing to a
    hung master waited there for ever). Here the handshake's own reply is the check: it
    times out once and the command fails.
    """

    async def on_connect(self) -> None:
        conn: Connection = self  # type: ignore[assignment]
        if conn.health_check_interval:
            conn.next_health_check = asyncio.get_running_loop().time() + conn.health_check_interval
        await super().on_connect()  # type: ignore[misc]


class _QuickWrites:
    """``send_packed_command`` without ``wait_for``, and the pool's unread-data check
    without a turn of the event loop (see the module doc)."""

    async def can_read_destructive(self) -> bool:
        """Whether a reply (or the server's close) waits unread on the connection.

        True means "replace this connection", as redis-py's own check: the pool then
        reconnects it. Looks at what has arrived instead of trying to read more.
        """
        conn: Connection = self  # type: ignore[assignment]
        parser = conn._parser
        if not isinstance(parser, _AsyncHiredisParser):
            return await Connection.can_read_destructive(conn)  # type: ignore[no-untyped-call,no-any-return]
        stream = parser._stream
        if not parser._connected or stream is None:
            raise RedisConnectionError("Connection closed by server.")
        if parser._reader.gets() is not NOT_ENOUGH_DATA or stream._buffer:  # type: ignore[attr-defined]
            return True
        if stream.at_eof() or stream.exception() is not None:
            await conn.disconnect(nowait=True)
            raise RedisConnectionError("Connection closed by server.")
        return False

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        conn: Connection = self  # type: ignore[assignment]
        if not conn.is_connected:
            await conn.connect()  # type: ignore[no-untyped-call]
        elif check_health:
            await conn.check_health()  # type: ignore[no-untyped-call]
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            writer = conn._writer
            assert writer is not None
            writer.writelines(command)
            if conn.socket_timeout and writer.transport.get_write_buffer_size():
                async with asyncio.timeout(conn.socket_timeout):
                    await writer.drain()
            else:
                await writer.drain()  # returns at once: nothing is buffered
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await conn.disconnect(nowait=True)
            if len(e.args) == 1:
                err_no, errmsg = "UNKNOWN", e.args[0]
            else:
                err_no, errmsg = e.args[0], e.args[1]
            raise RedisConnectionError(f"Error {err_no} while writing to socket. {errmsg}.") from e
        except BaseException:
            # As redis-py: a write cut short leaves the connection unusable.
            await conn.disconnect(nowait=True)
            raise


class QuickWriteConnection(_QuickWrites, _HandshakeWithoutPing, Connection):
    """A TCP connection with :class:`_QuickWrites`."""


class QuickWriteSSLConnection(_QuickWrites, _HandshakeWithoutPing, SSLConnection):
    """A TLS connection with :class:`_QuickWrites`."""


class ClusterConnection(_HandshakeWithoutPing, Connection):
    """A cluster node's TCP connection (redis-py's, with :class:`_HandshakeWithoutPing`)."""


class ClusterSSLConnection(_HandshakeWithoutPing, SSLConnection):
    """A cluster node's TLS connection (redis-py's, with :class:`_HandshakeWithoutPing`)."""


def connection_class_for(url: str) -> type[Connection]:
    """The connection class for ``url`` (``rediss://``: TLS)."""
    return QuickWriteSSLConnection if url.startswith("rediss://") else QuickWriteConnection
