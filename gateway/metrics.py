"""Prometheus metrics of one gateway process (own registry, so tests can build many apps).

Conventions: cumulative counts are counters (``_total``); ``terrarium_delivery_lag_seconds``
times live frames only (events appended while the socket was open), and frames a resume
replays from the log are counted apart (``terrarium_frames_replayed_total``), so reconnects
never read as delivery lag; ``terrarium_build_info`` carries the version; no ``_created``
series; the process collector adds ``process_*`` (memory, CPU, open file descriptors).
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)

from bus import RedisMisconfigCollector

__all__ = ["DeliveryMeter", "GatewayMetrics", "LiveFrames", "observe_many", "package_version"]

# ``_created`` doubles every counter's and histogram's series for no dashboard's use.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def package_version() -> str:
    """The installed terrarium-webchat version ("unknown" when run from a bare checkout)."""
    try:
        return version("terrarium-webchat")
    except PackageNotFoundError:
        return "unknown"


class _FeedCounts(Protocol):
    """What the metrics read of the live feed's status (``bus.FeedStatus``)."""

    @property
    def chats(self) -> int: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def gaps_filled(self) -> int: ...
    @property
    def homeless(self) -> int: ...
    @property
    def nodes(self) -> dict[str, int]: ...


@dataclass(slots=True)
class DeliveryMeter:
    """Frames written to one socket: live ones timed, replayed ones only counted.

    A frame is replayed when the socket resumed (``lastEventId``) and its event was
    appended before the socket opened; its "lag" would be the visitor's time away.
    """

    metrics: GatewayMetrics
    kind: str
    resumed: bool
    opened_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def observe(self, event_id: str) -> None:
        """Count one frame written for the event ``event_id`` (its time is the append time).

        Live frames are counted in a batch flushed once per event-loop turn: an event
        fanned out to many sockets costs one histogram update, not one per socket.
        """
        appended_ms = int(event_id.partition("-")[0])
        if self.resumed and appended_ms < self.opened_ms:
            self.metrics.frames_replayed.labels(self.kind).inc()
            return
        self.metrics.live_frames.add(self.kind, appended_ms)


class LiveFrames:
    """Live frames written during one event-loop turn, by kind and append time.

    :meth:`flush` (scheduled with ``call_soon`` by the first :meth:`add` of a turn) adds
    them to ``terrarium_frames_sent_total`` and ``terrarium_delivery_lag_seconds`` with
    the same values one observation per frame would give.
    """

    __slots__ = ("_counts", "_metrics", "_scheduled")

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._counts: dict[tuple[str, int], int] = {}
        self._scheduled = False

    def add(self, kind: str, appended_ms: int) -> None:
        """Count one live frame of ``kind`` for an event appended at ``appended_ms``."""
        key = (kind, appended_ms)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a synchronous caller): count now
                self.flush()

    def flush(self) -> None:
        """Move the counted frames into the Prometheus series."""
        self._scheduled = False
        counts, self._counts = self._counts, {}
        if not counts:
            return
        metrics = self._metrics
        now = time.time()
        sent: dict[str, int] = {}
        for (kind, appended_ms), n in counts.items():
            sent[kind] = sent.get(kind, 0) + n
            observe_many(metrics.delivery_lag, max(0.0, now - appended_ms / 1000), n)
        for kind, n in sent.items():
            metrics.frames_sent.labels(kind).inc(n)


def observe_many(histogram: Histogram, value: float, count: int) -> None:
    """``count`` observations of ``value`` at once (what ``observe`` does ``count`` times)."""
    if count == 1:
        histogram.observe(value)
        return
    # prometheus_client has no batch API: its observe() is this, one bucket per call.
    bounds = histogram._upper_bounds
    histogram._buckets[bisect_left(bounds, value)].inc(count)
    histogram._sum.inc(value * count)


class GatewayMetrics:
    """Counters, gauges and histograms exported at ``/metrics`` (prefix ``terrarium_``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        r.register(RedisMisconfigCollector())
        self.build_info = Info("terrarium_build", "Version of the running code", registry=r)
        self.build_info.info({"version": package_version(), "component": "gateway"})
        self.http_requests = Counter(
            "terrarium_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.http_duration = Histogram(
            "terrarium_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template (WebSocket and SSE excluded)",
            ["route", "method"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.connections = Gauge(
            "terrarium_ws_connections",
            "Open visitor connections (kind: ws or sse)",
            ["kind"],
            registry=r,
        )
        self.frames_sent = Counter(
            "terrarium_frames_sent", "Live frames sent to visitors", ["kind"], registry=r
        )
        self.frames_replayed = Counter(
            "terrarium_frames_replayed",
            "Frames replayed from the log to a resuming visitor (not in the delivery lag)",
            ["kind"],
            registry=r,
        )
        self.delivery_lag = Histogram(
            "terrarium_delivery_lag_seconds",
            "Time from a live event's append in Redis to its frame being written to a socket",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.slow_consumers = Counter(
            "terrarium_slow_consumers", "Sockets closed for falling behind", registry=r
        )
        self.resumes = Counter(
            "terrarium_resumes", "Resume attempts by outcome", ["outcome"], registry=r
        )
        self.messages_accepted = Counter(
            "terrarium_messages_accepted", "Visitor messages stored", ["duplicate"], registry=r
        )
        self.rate_limited = Counter(
            "terrarium_rate_limited", "Requests refused by a rate limit", ["scope"], registry=r
        )
        #: Bring your own model (gateway.byo): answers by how they ended, and those streaming.
        self.byo_answers = Counter(
            "terrarium_byo_answers",
            "Answers streamed from visitors' own providers, by outcome",
            ["outcome"],
            registry=r,
        )
        self.byo_streams = Gauge(
            "terrarium_byo_streams", "Answers from visitors' own models streaming now", registry=r
        )
        self.jobs_length = Gauge("terrarium_jobs_length", "Entries in the jobs stream", registry=r)
        self.jobs_pending = Gauge(
            "terrarium_jobs_pending", "Jobs delivered to a worker and not yet acked", registry=r
        )
        self.jobs_dead = Gauge(
            "terrarium_jobs_dead_letter", "Entries in the dead-letter stream", registry=r
        )
        self.worker_up = Gauge(
            "terrarium_worker_up", "1 while a worker heartbeat is fresh", registry=r
        )
        self.agent_up = Gauge(
            "terrarium_agent_up", "1 while the worker reports the agent online", registry=r
        )
        self.subscribed_chats = Gauge(
            "terrarium_subscribed_chats", "Chats this process is subscribed to", registry=r
        )
        self.feed_reconnects = Counter(
            "terrarium_feed_reconnects", "Pub/sub reconnects of the live feed", registry=r
        )
        self.gaps_filled = Counter(
            "terrarium_feed_gap_events", "Events recovered from the log, not pub/sub", registry=r
        )
        self.homeless_chats = Gauge(
            "terrarium_feed_homeless_chats",
            "Redis Cluster: subscribed chats waiting for their node (a failover or slot move)",
            registry=r,
        )
        self.node_chats = Gauge(
            "terrarium_feed_node_chats",
            "Redis Cluster: chats this process follows on each node (its SSUBSCRIBE load)",
            ["node"],
            registry=r,
        )
        self._feed_seen = (0, 0)
        self.live_frames = LiveFrames(self)
        # Zero series for every label value known in advance: a healthy system shows 0 on
        # the dashboard, not "No data".
        for kind in ("ws", "sse"):
            self.frames_sent.labels(kind)
            self.frames_replayed.labels(kind)
            self.connections.labels(kind)
        for scope in (
            "ip",
            "chat",
            "read",
            "stream",
            "failed-code",
            "queued",
            "client-bytes",
            "chat-bytes",
            "byo",
        ):
            self.rate_limited.labels(scope)
        for duplicate in ("false", "true"):
            self.messages_accepted.labels(duplicate)
        for outcome in ("ok", "resync", "restarted"):
            self.resumes.labels(outcome)

    def deliveries(self, kind: str, *, resumed: bool) -> DeliveryMeter:
        """The meter of one socket (``kind`` "ws" or "sse"), opened now."""
        return DeliveryMeter(self, kind, resumed)

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, *, streaming: bool
    ) -> None:
        """Count one HTTP request; time it unless it was a WebSocket or SSE stream."""
        self.http_requests.labels(route, method, status).inc()
        if not streaming:
            self.http_duration.labels(route, method).observe(seconds)

    def record_feed(self, feed: _FeedCounts) -> None:
        """Bring the live-feed metrics up to ``feed`` (its counts only ever grow)."""
        self.subscribed_chats.set(feed.chats)
        self.homeless_chats.set(feed.homeless)
        self.node_chats.clear()  # a node that left the cluster leaves the dashboard too
        for node, chats in feed.nodes.items():
            self.node_chats.labels(node).set(chats)
        reconnects, gaps = self._feed_seen
        if feed.reconnects > reconnects:
            self.feed_reconnects.inc(feed.reconnects - reconnects)
        if feed.gaps_filled > gaps:
            self.gaps_filled.inc(feed.gaps_filled - gaps)
        self._feed_seen = (max(reconnects, feed.reconnects), max(gaps, feed.gaps_filled))
