"""The agent call's CPU cost, three ways, against the demo agent on loopback (issue 10).

``python -m benchmarks.agent_call [--requests 200] [--tokens 2000]``

Measures this process's CPU (``time.process_time``) per short request (a 2-token reply,
the worker's real request shape: system prompt, 16 turns, 10 tool schemas) and per token
of a long reply, for:

* ``openai``: ``AsyncOpenAI.chat.completions.create(stream=True)``, the worker's old path;
* ``openai-raw``: the same client's low-level ``post`` with a pre-serialised body
  (``content=bytes``, no request transform), lines read from the raw httpx response and
  parsed with orjson;
* ``aiohttp``: :class:`worker.agent_stream.AgentStreamer` (aiohttp + orjson), the path the
  worker uses.

The demo agent runs in a child process so its CPU is not counted. Read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import orjson
from openai import AsyncOpenAI

from demo.launcher import free_port
from worker.agent_stream import AgentStreamer

__all__ = ["main"]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": "A tool the worker offers, with a schema of a realistic size. " * 3,
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "what to look for"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 20},
                },
                "required": ["query"],
            },
        },
    }
    for i in range(10)
]


def request_messages(text: str) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are Terra. " * 40}]
    for i in range(8):
        history.append({"role": "user", "content": f"question {i} about the site " * 5})
        history.append({"role": "assistant", "content": f"answer {i} with some detail " * 12})
    history.append({"role": "user", "content": text})
    return history


async def via_openai(client: AsyncOpenAI, text: str) -> int:
    stream = await client.chat.completions.create(  # type: ignore[call-overload]
        model="m",
        messages=request_messages(text),
        temperature=0.7,
        stream=True,
        tools=TOOLS,
        tool_choice="auto",
    )
    n = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            n += 1
    return n


async def via_openai_raw(client: AsyncOpenAI, text: str) -> int:
    body = orjson.dumps(
        {
            "model": "m",
            "messages": request_messages(text),
            "temperature": 0.7,
            "stream": True,
            "tools": TOOLS,
            "tool_choice": "auto",
        }
    )
    response = await client.post(
        "/chat/completions",
        cast_to=httpx2.Response,
        content=body,
        stream=True,
        stream_cls=None,
        options={"headers": {"Content-Type": "application/json"}},
    )
    n = 0
    try:
        async for line in response.aiter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                event = orjson.loads(line[5:])
                choices = event.get("choices")
                if choices and (choices[0].get("delta") or {}).get("content"):
                    n += 1
    finally:
        await response.aclose()
    return n


async def via_aiohttp(streamer: AgentStreamer, text: str) -> int:
    body = orjson.dumps(
        {
            "model": "m",
            "messages": request_messages(text),
            "temperature": 0.7,
            "stream": True,
            "tools": TOOLS,
            "tool_choice": "auto",
        }
    )
    n = 0
    async for event in streamer.events(body):
        choices = event.get("choices")
        if choices and (choices[0].get("delta") or {}).get("content"):
            n += 1
    return n


async def cpu_per(
    call: Callable[[str], Awaitable[int]], text: str, times: int
) -> tuple[float, int]:
    await call(text)  # warm the connection pool
    tokens = 0
    t0 = time.process_time()
    for _ in range(times):
        tokens += await call(text)
    return time.process_time() - t0, tokens


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "demo.agent",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--token-delay-ms",
        "0",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        client = AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)
        streamer = AgentStreamer(base, None, 30)
        ways: dict[str, Callable[[str], Awaitable[int]]] = {
            "openai": lambda t: via_openai(client, t),
            "openai-raw": lambda t: via_openai_raw(client, t),
            "aiohttp": lambda t: via_aiohttp(streamer, t),
        }
        out: dict[str, dict[str, float]] = {}
        for name, call in ways.items():
            short, _ = await cpu_per(call, "[[demo:echo]] hi there", args.requests)
            long, tokens = await cpu_per(call, f"x [[demo:tokens={args.tokens}]]", 3)
            out[name] = {
                "ms_per_short_request": short / args.requests * 1000,
                "us_per_token": long / max(tokens, 1) * 1e6,
            }
        await streamer.aclose()
        await client.close()
        return out
    finally:
        proc.terminate()
        await proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.agent_call", description=__doc__)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--tokens", type=int, default=2000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'path':<12} {'CPU ms / short request':>24} {'CPU µs / token':>16}")
    for name, fig in out.items():
        print(f"{name:<12} {fig['ms_per_short_request']:>24.2f} {fig['us_per_token']:>16.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
