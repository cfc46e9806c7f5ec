"""The worker: consumes answer jobs from Redis and streams Terra's replies back.

Guarantees, and what makes them hold:

- **Concurrency.** At most ``MAX_CONCURRENT_CHATS`` chats are answered at once. Jobs are
  read with ``XREADGROUP BLOCK`` only when a slot is free (no polling loop); a job for a
  chat this worker is already answering waits behind it without taking a slot.
- **Order per chat, one worker per chat.** A job first takes a local per-chat lock, then
  the chat's :class:`bus.ChatLease` (renewed while it works; if another worker holds it,
  the job waits with backoff and stays pending). It then answers, oldest first, every
  visitor message up to its own that has no reply yet (``ChatLog.unanswered_until``), so
  order holds whichever worker gets which job.
- **Exactly one visible reply per message.** ``finish_reply`` stores at most one reply
  per visitor message, and a job whose message already has one is acked without calling
  the agent, so redeliveries and restarts never answer twice.
- **At least once.** A job is acked only after its answers are stored. Running jobs'
  pending entries are renewed (``JobQueue.touch``, only while this worker still owns
  them) every ``RECLAIM_MIN_IDLE_MS / 3``; ``JobQueue.reclaim`` picks up those of dead
  workers; a job delivered more than ``MAX_DELIVERIES`` times, or malformed, is
  dead-lettered and the visitor gets a polite error reply.
- **One visible answer per attempt.** A new attempt at a reply whose earlier attempt
  already streamed chunks (its worker died, or Redis failed mid-answer) first appends a
  ``streamReset``, so clients drop the partial text before the new text arrives.
- **Redis outages.** A job interrupted by Redis trouble waits for Redis to answer again
  (capped backoff) and is tried again by this worker, up to ``REDIS_JOB_RETRIES`` times;
  only then is it left pending for a reclaim.
- **Stop.** A visitor's stop request is seen at the next chunk write, and by a watcher
  polling every ``CANCEL_POLL_MS`` while the agent is silent; the agent call is then
  cancelled, and the partial answer stored with ``status: "stopped"``.
- **Graceful stop.** :meth:`Worker.stop` stops reading, lets running answers finish
  within ``SHUTDOWN_GRACE_SECONDS``, hands every job it still holds back to the group
  (``JobQueue.release``: the next reclaim sweep of another worker takes them at once),
  releases leases and removes the heartbeat.

Start one in-process with ``async with Worker(settings) as worker: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

import structlog
from openai.types.chat import ChatCompletionMessageParam
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.chatlog import ChatLog
from bus.client import RedisOptions, create_redis
from bus.errors import BusError, BusUnavailable
from bus.jobs import Delivery, JobQueue
from bus.keys import BusKeys, is_valid_chat_id
from bus.lease import ChatLease
from bus.presence import Presence
from bus.schemas import MessagePosted, WorkerHeartbeat
from worker.aio import cancel_and_wait, wait_event
from worker.chunks import ChunkWriter
from worker.conversation import DEFAULT_SYSTEM_PROMPT, build_prompt
from worker.errors import AgentError
from worker.health import HealthMonitor
from worker.llm import AgentClient
from worker.metrics import WorkerMetrics
from worker.ports import ReasoningSink, ToolHost
from worker.reasoning import ReasoningWriter
from worker.settings import WorkerSettings
from worker.toolkit import ToolKit
from worker.toolloop import reply as agent_reply
from worker.turns import AgentTurn

__all__ = ["AGENT_APOLOGY", "UNEXPECTED_APOLOGY", "Worker"]

logger = structlog.get_logger("worker")

#: The original worker's reply when the agent keeps failing.
AGENT_APOLOGY = "I had trouble talking to Terra's core service. Please try again shortly."
#: The original worker's reply when something else went wrong.
UNEXPECTED_APOLOGY = "Terra hit an unexpected issue. Please try again in a moment."

Outcome = Literal["answered", "stopped", "error", "duplicate", "gone", "dead_letter", "abandoned"]

#: Jobs held per chat slot (queued behind a chat being answered), bounding local backlog.
BACKLOG_PER_SLOT = 8
#: Longest wait between two tries for a chat lease held by another worker (seconds).
LEASE_RETRY_MAX_SECONDS = 1.0
#: How often a worker deletes the heartbeats of workers gone for a day (seconds).
PRUNE_EVERY_SECONDS = 600.0
#: Wait after a Redis error in a background loop before trying again (seconds).
REDIS_RETRY_SECONDS = 1.0
#: Times a job interrupted by Redis trouble is tried again by the same worker.
REDIS_JOB_RETRIES = 3
#: How long such a job waits for Redis to answer again before it is left pending (seconds).
REDIS_OUTAGE_WAIT_SECONDS = 120.0
#: Longest pause between two pings while waiting for Redis to come back (seconds).
REDIS_BACKOFF_MAX_SECONDS = 5.0


class _Abandon(Exception):
    """Leave the job pending (not acked): another try will pick it up."""


@dataclass(slots=True, eq=False)
class _Job:
    delivery: Delivery
    chat_id: str | None
    task: asyncio.Task[None] | None = None
    #: Holds its chat (local lock and lease): counts as an active job.
    running: bool = False
    lease_lost: bool = False
    tokens: int = 0
    answered: int = 0
    started: float = field(default_factory=time.monotonic)


def _chat_of(delivery: Delivery) -> str | None:
    if delivery.job is not None:
        return delivery.job.chat_id
    return None


class Worker:
    """One worker process's job loop (several may share a Redis; each needs its own name)."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        redis: Redis | None = None,
        agent: AgentClient | None = None,
        metrics: WorkerMetrics | None = None,
        tools: ToolKit | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.worker_name
        self.metrics = metrics or WorkerMetrics()
        self._own_redis = redis is None
        block_s = settings.job_block_ms / 1000
        self.redis: Redis = redis or create_redis(
            settings.redis_url.get_secret_value(),
            client_name=f"terrarium-worker:{self.name}",
            options=RedisOptions(
                socket_timeout=max(5.0, block_s + 5.0),
                ssl_ca_certs=settings.redis_ca_cert,
                ssl_certfile=settings.redis_client_cert,
                ssl_keyfile=settings.redis_client_key,
            ),
        )
        self.keys = BusKeys(settings.redis_key_prefix)
        self.chatlog = ChatLog(self.redis, self.keys)
        self.queue = JobQueue(self.redis, self.keys, self.name)
        self.lease = ChatLease(self.redis, self.keys, self.name, ttl_ms=settings.chat_lease_ms)
        self.presence = Presence(self.redis, self.keys)
        self._own_agent = agent is None
        self.agent = agent or AgentClient.from_settings(settings, self.metrics)
        self.health = HealthMonitor(
            self.agent,
            settings.health_url,
            interval_seconds=settings.status_poll_interval_seconds,
            llm_interval_seconds=settings.llm_status_poll_interval_seconds,
            timeout_seconds=min(10.0, settings.agent_timeout_seconds),
            on_change=self._beat_soon,
        )
        #: Terra's tools (the tool loop); without them the agent only chats.
        self.tools = tools
        self.system_prompt = settings.system_prompt or (
            tools.system_prompt if tools is not None else DEFAULT_SYSTEM_PROMPT
        )
        self._jobs: dict[str, _Job] = {}
        #: Chats answered at once; jobs queued behind their chat's lock hold no slot.
        self._slots = asyncio.Semaphore(settings.max_concurrent_chats)
        self._chat_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._leases: dict[str, _Job] = {}
        self._stopping = asyncio.Event()
        #: Set once jobs are done during a stop: the background loops end.
        self._closing = asyncio.Event()
        self._changed = asyncio.Event()
        self._beat = asyncio.Event()
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
        return sum(1 for job in self._jobs.values() if job.running)

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stopping.is_set()

    async def start(self) -> None:
        """Create the consumer group, publish a first heartbeat, start the loops.

        Raises :class:`bus.BusUnavailable` or a redis error when Redis is unreachable.
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
        await self.queue.ensure_group()
        await self._publish_heartbeat()
        if s.worker_metrics_port is not None:
            self.metrics.serve(s.worker_metrics_port, s.worker_metrics_host)
        self._reader = asyncio.create_task(self._read_loop(), name="worker.read")
        self._background = [
            asyncio.create_task(self._reclaim_loop(), name="worker.reclaim"),
            asyncio.create_task(self._keepalive_loop(), name="worker.keepalive"),
            asyncio.create_task(self._heartbeat_loop(), name="worker.heartbeat"),
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
            read_bound = self.settings.job_block_ms / 1000 + 2.0
            await asyncio.wait({self._reader}, timeout=read_bound)
            await cancel_and_wait([self._reader])
        waiting = [j.task for j in self._jobs.values() if j.task is not None and not j.running]
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
        with contextlib.suppress(BusError, RedisError, OSError):
            await self.presence.forget(self.name)
        if self._own_agent:
            await self.agent.aclose()
        if self.tools is not None:
            await self.tools.aclose()
        if self._own_redis:
            await self.redis.aclose()
        self.metrics.close()
        logger.info("worker.stopped", worker=self.name)

    async def _release_jobs(self) -> None:
        """Hand every job this worker still holds back to the group (best effort)."""
        try:
            held = await self.queue.owned()
            released = await self.queue.release(held)
        except (BusError, RedisError, OSError) as exc:
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

    # --- reading and reclaiming ----------------------------------------------------------

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
            if room == 0:
                await self._changed.wait()
                continue
            try:
                deliveries = await self.queue.read(count=room, block_ms=self.settings.job_block_ms)
            except (BusError, RedisError) as exc:
                logger.warning("worker.read_failed", error=type(exc).__name__)
                await self._pause(REDIS_RETRY_SECONDS)
                continue
            for delivery in deliveries:
                self._spawn(delivery)

    async def _reclaim_loop(self) -> None:
        interval = self.settings.reclaim_interval_ms / 1000
        while not self._stopping.is_set():
            await self._pause(interval)
            room = self._room()
            if room == 0 or self._stopping.is_set():
                continue
            try:
                deliveries = await self.queue.reclaim(self.settings.reclaim_min_idle_ms, room)
            except (BusError, RedisError) as exc:
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

    async def _pause(self, seconds: float) -> None:
        """Sleep, waking early when a stop is requested."""
        await wait_event(self._stopping, seconds)

    def _spawn(self, delivery: Delivery) -> None:
        if delivery.entry_id in self._jobs:
            return
        job = _Job(delivery, _chat_of(delivery))
        self._jobs[delivery.entry_id] = job
        job.task = asyncio.create_task(self._run_job(job), name=f"job:{delivery.entry_id}")
        job.task.add_done_callback(lambda _task: self._job_done(job))

    def _job_done(self, job: _Job) -> None:
        self._jobs.pop(job.delivery.entry_id, None)
        self._changed.set()
        self._beat_soon()

    # --- keepalive and heartbeat -----------------------------------------------------------

    async def _keepalive_loop(self) -> None:
        """Touch running jobs' pending entries and renew held chat leases."""
        s = self.settings
        interval = min(s.reclaim_min_idle_ms, s.chat_lease_ms) / 3000
        while not await wait_event(self._closing, interval):
            try:
                for entry_id in await self.queue.touch(list(self._jobs)):
                    # Reclaimed by another worker (this one stalled past the idle time).
                    # Whoever holds the chat lease answers; the other acks a duplicate.
                    self.metrics.handovers.labels("taken_over").inc()
                    logger.warning("worker.job_taken_over", entry_id=entry_id)
                for chat_id, job in list(self._leases.items()):
                    if not await self.lease.acquire(chat_id):
                        logger.warning("worker.lease_lost", chat_id=chat_id)
                        job.lease_lost = True
                        if job.task is not None:
                            job.task.cancel()
            except (BusError, RedisError) as exc:
                logger.warning("worker.keepalive_failed", error=type(exc).__name__)

    def _beat_soon(self) -> None:
        self._beat.set()

    async def _heartbeat_loop(self) -> None:
        """Beat every ``HEARTBEAT_INTERVAL_MS`` (sooner on news); prune long-gone workers."""
        loop = asyncio.get_running_loop()
        interval = self.settings.heartbeat_interval_ms / 1000
        next_prune = loop.time()
        while not self._closing.is_set():
            await wait_event(self._beat, interval)
            self._beat.clear()
            if self._closing.is_set():
                return
            try:
                await self._publish_heartbeat()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + PRUNE_EVERY_SECONDS
                    pruned = await self.presence.prune()
                    if pruned:
                        logger.info("worker.heartbeats_pruned", count=pruned)
            except (BusError, RedisError) as exc:
                logger.warning("worker.heartbeat_failed", error=type(exc).__name__)

    async def _publish_heartbeat(self) -> None:
        await self.presence.beat(
            WorkerHeartbeat(
                consumer=self.name,
                seen_at_ms=int(time.time() * 1000),
                agent=self.health.agent,
                llm=self.health.llm,
                active_jobs=self.active_jobs,
                capacity=self.capacity,
            )
        )

    # --- one job -------------------------------------------------------------------------

    async def _run_job(self, job: _Job) -> None:
        d = job.delivery
        ids = {"job_id": d.job.job_id, "request_id": d.job.request_id} if d.job else {}
        outcome: Outcome = "abandoned"
        with structlog.contextvars.bound_contextvars(
            chat_id=job.chat_id, entry_id=d.entry_id, **ids
        ):
            logger.info("worker.job_started", deliveries=d.deliveries)
            try:
                outcome = await self._process_riding_out_redis(job)
            except asyncio.CancelledError:
                if not job.lease_lost or self._stopped:
                    raise
                logger.warning("worker.job_left_pending", reason="lease lost")
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            except _Abandon as exc:
                logger.info("worker.job_left_pending", reason=str(exc))
            except (BusError, RedisError) as exc:
                logger.warning("worker.job_left_pending", reason="redis", error=type(exc).__name__)
            except Exception:
                logger.exception("worker.job_crashed")
            finally:
                duration = time.monotonic() - job.started
                self.metrics.jobs.labels(outcome).inc()
                self.metrics.job_duration.observe(duration)
                logger.info(
                    "worker.job_finished",
                    outcome=outcome,
                    duration_ms=round(duration * 1000, 1),
                    tokens=job.tokens,
                    answered=job.answered,
                )

    async def _process_riding_out_redis(self, job: _Job) -> Outcome:
        """:meth:`_process`, tried again once Redis answers after it failed on Redis."""
        tries = 0
        while True:
            try:
                return await self._process(job)
            except (BusError, RedisError) as exc:
                tries += 1
                if not _is_outage(exc) or tries > REDIS_JOB_RETRIES or self._stopping.is_set():
                    raise
                logger.warning("worker.job_interrupted", reason="redis", error=type(exc).__name__)
                if not await self._wait_for_redis():
                    raise

    async def _wait_for_redis(self) -> bool:
        """Ping with capped backoff until Redis answers; False on stop or after the wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REDIS_OUTAGE_WAIT_SECONDS
        delay = 0.2
        while not self._stopping.is_set() and loop.time() < deadline:
            try:
                await self.redis.ping()
            except (RedisError, OSError):
                await self._pause(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, REDIS_BACKOFF_MAX_SECONDS)
                continue
            return True
        return False

    async def _process(self, job: _Job) -> Outcome:
        d = job.delivery
        if d.job is None:
            await self._dead_letter_malformed(d)
            return "dead_letter"
        chat_id, message_id = d.job.chat_id, d.job.message_id
        if await self.chatlog.reply_event_id(chat_id, message_id) is not None:
            await self.queue.ack(d.entry_id)
            return "duplicate"
        async with self._hold_chat(job, chat_id):
            if d.deliveries > self.settings.max_deliveries:
                reason = f"delivered {d.deliveries} times"
                await self._reply_error(chat_id, message_id, f"unknown: {reason}")
                await self.queue.dead_letter(d, reason)
                logger.warning("worker.job_dead_lettered", reason=reason)
                return "dead_letter"
            pending = await self.chatlog.unanswered_until(chat_id, message_id)
            if not pending:
                await self.queue.ack(d.entry_id)
                exists = await self.chatlog.reply_event_id(chat_id, message_id) is not None
                return "duplicate" if exists else "gone"
            outcome: Outcome = "answered"
            for index, (event_id, message) in enumerate(pending):
                if index and self._stopping.is_set():
                    raise _Abandon("stopping between answers")
                outcome = await self._answer(job, chat_id, event_id, message)
                job.answered += 1
            await self.queue.ack(d.entry_id)
            return outcome

    @contextlib.asynccontextmanager
    async def _hold_chat(self, job: _Job, chat_id: str) -> AsyncIterator[None]:
        """Local per-chat lock, then the chat's Redis lease (waiting with backoff)."""
        lock, users = self._chat_locks.get(chat_id, (asyncio.Lock(), 0))
        self._chat_locks[chat_id] = (lock, users + 1)
        try:
            async with lock, self._slots:
                await self._acquire_lease(chat_id)
                self._leases[chat_id] = job
                job.running = True
                self.metrics.active_jobs.inc()
                self._beat_soon()
                try:
                    yield
                finally:
                    job.running = False
                    self.metrics.active_jobs.dec()
                    self._leases.pop(chat_id, None)
                    with contextlib.suppress(BusError, RedisError):
                        await asyncio.shield(self.lease.release(chat_id))
        finally:
            lock, users = self._chat_locks[chat_id]
            if users <= 1:
                del self._chat_locks[chat_id]
            else:
                self._chat_locks[chat_id] = (lock, users - 1)

    async def _acquire_lease(self, chat_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10 * self.settings.chat_lease_ms / 1000
        delay = 0.05
        while not await self.lease.acquire(chat_id):
            if self._stopping.is_set():
                raise _Abandon("stopping while waiting for the chat lease")
            if loop.time() > deadline:
                raise _Abandon("chat lease busy for too long")
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, LEASE_RETRY_MAX_SECONDS)
        if self._stopping.is_set():
            await self.lease.release(chat_id)
            raise _Abandon("stopping")

    # --- one answer ----------------------------------------------------------------------

    async def _answer(
        self, job: _Job, chat_id: str, event_id: str, message: MessagePosted
    ) -> Outcome:
        """Answer one visitor message: stream the reply, then store it."""
        await self.chatlog.set_worker_state(chat_id, "processing")
        if await self.chatlog.streaming_reply(chat_id) == message.id:
            # An earlier attempt streamed part of this reply and never finished it.
            await self.chatlog.reset_stream(chat_id, message.id, reason="retry")
            self.metrics.stream_resets.inc()
            logger.info("worker.stream_reset", reply_to=message.id)
        if await self.chatlog.cancel_requested(chat_id, message.id):
            await self._finish(chat_id, message.id, "", "stopped", "stopped")
            return "stopped"
        prompt = await self._conversation(chat_id, event_id, message)
        writer = ChunkWriter(
            self.chatlog,
            chat_id,
            message.id,
            interval_seconds=self.settings.chunk_interval_ms / 1000,
            metrics=self.metrics,
        )
        thoughts = ReasoningWriter(
            self.chatlog,
            chat_id,
            message.id,
            interval_seconds=self.settings.chunk_interval_ms / 1000,
        )
        tools = self.tools.session(self.chatlog, chat_id, message.id) if self.tools else None
        try:
            async with writer, thoughts:
                turn = await self._reply_until_stopped(
                    prompt, writer, chat_id, message.id, tools=tools, thoughts=thoughts
                )
        except AgentError as err:
            job.tokens += writer.deltas
            self.health.record_failure(err)
            logger.warning("worker.agent_failed", category=err.category, error=err.message)
            partial = writer.text.rstrip()
            content = f"{partial}\n\n{AGENT_APOLOGY}" if partial else AGENT_APOLOGY
            await self._finish(chat_id, message.id, content, "error", err.detail)
            return "error"
        except (BusError, RedisError, _Abandon):
            raise
        except Exception as exc:
            logger.exception("worker.answer_crashed")
            detail = f"unknown: {type(exc).__name__}"  # the detail reaches visitors
            await self._finish(chat_id, message.id, UNEXPECTED_APOLOGY, "error", detail)
            return "error"
        job.tokens += turn.deltas
        self.health.record_reply(turn.latency_ms)
        if turn.stopped:
            await self._finish(chat_id, message.id, turn.content, "stopped", "stopped")
            return "stopped"
        await self._finish(chat_id, message.id, turn.content, "complete", None)
        return "answered"

    async def _reply_until_stopped(
        self,
        prompt: list[ChatCompletionMessageParam],
        writer: ChunkWriter,
        chat_id: str,
        message_id: str,
        *,
        tools: ToolHost | None = None,
        thoughts: ReasoningSink | None = None,
    ) -> AgentTurn:
        """The agent's reply, cut short as soon as the visitor asks to stop it.

        The chunk writer sees a stop request at its next write; while the agent sends
        nothing, a watcher polls the request every ``CANCEL_POLL_MS``. Either way the
        agent call is cancelled and the text streamed so far is the (stopped) turn.
        """
        reply = asyncio.create_task(
            agent_reply(
                self.agent,
                prompt,
                writer,
                tools=tools,
                thoughts=thoughts,
                max_rounds=self.settings.max_tool_rounds,
            ),
            name="worker.reply",
        )
        watcher = asyncio.create_task(
            self._watch_cancel(chat_id, message_id, writer, reply), name="worker.watch_cancel"
        )
        try:
            await asyncio.wait({reply, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled ourselves (stop, lost lease)
            reply.cancel()
            watcher.cancel()
            await cancel_and_wait([reply, watcher])
            raise
        if not reply.done():  # the visitor asked to stop
            await cancel_and_wait([reply])
            if not reply.done() or reply.cancelled() or reply.exception() is not None:
                return AgentTurn(content=writer.text, stopped=True, deltas=writer.deltas)
        await cancel_and_wait([watcher])
        return reply.result()

    async def _watch_cancel(
        self, chat_id: str, message_id: str, writer: ChunkWriter, reply: asyncio.Task[AgentTurn]
    ) -> None:
        """Return once the visitor asked to stop (``writer.cancelled`` is then set)."""
        interval = self.settings.cancel_poll_ms / 1000
        while not reply.done():
            if writer.cancelled:
                return
            try:
                if await self.chatlog.cancel_requested(chat_id, message_id):
                    writer.cancelled = True
                    return
            except Exception as exc:  # Redis trouble: the chunk writes report it
                logger.debug("worker.cancel_check_failed", error=type(exc).__name__)
            await asyncio.sleep(interval)
        await asyncio.Event().wait()  # the reply ended first: wait to be cancelled

    async def _finish(
        self,
        chat_id: str,
        reply_to: str,
        content: str,
        status: Literal["complete", "stopped", "error"],
        detail: str | None,
    ) -> None:
        _, duplicate = await self.chatlog.finish_reply(
            chat_id,
            reply_to,
            content,
            status=status,
            state="error" if status == "error" else "responded",
            detail=detail,
        )
        if duplicate:
            logger.warning("worker.reply_already_stored", reply_to=reply_to)

    async def _reply_error(self, chat_id: str, message_id: str, detail: str) -> None:
        if await self.chatlog.reply_event_id(chat_id, message_id) is None:
            await self._finish(chat_id, message_id, UNEXPECTED_APOLOGY, "error", detail)

    async def _conversation(
        self, chat_id: str, event_id: str, message: MessagePosted
    ) -> list[ChatCompletionMessageParam]:
        """The prompt for ``message``; replies written after it are found by ``replyTo``."""
        max_turns = self.settings.max_turns
        for count in (max_turns * 4, self.chatlog.limits.messages_maxlen):
            recent = await self.chatlog.messages_until(chat_id, "+", count)
            if any(m.id == message.id for m in recent):
                break
        else:
            recent = await self.chatlog.messages_until(chat_id, event_id, max_turns)
        asked = [m.id for m in recent if m.sender == "Visitor"]
        return build_prompt(
            recent,
            message,
            system_prompt=self.system_prompt,
            max_turns=max_turns,
            tool_turns=await self.chatlog.tool_turns(chat_id, asked),
        )

    async def _dead_letter_malformed(self, delivery: Delivery) -> None:
        reason = delivery.error or "malformed job"
        logger.warning("worker.job_dead_lettered", reason=reason)
        chat_id, message_id = _salvage_ids(delivery.raw)
        await self.queue.dead_letter(delivery, reason)
        if chat_id is not None and message_id is not None:
            with contextlib.suppress(BusError, RedisError):
                known = await self.chatlog.message_event_id(chat_id, message_id)
                if known is not None:
                    await self._reply_error(chat_id, message_id, f"unknown: {reason}")


def _is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says Redis could not be reached (not that it refused a command)."""
    root = exc.__cause__ if isinstance(exc, BusUnavailable) and exc.__cause__ else exc
    return isinstance(root, BusUnavailable | RedisConnectionError | RedisTimeoutError | OSError)


def _salvage_ids(raw: str) -> tuple[str | None, str | None]:
    """``(chat_id, message_id)`` from a malformed job, when they are readable."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    chat_id, message_id = data.get("chat_id"), data.get("message_id")
    if isinstance(chat_id, str) and is_valid_chat_id(chat_id) and isinstance(message_id, str):
        return chat_id, message_id
    return None, None
