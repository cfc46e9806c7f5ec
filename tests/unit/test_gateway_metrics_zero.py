"""Every refusal scope the gateway counts shows 0 on a fresh /metrics, not "No data"."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from gateway.metrics import GatewayMetrics

#: Every label gateway code passes to ``rate_limited.labels`` (limits, rest, byo routes).
SCOPES = [
    "ip",
    "chat",
    "read",
    "stream",
    "failed-code",
    "queued",
    "client-bytes",
    "chat-bytes",
    "byo",
]


@pytest.mark.parametrize("scope", SCOPES)
def test_each_rate_limit_scope_starts_at_zero(scope: str) -> None:
    text = generate_latest(GatewayMetrics().registry).decode()
    assert f'terrarium_rate_limited_total{{scope="{scope}"}} 0.0' in text
