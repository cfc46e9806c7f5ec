"""The baseline of the fan-out benchmark: the least code that relays Redis pub/sub to sockets.

One aiohttp process, ONE Redis pub/sub connection (subscribed to a channel the first time a
socket asks for it), and one loop that forwards every published message, as is, to the
sockets of its channel with a sequential ``await ws.send_str``. No access check, no log,
no resume, no queue, no metrics, no slow-reader policy: what is left is the cost of
aiohttp + redis-py themselves, which the gateway is compared against.

``python -m benchmarks.raw_server --port P --redis-url URL [--prefix bench:raw:]``

Routes: ``GET /ws?chatId=<id>`` (WebSocket), ``GET /sse?chatId=<id>`` (the same frames as
Server-Sent Events, ``data: <frame>``, each an ``await response.write``) and ``GET /healthz``.
Its feed, :class:`RawPublisher`, is as bare: one ``PUBLISH`` of the frame text per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from bus.schemas import ChunkProduced, encode, iso_now, render_frame

__all__ = ["DEFAULT_PREFIX", "RawPublisher", "build_app", "main"]

DEFAULT_PREFIX = "bench:raw:"

_SOCKETS = web.AppKey("sockets", dict[str, set[web.WebSocketResponse | web.StreamResponse]])
_REDIS = web.AppKey("redis", Redis)


def build_app(redis_url: str, prefix: str = DEFAULT_PREFIX) -> web.Application:
    """The baseline application (the pub/sub reader starts with it)."""
    app = web.Application()
    sockets: dict[str, set[web.WebSocketResponse | web.StreamResponse]] = {}
    app[_SOCKETS] = sockets
    redis = Redis.from_url(redis_url, decode_responses=True)
    app[_REDIS] = redis
    pubsub = redis.pubsub(ignore_subscribe_messages=True)

    async def forward() -> None:
        await pubsub.subscribe(prefix + "-")  # connect and enter pub/sub mode
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None or message["type"] != "message":
                continue
            sse: bytes | None = None
            for ws in list(sockets.get(message["channel"], ())):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    if isinstance(ws, web.WebSocketResponse):
                        await ws.send_str(message["data"])
                    else:
                        sse = sse or b"data: " + message["data"].encode() + b"\n\n"
                        await ws.write(sse)

    async def chat_socket(request: web.Request) -> web.WebSocketResponse:
        channel = prefix + request.query.get("chatId", "")
        ws = web.WebSocketResponse(max_msg_size=4096)
        await ws.prepare(request)
        subscribers = sockets.get(channel)
        if subscribers is None:
            subscribers = sockets[channel] = set()
            await pubsub.subscribe(channel)
        subscribers.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            subscribers.discard(ws)
        return ws

    async def chat_events(request: web.Request) -> web.StreamResponse:
        channel = prefix + request.query.get("chatId", "")
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        await stream.write(b": hi\n\n")  # the headers go out
        subscribers = sockets.get(channel)
        if subscribers is None:
            subscribers = sockets[channel] = set()
            await pubsub.subscribe(channel)
        subscribers.add(stream)
        try:
            await asyncio.get_running_loop().create_future()  # until the client leaves
        finally:
            subscribers.discard(stream)
        return stream

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def reader(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(forward())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
        await redis.aclose()

    app.cleanup_ctx.append(reader)
    app.add_routes(
        [
            web.get("/ws", chat_socket),
            web.get("/sse", chat_events),
            web.get("/healthz", healthz),
        ]
    )
    return app


class RawPublisher:
    """The baseline's feed: the frame text the gateway would send for a chunk, one PUBLISH."""

    def __init__(
        self,
        redis_url: str,
        *,
        reply_to: str,
        prefix: str = DEFAULT_PREFIX,
        max_connections: int = 64,
    ) -> None:
        self._redis = Redis.from_url(
            redis_url, decode_responses=True, max_connections=max_connections
        )
        self._reply_to = reply_to
        self._prefix = prefix
        self._seq = itertools.count()

    async def send(self, chat: str, content: str) -> None:
        """Publish one chunk frame (rendered as the gateway renders a stored chunk)."""
        chunk = ChunkProduced(
            chatId=chat, content=content, done=False, emittedAt=iso_now(), replyTo=self._reply_to
        )
        event_id = f"{int(time.time() * 1000)}-{next(self._seq)}"
        frame = render_frame(encode(chunk), event_id)
        await self._redis.publish(self._prefix + chat, json.dumps(frame, separators=(",", ":")))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def main() -> None:
    """Run the baseline server until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    args = parser.parse_args()
    web.run_app(
        build_app(args.redis_url, args.prefix),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=2.0,
    )


if __name__ == "__main__":
    main()
