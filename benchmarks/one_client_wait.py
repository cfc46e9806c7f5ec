"""Another visitor's worst wait while one client floods Terra (issue 11's closing figure).

``.venv/bin/python -m benchmarks.one_client_wait [--flood-seconds 40] [--json]``

Starts a private redis-server, the demo agent, one gateway (``TRUSTED_PROXIES=127.0.0.1``,
default per-client budgets but reads) and one worker (``MAX_CONCURRENT_CHATS`` 2) through
``demo.launcher``. A visitor (its own address) sends ``--asks`` short messages one after
the other, each to a new chat, and times each from the POST to Terra's stored reply:

1. alone: the no-flood baseline;
2. while one client, rotating through one IPv6 /64 as the security review did, keeps
   posting slow requests (each about ``--flood-reply-seconds`` of streaming) to new chats,
   backing off as its 429s ask: the flood's accepted and refused posts, and the visitor's
   waits.

The same run prints both, so "worst wait" compares like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

import aiohttp

from demo.launcher import Launcher, LaunchOptions, free_port, redis_url

__all__ = ["main"]

CODE = "one-client-wait-benchmark-code"
VISITOR = {"X-Forwarded-For": "203.0.113.50"}


def flood_address(i: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"2001:db8:1:2::{i % 65535 + 1:x}"}


async def reply_time(http: aiohttp.ClientSession, base: str, chat_id: str) -> float:
    """Seconds from the visitor's POST to Terra's stored reply."""
    started = time.monotonic()
    async with http.post(
        f"{base}/api/chat/{chat_id}/messages",
        json={"content": "[[demo:tokens=8]] Hello Terra, are you there?", "accessCode": CODE},
        headers=VISITOR,
    ) as r:
        r.raise_for_status()
    while True:
        async with http.get(
            f"{base}/api/chat/{chat_id}/messages", params={"accessCode": CODE}, headers=VISITOR
        ) as r:
            messages = await r.json()
        if any(m.get("sender") == "Terra" for m in messages):
            return time.monotonic() - started
        await asyncio.sleep(0.05)


async def visitor(base: str, label: str, asks: int) -> list[float]:
    async with aiohttp.ClientSession() as http:
        return [round(await reply_time(http, base, f"visitor-{label}-{i}"), 2) for i in range(asks)]


async def flood(base: str, stop: asyncio.Event, reply_seconds: float) -> Counter[int]:
    """Slow requests to new chats as fast as the gateway takes them."""
    delay_ms = 50
    tokens = max(1, int(reply_seconds * 1000 / delay_ms))
    content = f"[[demo:tokens={tokens}]] [[demo:delay={delay_ms}]] Tell me everything."
    statuses: Counter[int] = Counter()
    i = 0
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            i += 1
            async with http.post(
                f"{base}/api/chat/flood-{i}/messages",
                json={"content": content, "accessCode": CODE},
                headers=flood_address(i),
            ) as r:
                statuses[r.status] += 1
                if r.status in (429, 503):
                    wait = float(r.headers.get("Retry-After", "1"))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), min(wait, 2.0))
    return statuses


async def run(flood_seconds: float, asks: int, flood_reply_seconds: float) -> dict[str, Any]:
    launcher = Launcher(LaunchOptions(access_code=CODE, quiet=True))
    try:
        launcher.redis_url = redis_url(launcher.add_redis(appendonly=False))
        agent_port = free_port()
        launcher.add_agent(agent_port)
        launcher.agent_url = f"http://127.0.0.1:{agent_port}/v1/chat/completions"
        port = free_port()
        launcher.add_gateway(
            "gateway",
            port,
            {
                "TRUSTED_PROXIES": "127.0.0.1",
                "BASE_PATH": "",
                "RATE_LIMIT_READS_PER_IP": "1000000",  # the visitor polls for its reply
                "READS_IN_FLIGHT_PER_CLIENT": "1000",
            },
        )
        launcher.add_worker("worker0", {"WORKER_NAME": "bench-worker", "MAX_CONCURRENT_CHATS": "2"})
        base = f"http://127.0.0.1:{port}"
        await visitor(base, "warmup", 1)
        baseline = await visitor(base, "alone", asks)

        stop = asyncio.Event()
        flooding = asyncio.create_task(flood(base, stop, flood_reply_seconds))
        await asyncio.sleep(min(5.0, flood_seconds / 4))  # let the flood's backlog build
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flood_seconds
        during: list[float] = []
        while loop.time() < deadline or not during:
            during += await visitor(base, f"flood{len(during)}", 1)
        stop.set()
        statuses = await flooding
        return {
            "flood_reply_seconds": flood_reply_seconds,
            "worker_slots": 2,
            "visitor_wait_seconds_alone": baseline,
            "visitor_worst_wait_seconds_alone": max(baseline),
            "visitor_wait_seconds_during_flood": during,
            "visitor_worst_wait_seconds_during_flood": max(during),
            "flood_post_statuses": dict(statuses),
        }
    finally:
        launcher.stop()


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood-seconds", type=float, default=40.0)
    parser.add_argument("--asks", type=int, default=3)
    parser.add_argument("--flood-reply-seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(run(args.flood_seconds, args.asks, args.flood_reply_seconds))
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")


if __name__ == "__main__":
    main()
