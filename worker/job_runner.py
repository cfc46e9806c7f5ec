"""Running one job from the bus: hold its chat, answer it, ack or dead-letter it.

The rules of one run (the scheduling around it is :mod:`worker.jobs`):

- a malformed job, or one delivered more than ``MAX_DELIVERIES`` times, is dead-lettered,
  and its visitor gets a polite error reply when the message can be found;
- a job whose message already has a reply is acked without holding the chat or calling
  the agent;
- otherwise the job holds its chat (:class:`worker.chat_holds.ChatHolds`), the answer
  handler answers it, and it is acked only after the answers are stored;
- a job interrupted by :class:`bus.BusUnavailable` (an outage) waits for Redis to answer
  again (capped backoff) and is tried again, up to ``REDIS_JOB_RETRIES`` times; any other
  bus error (a refused command) leaves it pending at once, for a later reclaim.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Literal

import structlog

from bus import BusError, BusUnavailable, Delivery, JobClose, WorkerBus, is_valid_chat_id
from worker.aio import wait_event
from worker.answer import AnswerHandler, AnswerInterrupted, AnswerOutcome, AnswerProgress
from worker.chat_cache import AlreadyAnswered, AnswerStart
from worker.chat_holds import ChatHolds, LeaseUnavailable
from worker.metrics import WorkerMetrics
from worker.ports import AnswerOpener
from worker.settings import WorkerSettings

__all__ = ["REDIS_JOB_RETRIES", "JobRunner", "Outcome", "RunningJob", "is_outage"]

logger = structlog.get_logger("worker")

#: How a job's run ended.
Outcome = AnswerOutcome | Literal["dead_letter", "abandoned"]

#: Times a job interrupted by a Redis outage is tried again by the same worker.
REDIS_JOB_RETRIES = 3
#: How long such a job waits for Redis to answer again before it is left pending (seconds).
REDIS_OUTAGE_WAIT_SECONDS = 120.0
#: First and longest pause between two pings while waiting for Redis (seconds).
REDIS_BACKOFF_FIRST_SECONDS = 0.2
REDIS_BACKOFF_MAX_SECONDS = 5.0


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says Redis could not be reached (not that it refused a command)."""
    return isinstance(exc, BusUnavailable)


@dataclass(slots=True, eq=False)
class RunningJob:
    """One delivery being run by this worker."""

    delivery: Delivery
    chat_id: str | None
    task: asyncio.Task[None] | None = None
    #: Taken over from a departed worker: runs in a heir slot (see worker.chat_holds).
    heir: bool = False
    progress: AnswerProgress = field(default_factory=AnswerProgress)
    started: float = field(default_factory=time.monotonic)


class JobRunner:
    """Runs jobs (see the module doc); one per worker, shared by its job tasks."""

    def __init__(
        self,
        bus: WorkerBus,
        handler: AnswerHandler,
        holds: ChatHolds,
        settings: WorkerSettings,
        *,
        stopping: asyncio.Event,
        metrics: WorkerMetrics,
    ) -> None:
        self.bus = bus
        self.handler = handler
        #: The handler opens and closes answers in one round trip each (issue 10): no reply
        #: check before holding the chat, no ack after the last reply.
        self.opener: AnswerOpener | None = getattr(handler, "opener", None)
        self.opens = self.opener is not None
        self.holds = holds
        self.settings = settings
        self.metrics = metrics
        self._stopping = stopping

    async def run(self, job: RunningJob) -> None:
        """Run ``job`` to its end; logs and counts the outcome, never raises but a cancel."""
        d = job.delivery
        ids = {"job_id": d.job.job_id, "request_id": d.job.request_id} if d.job else {}
        outcome: Outcome = "abandoned"
        with structlog.contextvars.bound_contextvars(
            chat_id=job.chat_id, entry_id=d.entry_id, **ids
        ):
            # One line per job, at its end (issue 10: each line costs ~0.1 ms of CPU).
            try:
                outcome = await self._process_riding_out_outages(job)
            except asyncio.CancelledError:
                if not self.holds.lost_lease(job.task) or self._stopping.is_set():
                    raise
                logger.warning("worker.job_left_pending", reason="lease lost")
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            except (AnswerInterrupted, LeaseUnavailable) as exc:
                logger.info("worker.job_left_pending", reason=str(exc))
            except BusError as exc:
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
                    tokens=job.progress.tokens,
                    answered=job.progress.answered,
                    deliveries=d.deliveries,
                )

    async def _process_riding_out_outages(self, job: RunningJob) -> Outcome:
        """:meth:`_process`, tried again once Redis answers after an outage interrupted it."""
        tries = 0
        while True:
            try:
                return await self._process(job)
            except BusError as exc:
                tries += 1
                if not is_outage(exc) or tries > REDIS_JOB_RETRIES or self._stopping.is_set():
                    raise
                logger.warning("worker.job_interrupted", reason="redis", error=type(exc).__name__)
                if not await self._wait_for_redis():
                    raise

    async def _wait_for_redis(self) -> bool:
        """Ping with capped backoff until Redis answers; False on stop or after the wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REDIS_OUTAGE_WAIT_SECONDS
        delay = REDIS_BACKOFF_FIRST_SECONDS
        while not self._stopping.is_set() and loop.time() < deadline:
            try:
                await self.bus.ping()
            except BusError:
                await wait_event(self._stopping, delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, REDIS_BACKOFF_MAX_SECONDS)
                continue
            return True
        return False

    async def _process(self, job: RunningJob) -> Outcome:
        d = job.delivery
        if d.job is None:
            await self._dead_letter_malformed(d)
            return "dead_letter"
        chat_id, message_id = d.job.chat_id, d.job.message_id
        job.progress.closing = False  # a try after an outage renews its lease again
        # With an opener, the job's first round trip takes the lease and checks for a reply
        # (issue 10); a job past its deliveries takes the plain lease (no state to set).
        over = d.deliveries > self.settings.max_deliveries
        start = (
            AnswerStart(self.opener, self.handler.cache, chat_id, message_id)
            if self.opener is not None and not over
            else None
        )
        if start is None and await self.handler.already_answered(chat_id, message_id):
            await self.bus.jobs.ack(d.entry_id, d.partition)
            return "duplicate"
        try:
            async with self.holds.hold(chat_id, heir=job.heir, job=job.progress, acquire=start):
                self.metrics.active_jobs.inc()
                try:
                    return await self._answer(job, d, chat_id, message_id, start)
                finally:
                    self.metrics.active_jobs.dec()
        except AlreadyAnswered:
            await self.bus.jobs.ack(d.entry_id, d.partition)
            return "duplicate"

    async def _answer(
        self,
        job: RunningJob,
        d: Delivery,
        chat_id: str,
        message_id: str,
        start: AnswerStart | None,
    ) -> Outcome:
        if d.deliveries > self.settings.max_deliveries:
            reason = f"delivered {d.deliveries} times"
            await self.handler.apologise(chat_id, message_id, f"unknown: {reason}")
            await self.bus.jobs.dead_letter(d, reason)
            logger.warning("worker.job_dead_lettered", reason=reason)
            return "dead_letter"
        close = JobClose(d.entry_id, d.partition, self.holds.leases.owner)
        opened = {"close": close, "start": start} if self.opens else {}
        outcome = await self.handler.answer_job(
            chat_id,
            message_id,
            progress=job.progress,
            stopping=self._stopping.is_set,
            **opened,  # type: ignore[arg-type]
        )
        if job.progress.closed:
            self.bus.jobs.settled(d.ref)  # acked with the reply
        else:
            await self.bus.jobs.ack(d.entry_id, d.partition)
        return outcome

    async def _dead_letter_malformed(self, delivery: Delivery) -> None:
        reason = delivery.error or "malformed job"
        logger.warning("worker.job_dead_lettered", reason=reason)
        chat_id, message_id = _salvage_ids(delivery.raw)
        await self.bus.jobs.dead_letter(delivery, reason)
        if chat_id is not None and message_id is not None:
            with contextlib.suppress(BusError):
                known = await self.bus.chats.message_event_id(chat_id, message_id)
                if known is not None:
                    await self.handler.apologise(chat_id, message_id, f"unknown: {reason}")


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
