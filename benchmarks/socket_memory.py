"""RSS per idle WebSocket (or SSE stream) after a warm-up: the gateway next to the bare
forwarder, same run.

``python -m benchmarks.socket_memory [--sockets 1000] [--chats 100] [--rounds 3]
[--transport ws|sse]``

``benchmarks.fanout`` measures RSS before any socket and after all of them: that includes
what the first sockets and chats cost once (code paths, per-chat state, buffers). This one
first opens one socket per chat and lets each receive a frame, then opens ``--sockets``
more over the same chats, lets every socket receive a frame, and divides the RSS growth by
``--sockets``: the marginal cost of an idle socket, which bounds sockets per process. It
also prints the growth from before the first socket (what ``benchmarks.fanout`` reports).
The clients live in this process (one aiohttp session); servers and Redis are started as
``benchmarks.fanout`` starts them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp

from benchmarks.fanout import (
    ACCESS_CODE,
    CHILDREN,
    Server,
    publishing,
    raise_open_file_limit,
    rss_bytes,
    socket_url,
    start_gateway,
    start_raw,
)
from bus import BusSettings
from demo.launcher import Launcher, LaunchOptions, redis_url

__all__ = ["main"]


class _Socket:
    """One client socket (WebSocket or SSE stream) that can wait for its next frame."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse | None, sse: aiohttp.ClientResponse | None
    ) -> None:
        self.ws, self.sse = ws, sse

    async def frame(self) -> None:
        if self.ws is not None:
            msg = await asyncio.wait_for(self.ws.receive(), 30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"a socket got {msg.type!r}, not a frame")
            return
        assert self.sse is not None
        async with asyncio.timeout(30):
            while not (await self.sse.content.readline()).startswith(b"data:"):
                pass

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.sse is not None:
            self.sse.close()


async def _per_socket_kib(
    kind: str, server: Server, url: str, args: argparse.Namespace
) -> tuple[float, float]:
    """``(KiB per socket after the warm-up, KiB per socket from before the first socket)``."""
    settings = BusSettings(_env_file=None, redis_url=url)
    chats = [f"mem-{i}" for i in range(args.chats)]
    target = socket_url(kind, server.port, args.transport)
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        publishing(kind, settings, 8) as (send, _),
    ):

        async def send_all() -> None:
            for chat in chats:
                await send(chat, "x")

        async def open_one(chat: str) -> _Socket:
            if args.transport == "sse":
                timeout = aiohttp.ClientTimeout(total=None)
                return _Socket(None, await session.get(target.format(chat=chat), timeout=timeout))
            return _Socket(await session.ws_connect(target.format(chat=chat)), None)

        async def connect(n: int) -> list[_Socket]:
            return [await open_one(chats[i % len(chats)]) for i in range(n)]

        async def all_receive(sockets: list[_Socket]) -> None:
            for sock in sockets:
                await sock.frame()

        await asyncio.sleep(0.5)
        empty = rss_bytes(server.pid)
        warm = await connect(len(chats))
        await asyncio.sleep(0.5)
        await send_all()
        await all_receive(warm)
        await asyncio.sleep(0.5)
        before = rss_bytes(server.pid)
        sockets = await connect(args.sockets)
        await asyncio.sleep(0.5)
        await send_all()
        await all_receive(warm + sockets)
        await asyncio.sleep(0.5)
        after = rss_bytes(server.pid)
        for sock in warm + sockets:
            await sock.close()
    sockets_measured: int = args.sockets
    return (
        (after - before) / sockets_measured / 1024,
        (after - empty) / (sockets_measured + len(chats)) / 1024,
    )


Pair = tuple[float, float]


async def run(args: argparse.Namespace, workdir: Path) -> list[tuple[Pair, Pair]]:
    """``[((gateway KiB, raw KiB) after warm-up, (gateway, raw) from empty)]`` per round,
    each side on a fresh server."""
    launcher = Launcher(LaunchOptions(access_code=ACCESS_CODE, quiet=True, workdir=workdir))
    CHILDREN.stoppers.append(launcher.stop)
    redis = launcher.add_redis(appendonly=False)
    launcher.redis_url = redis_url(redis)
    fanout_args = argparse.Namespace(gateway_log_level="WARNING", queue_size=None)
    out = []
    for _ in range(args.rounds):
        pair = {}
        for kind in ("gateway", "raw"):
            server = (
                start_gateway(launcher, fanout_args) if kind == "gateway" else start_raw(launcher)
            )
            try:
                await server.wait_ready("/readyz" if kind == "gateway" else "/healthz")
                pair[kind] = await _per_socket_kib(kind, server, launcher.redis_url, args)
            finally:
                server.stop()
        (gw_warm, gw_empty), (raw_warm, raw_empty) = pair["gateway"], pair["raw"]
        out.append(((gw_warm, raw_warm), (gw_empty, raw_empty)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.socket_memory", description=__doc__)
    p.add_argument("--sockets", type=int, default=1000, help="sockets measured (1000)")
    p.add_argument("--chats", type=int, default=100, help="chats they spread over (100)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians reported (3)")
    p.add_argument("--transport", choices=("ws", "sse"), default="ws", help="socket kind (ws)")
    args = p.parse_args(argv)
    raise_open_file_limit(4 * args.sockets + 1024)
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        try:
            rounds = asyncio.run(run(args, Path(tmp)))
        finally:
            CHILDREN.stop_all()
    what = "socket" if args.transport == "ws" else "SSE stream"
    for i, ((gw, raw), (gw0, raw0)) in enumerate(rounds, 1):
        print(
            f"round {i}: gateway {gw:.2f} KiB, bare {raw:.2f} KiB per idle {what} "
            f"({gw / raw:.2f}x); from before the first: {gw0:.2f} vs {raw0:.2f} KiB "
            f"({gw0 / raw0:.2f}x)"
        )
    for label, index in (("after warm-up", 0), ("from before the first one", 1)):
        gw = statistics.median(r[index][0] for r in rounds)
        raw = statistics.median(r[index][1] for r in rounds)
        ratio = statistics.median(r[index][0] / r[index][1] for r in rounds)
        print(
            f"RSS per idle {what} {label} ({args.sockets} over {args.chats} chats, "
            f"median of {len(rounds)}): gateway {gw:.2f} KiB, bare {raw:.2f} KiB ({ratio:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
