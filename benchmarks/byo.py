"""Bring your own model against Terra, through the same demo agent (issue 15).

``python -m benchmarks.byo [--messages 30] [--stops 10]``

Starts the demo (``python -m demo --byo``: Redis, the offline demo agent, a gateway and a
worker) and, for each path, sends ``--messages`` messages one after another on one chat
followed over a WebSocket, timing from the POST to the first ``assistantChunk`` frame and to
the stored answer. The BYO path streams from the gateway; the Terra path goes through the
jobs stream and the worker. Then ``--stops`` slow answers of each kind are stopped mid-stream,
timing the cancel POST to the stopped Message. Prints medians and 90th percentiles in ms.
It is a script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from typing import Any

import aiohttp

from demo.agent import DEFAULT_MODEL
from demo.launcher import Launcher, LaunchOptions, free_port

__all__ = ["main"]

CODE = "benchmark-code"


class Chat:
    """One chat followed over a WebSocket, posting on the BYO or the Terra route."""

    def __init__(self, session: aiohttp.ClientSession, base: str, byo: bool) -> None:
        self.s = session
        self.base = base
        self.byo = byo
        self.id = f"bench-{uuid.uuid4().hex[:12]}"
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        self.ws = await self.s.ws_connect(
            f"{self.base}api/chat", params={"chatId": self.id, "accessCode": CODE, "v": "2"}
        )

    async def post(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"accessCode": CODE, "content": text}
        path = "messages"
        if self.byo:
            path = "byo"
            body |= {"provider": "demo", "model": DEFAULT_MODEL, "apiKey": "benchmark-key"}
        async with self.s.post(f"{self.base}api/chat/{self.id}/{path}", json=body) as r:
            r.raise_for_status()
            return dict(await r.json())

    async def until(self, reply_to: str, *, first_chunk: bool) -> dict[str, Any]:
        assert self.ws is not None
        while True:
            frame = json.loads((await self.ws.receive(timeout=60)).data)
            if frame.get("replyTo") != reply_to:
                continue
            if first_chunk and frame.get("type") == "assistantChunk" and frame["content"]:
                return dict(frame)
            if frame.get("sender") == "Terra":
                return dict(frame)


async def answer_times(chat: Chat, count: int) -> tuple[list[float], list[float]]:
    first, whole = [], []
    for i in range(count):
        started = time.perf_counter()
        message = await chat.post(f"question {i} [[demo:tokens=40]] [[demo:delay=1]]")
        await chat.until(message["id"], first_chunk=True)
        first.append((time.perf_counter() - started) * 1000)
        await chat.until(message["id"], first_chunk=False)
        whole.append((time.perf_counter() - started) * 1000)
    return first, whole


async def stop_times(chat: Chat, count: int) -> list[float]:
    times = []
    for _ in range(count):
        message = await chat.post("go on [[demo:tokens=2000]] [[demo:delay=20]]")
        await chat.until(message["id"], first_chunk=True)
        started = time.perf_counter()
        async with chat.s.post(
            f"{chat.base}api/chat/{chat.id}/cancel", json={"accessCode": CODE}
        ) as r:
            r.raise_for_status()
        answer = await chat.until(message["id"], first_chunk=False)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.get("status") == "stopped", answer
    return times


def figures(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"median {statistics.median(ordered):7.1f}  p90 {p90:7.1f}"


async def run(base: str, messages: int, stops: int) -> None:
    async with aiohttp.ClientSession() as session:
        for label, byo in (("terra", False), ("byo", True)):
            chat = Chat(session, base, byo)
            await chat.open()
            await answer_times(chat, 2)  # warm-up
            first, whole = await answer_times(chat, messages)
            stopped = await stop_times(chat, stops)
            print(f"{label:6} POST -> first chunk  {figures(first)} ms  (n={messages})")
            print(f"{label:6} POST -> answer       {figures(whole)} ms  (40 pieces, 1 ms each)")
            print(f"{label:6} cancel -> stopped    {figures(stopped)} ms  (n={stops})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.byo", description=__doc__)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--stops", type=int, default=10)
    args = parser.parse_args(argv)
    launcher = Launcher(
        LaunchOptions(
            port=free_port(),
            access_code=CODE,
            quiet=True,
            byo=True,
            extra_env={"RATE_LIMIT_MAX_PER_IP": "100000", "RATE_LIMIT_MAX_PER_CHAT": "100000"},
        )
    )
    try:
        launcher.start()
        asyncio.run(run(launcher.url, args.messages, args.stops))
    finally:
        launcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
