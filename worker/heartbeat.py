"""The worker's heartbeat: what it is doing and what it knows of the agent, for the gateway.

Published every ``HEARTBEAT_INTERVAL_MS``, and sooner when the agent's or the model's
status changed; jobs starting and ending reach it at the next beat (issue 10: no beat per
job). Now and then the beat also prunes the heartbeats of workers gone for a day. A failed
beat is logged and tried again at the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from bus import BusError, Presence
from bus.schemas import WorkerHeartbeat
from worker.aio import wait_event
from worker.health import HealthMonitor

__all__ = ["PRUNE_EVERY_SECONDS", "Heartbeat"]

logger = structlog.get_logger("worker")

#: How often a worker deletes the heartbeats of workers gone for a day (seconds).
PRUNE_EVERY_SECONDS = 600.0


class Heartbeat:
    """Publishes one worker's heartbeat (see the module doc)."""

    def __init__(
        self,
        presence: Presence,
        consumer: str,
        health: HealthMonitor,
        active_jobs: Callable[[], int],
        *,
        capacity: int,
        interval_seconds: float,
        alive_ms: int | None = None,
    ) -> None:
        self.presence = presence
        self.consumer = consumer
        self.health = health
        self.active_jobs = active_jobs
        self.capacity = capacity
        self.interval = interval_seconds
        #: Each beat keeps this worker alive this long (Redis's clock); see WORKER_DEAD_AFTER_MS.
        self.alive_ms = alive_ms
        self._soon = asyncio.Event()

    def soon(self) -> None:
        """Beat at once rather than at the next interval."""
        self._soon.set()

    async def publish(self) -> None:
        """Publish the heartbeat now. Raises :class:`bus.BusError`."""
        await self.presence.beat(
            WorkerHeartbeat(
                consumer=self.consumer,
                seen_at_ms=int(time.time() * 1000),
                agent=self.health.agent,
                llm=self.health.llm,
                active_jobs=self.active_jobs(),
                capacity=self.capacity,
            ),
            alive_ms=self.alive_ms,
        )

    async def run(self, closing: asyncio.Event) -> None:
        """Beat until ``closing`` is set; prune long-gone workers now and then."""
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while not closing.is_set():
            await wait_event(self._soon, self.interval)
            self._soon.clear()
            if closing.is_set():
                return
            try:
                await self.publish()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + PRUNE_EVERY_SECONDS
                    pruned = await self.presence.prune()
                    if pruned:
                        logger.info("worker.heartbeats_pruned", count=pruned)
            except BusError as exc:
                logger.warning("worker.heartbeat_failed", error=type(exc).__name__)
