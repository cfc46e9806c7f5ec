"""The streaming completion call on the hot path: aiohttp, one pre-serialised body, orjson.

Why not the ``openai`` package here (issue 10; ``python -m benchmarks.agent_call``, CPU of
the calling process against the demo agent on loopback, the worker's request shape with 17
turns and 10 tool schemas, 2-core box):

=================================================  ==================  ===========
path                                               ms / short request  µs / token
=================================================  ==================  ===========
``chat.completions.create(stream=True)``           7.2                 176
openai's low-level ``post(content=bytes)`` + orjson 2.1                 21
aiohttp + orjson (this module)                     1.45                7.4
=================================================  ==================  ===========

``create`` re-transforms the whole request on every call (a typed-dict walk over the
messages and tool schemas) and builds a pydantic model per chunk. The low-level call with a
pre-serialised body skips both but keeps httpx's send and line iteration, which alone would
use ~40 % of the 50 µs per token budget; so the streaming call uses aiohttp, which the
project already depends on. The ``openai`` package stays the
client for everything else (the health probe, the error taxonomy in
:mod:`worker.agent_failures`): failures here are raised as the same
:class:`~worker.errors.AgentError` categories.

Reading is bounded: at most :data:`READ_BYTES` are parsed per step, and the reader yields
to the event loop between full steps, so a backlog of buffered tokens never holds the loop
(chunk writes of other chats keep going while one stream catches up).

The read timeout (no byte for ``timeout_seconds``) is aiohttp's ``sock_read`` until the
headers arrive, then :class:`_Idle`'s: aiohttp's cancels and schedules a timer on every
packet, one per token (issue 10: ~9 % of the worker's CPU per streamed token).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from worker.agent_failures import status_error
from worker.errors import AgentError

__all__ = ["DRAIN_SECONDS", "READ_BYTES", "AgentStreamer"]

#: Bytes parsed per read step (about 100 token events) before the loop gets a turn.
READ_BYTES = 16384
#: How long a body may take to end after ``[DONE]`` and still keep its connection.
DRAIN_SECONDS = 5.0


class AgentStreamer:
    """POSTs ``/chat/completions`` with ``stream: true`` and yields the decoded events."""

    def __init__(self, base_url: str, api_key: str | None, timeout_seconds: float) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Authorization": f"Bearer {api_key or 'unused'}",
        }
        self.timeout_seconds = timeout_seconds
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_seconds, sock_read=timeout_seconds
        )
        self._session: aiohttp.ClientSession | None = None
        self._draining: set[asyncio.Task[None]] = set()
        # The proxy settings (HTTP(S)_PROXY, NO_PROXY) are read once here: aiohttp's
        # ``trust_env`` would look them up in a thread on every request.
        self.proxy: URL | None = None
        self.proxy_auth: aiohttp.BasicAuth | None = None
        with contextlib.suppress(LookupError):
            self.proxy, self.proxy_auth = get_env_proxy_for_url(URL(self.url))

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=self.timeout
            )
        return self._session

    async def settled(self) -> None:
        """Wait until every body read past ``[DONE]`` has ended (or been dropped)."""
        while self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)

    async def aclose(self) -> None:
        """Close the connection pool."""
        for task in self._draining:
            task.cancel()
        await self.settled()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def events(self, body: bytes) -> AsyncGenerator[dict[str, Any], None]:
        """The stream's JSON events, in order, until ``[DONE]`` or the end of the body.

        Raises :class:`AgentError`: ``timeout``, ``network`` (connection refused or cut),
        the status categories of :func:`worker.agent_failures.status_error` for a non-2xx
        answer, and a retryable ``server_error`` for an in-stream ``{"error": ...}`` object.
        Closing the iterator early drops the connection (the model stops generating).
        """
        try:
            resp = await self._http().post(
                self.url,
                data=body,
                headers=self.headers,
                proxy=self.proxy,
                proxy_auth=self.proxy_auth,
            )
            handed_over = False
            try:
                if resp.status >= 300:
                    raise await _status_failure(resp)
                pending = b""
                content = resp.content
                idle = _Idle(resp, self.timeout_seconds)
                try:
                    while True:
                        block = await content.read(READ_BYTES)
                        idle.read()
                        if not block:
                            break
                        lines = (pending + block).split(b"\n")
                        pending = lines.pop()
                        for line in lines:
                            if not line.startswith(b"data:"):
                                continue  # comments, event:/id: fields, blank separators
                            data = line[5:].strip()
                            if data == b"[DONE]":
                                handed_over = self._release_once_ended(resp)
                                return
                            event = orjson.loads(data)
                            if isinstance(event, dict):
                                if "error" in event:
                                    raise _in_stream_error(event["error"])
                                yield event
                        if len(block) == READ_BYTES:
                            await asyncio.sleep(0)  # a backlog: let the other streams write
                finally:
                    idle.cancel()
            finally:
                if not handed_over:
                    # At the body's end the connection goes back to the pool; before it
                    # (a stop, an error) it is dropped, which stops the model generating.
                    resp.release()
        except AgentError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise AgentError("timeout", "the agent did not answer in time", retryable=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise AgentError(
                "network", f"could not reach the agent ({type(exc).__name__})", retryable=True
            ) from exc
        except orjson.JSONDecodeError as exc:
            raise AgentError(
                "server_error", "the agent sent a malformed event", retryable=True
            ) from exc

    def _release_once_ended(self, resp: aiohttp.ClientResponse) -> bool:
        """Give ``resp``'s connection back once its body has ended, without waiting here.

        ``[DONE]`` completes the answer, but the body's end (the chunked terminator) often
        comes in a later packet; released before it, aiohttp would drop the connection,
        and every reply would open a new one (issue 10: a TCP, and TLS, handshake per
        answer). So the rest of the body is read in the background, for at most
        :data:`DRAIN_SECONDS`; a body still open then is dropped. True if handed over.
        """
        if resp.content.is_eof():
            return False  # ended already: the caller's release keeps the connection
        task = asyncio.create_task(_drain(resp), name="worker.agent_drain")
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        return True


async def _drain(resp: aiohttp.ClientResponse) -> None:
    """Read (and ignore) what follows ``[DONE]`` until the body ends, then release."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while await resp.content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError, OSError):
        resp.close()  # never ended: not reusable
    except asyncio.CancelledError:
        resp.close()
        raise
    else:
        resp.release()


class _Idle:
    """The body's read timeout: a stream that sends nothing for ``seconds`` fails with
    :class:`aiohttp.ServerTimeoutError`, as with ``sock_read``. Its timer is moved only
    when it fires (to the last read's time plus ``seconds``, or now if bytes came that
    were not read yet), not at every packet."""

    def __init__(self, resp: aiohttp.ClientResponse, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._content = resp.content
        self._seconds = seconds
        self.last = self._loop.time()
        self._seen = self._content.total_bytes
        if resp.connection is not None and resp.connection.protocol is not None:
            resp.connection.protocol.read_timeout = None  # the next packet drops its timer
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(
            self.last + seconds, self._check
        )

    def read(self) -> None:
        """A read returned data: the idle time starts again."""
        self.last = self._loop.time()

    def cancel(self) -> None:
        """Stop watching."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        if self._content.total_bytes != self._seen:  # bytes came, not read yet: alive
            self._seen = self._content.total_bytes
            self.last = self._loop.time()
        due = self.last + self._seconds
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check)
            return
        self._timer = None
        self._content.set_exception(
            aiohttp.ServerTimeoutError("Timeout on reading data from socket")
        )


async def _status_failure(resp: aiohttp.ClientResponse) -> AgentError:
    try:
        raw = await resp.read()
        parsed = orjson.loads(raw) if raw else None
    except (aiohttp.ClientError, orjson.JSONDecodeError):
        parsed = None
    message = f"Error code: {resp.status}"
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]
    return status_error(resp.status, message, resp.headers.get("retry-after"))


def _in_stream_error(err: Any) -> AgentError:
    message = err.get("message") if isinstance(err, dict) else None
    if not isinstance(message, str) or not message:
        message = "An error occurred during streaming"
    return AgentError("server_error", " ".join(message.split())[:200], retryable=True)
