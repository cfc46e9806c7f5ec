"""The worker's Prometheus metrics (prefix ``terrarium_worker_``), one registry per worker.

Labels are bounded: job outcomes and error categories, never ids. Exposed on
``WORKER_METRICS_HOST:WORKER_METRICS_PORT`` (loopback by default) only when the port is set.
Every known label value has a zero series from the start (a healthy worker shows 0, not "No
data"); ``terrarium_build_info`` carries the version; no ``_created`` series; the process
collector adds ``process_*``.
"""

from __future__ import annotations

import threading
from importlib.metadata import PackageNotFoundError, version
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from bus import RedisMisconfigCollector
from worker.errors import CATEGORIES

# ``_created`` doubles every counter's and histogram's series for no dashboard's use.
disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = ["JOB_OUTCOMES", "WorkerMetrics"]

#: Values of the ``outcome`` label of ``jobs_total``.
JOB_OUTCOMES = (
    "answered",  # replied in full
    "stopped",  # the visitor stopped the reply
    "error",  # the agent failed; the visitor got the apology
    "duplicate",  # already answered (redelivery, restart): acked without calling the agent
    "gone",  # the message is no longer in the chat log
    "dead_letter",  # malformed or delivered too often
    "abandoned",  # left pending (shutdown, lost lease, Redis trouble): retried later
)


#: Values of the ``kind`` label of ``job_handovers``.
HANDOVER_KINDS = ("reclaimed", "released", "taken_over", "from_departed")


def package_version() -> str:
    """The installed terrarium-webchat version ("unknown" when run from a bare checkout)."""
    try:
        return version("terrarium-webchat")
    except PackageNotFoundError:
        return "unknown"


class WorkerMetrics:
    """Every metric of one worker, on its own registry (several workers may share a process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        r.register(RedisMisconfigCollector())
        self.build_info = Info("terrarium_build", "Version of the running code", registry=r)
        self.build_info.info({"version": package_version(), "component": "worker"})
        self.jobs = Counter(
            "terrarium_worker_jobs_total", "Jobs finished, by outcome.", ["outcome"], registry=r
        )
        self.job_duration = Histogram(
            "terrarium_worker_job_duration_seconds",
            "Time from picking a job to acking (or leaving) it.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
            registry=r,
        )
        self.agent_errors = Counter(
            "terrarium_worker_agent_errors_total",
            "Failed agent attempts, by category.",
            ["category"],
            registry=r,
        )
        self.chunks = Counter(
            "terrarium_worker_chunks_total", "assistantChunk events written.", registry=r
        )
        self.time_to_first_token = Histogram(
            "terrarium_worker_time_to_first_token_seconds",
            "From sending a request to the agent to its first content delta.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
            registry=r,
        )
        self.active_jobs = Gauge(
            "terrarium_worker_active_jobs", "Jobs currently being answered.", registry=r
        )
        self.handovers = Counter(
            "terrarium_worker_job_handovers",
            "Jobs moving between workers: reclaimed from a dead one, released on stop, "
            "taken over by another while this one stalled.",
            ["kind"],
            registry=r,
        )
        self.stream_resets = Counter(
            "terrarium_worker_stream_resets",
            "Replies restarted after an earlier attempt had streamed part of them.",
            registry=r,
        )
        for outcome in JOB_OUTCOMES:
            self.jobs.labels(outcome)
        for category in CATEGORIES:
            self.agent_errors.labels(category)
        for kind in HANDOVER_KINDS:
            self.handovers.labels(kind)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Start the exposition HTTP server in a daemon thread (idempotent)."""
        if self._server is None:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        """Stop the exposition server, if running."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
