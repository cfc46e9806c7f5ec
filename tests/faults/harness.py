"""The system under fault: a private redis-server, the demo agent, and real gateway and
worker processes, plus direct (read-mostly) access to Redis for the checks.

Worker timings are shortened through settings (``FAST_WORKER_ENV``): a job idle for
1.5 s is reclaimed, chat leases last 1.5 s, reclaim sweeps run every 250 ms. With the
defaults (30 s, 30 s, 5 s) the same code paths take about 20 times longer.

The cluster tier runs some scenarios on a Redis Cluster instead (``ON_CLUSTER``): the same
processes with ``REDIS_CLUSTER=true``, the checks reading the partitioned layout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bus import BusError, BusKeys, ChatLog
from bus.chatlog import EventRecord
from bus.client import create_redis
from tests.support.clients import ChatClient, has_caught_up
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer
from tests.support.system import Process, System
from tests.support.wait import wait_until

__all__ = ["FAST_WORKER_ENV", "ON_CLUSTER", "REDIS_DOWN", "Harness", "elapsed", "fault_system"]

#: What a probe raises while Redis (or a process behind it) is down or restarting.
REDIS_DOWN: tuple[type[Exception], ...] = (RedisError, BusError, OSError, aiohttp.ClientError)

#: Worker settings shortened for tests (env names as in production).
FAST_WORKER_ENV = {
    "JOB_BLOCK_MS": "300",
    "RECLAIM_MIN_IDLE_MS": "1500",
    "RECLAIM_INTERVAL_MS": "250",
    "CHAT_LEASE_MS": "1500",
    "HEARTBEAT_INTERVAL_MS": "500",
    "SHUTDOWN_GRACE_SECONDS": "5",
    "AGENT_RETRY_BASE_SECONDS": "0.05",
    "STATUS_POLL_INTERVAL_SECONDS": "30",
}

KEYS = BusKeys()
#: The key layout of gateways and workers on a cluster (REDIS_PARTITIONS unset: 16).
CLUSTER_KEYS = BusKeys(partitions=16, cluster=True)

#: Set by the cluster tier: :func:`fault_system` runs on this (running) cluster, emptied
#: first, instead of a private redis-server.
ON_CLUSTER: ContextVar[RedisCluster | None] = ContextVar("ON_CLUSTER", default=None)


def elapsed(since: float) -> float:
    """Seconds since ``since`` (``time.monotonic()``), rounded to the millisecond."""
    return round(time.monotonic() - since, 3)


@dataclass
class Harness:
    """One running system and a Redis client for the checks."""

    system: System
    server: RedisServer | None  # None on a cluster
    redis: Redis
    log: ChatLog
    keys: BusKeys = KEYS

    @property
    def redis_server(self) -> RedisServer:
        """The private redis-server (scenarios that restart or kill Redis)."""
        if self.server is None:
            raise RuntimeError("this scenario runs on a cluster: there is no one redis-server")
        return self.server

    # --- processes -------------------------------------------------------------------------

    def gateway(self, name: str = "gateway", **env: str) -> Process:
        return self.system.gateway(name, **env)

    async def worker(self, name: str, ready: bool = True, /, **env: str) -> Process:
        """Start a worker (fast settings unless overridden); wait for its first heartbeat."""
        await self.redis.hdel(self.keys.workers, name)  # type: ignore[misc]
        proc = self.system.worker(name, **{**FAST_WORKER_ENV, **env})
        if ready:
            await self.until(
                lambda: self.redis.hexists(self.keys.workers, name),
                within=20,
                what=f"{name}'s heartbeat",
            )
        return proc

    # --- reading the bus -------------------------------------------------------------------

    async def events(self, chat_id: str) -> list[EventRecord]:
        return await self.log.events_after(chat_id, "0-0")

    async def history(self, chat_id: str) -> list[dict[str, Any]]:
        return await self.log.history(chat_id, 1000)

    async def terra_replies(self, chat_id: str, reply_to: str) -> list[dict[str, Any]]:
        return [m for m in await self.history(chat_id) if m.get("replyTo") == reply_to]

    async def caught_up(self, clients: Iterable[ChatClient]) -> None:
        """Wait until each client received what its chat's log holds now (the barrier
        before comparing frames with the log; the log is read once, then waited on)."""
        logs: dict[str, list[EventRecord]] = {}
        for client in clients:
            if client.chat_id not in logs:
                logs[client.chat_id] = await self.events(client.chat_id)
            events = logs[client.chat_id]
            await client.wait_for(
                lambda c=client, e=events: has_caught_up(c, e),
                within=10,
                what="the log's last event",
            )

    async def pending(self) -> list[dict[str, Any]]:
        """Pending job entries (every partition): ``message_id``, ``consumer``, ..."""
        rows: list[dict[str, Any]] = []
        for partition in self.keys.partitions:
            with contextlib.suppress(Exception):
                stream = self.keys.jobs_stream(partition)
                rows += await self.redis.xpending_range(stream, self.keys.jobs_group, "-", "+", 100)
        return rows

    async def owner(self) -> str | None:
        """The consumer holding the (only) pending job."""
        rows = await self.pending()
        return str(rows[0]["consumer"]) if rows else None

    async def dead_letters(self) -> list[dict[str, str]]:
        letters = []
        for partition in self.keys.partitions:
            stream = self.keys.dead_letters_stream(partition)
            letters += [fields for _, fields in await self.redis.xrange(stream)]
        return letters

    async def agent_requests(self, marker: str) -> int:
        """Completion requests (not health probes) whose last user message has ``marker``."""
        url = f"{self.system.agent_base}/_demo/requests"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            body = await resp.json()
        count = 0
        for request in body["requests"]:
            users = [m for m in request.get("messages", []) if m.get("role") == "user"]
            if users and marker in str(users[-1].get("content")) and request.get("max_tokens") != 4:
                count += 1
        return count

    @staticmethod
    async def until(probe: Any, *, within: float = 20.0, what: str = "condition") -> Any:
        """``wait_until`` with this harness's policy: Redis errors count as "not yet"."""
        return await wait_until(probe, within, what, ignore=REDIS_DOWN)


@contextlib.asynccontextmanager
async def fault_system(
    workdir: Path, *, appendonly: bool = False, token_delay_ms: float = 2
) -> AsyncIterator[Harness]:
    """Redis (with AOF if asked) and the demo agent; gateways and workers are added by the test.

    Every process is killed at the end; on failure their logs are printed. With
    :data:`ON_CLUSTER` set, the cluster (emptied first) stands in for the redis-server.
    """
    cluster = ON_CLUSTER.get()
    server: RedisServer | None = None
    if cluster is None:
        server = RedisServer(workdir / "redis").start(appendonly=appendonly)
        system = System(workdir, server)
        redis = create_redis(server.url, client_name="fault-test")
        keys = KEYS
    else:
        cluster.flushall()
        system = System(workdir, cluster)
        redis = create_redis(cluster.url, client_name="fault-test", cluster=True)
        keys = CLUSTER_KEYS
    try:
        system.start_agent(token_delay_ms)
        yield Harness(system, server, redis, ChatLog(redis, keys), keys)
    except BaseException:
        print(system.dump_logs())
        raise
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()
        system.close()
        if server is not None:
            server.kill()
