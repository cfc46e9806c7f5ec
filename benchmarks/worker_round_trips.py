"""The worker's Redis round trips per short exchange, as Redis saw them (MONITOR).

``python -m benchmarks.worker_round_trips [--exchanges 5]`` starts a private redis-server,
the worker benchmark's timed agent and ``python -m worker``, warms one chat up, then
watches ``--exchanges`` sequential short exchanges (``echo: hi``) with MONITOR and prints
the commands the worker's connections sent for the last one (a script counts as one: what
it runs inside Redis is not a round trip; the lanes' counter read in the blocking read's
pipeline is shown but not counted) and the mean per exchange. Issue 10's goal: at
most 5, the job's read included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bus import BusSettings, open_gateway_bus
from demo.launcher import Launcher, LaunchOptions, free_port, redis_url

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


def _script_names() -> dict[str, str]:
    """EVALSHA digests of the bus's scripts, by name."""
    import importlib

    named: dict[str, object] = {}
    for module in ("bus.scripts", "bus.answering"):  # the latter: since issue 10
        with contextlib.suppress(ImportError):
            found = importlib.import_module(module)
            named |= {n: getattr(found, n) for n in dir(found) if n.isupper() and n[0] != "_"}
    return {
        hashlib.sha1(text.encode()).hexdigest(): name
        for name, text in named.items()
        if isinstance(text, str)
    }


#: A command sent in the same pipeline as the blocking read (bus/job_reads.py): no round trip.
PIPELINED_WAITING = "GET <queue waiting> (pipelined with XREADGROUP)"


def _label(line: str, names: dict[str, str]) -> str:
    """``EVALSHA <script name>`` or the command of a MONITOR line."""
    words = line.split("] ", 1)[-1].split(" ")
    command = words[0].strip('"')
    if command == "EVALSHA" and len(words) > 1:
        digest = words[1].strip('"')
        return f"EVALSHA {names.get(digest, '?')}"
    if command == "GET" and len(words) > 1 and words[1].strip('"').endswith("waiting"):
        return PIPELINED_WAITING  # the lanes' counter, in the blocking read's pipeline
    return command


def _addr(line: str) -> str:
    """The client address of a MONITOR line (``<ts> [<db> <addr>] "CMD" ...``)."""
    inside = line.split("[", 1)[1].split("]", 1)[0] if "[" in line else ""
    return inside.split(" ", 1)[1] if " " in inside else ""


async def run(exchanges: int) -> tuple[dict[str, float], float]:
    launcher = Launcher(LaunchOptions(quiet=True))
    try:
        launcher.redis_url = redis_url(launcher.add_redis(appendonly=False))
        settings = BusSettings(_env_file=None, redis_url=launcher.redis_url)
        port = free_port()
        launcher.spawn(
            "agent",
            [sys.executable, "-m", "benchmarks.worker_bench", "--agent-child", str(port)],
            {"PYTHONPATH": str(ROOT)},
            port=port,
        )
        launcher.add_worker(
            "worker",
            {
                "PYTHONPATH": str(ROOT),
                "REDIS_URL": launcher.redis_url,
                "AGENT_API_URL": f"http://127.0.0.1:{port}/v1/chat/completions",
                "AGENT_MODEL": "m",
                "LOG_LEVEL": "WARNING",
                "WORKER_NAME": "trips",
                # no timer beat inside the window
                "HEARTBEAT_INTERVAL_MS": "600000",
                "WORKER_DEAD_AFTER_MS": "1800000",
            },
        )
        gw = open_gateway_bus(settings)
        redis = Redis.from_url(launcher.redis_url, decode_responses=True)
        feed = redis.pubsub()
        await feed.psubscribe("*")

        async def exchange(text: str) -> None:
            await gw.accept_message("trips", text, client="trips")
            while True:
                m = await feed.get_message(timeout=10)
                if m is None:
                    raise RuntimeError("no reply within 10 s (see the worker's log)")
                if m["type"] == "pmessage" and '"sender":"Terra"' in m["data"]:
                    return

        for i in range(3):
            await exchange(f"warm-up {i} t2")
        await asyncio.sleep(0.5)  # the reader is blocked again
        monitor = Redis.from_url(launcher.redis_url, decode_responses=True)
        conn: Any = monitor.connection_pool.make_connection()
        await conn.connect()
        await conn.send_command("MONITOR")
        await conn.read_response()
        lines: list[str] = []

        async def read() -> None:
            while True:
                lines.append(str(await conn.read_response()))

        reader = asyncio.create_task(read())
        for i in range(exchanges):
            await exchange(f"measured {i} t2")
        await asyncio.sleep(0.3)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        clients = await redis.client_list()
        worker = {c["addr"] for c in clients if c.get("name", "").startswith("terrarium-worker")}
        mine = [line for line in lines if _addr(line) in worker]
        names = _script_names()
        kinds: dict[str, float] = {}
        for line in mine:
            label = _label(line, names)
            kinds[label] = kinds.get(label, 0) + 1 / exchanges
        await conn.disconnect()
        await monitor.aclose()
        await feed.aclose()
        await redis.aclose()
        await gw.aclose()
        trips = sum(1 for line in mine if _label(line, names) != PIPELINED_WAITING)
        return kinds, trips / exchanges
    finally:
        launcher.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.worker_round_trips", description=__doc__)
    p.add_argument("--exchanges", type=int, default=5, help="exchanges watched (5)")
    args = p.parse_args(argv)
    kinds, mean = asyncio.run(run(args.exchanges))
    for label, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"{count:5.1f}  {label}")
    print(f"worker round trips per short exchange: {mean:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
