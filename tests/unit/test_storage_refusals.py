"""One mapping of the bus's storage refusals to HTTP answers (review F4), used by Terra's
``POST /api/chat/{chatId}/messages`` and the BYO ``POST /api/chat/{chatId}/byo`` alike, so
the two routes' sentences, statuses and metrics cannot drift apart."""

from __future__ import annotations

import json

import pytest

from bus import QuotaExceeded, StorageFull
from gateway.errors import STORAGE_RETRY_AFTER_SECONDS
from gateway.metrics import GatewayMetrics
from gateway.refusals import storage_refusal


def refused(metrics: GatewayMetrics, scope: str) -> float:
    value = metrics.registry.get_sample_value("terrarium_rate_limited_total", {"scope": scope})
    return value or 0.0


def test_a_full_redis_is_a_busy_503() -> None:
    metrics = GatewayMetrics()
    answer = storage_refusal(StorageFull("full"), metrics, "c1")
    assert answer.status == 503
    assert answer.headers["Retry-After"] == str(STORAGE_RETRY_AFTER_SECONDS)
    assert json.loads(answer.text or "")["error"].startswith("Terra is busy right now")


def test_a_full_chat_is_a_409_counted_as_chat_bytes() -> None:
    metrics = GatewayMetrics()
    answer = storage_refusal(QuotaExceeded("chat"), metrics, "c1")
    assert answer.status == 409
    assert json.loads(answer.text or "") == {
        "error": "This conversation is full. Please start a new chat to go on."
    }
    assert refused(metrics, "chat-bytes") == 1


@pytest.mark.parametrize(("retry_ms", "retry_after"), [(1, "1"), (1500, "2"), (0, "1")])
def test_a_client_s_spent_bytes_are_a_429_with_retry_after(retry_ms: int, retry_after: str) -> None:
    metrics = GatewayMetrics()
    answer = storage_refusal(QuotaExceeded("client", retry_ms), metrics, "c1")
    assert answer.status == 429
    assert answer.headers["Retry-After"] == retry_after
    assert "a lot of messages today" in json.loads(answer.text or "")["error"]
    assert refused(metrics, "client-bytes") == 1


def test_both_message_routes_use_it() -> None:
    from gateway import rest
    from gateway.byo import routes

    for module in (rest, routes):
        assert module.storage_refusal is storage_refusal
