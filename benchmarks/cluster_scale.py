"""Scale benchmark: many gateways, workers and sockets on a Redis Cluster and on one Redis.

``python -m benchmarks.cluster_scale [--sockets 2000] [--streams 200] [--duration 20]
[--quick] [--json] [--json-out FILE]``

Each setup runs the same load, one after the other in the same run: first ONE redis-server
(the baseline, today's deployment), then a 3-master Redis Cluster (``REDIS_CLUSTER=true``).
Per setup: the demo agent as the model, ``--gateways`` gateways and ``--workers`` workers
(``python -m gateway`` / ``python -m worker``), ``--sockets`` WebSockets (v=2) held by
``--client-procs`` client processes (:mod:`benchmarks.scale_clients`), ``--sockets /
--chats`` per chat, each socket of a chat on another gateway, and ``--streams`` closed-loop
visitors: each posts a message to a free chat (gateways in turn), waits until a socket of
that chat sees Terra's answer, and posts again, so about ``--streams`` replies stream at any
time.

Figures per setup (``benchmarks/README.md`` says how to read them): frames/s delivered and
the delivery lag (chunk appended in Redis -> frame at the client, from the eventId) over the
measured window; frames delivered against the chats' event logs; every message answered
once; Redis commands per exchange per node (``INFO commandstats`` deltas), keys and memory
per node, cluster-bus messages per event (``CLUSTER INFO`` deltas); the CPU of every
process from its own ``/proc/<pid>/stat`` and which one bound the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.fanout import (
    CHILDREN,
    SERVER_ENV,
    Cpu,
    cpu_count,
    fmt,
    judge_bound,
    percentile,
    raise_open_file_limit,
)
from benchmarks.redis_nodes import (
    NodeStats,
    RedisSetup,
    delta,
    snapshot,
    start_cluster,
    start_single,
)
from benchmarks.scale_clients import ScaleClients
from bus import BusSettings
from bus.client import create_redis
from demo.launcher import Child, Launcher, LaunchOptions, free_port, redis_version, wait_for_port

__all__ = ["main"]

ACCESS_CODE = "cluster-scale-access-code"
#: Effectively no limit: every request of the benchmark comes from 127.0.0.1.
UNLIMITED = "1000000000"


# --- the services of one setup --------------------------------------------------------------


@dataclass
class Services:
    """Agent, gateways and workers of one setup (children of its launcher)."""

    agent: Child
    gateways: list[Child]
    workers: list[Child]
    worker_metrics: list[int]

    @property
    def ports(self) -> list[int]:
        return [g.port for g in self.gateways if g.port is not None]

    def check(self) -> None:
        """Raise when a service exited: the figures of a run without it would mislead."""
        for child in (self.agent, *self.gateways, *self.workers):
            if not child.running:
                raise RuntimeError(
                    f"{child.name} exited with {child.returncode}:\n{child.output()[-3000:]}"
                )


@dataclass(frozen=True)
class SetupSpec:
    """One ``--setups`` entry: ``single``, ``cluster``, ``single:N`` or ``cluster:N``."""

    kind: str
    label: str
    #: REDIS_PARTITIONS given to the services; None: their default for the kind.
    partitions: int | None

    @classmethod
    def parse(cls, text: str, args: argparse.Namespace) -> SetupSpec:
        kind, _, count = text.partition(":")
        if kind not in ("single", "cluster") or (count and not count.isdigit()):
            raise ValueError(text)
        label = "single" if kind == "single" else f"cluster-{args.masters}"
        if count:
            return cls(kind, f"{label}:{count}", int(count))
        default = args.partitions if kind == "cluster" else args.single_partitions
        return cls(kind, label, default if default and default != 1 else None)


def bus_env(setup: RedisSetup, spec: SetupSpec) -> dict[str, str]:
    """What gateways and workers share: where Redis is and the key layout."""
    env = {"REDIS_URL": setup.url}
    if setup.cluster:
        env["REDIS_CLUSTER"] = "true"
    if spec.partitions is not None:
        env["REDIS_PARTITIONS"] = str(spec.partitions)
    return env


def start_services(
    launcher: Launcher, setup: RedisSetup, spec: SetupSpec, args: argparse.Namespace
) -> Services:
    """Start the agent, then every gateway and worker at once; return once all listen."""
    agent_port = free_port()
    agent = launcher.add_agent(
        agent_port, "--token-delay-ms", str(args.token_delay_ms), "--log-level", "WARNING"
    )
    agent_url = f"http://127.0.0.1:{agent_port}/v1/chat/completions"
    shared = {**SERVER_ENV, **bus_env(setup, spec), "LOG_LEVEL": args.log_level}
    gateways = []
    for i in range(args.gateways):
        port = free_port()
        env = {
            **shared,
            "CHAT_PASSWORD": ACCESS_CODE,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "BASE_PATH": "",
            "DEMO_AGENT": "false",
            "RATE_LIMIT_MAX_PER_IP": UNLIMITED,
            "RATE_LIMIT_MAX_PER_CHAT": UNLIMITED,
            "RATE_LIMIT_READS_PER_IP": UNLIMITED,
            "RATE_LIMIT_STREAMS_PER_IP": UNLIMITED,
            "MAX_SOCKETS_PER_CLIENT": UNLIMITED,
            "READS_IN_FLIGHT_PER_CLIENT": "100000",
            "MAX_QUEUED_PER_CLIENT": "100000",
            "CLIENT_BYTES_PER_DAY": "100000000000",
        }
        gateway = launcher.spawn(f"gateway{i + 1}", [sys.executable, "-m", "gateway"], env)
        gateway.port = port
        gateways.append(gateway)
    workers, metrics = [], []
    slots = max(1, min(256, math.ceil(args.streams / args.workers) + 2))
    for i in range(args.workers):
        metrics_port = free_port()
        env = {
            **shared,
            "AGENT_API_URL": agent_url,
            "WORKER_NAME": f"scale-worker-{i + 1}",
            "MAX_CONCURRENT_CHATS": str(slots),
            "WORKER_METRICS_PORT": str(metrics_port),
        }
        workers.append(launcher.spawn(f"worker{i + 1}", [sys.executable, "-m", "worker"], env))
        metrics.append(metrics_port)
    for child in gateways:
        assert child.proc is not None
        assert child.port is not None
        wait_for_port("127.0.0.1", child.port, 60, child.proc, child.log)
    for child, port in zip(workers, metrics, strict=True):
        assert child.proc is not None
        wait_for_port("127.0.0.1", port, 60, child.proc, child.log)
    return Services(agent, gateways, workers, metrics)


async def wait_ready(services: Services, within: float = 60.0) -> None:
    """Every gateway's ``/readyz`` answers 200."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        for gateway in services.gateways:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"http://127.0.0.1:{gateway.port}/readyz") as resp:
                        if resp.status == 200:
                            break
                if not gateway.running or time.monotonic() > deadline:
                    raise RuntimeError(f"{gateway.name} not ready:\n{gateway.output()[-3000:]}")
                await asyncio.sleep(0.1)


async def jobs_per_worker(services: Services) -> list[int]:
    """Jobs each worker finished (``terrarium_worker_jobs_total``, all outcomes)."""
    out = []
    async with aiohttp.ClientSession() as http:
        for port in services.worker_metrics:
            total = 0.0
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    for line in (await resp.text()).splitlines():
                        if line.startswith("terrarium_worker_jobs_total{"):
                            total += float(line.rsplit(" ", 1)[1])
            out.append(int(total))
    return out


# --- the load -------------------------------------------------------------------------------


def plan_sockets(
    sockets: int, chats: int, ports: list[int]
) -> tuple[list[str], list[tuple[str, str]]]:
    """``(chat ids, [(url, chat)] per socket)``: copy k of chat c goes to gateway (c + k) % G."""
    ids = [f"scale-{i:05d}" for i in range(chats)]
    plan = []
    for i in range(sockets):
        chat, copy = i % chats, i // chats
        port = ports[(chat + copy) % len(ports)]
        url = f"ws://127.0.0.1:{port}/api/chat?chatId={ids[chat]}&accessCode={ACCESS_CODE}&v=2"
        plan.append((url, ids[chat]))
    return ids, plan


@dataclass
class Exchanges:
    """What the closed-loop visitors did."""

    posted: int = 0
    answered: int = 0
    post_errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    unanswered: list[str] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


class Visitors:
    """``--streams`` visitors in a closed loop over the chats (one message per chat at a time)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        clients: ScaleClients,
        ports: list[int],
        chats: list[str],
        args: argparse.Namespace,
    ) -> None:
        self.http, self.clients, self.ports, self.args = http, clients, ports, args
        self.free = deque(chats)
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.seen: dict[str, str] = {}  # message id -> status, answers seen so far
        self.stop = asyncio.Event()
        self.tally = Exchanges()
        self.used: set[str] = set()

    async def run(self, check: Callable[[], None]) -> None:
        """Run the visitors and the answer poller until every visitor stopped.

        ``check`` raises when a service died: the run stops at once with that error.
        """
        try:
            async with asyncio.TaskGroup() as group:
                poller = group.create_task(self._poll(check))
                await asyncio.gather(*(self._visitor(k) for k in range(self.args.streams)))
                poller.cancel()
        except ExceptionGroup as errors:
            raise errors.exceptions[0] from None

    async def _poll(self, check: Callable[[], None]) -> None:
        while True:
            check()
            for part in await self.clients.call("answers"):
                for _chat, message_id, status in part["answers"]:
                    if message_id in self.seen:
                        continue
                    self.seen[message_id] = status
                    future = self.waiting.pop(message_id, None)
                    if future is not None and not future.done():
                        future.set_result(status)
            await asyncio.sleep(0.05)

    async def _visitor(self, k: int) -> None:
        n = 0
        while not self.stop.is_set():
            chat = self.free.popleft()
            self.used.add(chat)
            port = self.ports[(k + n) % len(self.ports)]
            n += 1
            try:
                await self._exchange(port, chat, k, n)
            finally:
                self.free.append(chat)

    async def _exchange(self, port: int, chat: str, k: int, n: int) -> None:
        content = f"[[demo:tokens={self.args.tokens}]] Hello Terra, visitor {k} says hi ({n})."
        url = f"http://127.0.0.1:{port}/api/chat/{chat}/messages"
        started = time.time()
        try:
            async with self.http.post(
                url, json={"content": content, "accessCode": ACCESS_CODE}
            ) as r:
                if r.status != 200:
                    self.tally.post_errors[str(r.status)] += 1
                    await asyncio.sleep(0.5)
                    return
                message_id = str((await r.json())["id"])
        except (aiohttp.ClientError, OSError) as exc:
            self.tally.post_errors[type(exc).__name__] += 1
            await asyncio.sleep(0.5)
            return
        self.tally.posted += 1
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if message_id in self.seen:
            future.set_result(self.seen[message_id])
        else:
            self.waiting[message_id] = future
        try:
            status = await asyncio.wait_for(future, self.args.answer_timeout)
        except TimeoutError:
            self.waiting.pop(message_id, None)
            self.tally.unanswered.append(f"{chat}/{message_id}")
            return
        now = time.time()
        self.tally.answered += 1
        self.tally.statuses[status] += 1
        self.tally.done_at.append(now)
        self.tally.seconds.append(now - started)


async def warm_up(http: aiohttp.ClientSession, ports: list[int], within: float = 60.0) -> None:
    """One exchange through each gateway (chats no socket watches), read back from history."""
    for i, port in enumerate(ports):
        base = f"http://127.0.0.1:{port}/api/chat/scale-warmup-{i}/messages"
        body = {"content": "[[demo:tokens=3]] Hello Terra.", "accessCode": ACCESS_CODE}
        async with http.post(base, json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"warm-up POST: {resp.status} {await resp.text()}")
        deadline = time.monotonic() + within
        while True:
            async with http.get(base, params={"accessCode": ACCESS_CODE}) as resp:
                messages = await resp.json() if resp.status == 200 else []
            if any(m.get("sender") == "Terra" for m in messages):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"warm-up message on gateway {port} not answered in {within}s")
            await asyncio.sleep(0.1)


async def count_events(settings: BusSettings, chats: list[str]) -> dict[str, int]:
    """XLEN of each chat's event log (what every socket of the chat should have received)."""
    keys = settings.bus_keys
    url = settings.redis_url.get_secret_value()
    redis = create_redis(url, client_name="bench-scale", cluster=settings.redis_cluster)
    gate = asyncio.Semaphore(32)

    async def one(chat: str) -> int:
        async with gate:
            return int(await redis.xlen(keys.chat_events(chat)))

    try:
        counts = await asyncio.gather(*(one(c) for c in chats))
    finally:
        await redis.aclose()
    return dict(zip(chats, counts, strict=True))


# --- one setup -------------------------------------------------------------------------------


@dataclass
class NodeFigures:
    """One Redis node's share of a setup's load."""

    node: str
    commands: int
    commands_per_exchange: float
    commands_share_pct: float
    calls: dict[str, int]
    used_memory_mib: float
    used_memory_growth_mib: float
    keys: int
    keys_growth: int
    cluster_bus_sent: int
    cluster_bus_publish_sent: int
    cpu_pct: float


@dataclass
class SetupResult:
    """Everything one setup measured."""

    setup: str
    redis_nodes: int
    settings: dict[str, str]
    window_s: float
    exchanges: int
    exchanges_per_s: float
    posted: int
    answered: int
    unanswered: int
    answers_not_complete: dict[str, int]
    answered_twice: int
    post_errors: dict[str, int]
    exchange_p50_s: float
    exchange_p99_s: float
    frames_per_s: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    chunks_in_window: int
    events: int
    frames_received: int
    frames_expected: int
    sockets_short: int
    frames_out_of_order: int
    socket_closes: dict[str, int]
    commands_per_exchange: float
    events_per_exchange: float
    commands_per_event: float
    cluster_bus_per_event: float | None
    cluster_bus_publish_per_event: float | None
    nodes: list[NodeFigures]
    jobs_per_worker: list[int]
    cpu_pct: dict[str, float]
    bound: str


async def run_setup(spec: SetupSpec, args: argparse.Namespace, workdir: Path) -> SetupResult:
    """Start Redis (one server or a cluster) and the services, run the load, stop everything."""
    here = workdir / spec.label.replace(":", "-")
    redis_launcher = Launcher(LaunchOptions(access_code=ACCESS_CODE, quiet=True, workdir=here))
    app = Launcher(LaunchOptions(access_code=ACCESS_CODE, quiet=True, workdir=here))
    CHILDREN.stoppers += [redis_launcher.stop, app.stop]
    try:
        if spec.kind == "cluster":
            setup = start_cluster(redis_launcher, args.masters)
        else:
            setup = start_single(redis_launcher)
        services = start_services(app, setup, spec, args)
        await wait_ready(services)
        return await measure_setup(setup, spec, services, args)
    finally:
        app.stop()
        redis_launcher.stop()


async def measure_setup(
    setup: RedisSetup, spec: SetupSpec, services: Services, args: argparse.Namespace
) -> SetupResult:
    """Open the sockets, run the visitors, and gather every figure of one setup."""
    layout: dict[str, Any] = {k.lower(): v for k, v in bus_env(setup, spec).items()}
    settings = BusSettings(_env_file=None, **layout)
    chats, plan = plan_sockets(args.sockets, args.chats, services.ports)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        await warm_up(http, services.ports)
        clients = await ScaleClients.start(plan, args.client_procs)
        try:
            visitors = Visitors(http, clients, services.ports, chats, args)
            before = await snapshot(setup)
            pids: dict[str, list[int]] = {
                **{g.name: [g.pid] for g in services.gateways},
                **{w.name: [w.pid] for w in services.workers},
                **{f"redis:{n.port}": [n.pid] for n in setup.nodes},
                "agent": [services.agent.pid],
                "clients": clients.pids,
                "driver": [os.getpid()],
            }
            cpu = Cpu(pids)
            running = asyncio.create_task(visitors.run(services.check))
            await _unless_failed(running, args.warmup)
            cpu.begin()
            t0 = time.time()
            await _unless_failed(running, args.duration)
            t1 = time.time()
            groups, per_client = cpu.end()
            visitors.stop.set()
            await running
            after = await snapshot(setup)
            reports = await clients.call("report", t0=t0, t1=t1)
            finals = await clients.call("final")
        finally:
            await clients.close()
    events = await count_events(settings, sorted(visitors.used | set(chats)))
    jobs = await jobs_per_worker(services)
    return summarise(
        setup,
        spec,
        settings,
        visitors.tally,
        (t0, t1),
        reports,
        finals,
        events,
        before,
        after,
        groups,
        per_client,
        jobs,
    )


async def _unless_failed(task: asyncio.Task[None], seconds: float) -> None:
    """Sleep ``seconds``, or raise at once what ``task`` raised if it ends before."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        task.result()
        raise RuntimeError("the visitors stopped before the end of the window")


def summarise(
    setup: RedisSetup,
    spec: SetupSpec,
    settings: BusSettings,
    tally: Exchanges,
    window: tuple[float, float],
    reports: list[dict[str, Any]],
    finals: list[dict[str, Any]],
    events: dict[str, int],
    before: list[NodeStats],
    after: list[NodeStats],
    cpu: dict[str, float],
    per_client: list[float],
    jobs: list[int],
) -> SetupResult:
    t0, t1 = window
    wall = max(1e-6, t1 - t0)
    lags = [x for r in reports for x in r["lags_ms"]]
    received = expected = short = disorder = 0
    closes: Counter[str] = Counter()
    for part in finals:
        closes.update(part["closes"])
        for chat, frames, out_of_order in part["sockets"]:
            received += frames
            expected += events.get(chat, 0)
            short += frames < events.get(chat, 0)
            disorder += out_of_order
    exchanges = max(1, tally.answered)
    nodes_delta = delta(before, after)
    total_commands = sum(n.commands for n in nodes_delta) or 1
    total_events = sum(events.values())
    node_cpu = {int(k.split(":")[1]): v for k, v in cpu.items() if k.startswith("redis:")}
    nodes = []
    for node, child_port in zip(nodes_delta, [n.port for n in setup.nodes], strict=True):
        nodes.append(
            NodeFigures(
                node=f"127.0.0.1:{child_port}",
                commands=node.commands,
                commands_per_exchange=round(node.commands / exchanges, 1),
                commands_share_pct=round(100 * node.commands / total_commands, 1),
                calls=dict(Counter(node.calls).most_common()),
                used_memory_mib=round(node.used_memory / 2**20, 2),
                used_memory_growth_mib=round(
                    (node.used_memory - node.used_memory_before) / 2**20, 2
                ),
                keys=node.keys,
                keys_growth=node.keys - node.keys_before,
                cluster_bus_sent=sum(node.bus_sent.values()),
                cluster_bus_publish_sent=sum(
                    v for k, v in node.bus_sent.items() if k.startswith("publish")
                ),
                cpu_pct=node_cpu.get(child_port or 0, math.nan),
            )
        )
    bus_total = sum(n.cluster_bus_sent for n in nodes)
    bus_publish = sum(n.cluster_bus_publish_sent for n in nodes)
    not_complete = {k: v for k, v in tally.statuses.items() if k != "complete"}
    return SetupResult(
        setup=spec.label,
        redis_nodes=len(setup.nodes),
        settings={
            **{k: v for k, v in bus_env(setup, spec).items() if k != "REDIS_URL"},
            "REDIS_PARTITIONS": str(settings.partitions),
        },
        window_s=round(wall, 3),
        exchanges=tally.answered,
        exchanges_per_s=round(sum(1 for d in tally.done_at if t0 <= d <= t1) / wall, 1),
        posted=tally.posted,
        answered=tally.answered,
        unanswered=len(tally.unanswered),
        answers_not_complete=not_complete,
        answered_twice=sum(p["twice"] for p in finals),
        post_errors=dict(tally.post_errors),
        exchange_p50_s=round(percentile(tally.seconds, 50), 3),
        exchange_p99_s=round(percentile(tally.seconds, 99), 3),
        frames_per_s=round(sum(r["frames"] for r in reports) / wall, 1),
        lag_p50_ms=percentile(lags, 50),
        lag_p99_ms=percentile(lags, 99),
        lag_max_ms=max(lags, default=math.nan),
        chunks_in_window=len(lags),
        events=total_events,
        frames_received=received,
        frames_expected=expected,
        sockets_short=short,
        frames_out_of_order=disorder,
        socket_closes=dict(closes),
        commands_per_exchange=round(total_commands / exchanges, 1),
        events_per_exchange=round(total_events / exchanges, 1),
        commands_per_event=round(total_commands / max(1, total_events), 2),
        cluster_bus_per_event=round(bus_total / total_events, 3) if setup.cluster else None,
        cluster_bus_publish_per_event=(
            round(bus_publish / total_events, 3) if setup.cluster else None
        ),
        nodes=nodes,
        jobs_per_worker=jobs,
        cpu_pct=cpu,
        bound=judge_bound(cpu, cpu_count(), per_client),
    )


# --- the run and its report ------------------------------------------------------------------


@dataclass
class Report:
    """Both setups of one run."""

    config: dict[str, Any]
    env: dict[str, Any]
    setups: list[SetupResult]


async def run(args: argparse.Namespace, workdir: Path) -> Report:
    """The single-Redis baseline, then the cluster (``--setups`` picks), same load."""
    results = [await run_setup(spec, args, workdir) for spec in args.setups]
    binary = "redis-server"
    config = {
        k: getattr(args, k)
        for k in (
            "sockets",
            "chats",
            "streams",
            "gateways",
            "workers",
            "masters",
            "partitions",
            "single_partitions",
            "tokens",
            "token_delay_ms",
            "duration",
            "warmup",
            "client_procs",
            "quick",
        )
    }
    env = {
        "cpus": cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "redis_py": metadata.version("redis"),
        "redis_server": redis_version(binary),
    }
    return Report(config=config, env=env, setups=results)


ROWS: list[tuple[str, str]] = [
    ("exchanges_per_s", "exchanges/s (answers in the window)"),
    ("exchange_p50_s", "  POST -> answer seen p50 (s)"),
    ("exchange_p99_s", "  POST -> answer seen p99 (s)"),
    ("frames_per_s", "frames/s delivered"),
    ("lag_p50_ms", "chunk appended -> frame p50 (ms)"),
    ("lag_p99_ms", "chunk appended -> frame p99 (ms)"),
    ("lag_max_ms", "chunk appended -> frame max (ms)"),
    ("commands_per_exchange", "Redis commands per exchange (all nodes)"),
    ("events_per_exchange", "  events appended per exchange"),
    ("commands_per_event", "  Redis commands per event"),
    ("cluster_bus_per_event", "cluster-bus messages per event"),
    ("cluster_bus_publish_per_event", "  of which publish / publishshard"),
]


def table(report: Report) -> str:
    """The human-readable report."""
    cfg, env = report.config, report.env
    setups = report.setups
    lines = [
        "terrarium-webchat scale benchmark (issue 13)",
        f"box: {env['cpus']} CPUs shared by every process below (servers, Redis, agent, "
        f"clients, this driver): absolute figures are the box's, compare the setups; "
        f"Python {env['python']}, aiohttp {env['aiohttp']}, redis-py {env['redis_py']}, "
        f"redis-server {env['redis_server']}",
        f"load: {cfg['gateways']} gateways, {cfg['workers']} workers, demo agent "
        f"({cfg['tokens']} tokens x {cfg['token_delay_ms']:g} ms), {cfg['sockets']} sockets over "
        f"{cfg['chats']} chats, {cfg['streams']} closed-loop visitors; {cfg['duration']:g} s "
        f"measured after {cfg['warmup']:g} s",
        "",
    ]
    width = max(len(label) for _, label in ROWS) + 2
    head = "".join(f"{s.setup:>16}" for s in setups)
    lines += [f"{'figure':<{width}}{head}", "-" * (width + 16 * len(setups))]
    for key, label in ROWS:
        cells = "".join(f"{fmt(getattr(s, key)):>16}" for s in setups)
        lines.append(f"{label:<{width}}{cells}")
    checks: list[tuple[str, Callable[[SetupResult], str]]] = [
        ("messages posted / answered", lambda s: f"{s.posted} / {s.answered}"),
        ("not answered / answered twice", lambda s: f"{s.unanswered} / {s.answered_twice}"),
        ("POSTs refused or failed", lambda s: str(sum(s.post_errors.values()))),
        (
            "frames received / in the logs",
            lambda s: f"{100 * s.frames_received / max(1, s.frames_expected):.1f}%",
        ),
        ("sockets short / out of order", lambda s: f"{s.sockets_short} / {s.frames_out_of_order}"),
        ("jobs per worker", lambda s: "/".join(str(j) for j in s.jobs_per_worker)),
    ]
    for label, get in checks:
        lines.append(f"{label:<{width}}" + "".join(f"{get(s):>16}" for s in setups))
    for s in setups:
        layout = ", ".join(f"{k}={v}" for k, v in s.settings.items())
        if s.settings == {"REDIS_PARTITIONS": "1"}:
            layout += " (today's key layout)"
        lines += ["", f"{s.setup}: {s.redis_nodes} redis-server(s), {layout}"]
        lines.append(
            f"  {'node':<18}{'cmds/exch':>10}{'share':>8}{'CPU %':>8}{'MiB':>9}"
            f"{'+MiB':>8}{'keys':>8}{'+keys':>8}{'bus msgs':>10}"
        )
        for n in s.nodes:
            lines.append(
                f"  {n.node:<18}{fmt(n.commands_per_exchange, 1):>10}"
                f"{fmt(n.commands_share_pct, 1) + '%':>8}{fmt(n.cpu_pct, 0):>8}"
                f"{fmt(n.used_memory_mib, 1):>9}{fmt(n.used_memory_growth_mib, 1):>8}"
                f"{n.keys:>8}{n.keys_growth:>8}{n.cluster_bus_sent:>10}"
            )
        calls: Counter[str] = Counter()
        for n in s.nodes:
            calls.update(n.calls)
        top = ", ".join(
            f"{name} {count / max(1, s.exchanges):.1f}" for name, count in calls.most_common(8)
        )
        lines.append(f"  commands per exchange, most called: {top}")
        procs = ", ".join(
            f"{k} {v:.0f}%" for k, v in s.cpu_pct.items() if not k.startswith("redis:")
        )
        lines.append(f"  CPU (% of one core): {procs}")
        lines.append(f"  bound by: {s.bound}")
        if s.post_errors or s.answers_not_complete:
            lines.append(
                f"  POST errors {s.post_errors}; answers not complete {s.answers_not_complete}"
            )
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


# --- entry point -----------------------------------------------------------------------------

QUICK = {
    "sockets": 48,
    "chats": 24,
    "streams": 6,
    "duration": 2.0,
    "warmup": 0.5,
    "tokens": 12,
    "token_delay_ms": 10.0,
    "client_procs": 1,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster_scale",
        description="Gateways, workers and sockets on a Redis Cluster next to one Redis.",
    )
    p.add_argument("--sockets", type=int, default=2000, help="WebSockets held open (2000)")
    p.add_argument("--chats", type=int, default=None, help="chats they watch (sockets / 2)")
    p.add_argument("--streams", type=int, default=200, help="closed-loop visitors (200)")
    p.add_argument("--gateways", type=int, default=3, help="gateway processes (3)")
    p.add_argument("--workers", type=int, default=3, help="worker processes (3)")
    p.add_argument("--masters", type=int, default=3, help="cluster masters (3)")
    p.add_argument(
        "--partitions", type=int, default=None, help="REDIS_PARTITIONS on the cluster (its default)"
    )
    p.add_argument(
        "--single-partitions",
        type=int,
        default=1,
        help="REDIS_PARTITIONS on the single Redis (1: today's layout)",
    )
    p.add_argument("--tokens", type=int, default=40, help="tokens per reply (40)")
    p.add_argument("--token-delay-ms", type=float, default=50.0, help="ms per token (50)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds (20)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before (5)")
    p.add_argument("--answer-timeout", type=float, default=120.0, help="s to wait per answer")
    p.add_argument("--client-procs", type=int, default=2, help="socket-holding processes (2)")
    p.add_argument(
        "--setups",
        default="single,cluster",
        help="which setups, in order: single, cluster, single:N, cluster:N (N partitions) "
        "(single,cluster)",
    )
    p.add_argument("--log-level", default="WARNING", help="LOG_LEVEL of gateways and workers")
    p.add_argument("--quick", action="store_true", help="tiny load for a smoke test (~30 s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.chats is None:
        args.chats = max(args.streams, args.sockets // 2)
    try:
        args.setups = [SetupSpec.parse(s.strip(), args) for s in args.setups.split(",") if s]
    except ValueError as bad:
        p.error(f"--setups: {bad} is not single, cluster, single:N or cluster:N")
    if not args.setups:
        p.error("--setups: name at least one setup")
    if not 1 <= args.streams <= args.chats <= args.sockets:
        p.error("need 1 <= --streams <= --chats <= --sockets")
    if min(args.gateways, args.workers, args.masters, args.client_procs, args.tokens) < 1:
        p.error("--gateways, --workers, --masters, --client-procs and --tokens must be >= 1")
    if args.duration <= 0 or args.warmup < 0:
        p.error("--duration must be positive and --warmup not negative")
    return args


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-cluster-scale-"))
    try:
        yield path
    finally:
        if keep:
            print(f"logs kept in {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_open_file_limit(4 * args.sockets + 1024)
    if limit < args.sockets + 256:
        print(f"open-file limit {limit} is too low for {args.sockets} sockets", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
