"""Scheduled (non-live) jobs on the worker host, run by arq: the content refresh.

arq is never on the live path: visitor questions come from the bus's job stream
(:mod:`worker.jobs`). arq only runs cron jobs, on its own queue
(``BusKeys.arq_queue``), inside ``python -m worker`` next to the consumer, and only when
``CONTENT_REFRESH_ENABLED`` (otherwise nothing of arq starts). The refresh does its file
and network work off the event loop (``tools.refresh_content``), so it does not slow
answers down.

arq's settings class is called :class:`ScheduledJobs` (``WorkerSettings`` is the
consumer's). Its connection comes from the bus (:func:`bus.open_arq_redis`: TLS, ACL user,
timeouts, retries, client name, bytes as arq reads them), like every other Redis client.
Jobs and results are stored as JSON, not pickle. arq's own keys (``arq:job:*``,
``arq:result:*``...) have fixed names; the worker's Redis ACL allows them.

arq's Redis is ``ARQ_REDIS_URL`` when set, else ``REDIS_URL``, but never a Redis Cluster:
arq's client is a plain single-node client (python-arq/arq#358), its enqueue is a
WATCH/MULTI over ``arq:job:<id>`` and the queue, which hash to different slots
(CROSSSLOT), and its poll touches per-job keys spread over every node (MOVED). Nothing
of arq is on the live path, so rather than re-implement a cron on the bus, arq keeps a
small standalone Redis of its own. With ``REDIS_CLUSTER`` and ``CONTENT_REFRESH_ENABLED``
but no ``ARQ_REDIS_URL`` the worker refuses to start (:class:`ArqRedisMissing`), naming
the setting, instead of failing at the first refresh.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any, ClassVar

import structlog
from arq.connections import ArqRedis
from arq.cron import CronJob
from arq.worker import Worker as ArqWorker

from bus import close_arq_redis, open_arq_redis
from bus.scheduler import arq_queue_name, decode_arq_job, encode_arq_job, is_cluster_node
from tools.scheduled_refresh import JOB_TIMEOUT_SECONDS, refresh_cron_jobs
from tools.settings import ToolSettings
from worker.aio import cancel_and_wait
from worker.settings import WorkerSettings

__all__ = ["ArqRedisIsCluster", "ArqRedisMissing", "ArqRedisUnusable", "ScheduledJobs"]

logger = structlog.get_logger("worker.scheduled")


class ArqRedisUnusable(ValueError):
    """arq has no Redis it can run on (``setting`` names what to fix)."""

    setting = "ARQ_REDIS_URL"


class ArqRedisMissing(ArqRedisUnusable):
    """The refresh is on, the bus is on a cluster, and arq has no Redis of its own."""

    def __init__(self) -> None:
        super().__init__(
            "required with REDIS_CLUSTER and CONTENT_REFRESH_ENABLED: arq's scheduled jobs "
            "cannot run on a Redis Cluster; name a small standalone Redis"
        )


class ArqRedisIsCluster(ArqRedisUnusable):
    """arq's Redis answers as a cluster node: arq would fail at every enqueue and poll."""

    def __init__(self) -> None:
        super().__init__(
            "names a Redis Cluster node; arq's scheduled jobs cannot run on a cluster: "
            "name a small standalone Redis"
        )


class ScheduledJobs:
    """arq worker settings for Terra's scheduled jobs, built from the process's settings.

    ``cron_jobs`` is empty unless ``CONTENT_REFRESH_ENABLED`` (see :attr:`enabled`); when
    enabled without a Redis arq may use (a cluster, no ``ARQ_REDIS_URL``) the constructor
    raises :class:`ArqRedisMissing`.
    :meth:`start` runs an arq worker in the current event loop (arq's signal handling off:
    ``python -m worker`` owns SIGTERM); :meth:`stop` cancels a running refresh (the
    bundle is swapped in atomically, so the old one stays) and closes the connection.
    """

    functions: ClassVar[list[Any]] = []
    #: One refresh at a time; arq polls its queue this often (seconds).
    max_jobs: ClassVar[int] = 1
    poll_delay: ClassVar[float] = 5.0
    job_timeout: ClassVar[int] = JOB_TIMEOUT_SECONDS
    keep_result: ClassVar[int] = 7 * 24 * 3600

    def __init__(self, settings: WorkerSettings, tool_settings: ToolSettings) -> None:
        self.settings = settings
        self.tool_settings = tool_settings
        self.queue_name = arq_queue_name(settings)
        self.cron_jobs: list[CronJob] = refresh_cron_jobs(tool_settings)
        if self.cron_jobs and settings.arq_url is None:
            raise ArqRedisMissing()
        self._arq: ArqWorker | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """True when there is something to schedule."""
        return bool(self.cron_jobs)

    async def on_startup(self, ctx: dict[str, Any]) -> None:
        """arq hook: give the jobs their settings (they never build them)."""
        ctx["tool_settings"] = self.tool_settings

    def create_redis(self) -> ArqRedis:
        """arq's connection to its own Redis, from the bus (:func:`bus.open_arq_redis`)."""
        return open_arq_redis(
            self.settings,
            client_name=f"terrarium-worker:{self.settings.worker_name}:arq",
            url=self.settings.arq_url,
        )

    def create_worker(self, redis: ArqRedis) -> ArqWorker:
        """The arq worker for these jobs. Raises ``RuntimeError`` when nothing is enabled."""
        if not self.enabled:
            raise RuntimeError("no scheduled jobs are enabled (CONTENT_REFRESH_ENABLED)")
        return ArqWorker(
            functions=self.functions,
            queue_name=self.queue_name,
            cron_jobs=self.cron_jobs,
            redis_pool=redis,
            on_startup=self.on_startup,
            handle_signals=False,
            max_jobs=self.max_jobs,
            poll_delay=self.poll_delay,
            job_timeout=self.job_timeout,
            keep_result=self.keep_result,
            max_tries=1,
            job_serializer=encode_arq_job,
            job_deserializer=decode_arq_job,
        )

    async def start(self) -> None:
        """Start the arq worker in the background (no-op when not enabled or running).

        Raises :class:`ArqRedisIsCluster` when arq's Redis answers as a cluster node.
        """
        if not self.enabled or self._task is not None:
            return
        redis = self.create_redis()
        try:
            if await is_cluster_node(redis):
                raise ArqRedisIsCluster()
        except BaseException:
            await redis.aclose(close_connection_pool=True)
            raise
        self._arq = self.create_worker(redis)
        self._task = asyncio.create_task(self._arq.async_run(), name="worker.scheduled")
        logger.info(
            "worker.scheduled_jobs_started",
            queue=self.queue_name,
            jobs=[job.name for job in self.cron_jobs],
            own_redis=self.settings.arq_redis_url is not None,
        )

    async def stop(self) -> None:
        """Stop arq: cancel a running job, forget the health key, close the connection."""
        arq, task = self._arq, self._task
        self._arq = self._task = None
        if arq is None or task is None:
            return
        arq.handle_sig(signal.SIGUSR1)  # arq's own stop: cancels its jobs and main task
        await cancel_and_wait([task, *arq.tasks.values()])
        await close_arq_redis(arq.pool, arq.health_check_key)
        logger.info("worker.scheduled_jobs_stopped")
