"""What one abusive client can still cost (issue 11's closing figures).

``.venv/bin/python -m benchmarks.one_client [--seconds 60] [--json]``

A private redis-server and a gateway process (``TRUSTED_PROXIES=127.0.0.1``, default
budgets) are started through ``demo.launcher``; no worker, so nothing is answered and
every stored byte stays. One client, rotating its address through one IPv6 /64 as the
security review did (``X-Forwarded-For``), then:

1. posts maximum-size messages (4,000 emoji) to new chats for ``--seconds``: accepted
   count and Redis ``used_memory`` growth, i.e. the bytes one client makes Redis keep;
2. against a chat of 200 maximum-size messages, opens WebSockets until refused, then
   fires 240 concurrent history GETs: statuses, and the gateway's RSS before and at its
   peak (``VmHWM``), i.e. the most gateway memory one client can cause.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bus import BusKeys, ChatLog
from bus.chatlog import ChatLimits
from bus.client import create_redis
from demo.launcher import Launcher, LaunchOptions, free_port, redis_url

__all__ = ["main"]

CODE = "one-client-benchmark-code"
BIG = "🌱" * 4000


def vm_kb(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM`` figure of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def client_address(i: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"2001:db8:1:2::{i % 65535 + 1:x}"}


async def flood_posts(base: str, seconds: float) -> Counter[int]:
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    i = 0
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            i += 1
            async with s.post(
                f"{base}/api/chat/flood{i}/messages",
                json={"content": BIG, "accessCode": CODE, "clientMessageId": f"m{i}"},
                headers=client_address(i),
            ) as r:
                statuses[r.status] += 1
                if r.status == 429:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")) / 4)
    return statuses


async def memory_burst(base: str, pid: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        while len(sockets) < 1000:
            try:
                sockets.append(
                    await s.ws_connect(
                        f"{base}/api/chat?chatId=big&accessCode={CODE}",
                        headers=client_address(len(sockets)),
                    )
                )
            except aiohttp.WSServerHandshakeError:
                break
        rss_before = vm_kb(pid, "VmRSS")

        async def read(i: int) -> int:
            async with s.get(
                f"{base}/api/chat/big/messages",
                params={"accessCode": CODE},
                headers=client_address(i),
            ) as r:
                await r.read()
                return r.status

        statuses = Counter(await asyncio.gather(*(read(i) for i in range(240))))
        peak = vm_kb(pid, "VmHWM")
        for ws in sockets:
            await ws.close()
    return {
        "sockets_held": len(sockets),
        "history_get_statuses": dict(statuses),
        "gateway_rss_mb_before_reads": round(rss_before / 1024, 1),
        "gateway_rss_mb_peak": round(peak / 1024, 1),
    }


async def run(seconds: float) -> dict[str, Any]:
    launcher = Launcher(LaunchOptions(access_code=CODE, quiet=True))
    try:
        redis_child = launcher.add_redis(appendonly=False)
        url = redis_url(redis_child)
        launcher.redis_url = url
        port = free_port()
        gateway = launcher.add_gateway(
            "gateway", port, {"TRUSTED_PROXIES": "127.0.0.1", "BASE_PATH": ""}
        )
        base = f"http://127.0.0.1:{port}"
        redis = create_redis(url, client_name="benchmark")
        # The chat the memory burst reads is seeded past CHAT_MAX_BYTES on purpose: the
        # figure is the gateway's memory for the largest history page, as before the cap.
        log = ChatLog(redis, BusKeys(), ChatLimits(chat_max_bytes=2**40))
        before = int((await redis.info("memory"))["used_memory"])
        statuses = await flood_posts(base, seconds)
        after = int((await redis.info("memory"))["used_memory"])
        for i in range(200):
            await log.accept_visitor_message("big", f"{i} {BIG[:-2]}")
        memory = await memory_burst(base, gateway.pid)
        await redis.aclose()
        return {
            "seconds": seconds,
            "post_statuses": dict(statuses),
            "redis_bytes_kept": after - before,
            "redis_bytes_kept_per_minute": round((after - before) * 60 / seconds),
            **memory,
        }
    finally:
        launcher.stop()


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(run(args.seconds))
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")


if __name__ == "__main__":
    main()
