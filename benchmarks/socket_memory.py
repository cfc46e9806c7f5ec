"""RSS per idle WebSocket after a warm-up: the gateway next to the bare forwarder, same run.

``python -m benchmarks.socket_memory [--sockets 1000] [--chats 100] [--rounds 3]``

``benchmarks.fanout`` measures RSS before any socket and after all of them: that includes
what the first sockets and chats cost once (code paths, per-chat state, buffers). This one
first opens one socket per chat and lets each receive a frame, then opens ``--sockets``
more over the same chats, lets every socket receive a frame, and divides the RSS growth by
``--sockets``: the marginal cost of an idle socket, which bounds sockets per process. The
clients live in this process (one aiohttp session); servers and Redis are started as
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
    start_gateway,
    start_raw,
)
from bus import BusSettings
from demo.launcher import Launcher, LaunchOptions, redis_url

__all__ = ["main"]


async def _per_socket_kib(kind: str, server: Server, url: str, args: argparse.Namespace) -> float:
    settings = BusSettings(_env_file=None, redis_url=url)
    chats = [f"mem-{i}" for i in range(args.chats)]
    if kind == "gateway":
        path = f"/api/chat?chatId={{chat}}&accessCode={ACCESS_CODE}&v=2"
    else:
        path = "/ws?chatId={chat}"
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        publishing(kind, settings, 8) as (send, _),
    ):

        async def send_all() -> None:
            for chat in chats:
                await send(chat, "x")

        async def connect(n: int) -> list[aiohttp.ClientWebSocketResponse]:
            base = f"http://127.0.0.1:{server.port}"
            return [
                await session.ws_connect(base + path.format(chat=chats[i % len(chats)]))
                for i in range(n)
            ]

        async def all_receive(sockets: list[aiohttp.ClientWebSocketResponse]) -> None:
            for ws in sockets:
                msg = await asyncio.wait_for(ws.receive(), 30)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"{kind}: a socket got {msg.type!r}, not a frame")

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
        for ws in warm + sockets:
            await ws.close()
    sockets_measured: int = args.sockets
    return (after - before) / sockets_measured / 1024


async def run(args: argparse.Namespace, workdir: Path) -> list[tuple[float, float]]:
    """``[(gateway KiB, raw KiB)]`` per round, each side on a fresh server."""
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
        out.append((pair["gateway"], pair["raw"]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.socket_memory", description=__doc__)
    p.add_argument("--sockets", type=int, default=1000, help="sockets measured (1000)")
    p.add_argument("--chats", type=int, default=100, help="chats they spread over (100)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians reported (3)")
    args = p.parse_args(argv)
    raise_open_file_limit(4 * args.sockets + 1024)
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        try:
            rounds = asyncio.run(run(args, Path(tmp)))
        finally:
            CHILDREN.stop_all()
    for i, (gw, raw) in enumerate(rounds, 1):
        print(
            f"round {i}: gateway {gw:.2f} KiB, bare {raw:.2f} KiB per idle socket ({gw / raw:.2f}x)"
        )
    gw = statistics.median(g for g, _ in rounds)
    raw = statistics.median(r for _, r in rounds)
    ratio = statistics.median(g / r for g, r in rounds)
    print(
        f"RSS per idle socket after warm-up ({args.sockets} sockets over {args.chats} chats, "
        f"median of {len(rounds)}): gateway {gw:.2f} KiB, bare {raw:.2f} KiB ({ratio:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
