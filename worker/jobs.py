"""The worker's job scheduling: take answer jobs from the bus, run them, hand them back.

What a job *does* is :class:`worker.answer.AnswerHandler`'s business; this module only
decides when a job runs and keeps it owned while it does. Guarantees:

- **Concurrency.** At most ``MAX_CONCURRENT_CHATS`` chats are answered at once. Jobs are
  taken only when a slot is free, round robin across partitions and clients
  (``JobQueue.take``), and with a blocking read over every partition when none waits (no
  polling loop; reads left in flight stop when no slot is free); a job for a chat this
  worker is already answering waits behind it without taking a slot.
- **One worker per chat.** A job first takes a local per-chat lock, then the chat's lease
  (renewed while it works; if another worker holds it, the job waits with backoff and stays
  pending). Losing the lease cancels the answer and leaves the job pending.
- **At least once.** Running jobs' pending entries are renewed (only while this worker
  still owns them) every ``min(RECLAIM_MIN_IDLE_MS, CHAT_LEASE_MS) / 3``; a reclaim sweep
  picks up those of dead workers. How one job is run, acked, dead-lettered or left pending
  (and how it rides out a Redis outage) is :mod:`worker.job_runner`.
- **Graceful stop.** :meth:`Worker.stop` stops reading, lets running answers finish
  within ``SHUTDOWN_GRACE_SECONDS``, hands every job it still holds back to the group (the
  next reclaim sweep of another worker takes them at once), releases leases and removes
  the heartbeat.

Start one in-process with ``async with Worker(settings) as worker: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

import structlog

from bus import BusError, Delivery, JobRef, WorkerBus, open_worker_bus
from worker.aio import cancel_and_wait, wait_event
from worker.answer import AnswerHandler
from worker.chat_holds import ChatHolds
from worker.conversation import DEFAULT_SYSTEM_PROMPT
from worker.health import HealthMonitor
from worker.heartbeat import Heartbeat
from worker.job_runner import JobRunner, RunningJob
from worker.llm import AgentClient
from worker.metrics import WorkerMetrics
from worker.settings import WorkerSettings
from worker.toolkit import ToolKit

__all__ = ["Worker"]

logger = structlog.get_logger("worker")

#: Jobs held per chat slot (queued behind a chat being answered), bounding local backlog.
BACKLOG_PER_SLOT = 8
#: Wait after a Redis error in a background loop before trying again (seconds).
REDIS_RETRY_SECONDS = 1.0
#: A stop waits this long past one blocking read for the reader to return (seconds).
READ_STOP_SLACK_SECONDS = 2.0
#: The agent's health URL is probed with at most this timeout (seconds).
HEALTH_TIMEOUT_MAX_SECONDS = 10.0


class Worker:
    """One worker process's job loop (several may share a Redis; each needs its own name).

    ``bus`` replaces the bus opened from ``settings`` (the caller then closes it); ``agent``
    and ``tools`` likewise.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        bus: WorkerBus | None = None,
        agent: AgentClient | None = None,
        metrics: WorkerMetrics | None = None,
        tools: ToolKit | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.worker_name
        self.metrics = metrics or WorkerMetrics()
        self._own_bus = bus is None
        self.bus = bus or open_worker_bus(
            settings,
            name=self.name,
            lease_ttl_ms=settings.chat_lease_ms,
            block_ms=settings.job_block_ms,
        )
        self._own_agent = agent is None
        self.agent = agent or AgentClient.from_settings(settings, self.metrics)
        self.health = HealthMonitor(
            self.agent,
            settings.health_url,
            interval_seconds=settings.status_poll_interval_seconds,
            llm_interval_seconds=settings.llm_status_poll_interval_seconds,
            timeout_seconds=min(HEALTH_TIMEOUT_MAX_SECONDS, settings.agent_timeout_seconds),
            on_change=self._beat_soon,
            models_url=f"{settings.agent_base_url}/models",
            tool_probe=(
                self.agent.probe_tools
                if tools is not None and settings.max_tool_rounds > 1
                else None
            ),
            busy=lambda: self.agent.streams_open > 0,
        )
        self.agent.on_tool_support = self.health.record_tool_support
        self.tools = tools
        self.handler = AnswerHandler(
            self.bus.chats,
            self.agent,
            settings,
            system_prompt=settings.system_prompt
            or (tools.system_prompt if tools is not None else DEFAULT_SYSTEM_PROMPT),
            tools=tools,
            health=self.health,
            metrics=self.metrics,
            server_context=lambda: self.health.context_tokens,
            opener=self.bus.answers,
        )
        self._jobs: dict[JobRef, RunningJob] = {}
        self._stopping = asyncio.Event()
        #: Set once jobs are done during a stop: the background loops end.
        self._closing = asyncio.Event()
        self._changed = asyncio.Event()
        self._holds = ChatHolds(
            self.bus.leases,
            settings.max_concurrent_chats,
            lease_wait_seconds=settings.chat_lease_ms / 1000,
            stopping=self._stopping,
        )
        self._runner = JobRunner(
            self.bus,
            self.handler,
            self._holds,
            settings,
            stopping=self._stopping,
            metrics=self.metrics,
        )
        self.heartbeat = Heartbeat(
            self.bus.presence,
            self.name,
            self.health,
            lambda: self.active_jobs,
            capacity=settings.max_concurrent_chats,
            interval_seconds=settings.heartbeat_interval_ms / 1000,
            alive_ms=settings.worker_dead_after_ms,
        )
        self._reader: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._started = False
        self._stopped = False

    # --- lifecycle -------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """``MAX_CONCURRENT_CHATS``."""
        return self.settings.max_concurrent_chats

    @property
    def active_jobs(self) -> int:
        """Jobs currently answering (holding their chat)."""
        return self._holds.active

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stopping.is_set()

    async def start(self) -> None:
        """Create the consumer group, publish a first heartbeat, start the loops.

        Raises a :class:`bus.BusError` (:class:`bus.BusUnavailable` when Redis is
        unreachable).
        """
        if self._started:
            return
        self._started = True
        s = self.settings
        if s.redis_insecure:
            logger.warning(
                "worker.redis_insecure",
                endpoint=s.redis_endpoint,
                hint="use rediss:// outside a development machine",
            )
        await self.bus.jobs.ensure_group()
        await self.heartbeat.publish()
        # Opened only now: launchers take the open port as "checked in" (demo.launcher).
        if s.worker_metrics_port is not None:
            self.metrics.serve(s.worker_metrics_port, s.worker_metrics_host)
        self._reader = asyncio.create_task(self._read_loop(), name="worker.read")
        self._background = [
            asyncio.create_task(self._reclaim_loop(), name="worker.reclaim"),
            asyncio.create_task(self._keepalive_loop(), name="worker.keepalive"),
            asyncio.create_task(self.heartbeat.run(self._closing), name="worker.heartbeat"),
            asyncio.create_task(self.health.run(self._closing), name="worker.health"),
        ]
        logger.info(
            "worker.started",
            worker=self.name,
            capacity=self.capacity,
            redis=s.redis_endpoint,
            agent=s.agent_base_url,
        )

    def request_stop(self) -> None:
        """Ask the worker to stop (signal-handler safe); :meth:`stop` does the work."""
        self._stopping.set()
        self._changed.set()

    async def wait_stop_requested(self) -> None:
        """Return once :meth:`request_stop` was called."""
        await self._stopping.wait()

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stop gracefully (idempotent); see the module doc."""
        if self._stopped:
            return
        self._stopped = True
        self.request_stop()
        grace = self.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        if self._reader is not None:
            read_bound = self.settings.job_block_ms / 1000 + READ_STOP_SLACK_SECONDS
            await asyncio.wait({self._reader}, timeout=read_bound)
            await cancel_and_wait([self._reader])
        holding = self._holds.running_tasks()
        waiting = [j.task for j in self._jobs.values() if j.task and j.task not in holding]
        await cancel_and_wait(waiting)
        running = [job.task for job in self._jobs.values() if job.task is not None]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            if late:
                logger.warning("worker.jobs_left_pending", count=len(late))
            await cancel_and_wait(late)
        await cancel_and_wait([j.task for j in self._jobs.values() if j.task is not None])
        await self._release_jobs()
        self._closing.set()
        await cancel_and_wait(self._background)
        with contextlib.suppress(BusError):
            await self.bus.presence.forget(self.name)
        if self._own_agent:
            await self.agent.aclose()
        if self.tools is not None:
            await self.tools.aclose()
        if self._own_bus:
            await self.bus.aclose()
        self.metrics.close()
        logger.info("worker.stopped", worker=self.name)

    async def _release_jobs(self) -> None:
        """Hand every job this worker still holds back to the group (best effort)."""
        try:
            await self.bus.jobs.settle()  # abandoned reads end and hand back what they took
            held = await self.bus.jobs.owned_refs()
            released = await self.bus.jobs.release_refs(held)
        except BusError as exc:
            logger.warning("worker.release_failed", error=type(exc).__name__)
            return
        if released:
            self.metrics.handovers.labels("released").inc(released)
            logger.info("worker.jobs_released", count=released)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop(grace_seconds=0)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- reading, reclaiming, keeping jobs owned -------------------------------------------

    def _room(self) -> int:
        """How many more jobs may be taken now (free chat slots, bounded backlog)."""
        chats = {job.chat_id or job.delivery.entry_id for job in self._jobs.values()}
        free_slots = self.capacity - len(chats)
        backlog = self.capacity * BACKLOG_PER_SLOT - len(self._jobs)
        return max(0, min(free_slots, backlog))

    async def _read_loop(self) -> None:
        while not self._stopping.is_set():
            self._changed.clear()
            room = self._room()
            try:
                if room == 0:
                    self.bus.jobs.stop_reading()  # a read left in flight would take a job
                    await self.bus.jobs.refill()  # what the last read owes an idle worker
                    await self._changed.wait()
                    continue
                # Round robin across clients first; block only when nothing waits. The
                # refill a read owes rides on the next take (issue 10), after its jobs start.
                deliveries = await self.bus.jobs.take(room)
                if not deliveries:
                    deliveries = await self.bus.jobs.read(
                        count=room, block_ms=self.settings.job_block_ms
                    )
            except BusError as exc:
                logger.warning("worker.read_failed", error=type(exc).__name__)
                await self._pause(REDIS_RETRY_SECONDS)
                continue
            for delivery in deliveries:
                self._spawn(delivery)
        with contextlib.suppress(BusError):
            await self.bus.jobs.refill()

    async def _reclaim_loop(self) -> None:
        interval = self.settings.reclaim_interval_ms / 1000
        while not self._stopping.is_set():
            await self._pause(interval)
            if self._stopping.is_set():
                continue
            try:
                # Even with every slot busy: a departed worker's replies were already under
                # way, so they take the next free slot, ahead of new jobs.
                await self._take_over_departed(max(self._room(), 1))
                room = self._room()
                if room == 0:
                    continue
                deliveries = await self.bus.jobs.reclaim(self.settings.reclaim_min_idle_ms, room)
            except BusError as exc:
                logger.warning("worker.reclaim_failed", error=type(exc).__name__)
                continue
            for delivery in deliveries:
                if self._stopping.is_set():
                    break  # still pending: reclaimed again later
                self.metrics.handovers.labels("reclaimed").inc()
                logger.info(
                    "worker.job_reclaimed",
                    entry_id=delivery.entry_id,
                    deliveries=delivery.deliveries,
                )
                self._spawn(delivery)

    async def _take_over_departed(self, room: int) -> None:
        """Take over the jobs and chat leases of workers whose liveness lapsed (they died).

        Their jobs are claimed at once (not after ``RECLAIM_MIN_IDLE_MS``) and their leases
        are taken on first try (not after ``CHAT_LEASE_MS``). Raises bus errors.
        """
        departed = [name for name in await self.bus.presence.departed() if name != self.name]
        for name in departed:
            self._holds.mark_departed(name, self.settings.chat_lease_ms / 1000)
            count = max(room, 1) * 10
            deliveries = await self.bus.jobs.take_over(name, count=count)
            for delivery in deliveries:
                self.metrics.handovers.labels("from_departed").inc()
                logger.info(
                    "worker.job_taken_from_departed",
                    entry_id=delivery.entry_id,
                    departed=name,
                    deliveries=delivery.deliveries,
                )
                self._spawn(delivery, heir=True)
            if len(deliveries) < count:  # all of its jobs are ours: forget it
                await self.bus.presence.forget(name)
            logger.warning("worker.departed_worker_taken_over", departed=name, jobs=len(deliveries))

    async def _keepalive_loop(self) -> None:
        """Touch running jobs' pending entries and renew held chat leases."""
        s = self.settings
        interval = min(s.reclaim_min_idle_ms, s.chat_lease_ms) / 3000
        while not await wait_event(self._closing, interval):
            try:
                for ref in await self.bus.jobs.touch_refs(list(self._jobs)):
                    # Reclaimed by another worker (this one stalled past the idle time).
                    # Whoever holds the chat lease answers; the other acks a duplicate.
                    self.metrics.handovers.labels("taken_over").inc()
                    logger.warning(
                        "worker.job_taken_over", entry_id=ref.entry_id, partition=ref.partition
                    )
                await self._holds.renew()
            except BusError as exc:
                logger.warning("worker.keepalive_failed", error=type(exc).__name__)

    async def _pause(self, seconds: float) -> None:
        """Sleep, waking early when a stop is requested."""
        await wait_event(self._stopping, seconds)

    def _spawn(self, delivery: Delivery, *, heir: bool = False) -> None:
        if delivery.ref in self._jobs:
            return
        chat_id = delivery.job.chat_id if delivery.job is not None else None
        job = RunningJob(delivery, chat_id, heir=heir)
        self._jobs[delivery.ref] = job
        job.task = asyncio.create_task(self._runner.run(job), name=f"job:{delivery.entry_id}")
        job.task.add_done_callback(lambda _task: self._job_done(job))

    def _job_done(self, job: RunningJob) -> None:
        self._jobs.pop(job.delivery.ref, None)
        self._changed.set()  # the heartbeat's job count goes out on its timer (issue 10)

    def _beat_soon(self) -> None:
        self.heartbeat.soon()
