"""``terrarium_redis_misconfig_total{kind}`` for a process's ``/metrics``: the Redis refusals
that :mod:`bus.errors` counted as misconfiguration (the gateway and the worker register it)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.errors import misconfigurations

__all__ = ["RedisMisconfigCollector"]


class RedisMisconfigCollector(Collector):
    """``terrarium_redis_misconfig_total{kind}``: Redis refusals this process met that are
    misconfiguration, not outages (MOVED, CROSSSLOT, NOPERM, ...; ``bus.errors``)."""

    def collect(self) -> Iterator[Metric]:
        """The process's counts by kind, read at scrape time."""
        family = CounterMetricFamily(
            "terrarium_redis_misconfig",
            "Redis refusals that mean misconfiguration (MOVED, CROSSSLOT, NOPERM, ...), by kind",
            labels=["kind"],
        )
        for kind, count in misconfigurations().items():
            family.add_metric([kind], count)
        yield family
