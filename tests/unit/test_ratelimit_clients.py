"""Who a budget belongs to, and how token buckets spend (fakeredis: bus logic only)."""

from __future__ import annotations

import fakeredis
import pytest

from bus import Budget
from bus.ratelimit import RateLimiter
from gateway.net import client_key


@pytest.mark.parametrize(
    ("ip", "prefix", "client"),
    [
        ("192.0.2.7", 64, "192.0.2.7"),
        ("2001:db8:1:2::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),
        ("2001:db8:1:2::1", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2::1", 128, "2001:db8:1:2::1/128"),
        ("::ffff:192.0.2.7", 64, "192.0.2.7"),
        ("unknown", 64, "unknown"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_prefix(ip: str, prefix: int, client: str) -> None:
    assert client_key(ip, prefix) == client


async def test_a_bucket_spends_its_budget_then_refills_one_at_a_time() -> None:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    limiter = RateLimiter(redis)
    decisions = [await limiter.hit("k", 3, 60_000) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    # The next token comes back after window/limit (20 s), not at a window's end.
    assert 19_000 < decisions[-1].retry_after_ms <= 20_000
    assert decisions[-1].retry_after_seconds == 20
    await redis.aclose()


async def test_a_refused_spend_costs_no_token_in_any_bucket() -> None:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    limiter = RateLimiter(redis)
    reads, failures = Budget(5, 60_000), Budget(1, 60_000)
    await limiter.spend([("failures", failures, 1)])  # the failure budget is now spent
    for _ in range(3):
        spent, looked = await limiter.spend([("reads", reads, 1), ("failures", failures, 0)])
        assert spent.allowed
        assert not looked.allowed
    assert await redis.get("reads") is None  # refused three times, nothing spent
    spent, looked = await limiter.spend([("reads", reads, 1), ("other", failures, 0)])
    assert spent.allowed
    assert looked.allowed
    assert await redis.get("other") is None  # looking spends nothing
    await redis.aclose()
