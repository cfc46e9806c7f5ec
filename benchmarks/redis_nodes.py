"""The Redis side of the scale benchmark: one redis-server or a Redis Cluster, and per-node figures.

:func:`start_single` and :func:`start_cluster` start private redis-servers on free loopback
ports through ``demo.launcher`` (never the shared one on 6379); :func:`snapshot` reads what
each node counts itself (``INFO commandstats``, ``INFO memory``, ``DBSIZE``, ``CLUSTER
INFO``) so that two snapshots give per-node deltas, through one plain client per node
(``bus.client.create_redis``). The benchmarks may not import ``tests`` (an import-linter
contract), hence this small cluster starter of their own.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from bus.client import create_redis
from demo.launcher import (
    Child,
    ChildFailed,
    Launcher,
    find_redis_server,
    free_port,
    redis_major,
    redis_server_args,
)

__all__ = ["NodeStats", "RedisSetup", "delta", "snapshot", "start_cluster", "start_single"]

#: Commands the benchmark itself sends to take its snapshots; left out of the deltas.
OWN_COMMANDS = frozenset({"info", "dbsize", "cluster|info", "ping", "client|setname", "hello"})


@dataclass
class RedisSetup:
    """The Redis side of one setup: its nodes (children) and the URL the services get."""

    name: str
    nodes: list[Child]
    cluster: bool

    @property
    def url(self) -> str:
        """``REDIS_URL`` for the services: the single server, or one node of the cluster."""
        return node_url(self.nodes[0])

    @property
    def urls(self) -> list[str]:
        return [node_url(n) for n in self.nodes]

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes]


def node_url(node: Child) -> str:
    return f"redis://127.0.0.1:{node.port}/0"


def _binary() -> str:
    binary = find_redis_server(min_major=7)
    if binary is None:
        raise ChildFailed("no redis-server: install redis-server (7 or later)")
    return binary


def start_single(launcher: Launcher) -> RedisSetup:
    """One redis-server (no persistence: the benchmark measures the bus, not the disk)."""
    binary = _binary()
    port = free_port()
    args = redis_server_args(binary, port, launcher.tmpdir, appendonly=False)
    node = launcher.spawn(f"redis-{port}", args, {}, port=port, ready_within=10)
    return RedisSetup(name="single", nodes=[node], cluster=False)


def start_cluster(launcher: Launcher, masters: int = 3, within: float = 30.0) -> RedisSetup:
    """``masters`` cluster nodes, no replicas, slots split evenly by ``redis-cli --cluster``."""
    binary = _binary()
    if redis_major(binary) < 7:
        raise ChildFailed(f"{binary} is older than Redis 7: no sharded pub/sub")
    nodes = []
    for _ in range(masters):
        port = free_port()
        extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(launcher.tmpdir / f"nodes-{port}.conf"),
            "--cluster-node-timeout",
            "5000",
            "--cluster-port",  # not port + 10000, which may be taken or above 65535
            str(free_port()),
        ]
        args = redis_server_args(binary, port, launcher.tmpdir, appendonly=False, extra=extra)
        nodes.append(launcher.spawn(f"redis-{port}", args, {}, port=port, ready_within=10))
    create = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes)]
    done = subprocess.run(
        [*create, "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=within,
        check=False,
    )
    if done.returncode != 0:
        raise ChildFailed(f"redis-cli --cluster create failed: {done.stdout[-2000:]}")
    setup = RedisSetup(name=f"cluster-{masters}", nodes=nodes, cluster=True)
    _wait_cluster_ok(setup, within)
    return setup


def _wait_cluster_ok(setup: RedisSetup, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        states = [
            subprocess.run(
                ["redis-cli", "-p", str(n.port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout
            for n in setup.nodes
        ]
        if all("cluster_state:ok" in s for s in states):
            return
        if time.monotonic() > deadline:
            raise ChildFailed(f"cluster not ok after {within}s: {states}")
        time.sleep(0.1)


@dataclass
class NodeStats:
    """What one node counted up to a moment (or between two moments, see :func:`delta`)."""

    url: str
    calls: dict[str, int] = field(default_factory=dict)
    used_memory: int = 0
    keys: int = 0
    bus_sent: dict[str, int] = field(default_factory=dict)
    used_memory_before: int = 0
    keys_before: int = 0

    @property
    def commands(self) -> int:
        """Calls of every command (script-inner ones included, as Redis 7 counts them)."""
        return sum(n for name, n in self.calls.items() if name not in OWN_COMMANDS)


def _cluster_info(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


async def _one(url: str, cluster: bool) -> NodeStats:
    redis = create_redis(url, client_name="bench-node-stats")
    try:
        stats = await redis.info("commandstats")
        memory = await redis.info("memory")
        keys = int(await redis.dbsize())
        bus: dict[str, int] = {}
        if cluster:
            raw = await redis.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
            info = _cluster_info(raw)
            prefix, suffix = "cluster_stats_messages_", "_sent"
            bus = {
                k.removeprefix(prefix).removesuffix(suffix): int(v)
                for k, v in info.items()
                if k.startswith(prefix) and k.endswith(suffix)
            }
    finally:
        await redis.aclose()
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return NodeStats(url, calls, int(memory["used_memory"]), keys, bus)


async def snapshot(setup: RedisSetup) -> list[NodeStats]:
    """Every node's counters now, in node order."""
    return list(await asyncio.gather(*(_one(u, setup.cluster) for u in setup.urls)))


def delta(before: list[NodeStats], after: list[NodeStats]) -> list[NodeStats]:
    """Per node: calls and cluster-bus messages between two snapshots; memory and keys at both."""
    out = []
    for b, a in zip(before, after, strict=True):
        calls = {
            k: v - b.calls.get(k, 0)
            for k, v in a.calls.items()
            if v - b.calls.get(k, 0) and k not in OWN_COMMANDS
        }
        bus = {k: v - b.bus_sent.get(k, 0) for k, v in a.bus_sent.items()}
        out.append(NodeStats(a.url, calls, a.used_memory, a.keys, bus, b.used_memory, b.keys))
    return out
