"""The socket-holding client processes of the scale benchmark.

Each process (``python -m benchmarks.scale_clients CONFIG``) opens its WebSockets (v=2,
one chat each, on the gateway its URL names), and for every frame that carries an
``eventId`` takes the receive time; for an ``assistantChunk`` also the delivery lag: receive
time minus the millisecond in the eventId, which Redis took when the chunk was appended (same
clock; whole milliseconds, so lags read about 0.5 ms high on average). A Message from Terra
with a ``replyTo`` is an answer; the parent polls them to drive its closed-loop visitors.

The parent talks to a process in JSON lines (stdin -> stdout), one reply per command:
``answers`` (answers first seen since the last call), ``status``, ``report`` (``t0``, ``t1``:
frames received in that window and the lags of the chunks among them), ``final`` (per socket:
chat, frames, frames out of order; answers seen twice; close codes), ``exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType

from benchmarks.fanout import CHILDREN, ROOT, ChildPipe, child_env, raise_open_file_limit

__all__ = ["ScaleClients", "main"]

_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
#: Handshakes in flight per process (a burst of thousands would only queue in the kernel).
CONNECTING = 50


def event_ms(event_id: str) -> tuple[int, int]:
    """``(ms, seq)`` of an eventId ``<ms>-<seq>``."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Tally:
    """What one client process saw."""

    frames: list[int]
    last: list[tuple[int, int]]
    out_of_order: list[int]
    recv: array[float] = field(default_factory=lambda: array("d"))
    chunk_recv: array[float] = field(default_factory=lambda: array("d"))
    chunk_lag_ms: array[float] = field(default_factory=lambda: array("d"))
    answered: dict[tuple[str, str], str] = field(default_factory=dict)
    new_answers: list[tuple[str, str, str]] = field(default_factory=list)
    twice: int = 0
    closes: Counter[str] = field(default_factory=Counter)

    def frame(self, index: int, chat: str, data: str | bytes, now: float) -> None:
        """Count one frame of socket ``index`` (of ``chat``) received at ``now``."""
        fields = orjson.loads(data)
        event_id = fields.get("eventId")
        if not event_id:
            return  # resync and the like: no place in the log
        position = event_ms(event_id)
        if position <= self.last[index]:
            self.out_of_order[index] += 1
        self.last[index] = position
        self.frames[index] += 1
        self.recv.append(now)
        kind = fields.get("type")
        if kind == "assistantChunk":
            self.chunk_recv.append(now)
            self.chunk_lag_ms.append(now * 1000 - position[0])
        elif kind is None and fields.get("sender") == "Terra" and fields.get("replyTo"):
            key = (chat, fields["replyTo"])
            first = self.answered.get(key)
            if first is None:
                self.answered[key] = event_id
                self.new_answers.append((chat, key[1], fields.get("status") or "complete"))
            elif first != event_id:
                self.twice += 1  # a second, different answer to the same message


async def client_worker(cfg: dict[str, Any]) -> None:
    """Body of one client process: see the module doc. ``cfg``: ``sockets`` [[url, chat]]."""
    targets: list[tuple[str, str]] = [(u, c) for u, c in cfg["sockets"]]
    raise_open_file_limit(len(targets) + 256)
    n = len(targets)
    tally = Tally(frames=[0] * n, last=[(0, 0)] * n, out_of_order=[0] * n)
    state = {"connected": 0, "failed": 0}
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    gate = asyncio.Semaphore(CONNECTING)
    all_tried = asyncio.Event()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    def tried() -> None:
        if state["connected"] + state["failed"] == n:
            all_tried.set()

    async def one(index: int, url: str, chat: str) -> None:
        async with gate:
            try:
                ws = await session.ws_connect(url, max_msg_size=0)
            except (aiohttp.ClientError, OSError):
                state["failed"] += 1
                tried()
                return
        state["connected"] += 1
        sockets.append(ws)
        tried()
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                tally.frame(index, chat, msg.data, time.time())
            elif msg.type in _ENDED:
                break
        tally.closes[str(ws.close_code)] += 1

    tasks = [asyncio.create_task(one(i, u, c)) for i, (u, c) in enumerate(targets)]
    await all_tried.wait()
    _reply({"event": "connected", **state})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        name = cmd["cmd"]
        if name == "answers":
            _reply({"answers": tally.new_answers})
            tally.new_answers = []
        elif name == "status":
            _reply({**state, "frames": sum(tally.frames), "closes": dict(tally.closes)})
        elif name == "report":
            t0, t1 = cmd["t0"], cmd["t1"]
            lags = [
                round(lag, 2)
                for at, lag in zip(tally.chunk_recv, tally.chunk_lag_ms, strict=True)
                if t0 <= at <= t1
            ]
            frames = sum(1 for at in tally.recv if t0 <= at <= t1)
            _reply({"frames": frames, "lags_ms": lags})
        elif name == "final":
            per_socket = [
                [chat, tally.frames[i], tally.out_of_order[i]]
                for i, (_, chat) in enumerate(targets)
            ]
            _reply({"sockets": per_socket, "twice": tally.twice, "closes": dict(tally.closes)})
        elif name == "exit":
            break
    closers = [ws.close() for ws in sockets if not ws.closed]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*closers, return_exceptions=True), 10)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    _reply({"bye": True})


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


class ClientProc(ChildPipe):
    """The parent's handle on one client process."""

    @classmethod
    async def start(cls, sockets: list[tuple[str, str]]) -> ClientProc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.scale_clients",
            json.dumps({"sockets": sockets}),
            cwd=ROOT,
            env=child_env({}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=1 << 28,
        )
        CHILDREN.add(proc.pid, "clients")
        return cls(proc)


class ScaleClients:
    """All client processes of one setup; calls go to every process at once."""

    def __init__(self, procs: list[ClientProc]) -> None:
        self.procs = procs

    @classmethod
    async def start(cls, sockets: list[tuple[str, str]], nprocs: int) -> ScaleClients:
        """Start the processes (socket ``i`` in process ``i % nprocs``); all sockets open."""
        shares = [sockets[i::nprocs] for i in range(nprocs)]
        clients = cls([await ClientProc.start(share) for share in shares if share])
        hello = await asyncio.gather(*(p.read() for p in clients.procs))
        failed = sum(h["failed"] for h in hello)
        if failed:
            await clients.close()
            raise RuntimeError(f"{failed} of {len(sockets)} sockets failed to connect")
        return clients

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def call(self, cmd: str, **params: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(p.call(cmd, **params) for p in self.procs)))

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.procs))


def main() -> None:
    """Entry point of a client process (started by :class:`ClientProc`)."""
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(client_worker(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
