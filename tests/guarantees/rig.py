"""The system under test: one redis-server (AOF on), the demo agent, gateways and workers.

Processes are started through :mod:`tests.support` (the project's launcher helpers); this
module only knows which of them play which part, and how to stop and restart each one
without blocking the event loop that drives the visitors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bus import BusKeys
from bus.client import create_redis
from tests.guarantees.plan import Plan
from tests.support.redis_server import RedisServer
from tests.support.system import Process, System
from tests.support.wait import wait_until

__all__ = ["KEYS", "REDIS_DOWN", "Rig"]

KEYS = BusKeys()
#: What a read of Redis raises while it restarts (a probe then means "not yet").
REDIS_DOWN: tuple[type[Exception], ...] = (RedisError, OSError)

#: Every visitor comes from 127.0.0.1: per-IP and per-chat windows must not shape the load.
_GATEWAY_ENV = {
    "RATE_LIMIT_MAX_PER_IP": "10000000",
    "RATE_LIMIT_MAX_PER_CHAT": "1000000",
    "LOG_LEVEL": "WARNING",
}
#: Worker timings stay at their defaults (takeover is measured as deployed), except a short
#: SIGTERM grace so a stopped worker hands its jobs back within the run.
_WORKER_ENV = {
    "SHUTDOWN_GRACE_SECONDS": "3",
    "MAX_CONCURRENT_CHATS": "4",
    "LOG_LEVEL": "WARNING",
}


class Rig:
    """Owns the processes of one run; every start and stop is awaited off the event loop."""

    def __init__(self, workdir: Path, plan: Plan) -> None:
        self.plan = plan
        self.server = RedisServer(workdir / "redis")
        self.system = System(workdir, self.server)
        self.gateways: list[Process] = []
        #: Live workers by name; a restarted worker gets a new name (a new consumer).
        self.workers: dict[str, Process] = {}
        self._worker_serial = itertools.count(1)
        self._common_env: dict[str, str] = {}
        if plan.jobs_cap is not None:
            self._common_env["JOBS_MAXLEN"] = str(plan.jobs_cap)
        self._redis: Redis | None = None

    # --- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start, appendonly=True)
        self._redis = create_redis(self.server.url, client_name="guarantee-checker")
        await asyncio.to_thread(self.system.start_agent, self.plan.token_delay_ms)
        for index in range(self.plan.gateways):
            proc = await asyncio.to_thread(
                self.system.gateway, f"gateway{index}", **_GATEWAY_ENV, **self._common_env
            )
            self.gateways.append(proc)
        await asyncio.gather(*(self.start_worker() for _ in range(self.plan.workers)))

    async def close(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        await asyncio.to_thread(self.system.close)
        await asyncio.to_thread(self.server.kill)

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("the rig was never started")
        return self._redis

    @property
    def ports(self) -> list[int]:
        return [proc.port for proc in self.gateways if proc.port is not None]

    @property
    def agent_base(self) -> str:
        return self.system.agent_base

    def dump_logs(self) -> str:
        return self.system.dump_logs()

    # --- gateways ----------------------------------------------------------------------------

    async def stop_gateway(self, index: int, sig: signal.Signals) -> None:
        """SIGKILL (a crash) or SIGTERM (a deploy) gateway ``index``; it stays down."""
        proc = self.gateways[index]
        if sig == signal.SIGKILL:
            await asyncio.to_thread(proc.kill)
        else:
            await asyncio.to_thread(proc.stop)

    async def start_gateway(self, index: int) -> None:
        """Start gateway ``index`` again on its port and wait until it listens."""
        await asyncio.to_thread(self.gateways[index].start)

    # --- workers -----------------------------------------------------------------------------

    async def start_worker(self) -> str:
        """Start a worker under a new consumer name; return once its heartbeat is in Redis."""
        name = f"worker{next(self._worker_serial)}"
        proc = await asyncio.to_thread(
            self.system.worker,
            name,
            **_WORKER_ENV,
            **self._common_env,
        )
        self.workers[name] = proc
        await wait_until(
            lambda: self.redis.hexists(KEYS.workers, name),
            30,
            f"{name}'s heartbeat",
            ignore=REDIS_DOWN,
        )
        return name

    async def stop_worker(self, name: str, sig: signal.Signals) -> None:
        """SIGKILL ``name`` at once, or SIGTERM it and wait until it has exited."""
        proc = self.workers.pop(name)
        if sig == signal.SIGKILL:
            await asyncio.to_thread(proc.kill)
            return
        proc.signal(signal.SIGTERM)
        if await asyncio.to_thread(proc.wait, 30) is None:
            await asyncio.to_thread(proc.kill)

    async def lease_owner(self, chat_id: str) -> str | None:
        value = await self.redis.get(KEYS.chat_lease(chat_id))
        return str(value) if value is not None else None

    # --- redis and the agent -----------------------------------------------------------------

    async def restart_redis(self) -> float:
        """SIGTERM redis-server (AOF flushed) and start it on the same port; seconds down."""
        started = time.monotonic()
        await asyncio.to_thread(self.server.restart, appendonly=True)
        return time.monotonic() - started

    async def stop_agent(self) -> None:
        if self.system.agent is not None:
            await asyncio.to_thread(self.system.agent.kill)

    async def start_agent(self) -> None:
        if self.system.agent is not None:
            await asyncio.to_thread(self.system.agent.start)
