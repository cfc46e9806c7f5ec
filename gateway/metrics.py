"""Prometheus metrics of one gateway process (own registry, so tests can build many apps)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GatewayMetrics:
    """Counters, gauges and histograms exported at ``/metrics`` (prefix ``terrarium_``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "terrarium_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.connections = Gauge(
            "terrarium_ws_connections", "Open visitor connections", ["kind"], registry=r
        )
        self.frames_sent = Counter(
            "terrarium_frames_sent", "Frames sent to visitors", ["kind"], registry=r
        )
        self.delivery_lag = Histogram(
            "terrarium_delivery_lag_seconds",
            "Time from the event's append in Redis to its frame being written to a socket",
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
        self.feed_reconnects = Gauge(
            "terrarium_feed_reconnects", "Pub/sub reconnects since start", registry=r
        )
        self.gaps_filled = Gauge(
            "terrarium_feed_gap_events", "Events recovered from the log, not pub/sub", registry=r
        )

        # Children bound once: labels() per frame was ~6 % of fan-out CPU.
        self._frames_by_kind = {kind: self.frames_sent.labels(kind) for kind in ("ws", "sse")}

    def observe_delivery(self, event_id: str, kind: str) -> None:
        """Count one frame sent and its lag (the event id's time part is the append time)."""
        self._frames_by_kind[kind].inc()
        appended_ms = int(event_id.partition("-")[0])
        self.delivery_lag.observe(max(0.0, time.time() - appended_ms / 1000))
