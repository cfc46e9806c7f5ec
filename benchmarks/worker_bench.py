"""Worker benchmark: the project's worker next to a bare worker, measured in the same run.

``python -m benchmarks.worker_bench [--visitors 16] [--chats 100] [--tokens 300]
[--token-delay-ms 10] [--duration 8] [--rounds 1] [--json]``

Three loads, each run against ``python -m worker`` and against the bare worker (this file's
``--bare-child``: take a job through the bus, read the message, one aiohttp + orjson agent
call, the chunks of every chat in one XADD + PUBLISH pipeline per 35 ms tick, the answer and
the ack; no lease, no history, no retries, no logs):

1. ``exchange``: ``--visitors`` closed-loop visitors, one chat each, 2-token replies
   (``echo: hi``). Exchanges/s, and the worker's CPU per exchange.
2. ``latency``: one visitor, sequential: POST (the gateway's accept script, called through
   ``GatewayBus.accept_message``) -> the agent has the request, p50 and p99 (the agent
   stamps the arrival; same clock).
3. ``stream``: ``--chats`` chats streaming ``--tokens`` tokens each at ``--token-delay-ms``;
   the worker's CPU per streamed token and the tokens per chunk write.

CPU figures come from the processes' own counters (``/proc/<pid>/stat``) over the window;
the process at >= 85 % of a core is named as the one that bound the run. The agent is a
tiny timed server (``--agent-child``) in its own process. Read the ratios: the box is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from redis.asyncio import Redis

from bus import BusSettings, open_gateway_bus, open_worker_bus
from bus.keys import BusKeys
from bus.schemas import ChunkProduced, MessagePosted, encode, iso_now
from demo.launcher import Launcher, LaunchOptions, free_port, redis_url

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
BOUND_SHARE = 0.85


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --- the timed agent (child process) -------------------------------------------------------


def agent_app() -> web.Application:
    """An OpenAI-style streaming agent: ``t<N> d<MS>`` in the last user turn sets the reply."""
    arrivals: dict[str, float] = {}
    app = web.Application()

    async def complete(request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        body = orjson.loads(await request.read())
        text = next(
            (m.get("content") or "" for m in reversed(body["messages"]) if m["role"] == "user"),
            "",
        )
        words = str(text).split()
        tag = next((w for w in words if w.startswith("q")), "")
        tokens = next((int(w[1:]) for w in words if w.startswith("t") and w[1:].isdigit()), 2)
        delay = next((float(w[1:]) for w in words if w.startswith("d") and w[1:].isdigit()), 0)
        arrivals[tag] = arrived
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
        for i in range(tokens):
            delta = {"content": "hi " if i % 2 == 0 else "there "}
            event = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(b"data: " + orjson.dumps(event) + b"\n\n")
            if delay:
                await asyncio.sleep(delay / 1000)
        end = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(b"data: " + orjson.dumps(end) + b"\n\ndata: [DONE]\n\n")
        return resp

    async def take_arrivals(_request: web.Request) -> web.Response:
        out = dict(arrivals)
        arrivals.clear()
        return web.json_response(out)

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "data": [{"id": "m"}]})

    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_get("/_arrivals", take_arrivals)
    app.router.add_get("/health", ok)
    app.router.add_get("/v1/models", ok)
    return app


# --- the bare worker (child process) --------------------------------------------------------


async def bare_worker(redis_url_: str, agent_url: str, concurrency: int) -> None:
    """Answer jobs with the least code: see the module doc."""
    settings = BusSettings(_env_file=None, redis_url=redis_url_)
    keys = BusKeys(settings.redis_key_prefix)
    bus = open_worker_bus(settings, name="bare-worker", block_ms=1000)
    redis = Redis.from_url(redis_url_, decode_responses=True)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    pending: dict[str, list[str]] = {}
    slots = asyncio.Semaphore(concurrency)
    await bus.jobs.ensure_group()

    def chunk_cmds(pipe: Any, chat: str, reply_to: str, text: str, done: bool) -> None:
        data = encode(
            ChunkProduced(chatId=chat, content=text, done=done, emittedAt="", replyTo=reply_to)
        )
        pipe.xadd(keys.chat_events(chat), {"d": data})
        pipe.publish(keys.chat_channel(chat), f"0-0 0-0 {data}")

    async def flusher() -> None:
        while True:
            await asyncio.sleep(0.035)
            if not pending:
                continue
            pipe = redis.pipeline(transaction=False)
            for key, parts in pending.items():
                chat, _, reply_to = key.partition(" ")
                chunk_cmds(pipe, chat, reply_to, "".join(parts), False)
            pending.clear()
            await pipe.execute()

    async def answer(entry_id: str, chat: str, message_id: str) -> None:
        try:
            entries = await redis.xrevrange(keys.chat_messages(chat), count=1)  # closed loop
            text = orjson.loads(entries[0][1]["d"])["content"] if entries else ""
            body = orjson.dumps(
                {
                    "model": "m",
                    "stream": True,
                    "messages": [
                        {"role": "system", "content": "You are Terra."},
                        {"role": "user", "content": text},
                    ],
                }
            )
            key = f"{chat} {message_id}"
            parts: list[str] = []
            async with http.post(f"{agent_url}/v1/chat/completions", data=body) as resp:
                rest = b""
                async for block in resp.content.iter_any():
                    lines = (rest + block).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        if not line.startswith(b"data: ") or line == b"data: [DONE]":
                            continue
                        delta = orjson.loads(line[6:])["choices"][0]["delta"]
                        if delta.get("content"):
                            parts.append(delta["content"])
                            if key in pending:
                                pending[key].append(delta["content"])
                            else:
                                pending[key] = [delta["content"]]
            left = pending.pop(key, None)
            reply = MessagePosted(
                id="0-0",
                chatId=chat,
                sender="Terra",
                content="".join(parts),
                createdAt=iso_now(),
                replyTo=message_id,
                status="complete",
            )
            data = encode(reply)
            pipe = redis.pipeline(transaction=False)
            if left:
                chunk_cmds(pipe, chat, message_id, "".join(left), False)
            pipe.xadd(keys.chat_events(chat), {"d": data})
            pipe.hset(keys.chat_replies(chat), message_id, "0-0")
            pipe.publish(keys.chat_channel(chat), f"0-0 0-0 {data}")
            pipe.xack(keys.jobs_stream(0), keys.jobs_group, entry_id)
            await pipe.execute()
        finally:
            slots.release()

    tasks: set[asyncio.Task[None]] = set()
    flush = asyncio.create_task(flusher())
    try:
        while True:
            await slots.acquire()
            slots.release()
            free = max(1, slots._value)  # a benchmark may peek
            take = getattr(bus.jobs, "take", None)  # a bus without fair lanes reads only
            deliveries = (take and await take(free)) or await bus.jobs.read(free, block_ms=1000)
            for d in deliveries:
                if d.job is None:
                    await bus.jobs.ack(d.entry_id)
                    continue
                await slots.acquire()
                task = asyncio.create_task(answer(d.entry_id, d.job.chat_id, d.job.message_id))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        flush.cancel()
        await http.close()


# --- the driver ------------------------------------------------------------------------------


@dataclass
class Watch:
    """Replies and chunk frames seen per chat (one pattern subscription)."""

    done: dict[str, asyncio.Event] = field(default_factory=dict)
    chunks: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    answered: int = 0

    def expect(self, chat: str) -> asyncio.Event:
        event = asyncio.Event()
        self.done[chat] = event
        return event


async def watch(redis: Redis, keys: BusKeys, out: Watch) -> None:
    pubsub = redis.pubsub()
    await pubsub.psubscribe(keys.chat_channel("PATTERN").replace("PATTERN", "*"))
    async for message in pubsub.listen():
        if message["type"] != "pmessage":
            continue
        chat = keys.chat_id_from_channel(message["channel"]) or ""
        data = message["data"]
        if '"sender":"Terra"' in data:
            out.answered += 1
            event = out.done.get(chat)
            if event is not None:
                event.set()
        elif '"assistantChunk"' in data and '"done":false' in data:
            out.chunks[chat] += 1


@dataclass
class Side:
    name: str
    pid: int
    others: dict[str, int]


def bound(cpu: dict[str, float], seconds: float) -> str:
    busy = {k: v / seconds for k, v in cpu.items()}
    top = max(busy, key=lambda k: busy[k])
    if busy[top] >= BOUND_SHARE:
        return f"{top} ({busy[top]:.0%} of a core)"
    return f"offered load (busiest: {top} {busy[top]:.0%})"


async def measure_cpu(pids: dict[str, int], body: Any) -> tuple[Any, dict[str, float], float]:
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    result = await body
    seconds = time.monotonic() - t0
    return result, {k: cpu_seconds(p) - before[k] for k, p in pids.items()}, seconds


async def run_side(
    side: Side, args: argparse.Namespace, settings: BusSettings, agent_url: str, tag: str
) -> dict[str, Any]:
    keys = BusKeys(settings.redis_key_prefix)
    gw = open_gateway_bus(settings)
    redis = Redis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)
    seen = Watch()
    watcher = asyncio.create_task(watch(redis, keys, seen))
    await asyncio.sleep(0.2)
    pids = {"worker": side.pid, **side.others, "driver": os.getpid()}
    http = aiohttp.ClientSession()
    out: dict[str, Any] = {}
    counter = 0
    lanes = "client" in inspect.signature(gw.accept_message).parameters

    async def accept(chat: str, text: str) -> None:
        if lanes:  # one visitor per chat: each its own lane
            await gw.accept_message(chat, text, client=chat)
        else:
            await gw.accept_message(chat, text)

    async def exchange(chat: str, text: str) -> None:
        nonlocal counter
        counter += 1
        event = seen.expect(chat)
        await accept(chat, f"q{tag}{counter} {text}")
        await asyncio.wait_for(event.wait(), 60)

    try:
        # warm-up: every visitor's chat exists and the worker has its connections
        chats = [f"{tag}-v{i}" for i in range(args.visitors)]
        await asyncio.gather(*(exchange(c, "t2") for c in chats))

        # 1. closed-loop short exchanges
        stop_at = time.monotonic() + args.duration
        done = 0

        async def visitor(chat: str) -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                await exchange(chat, "t2")
                done += 1

        _, cpu, secs = await measure_cpu(pids, asyncio.gather(*(visitor(c) for c in chats)))
        out["exchange"] = {
            "exchanges_per_s": done / secs,
            "worker_ms_per_exchange": cpu["worker"] / max(done, 1) * 1000,
            "cpu_share": {k: v / secs for k, v in cpu.items()},
            "bound": bound(cpu, secs),
        }

        # 2. POST -> agent request latency, one visitor
        async with http.get(f"{agent_url}/_arrivals") as resp:
            await resp.json()
        sent: dict[str, float] = {}
        chat = f"{tag}-lat"
        for _ in range(args.latency_posts):
            counter += 1
            event = seen.expect(chat)
            sent[f"q{tag}{counter}"] = time.time()
            await accept(chat, f"q{tag}{counter} t2")
            await asyncio.wait_for(event.wait(), 60)
        async with http.get(f"{agent_url}/_arrivals") as resp:
            arrived = await resp.json()
        lat = sorted((arrived[k] - t) * 1000 for k, t in sent.items() if k in arrived)
        out["latency"] = {
            "post_to_agent_p50_ms": statistics.median(lat) if lat else None,
            "post_to_agent_p99_ms": lat[int(len(lat) * 0.99) - 1] if lat else None,
            "samples": len(lat),
        }

        # 3. many chats streaming at once
        streams = [f"{tag}-s{i}" for i in range(args.chats)]
        seen.chunks.clear()
        text = f"t{args.tokens} d{int(args.token_delay_ms)}"
        _, cpu, secs = await measure_cpu(
            pids, asyncio.gather(*(exchange(c, text) for c in streams))
        )
        tokens = args.chats * args.tokens
        writes = sum(seen.chunks[c] for c in streams)
        out["stream"] = {
            "tokens_per_s": tokens / secs,
            "worker_us_per_token": cpu["worker"] / tokens * 1e6,
            "tokens_per_write": tokens / max(writes, 1),
            "cpu_share": {k: v / secs for k, v in cpu.items()},
            "bound": bound(cpu, secs),
        }
        return out
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await http.close()
        await redis.aclose()
        await gw.aclose()


def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


FIGURES = [
    ("exchange", "exchanges_per_s", "e2e exchanges/s (closed loop)", "higher", 1),
    ("exchange", "worker_ms_per_exchange", "worker CPU ms / short exchange", "lower", 2),
    ("latency", "post_to_agent_p50_ms", "POST -> agent request p50 ms", "lower", 2),
    ("latency", "post_to_agent_p99_ms", "POST -> agent request p99 ms", "lower", 2),
    ("stream", "worker_us_per_token", "worker CPU µs / streamed token", "lower", 1),
    ("stream", "tokens_per_write", "tokens per chunk write", "-", 1),
    ("stream", "tokens_per_s", "tokens/s streamed", "higher", 0),
]


def table(rounds: list[dict[str, dict[str, Any]]]) -> str:
    lines = [f"{'figure':<34} {'project':>10} {'bare':>10} {'ratio':>7}  better"]
    for load, key, label, better, digits in FIGURES:
        proj = [r["project"][load][key] for r in rounds if r["project"][load][key] is not None]
        bare = [r["bare"][load][key] for r in rounds if r["bare"][load][key] is not None]
        p = statistics.median(proj) if proj else None
        b = statistics.median(bare) if bare else None
        ratio = f"{p / b:.2f}x" if p and b else "-"
        lines.append(f"{label:<34} {fmt(p, digits):>10} {fmt(b, digits):>10} {ratio:>7}  {better}")
    for kind in ("project", "bare"):
        for load in ("exchange", "stream"):
            lines.append(
                f"bound, {kind} {load}: " + "; ".join(r[kind][load]["bound"] for r in rounds)
            )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[dict[str, dict[str, Any]]]:
    workdir = Path(args.keep_logs) if args.keep_logs else None
    launcher = Launcher(LaunchOptions(quiet=True, workdir=workdir))
    try:
        launcher.redis_url = redis_url(launcher.add_redis(appendonly=False))
        # The driver stands in for many visitors' traffic: no per-client or per-chat quota,
        # and no backlog cap (the bare worker acks without trimming the jobs stream, and a
        # job it held when stopped stays pending, so the stream only grows over a run).
        settings = BusSettings(
            _env_file=None,
            redis_url=launcher.redis_url,
            client_bytes_per_day=2**40,
            chat_max_bytes=2**40,
            jobs_maxlen=10**9,
        )
        agent_port = free_port()
        agent = launcher.spawn(
            "agent",
            [sys.executable, "-m", "benchmarks.worker_bench", "--agent-child", str(agent_port)],
            {"PYTHONPATH": str(ROOT)},
            port=agent_port,
        )
        agent_url = f"http://127.0.0.1:{agent_port}"
        redis_pid = next(c.pid for c in launcher.children if c.name == "redis")
        rounds: list[dict[str, dict[str, Any]]] = []
        for index in range(args.rounds):
            order = ["project", "bare"] if index % 2 == 0 else ["bare", "project"]
            this: dict[str, dict[str, Any]] = {}
            for kind in order:
                if kind == "project":
                    env = {
                        "PYTHONPATH": str(ROOT),
                        "REDIS_URL": launcher.redis_url,
                        "AGENT_API_URL": f"{agent_url}/v1/chat/completions",
                        "AGENT_MODEL": "m",
                        "MAX_CONCURRENT_CHATS": str(max(args.chats, args.visitors) + 4),
                        "LOG_LEVEL": args.worker_log_level,
                        "WORKER_NAME": f"bench-{index}",
                        **({"UVLOOP": "0"} if args.no_uvloop else {}),
                    }
                    child = launcher.add_worker(f"worker{index}", env)
                else:
                    cmd = [sys.executable, "-m", "benchmarks.worker_bench", "--bare-child"]
                    cmd += [launcher.redis_url, agent_url, str(max(args.chats, args.visitors) + 4)]
                    child = launcher.spawn(f"bare{index}", cmd, {"PYTHONPATH": str(ROOT)})
                side = Side(kind, child.pid, {"agent": agent.pid, "redis": redis_pid})
                this[kind] = await run_side(side, args, settings, agent_url, f"r{index}{kind[0]}")
                child.signal(15)
                child.wait(10)
            rounds.append(this)
        return rounds
    finally:
        launcher.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.worker_bench", description=__doc__)
    p.add_argument("--visitors", type=int, default=16, help="closed-loop visitors (16)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of closed loop (8)")
    p.add_argument("--latency-posts", type=int, default=100, help="sequential posts (100)")
    p.add_argument("--chats", type=int, default=100, help="chats streaming at once (100)")
    p.add_argument("--tokens", type=int, default=300, help="tokens per streamed reply (300)")
    p.add_argument("--token-delay-ms", type=float, default=10.0, help="agent ms per token (10)")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds, medians (1)")
    p.add_argument("--worker-log-level", default="INFO")
    p.add_argument("--no-uvloop", action="store_true", help="run the worker with UVLOOP=0")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep-logs", metavar="DIR", help="write the processes' logs to DIR, kept")
    p.add_argument("--agent-child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--bare-child", nargs=3, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.agent_child:
        web.run_app(agent_app(), host="127.0.0.1", port=args.agent_child, print=None)
        return 0
    if args.bare_child:
        url, agent, concurrency = args.bare_child
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(bare_worker(url, agent, int(concurrency)))
        return 0
    rounds = asyncio.run(run(args))
    if args.json:
        print(json.dumps(rounds, indent=2))
    else:
        print(table(rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
