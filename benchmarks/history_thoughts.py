"""What "thoughts in history" costs a history request (issue 14).

``.venv/bin/python -m benchmarks.history_thoughts [--exchanges 100] [--chunks 40] [--rounds 20]``

A private redis-server and a gateway (no worker) are started through ``demo.launcher``. One
chat is filled the way the worker writes it: per exchange a visitor message, a tool call
(started, done), 10 reasoning pieces, ``--chunks`` chunks and Terra's reply. Then the newest
history page is fetched ``--rounds`` times without and with ``?v=2`` (which reads the event
log back for each reply's tool calls and reasoning): median and worst time, and bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import aiohttp

from bus import BusKeys, ChatLog
from bus.chatlog import ChatLimits
from bus.client import create_redis
from bus.schemas import ReasoningProduced, ToolCallUpdated, encode
from demo.launcher import Launcher, LaunchOptions, free_port

__all__ = ["main"]

CODE = "history-thoughts-benchmark-code"
CHAT = "history-thoughts"


async def fill(redis_url: str, exchanges: int, chunks: int) -> int:
    """Write the chat; returns how many events its log holds."""
    redis = create_redis(redis_url, client_name="benchmark")
    log = ChatLog(redis, BusKeys(), ChatLimits(events_maxlen=100_000))
    try:
        for n in range(exchanges):
            question = (await log.accept_visitor_message(CHAT, f"Question {n}?")).message["id"]
            for status, detail in (("started", None), ("done", "0.2 s")):
                event = ToolCallUpdated(
                    chatId=CHAT,
                    replyTo=question,
                    callId=f"c{n}",
                    name="search_site",
                    status=status,
                    detail=detail,
                )
                await log.append_event(CHAT, encode(event))
            for _ in range(10):
                piece = ReasoningProduced(chatId=CHAT, replyTo=question, content="Let me think. ")
                await log.append_event(CHAT, encode(piece))
            for _ in range(chunks):
                await log.append_chunk(CHAT, question, "terrarium moss ")
            await log.finish_reply(CHAT, question, "terrarium moss " * chunks)
        return int(await redis.xlen(BusKeys().chat_events(CHAT)))
    finally:
        await redis.aclose()


async def measure(base: str, rounds: int, v2: bool) -> dict[str, Any]:
    url = f"{base}api/chat/{CHAT}/messages"
    params = {"accessCode": CODE, **({"v": "2"} if v2 else {})}
    times: list[float] = []
    size = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(rounds):
            started = time.perf_counter()
            async with session.get(url, params=params) as response:
                body = await response.read()
                assert response.status == 200, body[:200]
            times.append((time.perf_counter() - started) * 1000)
            size = len(body)
    return {
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    launcher = Launcher(LaunchOptions(port=free_port(), access_code=CODE, workers=0, quiet=True))
    try:
        launcher.start()
        events = asyncio.run(fill(launcher.redis_url, args.exchanges, args.chunks))
        plain = asyncio.run(measure(launcher.url, args.rounds, v2=False))
        thoughts = asyncio.run(measure(launcher.url, args.rounds, v2=True))
    finally:
        launcher.stop()
    print(f"chat: {args.exchanges} exchanges, {events} events in its log")
    print(f"history           : {plain}")
    print(f"history with v=2  : {thoughts}")


if __name__ == "__main__":
    main()
