"""Gateway fan-out benchmark: each figure next to a bare baseline measured in the same run.

``python -m benchmarks.fanout [--sockets 1000] [--chats 100] [--rate 20] [--duration 10]
[--posts 500] [--stalled-reader] [--json]``

What it measures (see ``benchmarks/README.md`` for how to read the output):

1. POST -> job pickup latency: sequential ``POST /api/chat/<id>/messages`` to the gateway,
   a consumer blocked in XREADGROUP (the worker bus's ``jobs``) in this process; latency =
   receive time - the job's ``enqueued_at``. Baseline: the bus's own accept script
   (``GatewayBus.accept_message``) called in-process, no HTTP, no gateway; same consumer.
2. Worker chunk -> WebSocket frame latency with N sockets spread over C chats, every chat
   streaming R chunks/s through ``ChatLog.append_chunk`` (the worker's call), the content
   carrying ``time.time()``. Baseline: ``benchmarks/raw_server.py`` fed by bare ``PUBLISH``
   of the same frame text at the same rate.
3. Frames/s delivered to all clients, for both.
4. Server RSS per socket (before the sockets connect vs after all are open and have
   received a frame), for both.
5. ``--stalled-reader``: one extra socket that never reads, on a chat fed fast enough to
   overflow the gateway's per-socket queue; the other sockets' p99 without and with it,
   whether it was disconnected (code 4000) and the gateway's RSS.

Servers, clients and Redis are separate processes: the gateway (``python -m gateway``) or
the baseline server, ``--client-procs`` client processes holding the sockets, a private
``redis-server`` on a free port (the servers and Redis started by ``demo.launcher``, as the
demo and the tests start them), and this process (publisher, POSTs, job consumer). All of
them are stopped on exit, Ctrl-C included. It talks to Redis only through ``bus``; the bare
baseline's own Redis code lives in ``benchmarks/raw_server.py``.

Run it with the project's interpreter: ``.venv/bin/python -m benchmarks.fanout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    import aiohttp
    from aiohttp import WSMsgType
except ModuleNotFoundError as missing:  # run with a Python that lacks the project's packages
    raise SystemExit(
        f"benchmarks.fanout: no module {missing.name!r} in {sys.executable}; run it with the "
        "project's interpreter: scripts/setup dev,demo && .venv/bin/python -m benchmarks.fanout"
    ) from None

from benchmarks.raw_server import RawPublisher
from benchmarks.stalled import StalledSocket
from bus import BusSettings, ChatLog, GatewayBus, WorkerBus, open_gateway_bus, open_worker_bus
from bus.client import RedisOptions, create_redis
from demo.launcher import Child, Launcher, LaunchOptions, free_port, redis_url, redis_version

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
ACCESS_CODE = "bench-access-code"
REPLY_TO = "bench-reply"
CONTENT_MARK = '"content":"'
STALL_CHAT = "bench-stall"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


# --- small helpers ------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (NaN when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (psutil when installed, else /proc)."""
    try:
        psutil: Any = importlib.import_module("psutil")
        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds consumed so far by ``pid`` (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def raise_open_file_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def cpu_count() -> int:
    """CPUs of the box this benchmark may use (read before any ``--pin``)."""
    return _BOX_CPUS


_BOX_CPUS = len(os.sched_getaffinity(0))


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for the table (``-`` when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` or ``None`` when not computable."""
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return None
    return a / b


# --- child processes ----------------------------------------------------------------------


class Children:
    """Every process this benchmark started, so that all are stopped on any exit."""

    def __init__(self) -> None:
        self.pids: dict[int, str] = {}
        self.stoppers: list[Callable[[], None]] = []

    def add(self, pid: int, name: str) -> None:
        self.pids[pid] = name

    def discard(self, pid: int) -> None:
        self.pids.pop(pid, None)

    def stop_all(self, grace: float = 3.0) -> None:
        """SIGTERM every child still alive, then SIGKILL the ones left after ``grace``."""
        for pid in list(self.pids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in self.pids):
            time.sleep(0.05)
        for pid in list(self.pids):
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.pids.clear()
        for stop in reversed(self.stoppers):
            with contextlib.suppress(Exception):
                stop()
        self.stoppers.clear()


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


CHILDREN = Children()


@dataclass
class Pinning:
    """``--pin``: the server alone on one CPU, everything else on the others."""

    server: set[int] = field(default_factory=set)
    rest: set[int] = field(default_factory=set)

    def apply(self) -> str:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return "not pinned (1 CPU)"
        self.server, self.rest = {cpus[-1]}, set(cpus[:-1])
        os.sched_setaffinity(0, self.rest)  # inherited by redis-server and the clients
        return f"server on CPU {cpus[-1]}, the rest on {sorted(self.rest)}"


PINNING = Pinning()


class Server:
    """The server under test (gateway or baseline): a launcher child, pinned when asked."""

    def __init__(self, child: Child, port: int) -> None:
        self.child, self.name, self.port = child, child.name, port
        if PINNING.server:
            pin(child.pid, PINNING.server)

    @property
    def pid(self) -> int:
        return self.child.pid

    async def wait_ready(self, path: str = "/healthz", within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if not self.child.running:
                    raise RuntimeError(f"{self.name} exited:\n{self.child.output()[-3000:]}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"http://127.0.0.1:{self.port}{path}") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready:\n{self.child.output()[-3000:]}")

    def stop(self, timeout: float = 10.0) -> None:
        self.child.stop(timeout)


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` on ``cpus`` (a thread keeps the affinity it was created with)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of the client processes: ours, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


#: What every server child gets on top of the environment (the baseline is not installed).
SERVER_ENV = {"PYTHONPATH": str(ROOT)}


def start_gateway(launcher: Launcher, args: argparse.Namespace) -> Server:
    """The gateway, through the launcher, with rate limits out of the way."""
    port = free_port()
    env = {
        **SERVER_ENV,
        "BASE_PATH": "",
        "LOG_LEVEL": args.gateway_log_level,
        "RATE_LIMIT_MAX_PER_IP": "1000000000",
        "RATE_LIMIT_MAX_PER_CHAT": "1000000000",
        "MAX_QUEUED_PER_CLIENT": "100000",
        "CLIENT_BYTES_PER_DAY": "100000000000",
        "DEMO_AGENT": "false",
    }
    if args.queue_size is not None:
        env["SOCKET_QUEUE_SIZE"] = str(args.queue_size)
    return Server(launcher.add_gateway("gateway", port, env), port)


def start_raw(launcher: Launcher) -> Server:
    """The bare baseline server (``benchmarks/raw_server.py``)."""
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.raw_server", "--port", str(port)]
    cmd += ["--redis-url", launcher.redis_url]
    return Server(launcher.spawn("raw_server", cmd, SERVER_ENV, port=port), port)


# --- the client processes -----------------------------------------------------------------


async def client_worker(cfg: dict[str, Any]) -> None:
    """Body of one client process: hold sockets, time frames, answer the parent on stdio.

    ``cfg``: ``url`` (with ``{chat}``), ``chats`` (one chat id per socket), ``compress``.
    Commands (one JSON line each on stdin): ``status``, ``reset``, ``count`` / ``report``
    (``t0``, ``t1``: a window of publish times), ``exit``. Replies: one JSON line each.
    """
    raise_open_file_limit(len(cfg["chats"]) + 256)
    sent: array[float] = array("d")
    recv: array[float] = array("d")
    per_socket = [0] * len(cfg["chats"])
    closes: dict[str, int] = {}
    state = {"connected": 0, "failed": 0}
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    gate = asyncio.Semaphore(50)
    compress = 15 if cfg.get("compress") else 0
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    all_tried = asyncio.Event()

    def tried() -> None:
        if state["connected"] + state["failed"] == len(cfg["chats"]):
            all_tried.set()

    streams: list[aiohttp.ClientResponse] = []

    def timed(data: str, index: int) -> None:
        now = time.time()
        start = data.find(CONTENT_MARK)
        if start >= 0:
            start += len(CONTENT_MARK)
            sent.append(float(data[start : data.index('"', start)]))
            recv.append(now)
        per_socket[index] += 1

    async def one_stream(index: int, chat: str) -> None:
        """An SSE client (``url`` is http://...): one frame per ``data:`` line."""
        async with gate:
            try:
                resp = await session.get(
                    cfg["url"].format(chat=chat), timeout=aiohttp.ClientTimeout(total=None)
                )
            except (aiohttp.ClientError, OSError):
                resp = None
            if resp is None or resp.status != 200:
                state["failed"] += 1
                tried()
                return
        state["connected"] += 1
        streams.append(resp)
        tried()
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async for line in resp.content:
                if line.startswith(b"data:"):
                    timed(line.decode(), index)
        closes["EOF"] = closes.get("EOF", 0) + 1

    async def one(index: int, chat: str) -> None:
        if cfg["url"].startswith("http"):
            await one_stream(index, chat)
            return
        async with gate:
            try:
                ws = await session.ws_connect(
                    cfg["url"].format(chat=chat), compress=compress, max_msg_size=0
                )
            except (aiohttp.ClientError, OSError):
                state["failed"] += 1
                tried()
                return
        state["connected"] += 1
        sockets.append(ws)
        tried()
        mark, mark_len = CONTENT_MARK, len(CONTENT_MARK)
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                now = time.time()
                data: str = msg.data
                start = data.find(mark)
                if start >= 0:
                    start += mark_len
                    sent.append(float(data[start : data.index('"', start)]))
                    recv.append(now)
                per_socket[index] += 1
            elif msg.type in _ENDED:
                break
        code = str(ws.close_code)
        closes[code] = closes.get(code, 0) + 1

    tasks = [asyncio.create_task(one(i, c)) for i, c in enumerate(cfg["chats"])]
    await all_tried.wait()
    _reply({"event": "connected", **state})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        name = cmd["cmd"]
        if name == "status":
            _reply(
                {
                    "frames": sum(per_socket),
                    "with_frames": sum(1 for n in per_socket if n),
                    "closes": closes,
                    **state,
                }
            )
        elif name == "reset":
            del sent[:]
            del recv[:]
            _reply({"ok": True})
        elif name in ("count", "report"):
            t0, t1 = cmd["t0"], cmd["t1"]
            in_window = [i for i, s in enumerate(sent) if t0 <= s <= t1]
            reply: dict[str, Any] = {"delivered": len(in_window)}
            if name == "report":
                reply["latencies_ms"] = [round((recv[i] - sent[i]) * 1000, 4) for i in in_window]
                reply["received_in_window"] = sum(1 for r in recv if t0 <= r <= t1)
            _reply(reply)
        elif name == "exit":
            break
    for resp in streams:
        resp.close()
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


class ChildPipe:
    """A child process driven by one JSON line per command on its stdin, answering one JSON
    line per command on its stdout (the benchmarks' client processes)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def read(self, within: float = 120.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not line:
            raise RuntimeError("a client process exited early")
        result: dict[str, Any] = json.loads(line)
        return result

    async def call(self, cmd: str, **params: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **params}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read()

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("exit")
                await self.read(within=15)
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        CHILDREN.discard(self.proc.pid)


class ClientProc(ChildPipe):
    """The parent's handle on one client process."""

    def __init__(self, proc: asyncio.subprocess.Process, chats: list[str]) -> None:
        super().__init__(proc)
        self.chats = chats

    @classmethod
    async def start(cls, url: str, chats: list[str], compress: bool) -> ClientProc:
        cfg = json.dumps({"url": url, "chats": chats, "compress": compress})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.fanout",
            "--client-worker",
            cfg,
            cwd=ROOT,
            env=child_env({}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=1 << 28,
        )
        CHILDREN.add(proc.pid, "clients")
        return cls(proc, chats)


class Clients:
    """All client processes of one run."""

    def __init__(self, procs: list[ClientProc]) -> None:
        self.procs = procs

    @classmethod
    async def start(cls, url: str, chats: list[str], nprocs: int, compress: bool) -> Clients:
        shares = [chats[i::nprocs] for i in range(nprocs)]
        procs = [await ClientProc.start(url, share, compress) for share in shares if share]
        clients = cls(procs)
        hello = await asyncio.gather(*(p.read() for p in procs))
        failed = sum(h["failed"] for h in hello)
        if failed:
            raise RuntimeError(f"{failed} sockets failed to connect")
        return clients

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def call(self, cmd: str, **params: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(p.call(cmd, **params) for p in self.procs)))

    async def status(self) -> dict[str, Any]:
        parts = await self.call("status")
        closes: dict[str, int] = {}
        for part in parts:
            for code, n in part["closes"].items():
                closes[code] = closes.get(code, 0) + n
        return {
            "connected": sum(p["connected"] for p in parts),
            "with_frames": sum(p["with_frames"] for p in parts),
            "frames": sum(p["frames"] for p in parts),
            "closes": closes,
        }

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.procs))


# --- publishers ---------------------------------------------------------------------------

Send = Callable[[str, str], Awaitable[None]]


class Publisher:
    """Streams ``rate`` chunks/s into each chat, spread evenly in time; counts what it sent.

    A chat that falls behind its schedule skips ahead rather than bursting to catch up; the
    achieved rate is reported next to the target.
    """

    def __init__(self, send: Send, chats: list[str], rate: float, pad: int = 0) -> None:
        self.send, self.chats, self.rate = send, chats, rate
        self.pad = " " + "x" * pad if pad else ""
        self.sent: dict[str, array[float]] = {c: array("d") for c in chats}
        self.took: array[float] = array("d")  # (send finished, seconds it took)
        self.errors = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        interval = 1.0 / self.rate
        start = asyncio.get_running_loop().time() + 0.05
        for i, chat in enumerate(self.chats):
            offset = interval * i / len(self.chats)
            self._tasks.append(asyncio.create_task(self._run(chat, start + offset, interval)))

    async def _run(self, chat: str, at: float, interval: float) -> None:
        loop = asyncio.get_running_loop()
        log = self.sent[chat]
        while not self._stop.is_set():
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ts = time.time()
            log.append(ts)  # before the await: a window closing meanwhile still counts it
            try:
                await self.send(chat, f"{ts:.6f}{self.pad}")
            except Exception:
                self.errors += 1
            else:
                done = time.time()
                self.took.extend((done, done - ts))
            at += interval
            behind = loop.time() - at
            if behind > interval:
                at += math.floor(behind / interval) * interval

    def count(self, t0: float, t1: float, chat: str) -> int:
        return sum(1 for ts in self.sent[chat] if t0 <= ts <= t1)

    def send_ms(self, t0: float, t1: float) -> list[float]:
        """How long each send finished in ``[t0, t1]`` took, in ms (Redis round trip)."""
        took = self.took
        return [took[i + 1] * 1000 for i in range(0, len(took), 2) if t0 <= took[i] <= t1]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def gateway_send(chat_log: ChatLog) -> Send:
    async def send(chat: str, content: str) -> None:
        await chat_log.append_chunk(chat, REPLY_TO, content)

    return send


@contextlib.asynccontextmanager
async def publishing(
    kind: str, settings: BusSettings, connections: int
) -> AsyncIterator[tuple[Send, ChatLog | None]]:
    """The chunk sender of one side: the worker's call for the gateway, PUBLISH for the baseline.

    Also yields the gateway side's chat log (for the stalled reader's feed), else ``None``.
    """
    url = settings.redis_url.get_secret_value()
    if kind == "gateway":
        bus = WorkerBus(
            create_redis(
                url,
                client_name="bench-publisher",
                options=RedisOptions(max_connections=connections),
            ),
            settings,
            name="bench-publisher",
        )
        try:
            yield gateway_send(bus.chats), bus.chats
        finally:
            await bus.aclose()
    else:
        raw = RawPublisher(url, reply_to=REPLY_TO, max_connections=connections)
        try:
            yield raw.send, None
        finally:
            await raw.aclose()


# --- 1. POST -> job pickup ----------------------------------------------------------------


@dataclass
class Pickup:
    """Job pickup latency (ms) and, for the gateway, the POST round trip."""

    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    request_p50_ms: float
    request_p99_ms: float


async def pickup_bench(
    settings: BusSettings, posts: int, warmup: int, enqueue: Callable[[int], Awaitable[None]]
) -> Pickup:
    """Sequential enqueues, each waited for by a consumer blocked in XREADGROUP."""
    consumer_bus = open_worker_bus(settings, name="bench-consumer", block_ms=1000)
    queue = consumer_bus.jobs
    await queue.ensure_group()
    while leftovers := await queue.read(count=100, block_ms=1):  # jobs of an earlier round
        for delivery in leftovers:
            await queue.ack(delivery.entry_id)
    picked: asyncio.Queue[float] = asyncio.Queue()

    async def consume() -> None:
        while True:
            deliveries = await queue.read(count=10, block_ms=1000)
            now = time.time()
            for delivery in deliveries:
                await queue.ack(delivery.entry_id)
                if delivery.job is not None:
                    picked.put_nowait(now - delivery.job.enqueued_at)

    consumer = asyncio.create_task(consume())
    latencies: list[float] = []
    requests: list[float] = []
    try:
        await asyncio.sleep(0.2)  # the consumer is blocked in XREADGROUP
        for i in range(warmup + posts):
            started = time.perf_counter()
            await enqueue(i)
            took = time.perf_counter() - started
            latency = await asyncio.wait_for(picked.get(), 10)
            if i >= warmup:
                latencies.append(latency * 1000)
                requests.append(took * 1000)
            await asyncio.sleep(0.002)  # let the consumer block again
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await consumer_bus.aclose()
    return Pickup(
        n=len(latencies),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=math.nan),
        request_p50_ms=percentile(requests, 50),
        request_p99_ms=percentile(requests, 99),
    )


def gateway_enqueue(session: aiohttp.ClientSession, port: int) -> Callable[[int], Awaitable[None]]:
    async def enqueue(i: int) -> None:
        url = f"http://127.0.0.1:{port}/api/chat/bench-post-{i % 10}/messages"
        body = {"content": f"benchmark message {i}", "accessCode": ACCESS_CODE}
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"POST failed: {resp.status} {await resp.text()}")
            await resp.read()

    return enqueue


def bus_enqueue(bus: GatewayBus) -> Callable[[int], Awaitable[None]]:
    """The baseline's enqueue: the gateway's own bus call, in-process (no HTTP, no gateway)."""

    async def enqueue(i: int) -> None:
        await bus.accept_message(f"bench-post-{i % 10}", f"benchmark message {i}")

    return enqueue


# --- 2-4. fan-out -------------------------------------------------------------------------


@dataclass
class Window:
    """One measurement window of the fan-out."""

    seconds: float
    published: int
    publish_rate: float
    expected_frames: int
    delivered_frames: int
    frames_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    publish_p50_ms: float
    publish_p99_ms: float
    cpu_pct: dict[str, float]
    bound: str
    started_at: float = 0.0


@dataclass
class Fanout:
    """Fan-out figures of one server."""

    server: str
    sockets: int
    chats: int
    target_publish_rate: float
    rss_before: int
    rss_after: int
    rss_per_socket_kib: float
    window: Window
    publisher_errors: int = 0
    closes: dict[str, int] = field(default_factory=dict)


@dataclass
class Stalled:
    """The ``--stalled-reader`` figures (gateway only)."""

    stall_rate: float
    stall_chunk_bytes: int
    queue_size: int | None
    others_without: Window
    others_with: Window
    disconnected: bool
    disconnect_after_s: float | None
    slow_consumers_closed: int
    stalled_socket_end: str
    rss_before: int
    rss_peak: int
    rss_end: int


def assign_chats(sockets: int, chats: int) -> tuple[list[str], list[str]]:
    """``(chat ids, one chat id per socket)``: socket ``i`` joins chat ``i % chats``."""
    ids = [f"bench-{i:04d}" for i in range(chats)]
    return ids, [ids[i % chats] for i in range(sockets)]


def judge_bound(cpu: dict[str, float], ncpu: int, clients: list[float]) -> str:
    """What limited a window, from the CPU shares of the processes involved."""
    total = sum(cpu.values())
    ours = {name: pct for name, pct in cpu.items() if name not in ("clients", "other")}
    hot = {name: pct for name, pct in ours.items() if pct >= 85}
    for i, pct in enumerate(clients):
        if pct >= 85:
            hot[f"client process {i + 1}"] = pct
    other = cpu.get("other", 0.0)
    noise = f"; other processes on the box {other:.0f}%" if other >= 10 else ""
    if hot:
        parts = ", ".join(f"{name} {pct:.0f}%" for name, pct in hot.items())
        return f"CPU-bound: {parts} of one core{noise}"
    if total >= 85 * ncpu:
        return f"box saturated: {total:.0f}% of {100 * ncpu}%{noise}"
    return f"offered load (no process saturated; box {total:.0f}% of {100 * ncpu}%{noise})"


def box_busy_seconds() -> float:
    """CPU seconds all CPUs of the box spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return (sum(values) - idle - guest) / CLK_TCK


class Cpu:
    """CPU use of the processes of a run (and of everything else) between two snapshots."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.start: dict[int, float] = {}
        self.box = 0.0
        self.t = 0.0

    def begin(self) -> None:
        self.t = time.monotonic()
        self.box = box_busy_seconds()
        self.start = {pid: cpu_seconds(pid) for group in self.pids.values() for pid in group}

    def end(self) -> tuple[dict[str, float], list[float]]:
        """``({group: % of one core, ..., "other": the rest of the box}, [% per client])``."""
        wall = max(1e-6, time.monotonic() - self.t)
        used = {pid: cpu_seconds(pid) - t0 for pid, t0 in self.start.items()}
        box = box_busy_seconds() - self.box
        groups = {
            name: round(100 * sum(used.get(p, 0.0) for p in pids) / wall, 1)
            for name, pids in self.pids.items()
        }
        groups["other"] = round(max(0.0, 100 * (box - sum(used.values())) / wall), 1)
        per_client = [round(100 * used.get(p, 0.0) / wall, 1) for p in self.pids["clients"]]
        return groups, per_client


async def measure(
    clients: Clients,
    publisher: Publisher,
    chats_of_sockets: list[str],
    cpu: Cpu,
    seconds: float,
    during: Callable[[], Awaitable[None]] | None = None,
) -> Window:
    """Reset the clients, measure ``seconds`` of fan-out, wait for the window's frames."""
    await clients.call("reset")
    cpu.begin()
    t0 = time.time()
    if during is None:
        await asyncio.sleep(seconds)
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(during(), seconds)
    t1 = time.time()
    groups, per_client = cpu.end()
    sockets_per_chat: dict[str, int] = {}
    for chat in chats_of_sockets:
        sockets_per_chat[chat] = sockets_per_chat.get(chat, 0) + 1
    published = {chat: publisher.count(t0, t1, chat) for chat in sockets_per_chat}
    publish_ms = publisher.send_ms(t0, t1)
    expected = sum(published[c] * n for c, n in sockets_per_chat.items())
    # The window's last frames may still be on their way: wait until all are in or stalled.
    delivered, still = 0, time.monotonic()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = sum(p["delivered"] for p in await clients.call("count", t0=t0, t1=t1))
        if now >= expected:
            break
        if now != delivered:
            delivered, still = now, time.monotonic()
        elif time.monotonic() - still > 1.0:
            break
        await asyncio.sleep(0.1)
    reports = await clients.call("report", t0=t0, t1=t1)
    latencies = [x for r in reports for x in r["latencies_ms"]]
    received = sum(r["received_in_window"] for r in reports)
    wall = t1 - t0
    return Window(
        seconds=round(wall, 3),
        published=sum(published.values()),
        publish_rate=round(sum(published.values()) / wall, 1),
        expected_frames=expected,
        delivered_frames=len(latencies),
        frames_per_s=round(received / wall, 1),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=math.nan),
        publish_p50_ms=percentile(publish_ms, 50),
        publish_p99_ms=percentile(publish_ms, 99),
        cpu_pct=groups,
        bound=judge_bound(groups, cpu_count(), per_client),
        started_at=round(t0, 3),
    )


def socket_url(kind: str, port: int, transport: str = "ws") -> str:
    """The URL (with ``{chat}``) a client of ``kind``'s server opens; ``transport`` "ws" or
    "sse" (an http:// URL: the client processes read it as Server-Sent Events)."""
    if transport == "sse":
        if kind == "gateway":
            return f"http://127.0.0.1:{port}/api/chat/{{chat}}/events?accessCode={ACCESS_CODE}&v=2"
        return f"http://127.0.0.1:{port}/sse?chatId={{chat}}"
    if kind == "gateway":
        return f"ws://127.0.0.1:{port}/api/chat?chatId={{chat}}&accessCode={ACCESS_CODE}&v=2"
    return f"ws://127.0.0.1:{port}/ws?chatId={{chat}}"


async def wait_all_subscribed(clients: Clients, sockets: int, within: float = 30.0) -> int:
    """Wait until every socket received a frame (so it is surely subscribed)."""
    deadline = time.monotonic() + within
    status = await clients.status()
    while status["with_frames"] < sockets and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        status = await clients.status()
    return int(status["with_frames"])


async def fanout_bench(
    kind: str,
    server: Server,
    settings: BusSettings,
    redis_pid: int,
    args: argparse.Namespace,
    with_stall: bool = False,
) -> tuple[Fanout, Stalled | None]:
    """Connect the sockets, stream, measure; for the gateway optionally the stalled reader."""
    async with publishing(kind, settings, args.chats + 64) as (send, chat_log):
        return await _fanout(kind, server, send, chat_log, redis_pid, args, with_stall)


async def _fanout(
    kind: str,
    server: Server,
    send: Send,
    chat_log: ChatLog | None,
    redis_pid: int,
    args: argparse.Namespace,
    with_stall: bool,
) -> tuple[Fanout, Stalled | None]:
    chat_ids, chats_of_sockets = assign_chats(args.sockets, args.chats)
    url = socket_url(kind, server.port, getattr(args, "transport", "ws"))
    await asyncio.sleep(0.5)
    rss_before = rss_bytes(server.pid)
    clients = await Clients.start(url, chats_of_sockets, args.client_procs, args.ws_compress)
    publisher = Publisher(send, chat_ids, args.rate)
    stalled: Stalled | None = None
    try:
        publisher.start()
        await asyncio.sleep(args.warmup)
        subscribed = await wait_all_subscribed(clients, args.sockets)
        if subscribed < args.sockets:
            raise RuntimeError(f"only {subscribed}/{args.sockets} sockets received frames")
        rss_after = rss_bytes(server.pid)
        cpu = Cpu(
            {
                "server": [server.pid],
                "redis": [redis_pid],
                "clients": clients.pids,
                "publisher": [os.getpid()],
            }
        )
        window = await measure(clients, publisher, chats_of_sockets, cpu, args.duration)
        if with_stall and chat_log is not None:
            stalled = await stalled_bench(
                server, chat_log, clients, publisher, chats_of_sockets, cpu, args
            )
        closes = (await clients.status())["closes"]
    finally:
        await publisher.stop()
        await clients.close()
    fan = Fanout(
        server=kind,
        sockets=args.sockets,
        chats=args.chats,
        target_publish_rate=args.rate * args.chats,
        rss_before=rss_before,
        rss_after=rss_after,
        rss_per_socket_kib=round((rss_after - rss_before) / args.sockets / 1024, 2),
        window=window,
        publisher_errors=publisher.errors,
        closes=closes,
    )
    return fan, stalled


# --- 5. the stalled reader ----------------------------------------------------------------


async def describe_end(stalled: StalledSocket, within: float = 3.0) -> str:
    """How the stalled socket's connection ended, in words (close code, reset, EOF)."""
    code, end = await stalled.drain(within)
    return f"close frame {code}, then {end}" if code is not None else end


async def slow_consumers(port: int) -> int:
    """``terrarium_slow_consumers_total`` from the gateway's /metrics (loopback)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("terrarium_slow_consumers_total "):
            return int(float(line.split()[1]))
    return 0


async def stalled_bench(
    server: Server,
    chat_log: ChatLog,
    clients: Clients,
    publisher: Publisher,
    chats_of_sockets: list[str],
    cpu: Cpu,
    args: argparse.Namespace,
) -> Stalled:
    """Control window (stall chat read normally) then the same with a socket that never reads.

    The extra chat is fed ``--stall-rate`` chunks/s of ``--stall-bytes`` each in both
    windows, so the only difference between them is whether its one socket reads.
    """
    path = f"/api/chat?chatId={STALL_CHAT}&accessCode={ACCESS_CODE}&v=2"
    stall_feed = Publisher(
        gateway_send(chat_log),
        [STALL_CHAT],
        args.stall_rate,
        pad=args.stall_bytes,
    )
    stall_feed.start()
    try:
        async with aiohttp.ClientSession() as session:
            reader = await session.ws_connect(f"ws://127.0.0.1:{server.port}{path}")

            async def read_all() -> None:
                async for _ in reader:
                    pass

            reading = asyncio.create_task(read_all())
            await asyncio.sleep(args.warmup)
            without = await measure(clients, publisher, chats_of_sockets, cpu, args.duration)
            reading.cancel()
            await reader.close()
            await asyncio.gather(reading, return_exceptions=True)

        closed_before = await slow_consumers(server.port)
        rss_before = rss_bytes(server.pid)
        rss_peak = rss_before
        stalled = await StalledSocket.open(server.port, path)
        opened = time.monotonic()
        disconnect_after: float | None = None

        async def watch() -> None:
            nonlocal rss_peak, disconnect_after
            while True:
                await asyncio.sleep(0.5)
                rss_peak = max(rss_peak, rss_bytes(server.pid))
                if disconnect_after is None and await slow_consumers(server.port) > closed_before:
                    disconnect_after = round(time.monotonic() - opened, 2)

        with_stall = await measure(
            clients, publisher, chats_of_sockets, cpu, args.duration, during=watch
        )
        # Not closed within the window: keep the load on a while to time the disconnect.
        waited = time.monotonic()
        while disconnect_after is None and time.monotonic() - waited < args.stall_wait:
            await asyncio.sleep(0.5)
            if await slow_consumers(server.port) > closed_before:
                disconnect_after = round(time.monotonic() - opened, 2)
            rss_peak = max(rss_peak, rss_bytes(server.pid))
        closed = await slow_consumers(server.port) - closed_before
        rss_end = rss_bytes(server.pid)
        end = await describe_end(stalled)
    finally:
        await stall_feed.stop()
    return Stalled(
        stall_rate=args.stall_rate,
        stall_chunk_bytes=args.stall_bytes,
        queue_size=args.queue_size,
        others_without=without,
        others_with=with_stall,
        disconnected=closed > 0,
        disconnect_after_s=disconnect_after,
        slow_consumers_closed=closed,
        stalled_socket_end=end,
        rss_before=rss_before,
        rss_peak=max(rss_peak, rss_end),
        rss_end=rss_end,
    )


# --- the run ------------------------------------------------------------------------------


@dataclass
class Round:
    """One gateway run and one baseline run, back to back."""

    order: list[str]
    pickup: dict[str, Pickup]
    fanout: dict[str, Fanout]


@dataclass
class Figure:
    """One row of the table: medians over the rounds and the median per-round ratio."""

    key: str
    label: str
    better: str
    gateway: float | None
    raw: float | None
    ratio: float | None


@dataclass
class Report:
    """Everything one run measured."""

    config: dict[str, Any]
    env: dict[str, Any]
    rounds: list[Round]
    stalled: Stalled | None
    figures: list[Figure] = field(default_factory=list)
    summary: str = ""

    def figure(self, key: str) -> Figure:
        return next(f for f in self.figures if f.key == key)


async def run(args: argparse.Namespace, workdir: Path) -> Report:
    """``--rounds`` rounds of (pickup + fan-out) on the gateway and on the baseline.

    The order alternates between rounds (gateway first, then baseline first, ...) so that
    a slow drift of the box does not always favour the same side.
    """
    launcher = Launcher(LaunchOptions(access_code=ACCESS_CODE, quiet=True, workdir=workdir))
    CHILDREN.stoppers.append(launcher.stop)
    redis = launcher.add_redis(appendonly=False)
    launcher.redis_url = redis_url(redis)
    settings = BusSettings(_env_file=None, redis_url=launcher.redis_url)
    env = {
        "cpus": cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "redis_py": metadata.version("redis"),
        "redis_server": redis_version(redis.args[0]),
        "hiredis": _has("hiredis"),
        # The gateway runs on uvloop when installed unless UVLOOP=0; the baseline never does.
        "uvloop_in_gateway": _has("uvloop")
        and os.environ.get("UVLOOP", "1").lower() not in ("0", "false", "no"),
        "pinning": args.pinning,
    }
    rounds: list[Round] = []
    stalled: Stalled | None = None
    for index in range(args.rounds):
        order = ["gateway", "raw"] if index % 2 == 0 else ["raw", "gateway"]
        this = Round(order=order, pickup={}, fanout={})
        for kind in order:
            with_stall = kind == "gateway" and args.stalled_reader and stalled is None
            this.pickup[kind], this.fanout[kind], got = await server_run(
                kind, launcher, settings, redis.pid, args, with_stall
            )
            stalled = stalled or got
        rounds.append(this)

    config = {
        k: getattr(args, k)
        for k in (
            "sockets",
            "chats",
            "rate",
            "duration",
            "warmup",
            "posts",
            "rounds",
            "client_procs",
            "ws_compress",
            "transport",
            "stalled_reader",
            "queue_size",
            "gateway_log_level",
        )
    }
    report = Report(config=config, env=env, rounds=rounds, stalled=stalled)
    report.figures = figures(rounds)
    report.summary = summary(report)
    return report


async def server_run(
    kind: str,
    launcher: Launcher,
    settings: BusSettings,
    redis_pid: int,
    args: argparse.Namespace,
    with_stall: bool,
) -> tuple[Pickup, Fanout, Stalled | None]:
    """Start one server, measure job pickup then fan-out against it, stop it."""
    server = start_gateway(launcher, args) if kind == "gateway" else start_raw(launcher)
    try:
        await server.wait_ready("/readyz" if kind == "gateway" else "/healthz")
        if kind == "gateway":
            async with aiohttp.ClientSession() as session:
                enqueue = gateway_enqueue(session, server.port)
                pickup = await pickup_bench(settings, args.posts, args.post_warmup, enqueue)
        else:
            async with open_gateway_bus(settings) as bus:
                pickup = await pickup_bench(
                    settings, args.posts, args.post_warmup, bus_enqueue(bus)
                )
        fan, stalled = await fanout_bench(kind, server, settings, redis_pid, args, with_stall)
    finally:
        server.stop()
    return pickup, fan, stalled


Getter = Callable[[Round, str], float]

ROWS: list[tuple[str, str, Getter, str]] = [
    ("pickup_p50_ms", "POST -> job pickup p50 (ms)", lambda r, k: r.pickup[k].p50_ms, "lower"),
    ("pickup_p99_ms", "POST -> job pickup p99 (ms)", lambda r, k: r.pickup[k].p99_ms, "lower"),
    (
        "request_p50_ms",
        "  POST round trip p50 / bus accept p50 (ms)",
        lambda r, k: r.pickup[k].request_p50_ms,
        "lower",
    ),
    (
        "frame_p50_ms",
        "chunk -> WS frame p50 (ms)",
        lambda r, k: r.fanout[k].window.p50_ms,
        "lower",
    ),
    (
        "frame_p99_ms",
        "chunk -> WS frame p99 (ms)",
        lambda r, k: r.fanout[k].window.p99_ms,
        "lower",
    ),
    (
        "frame_max_ms",
        "chunk -> WS frame max (ms)",
        lambda r, k: r.fanout[k].window.max_ms,
        "lower",
    ),
    (
        "frames_per_s",
        "frames/s delivered",
        lambda r, k: r.fanout[k].window.frames_per_s,
        "higher",
    ),
    (
        "delivered_pct",
        "frames delivered / expected (%)",
        lambda r, k: (
            100 * r.fanout[k].window.delivered_frames / max(1, r.fanout[k].window.expected_frames)
        ),
        "higher",
    ),
    (
        "publish_rate",
        "chunks published/s (achieved)",
        lambda r, k: r.fanout[k].window.publish_rate,
        "=",
    ),
    (
        "publish_p50_ms",
        "  publish call p50 (ms: append_chunk / PUBLISH)",
        lambda r, k: r.fanout[k].window.publish_p50_ms,
        "-",
    ),
    (
        "publish_p99_ms",
        "  publish call p99 (ms)",
        lambda r, k: r.fanout[k].window.publish_p99_ms,
        "-",
    ),
    (
        "rss_before_mib",
        "server RSS before sockets (MiB)",
        lambda r, k: r.fanout[k].rss_before / 2**20,
        "lower",
    ),
    (
        "rss_after_mib",
        "server RSS with sockets (MiB)",
        lambda r, k: r.fanout[k].rss_after / 2**20,
        "lower",
    ),
    (
        "rss_per_socket_kib",
        "server RSS per socket (KiB)",
        lambda r, k: r.fanout[k].rss_per_socket_kib,
        "lower",
    ),
    (
        "server_cpu_pct",
        "server CPU (% of one core)",
        lambda r, k: r.fanout[k].window.cpu_pct["server"],
        "lower",
    ),
    (
        "server_us_per_frame",
        "  server CPU per delivered frame (us)",
        lambda r, k: cpu_us_per_frame(r.fanout[k].window),
        "lower",
    ),
    (
        "redis_cpu_pct",
        "redis-server CPU (%)",
        lambda r, k: r.fanout[k].window.cpu_pct["redis"],
        "lower",
    ),
    (
        "clients_cpu_pct",
        "client processes CPU (%)",
        lambda r, k: r.fanout[k].window.cpu_pct["clients"],
        "-",
    ),
    (
        "publisher_cpu_pct",
        "publisher process CPU (%)",
        lambda r, k: r.fanout[k].window.cpu_pct["publisher"],
        "-",
    ),
    (
        "other_cpu_pct",
        "other processes on the box CPU (%)",
        lambda r, k: r.fanout[k].window.cpu_pct["other"],
        "-",
    ),
]


def cpu_us_per_frame(window: Window) -> float:
    """The server's own CPU time (``/proc/<pid>/stat``) per frame it delivered, in us."""
    if window.frames_per_s <= 0:
        return math.nan
    return window.cpu_pct["server"] / 100 * 1e6 / window.frames_per_s


def median(values: list[float]) -> float | None:
    """Median of the finite values (``None`` when there are none)."""
    finite = sorted(v for v in values if not math.isnan(v))
    if not finite:
        return None
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2


def figures(rounds: list[Round]) -> list[Figure]:
    """The table's rows: medians over rounds; ratio = median of the per-round ratios."""
    out = []
    for key, label, get, better in ROWS:
        gw = [get(r, "gateway") for r in rounds]
        raw = [get(r, "raw") for r in rounds]
        ratios = [q for q in (ratio(a, b) for a, b in zip(gw, raw, strict=True)) if q is not None]
        out.append(
            Figure(
                key=key,
                label=label,
                better=better,
                gateway=median(gw),
                raw=median(raw),
                ratio=median(ratios) if better in ("lower", "higher") else None,
            )
        )
    return out


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# --- output -------------------------------------------------------------------------------


def noise_warnings(report: Report) -> list[str]:
    """Rounds where foreign CPU load differed enough between the sides to skew the ratios."""
    out = []
    for i, r in enumerate(report.rounds, 1):
        gw = r.fanout["gateway"].window.cpu_pct["other"]
        raw = r.fanout["raw"].window.cpu_pct["other"]
        if abs(gw - raw) >= 20 or max(gw, raw) >= 50:
            out.append(
                f"round {i}: other processes used {gw:.0f}% of the box during the gateway "
                f"window and {raw:.0f}% during the baseline's; latency ratios are skewed, "
                "rerun or use --rounds 3"
            )
    return out


def summary(report: Report) -> str:
    """The one-line verdict."""

    def pair(key: str, unit: str, digits: int = 2) -> str:
        f = report.figure(key)
        return f"{fmt(f.gateway, digits)} vs {fmt(f.raw, digits)}{unit} ({fmt(f.ratio)}x)"

    parts = [
        "frames/s " + pair("frames_per_s", "", 0),
        "server CPU/frame " + pair("server_us_per_frame", " us", 1),
        "chunk->frame p99 " + pair("frame_p99_ms", " ms"),
        "pickup p99 " + pair("pickup_p99_ms", " ms"),
        "RSS/socket " + pair("rss_per_socket_kib", " KiB", 1),
    ]
    bounds = sorted({r.fanout["gateway"].window.bound for r in report.rounds})
    text = "gateway vs raw: " + "; ".join(parts) + "; gateway run bound by " + " | ".join(bounds)
    if report.stalled is not None:
        s = report.stalled
        text += (
            f"; stalled reader: others' p99 {fmt(s.others_without.p99_ms)} -> "
            f"{fmt(s.others_with.p99_ms)} ms, disconnected={'yes' if s.disconnected else 'no'}"
        )
    return text


def table(report: Report) -> str:
    """The human-readable table."""
    cfg, env = report.config, report.env
    per_chat = cfg["sockets"] / cfg["chats"]
    rounds = len(report.rounds)
    lines = [
        "terrarium-webchat fan-out benchmark",
        f"box: {env['cpus']} CPUs, Python {env['python']}, aiohttp {env['aiohttp']}, "
        f"redis-py {env['redis_py']} (hiredis {'yes' if env['hiredis'] else 'no'}), "
        f"redis-server {env['redis_server']}; {env['pinning']}; gateway loop: "
        f"{'uvloop' if env['uvloop_in_gateway'] else 'asyncio'} (baseline: asyncio)",
        f"load: {cfg['sockets']} sockets over {cfg['chats']} chats ({per_chat:g}/chat), "
        f"{cfg['rate']:g} chunks/s/chat = {cfg['rate'] * cfg['chats']:g} chunks/s, "
        f"{cfg['rate'] * cfg['sockets']:g} frames/s offered; {cfg['duration']:g} s measured "
        f"after {cfg['warmup']:g} s warm-up; {cfg['client_procs']} client process(es); "
        f"{cfg['posts']} POSTs",
        f"{rounds} round(s)"
        + (": medians; ratio = median of per-round ratios" if rounds > 1 else ""),
        "",
    ]
    width = max(len(f.label) for f in report.figures) + 2
    lines.append(f"{'figure':<{width}}{'gateway':>12}{'raw baseline':>14}{'gw / raw':>10}  better")
    lines.append("-" * (width + 44))
    for f in report.figures:
        q = (fmt(f.ratio) + "x") if f.ratio is not None else "-"
        lines.append(f"{f.label:<{width}}{fmt(f.gateway):>12}{fmt(f.raw):>14}{q:>10}  {f.better}")
    lines.append("")
    for i, r in enumerate(report.rounds, 1):
        for kind in r.order:
            lines.append(f"round {i} {kind:<8} bound by: {r.fanout[kind].window.bound}")
    errors = [
        (i, k, r.fanout[k].publisher_errors)
        for i, r in enumerate(report.rounds, 1)
        for k in r.order
        if r.fanout[k].publisher_errors
    ]
    for i, k, n in errors:
        lines.append(f"round {i} {k}: {n} publish errors")
    for warning in noise_warnings(report):
        lines.append("warning: " + warning)
    s = report.stalled
    if s is not None:
        mib = 2**20
        lines += [
            "",
            f"stalled reader (gateway, round 1): 1 socket that never reads, on an extra chat fed "
            f"{s.stall_rate:g} chunks/s x {s.stall_chunk_bytes} B "
            f"(SOCKET_QUEUE_SIZE {s.queue_size or 'default'})",
            f"  others' p50 / p99 without it (ms): {fmt(s.others_without.p50_ms)} / "
            f"{fmt(s.others_without.p99_ms)}",
            f"  others' p50 / p99 with it (ms):    {fmt(s.others_with.p50_ms)} / "
            f"{fmt(s.others_with.p99_ms)}  "
            f"(p99 x{fmt(ratio(s.others_with.p99_ms, s.others_without.p99_ms))})",
            f"  others' frames/s without / with:   {fmt(s.others_without.frames_per_s, 0)} / "
            f"{fmt(s.others_with.frames_per_s, 0)}",
            f"  stalled socket disconnected: {'yes' if s.disconnected else 'no'}"
            + (
                f" (slow-consumer close, {s.disconnect_after_s} s after it connected)"
                if s.disconnected
                else ""
            )
            + f"; it saw: {s.stalled_socket_end}",
            f"  gateway RSS before / peak / after (MiB): {s.rss_before / mib:.1f} / "
            f"{s.rss_peak / mib:.1f} / {s.rss_end / mib:.1f}",
        ]
    lines += ["", "summary: " + report.summary]
    return "\n".join(lines)


def to_json(report: Report) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(asdict(report)), indent=2)


# --- entry point --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout",
        description="Gateway fan-out and job pickup figures next to a bare baseline.",
    )
    p.add_argument("--sockets", type=int, default=1000, help="WebSockets (default 1000)")
    p.add_argument("--chats", type=int, default=100, help="chats they spread over (100)")
    p.add_argument("--rate", type=float, default=20.0, help="chunks/s per chat (20)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (2)")
    p.add_argument("--posts", type=int, default=500, help="sequential POSTs measured (500)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="gateway + baseline runs, alternating order; medians are printed (1)",
    )
    p.add_argument("--post-warmup", type=int, default=50, help="POSTs before measuring (50)")
    p.add_argument(
        "--client-procs", type=int, default=2, help="client processes holding the sockets (2)"
    )
    p.add_argument(
        "--ws-compress",
        action="store_true",
        help="clients offer permessage-deflate, as browsers do (off by default)",
    )
    p.add_argument(
        "--transport",
        choices=("ws", "sse"),
        default="ws",
        help="what the clients open: WebSockets, or SSE streams (both sides) (ws)",
    )
    p.add_argument("--stalled-reader", action="store_true", help="add the stalled-reader test")
    p.add_argument(
        "--stall-rate", type=float, default=400.0, help="chunks/s into the stalled chat (400)"
    )
    p.add_argument(
        "--stall-bytes", type=int, default=2048, help="padding per stalled-chat chunk (2048)"
    )
    p.add_argument(
        "--stall-wait",
        type=float,
        default=30.0,
        help="extra seconds to wait for the stalled socket's disconnect after its window (30)",
    )
    p.add_argument(
        "--queue-size", type=int, default=None, help="gateway SOCKET_QUEUE_SIZE (its default)"
    )
    p.add_argument("--gateway-log-level", default="INFO", help="gateway LOG_LEVEL (INFO)")
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the server alone on one CPU and the load generator + Redis on the others",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' log directory")
    p.add_argument("--client-worker", metavar="CONFIG", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sockets < 1 or args.chats < 1 or args.chats > args.sockets:
        p.error("need 1 <= --chats <= --sockets")
    if min(args.rate, args.duration, args.client_procs, args.rounds) <= 0:
        p.error("--rate, --duration, --client-procs and --rounds must be positive")
    return args


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    try:
        yield path
    finally:
        if keep:
            print(f"logs kept in {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client_worker is not None:
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            asyncio.run(client_worker(json.loads(args.client_worker)))
        return 0
    limit = raise_open_file_limit(4 * args.sockets + 1024)
    if limit < args.sockets + 256:
        print(f"open-file limit {limit} is too low for {args.sockets} sockets", file=sys.stderr)
        return 2
    # The stalled-reader figures read the gateway's /metrics over loopback, without a token.
    os.environ.pop("METRICS_TOKEN", None)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    args.pinning = PINNING.apply() if args.pin else "not pinned"
    with _workdir(args.keep_logs) as workdir:
        try:
            report = asyncio.run(run(args, workdir))
        except KeyboardInterrupt:
            print("interrupted; stopping every process", file=sys.stderr)
            return 130
        finally:
            CHILDREN.stop_all()
    if args.json_out is not None:
        args.json_out.write_text(to_json(report) + "\n")
    print(to_json(report) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
