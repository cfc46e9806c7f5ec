"""The live feed's spread over Redis Cluster nodes on /metrics (issue 13): chats followed per
node, and chats waiting for their node during a failover; a node that left drops out."""

from __future__ import annotations

from prometheus_client import generate_latest

from bus import FeedStatus
from gateway.metrics import GatewayMetrics


def test_chats_per_node_and_homeless_chats_are_exported() -> None:
    metrics = GatewayMetrics()
    metrics.record_feed(
        FeedStatus(True, 5, 0, 0, homeless=1, nodes={"10.0.0.1:7000": 3, "10.0.0.2:7000": 1})
    )
    text = generate_latest(metrics.registry).decode()
    assert 'terrarium_feed_node_chats{node="10.0.0.1:7000"} 3.0' in text
    assert 'terrarium_feed_node_chats{node="10.0.0.2:7000"} 1.0' in text
    assert "terrarium_feed_homeless_chats 1.0" in text
    metrics.record_feed(FeedStatus(True, 4, 0, 0, nodes={"10.0.0.1:7000": 4}))
    text = generate_latest(metrics.registry).decode()
    assert 'terrarium_feed_node_chats{node="10.0.0.1:7000"} 4.0' in text
    assert "10.0.0.2:7000" not in text
    assert "terrarium_feed_homeless_chats 0.0" in text


def test_one_redis_has_no_node_series() -> None:
    metrics = GatewayMetrics()
    metrics.record_feed(FeedStatus(True, 2, 0, 0))
    text = generate_latest(metrics.registry).decode()
    assert "terrarium_feed_node_chats{" not in text
