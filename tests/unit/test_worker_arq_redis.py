"""ARQ_REDIS_URL: arq's own Redis, required when the bus is on a cluster and the refresh is on."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bus import describe_settings_error
from tests.support.worker_settings import fast_settings
from tools.settings import ToolSettings
from worker.scheduled import ArqRedisMissing, ScheduledJobs

AGENT = "http://127.0.0.1:2"
REDIS = "redis://127.0.0.1:1/0"


def _refresh_on(tmp_path: Path) -> ToolSettings:
    return ToolSettings(_env_file=None, content_dir=tmp_path, content_refresh_enabled=True)


def test_arq_shares_redis_url_without_a_cluster() -> None:
    settings = fast_settings(REDIS, AGENT)
    assert settings.arq_redis_url is None
    assert settings.arq_url == settings.redis_url


def test_arq_has_no_redis_on_a_cluster_unless_named() -> None:
    assert fast_settings(REDIS, AGENT, redis_cluster=True).arq_url is None
    own = fast_settings(REDIS, AGENT, redis_cluster=True, arq_redis_url="redis://127.0.0.1:2")
    assert own.arq_url is not None
    assert own.arq_url.get_secret_value() == "redis://127.0.0.1:2"
    # Without a cluster, a separate arq Redis is allowed too.
    apart = fast_settings(REDIS, AGENT, arq_redis_url="rediss://arq.internal:6380/0")
    assert apart.arq_url == apart.arq_redis_url


def test_the_refresh_on_a_cluster_without_arq_redis_is_refused(tmp_path: Path) -> None:
    settings = fast_settings(REDIS, AGENT, redis_cluster=True)
    with pytest.raises(ArqRedisMissing) as refused:
        ScheduledJobs(settings, _refresh_on(tmp_path))
    assert refused.value.setting == "ARQ_REDIS_URL"
    assert "REDIS_CLUSTER" in str(refused.value)
    # Refresh off: nothing of arq starts, nothing is needed.
    off = ScheduledJobs(settings, ToolSettings(_env_file=None, content_dir=tmp_path))
    assert not off.enabled
    # With its own Redis it is fine.
    own = fast_settings(REDIS, AGENT, redis_cluster=True, arq_redis_url="redis://127.0.0.1:2")
    assert ScheduledJobs(own, _refresh_on(tmp_path)).enabled


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:2", "must be rediss://"),
        ("redis://", "must be rediss://"),
        ("redis://worker:pw-secret@arq.example.org:6379/0", "plaintext redis://"),
    ],
)
def test_a_bad_arq_redis_url_is_named_without_its_value(url: str, reason: str) -> None:
    with pytest.raises(ValidationError) as bad:
        fast_settings(REDIS, AGENT, arq_redis_url=url)
    line = describe_settings_error(bad.value)
    assert line.startswith("ARQ_REDIS_URL (")
    assert reason in line
    assert "pw-secret" not in line


def test_plaintext_arq_redis_on_a_private_network_when_allowed() -> None:
    settings = fast_settings(
        "redis://10.0.0.5:6379/0",
        AGENT,
        redis_allow_plaintext=True,
        arq_redis_url="redis://10.0.0.6:6379/0",
    )
    assert settings.arq_url is not None
