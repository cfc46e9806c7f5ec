"""The baseline of the fan-out benchmark: the least code that relays Redis pub/sub to sockets.

One aiohttp process, ONE Redis pub/sub connection (subscribed to a channel the first time a
socket asks for it), and one loop that forwards every published message, as is, to the
sockets of its channel with a sequential ``await ws.send_str``. No access check, no log,
no resume, no queue, no metrics, no slow-reader policy: what is left is the cost of
aiohttp + redis-py themselves, which the gateway is compared against.

``python -m benchmarks.raw_server --port P --redis-url URL [--prefix bench:raw:]``

Routes: ``GET /ws?chatId=<id>`` (WebSocket) and ``GET /healthz``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

__all__ = ["DEFAULT_PREFIX", "build_app", "main"]

DEFAULT_PREFIX = "bench:raw:"

_SOCKETS = web.AppKey("sockets", dict[str, set[web.WebSocketResponse]])
_REDIS = web.AppKey("redis", Redis)


def build_app(redis_url: str, prefix: str = DEFAULT_PREFIX) -> web.Application:
    """The baseline application (the pub/sub reader starts with it)."""
    app = web.Application()
    sockets: dict[str, set[web.WebSocketResponse]] = {}
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
            for ws in list(sockets.get(message["channel"], ())):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(message["data"])

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
    app.add_routes([web.get("/ws", chat_socket), web.get("/healthz", healthz)])
    return app


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
