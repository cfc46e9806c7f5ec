"""WorkerSettings: env names kept from the original, derived URLs, secrets kept secret."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from bus import describe_settings_error
from worker.settings import WorkerSettings, derive_health_url

AGENT = "http://127.0.0.1:8080/v1/chat/completions"


def make(**values: object) -> WorkerSettings:
    return WorkerSettings(_env_file=None, **values)  # type: ignore[arg-type]


def test_original_env_names_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://worker:pw@redis.example:6380/0")
    monkeypatch.setenv("AGENT_API_URL", AGENT)
    monkeypatch.setenv("MAX_CONCURRENT_CHATS", "5")
    monkeypatch.setenv("STATUS_POLL_INTERVAL_SECONDS", "15")
    monkeypatch.setenv("log_level", "debug")
    s = WorkerSettings(_env_file=None)
    assert s.max_concurrent_chats == 5
    assert s.status_poll_interval_seconds == 15
    assert s.llm_status_poll_interval_seconds == 180
    assert s.agent_model == "terra-webchat"
    assert s.log_level == "DEBUG"
    assert s.redis_key_prefix == "terra"
    assert s.max_turns == 16
    assert s.chunk_interval_ms == 35
    assert s.agent_api_key is None
    assert s.worker_metrics_port is None


def test_agent_urls_are_derived() -> None:
    s = make(redis_url="redis://127.0.0.1:6379", agent_api_url=AGENT)
    assert s.agent_base_url == "http://127.0.0.1:8080/v1"
    assert s.health_url == "http://127.0.0.1:8080/health"
    given = make(
        redis_url="redis://127.0.0.1:6379",
        agent_api_url=AGENT,
        agent_health_url="http://127.0.0.1:9000/healthz",
    )
    assert given.health_url == "http://127.0.0.1:9000/healthz"


@pytest.mark.parametrize(
    ("url", "health"),
    [
        ("http://h:8080/v1/chat/completions", "http://h:8080/health"),
        ("https://h/agent/v1/chat/completions", "https://h/agent/health"),
        ("http://h:8080/v1", "http://h:8080/health"),
        ("http://h:8080/custom", "http://h:8080/health"),
    ],
)
def test_health_url_rule(url: str, health: str) -> None:
    assert derive_health_url(url) == health


def test_required_and_validated() -> None:
    with pytest.raises(ValidationError) as info:
        make()
    fields = {e["loc"][0] for e in info.value.errors()}
    assert fields == {"redis_url", "agent_api_url"}
    with pytest.raises(ValidationError):
        make(redis_url="http://redis:6379", agent_api_url=AGENT)
    with pytest.raises(ValidationError):
        make(redis_url="redis://127.0.0.1", agent_api_url="ftp://agent/v1")


def test_secrets_do_not_leak_in_repr() -> None:
    s = make(
        redis_url="rediss://worker:hunter2@redis.example:6380/0",
        agent_api_url=AGENT,
        agent_api_key="sk-very-secret",
    )
    text = repr(s) + str(s) + s.model_dump_json()
    assert "hunter2" not in text
    assert "sk-very-secret" not in text
    assert s.redis_endpoint == "rediss://redis.example:6380"


@pytest.mark.parametrize(
    ("url", "insecure"),
    [
        ("rediss://redis.example:6380", False),
        ("redis://127.0.0.1:6379", False),
        ("redis://localhost:6379", False),
        ("redis://[::1]:6379", False),
        ("redis://redis.example:6379", True),
        ("redis://10.0.0.5:6379", True),
    ],
)
def test_plaintext_redis_off_loopback_is_flagged(url: str, insecure: bool) -> None:
    settings = make(redis_url=url, agent_api_url=AGENT, redis_allow_plaintext=insecure)
    assert settings.redis_insecure is insecure


@pytest.mark.parametrize(
    "url", ["redis://redis.example:6379", "redis://10.0.0.5:6379/0", "redis://[2001:db8::1]:6379"]
)
def test_plaintext_redis_to_another_host_is_refused_unless_allowed(url: str) -> None:
    """Issue 11: a worker crosses hosts; plaintext there exposes the Redis password."""
    with pytest.raises(ValidationError) as caught:
        make(redis_url=url, agent_api_url=AGENT)
    line = describe_settings_error(caught.value)
    assert line.startswith("REDIS_ALLOW_PLAINTEXT (REDIS_URL is plaintext redis://")
    assert "10.0.0.5" not in line
    assert "redis.example" not in line
    assert make(redis_url=url, agent_api_url=AGENT, redis_allow_plaintext=True).redis_insecure


def test_worker_name_defaults_to_host_and_pid() -> None:
    s = make(redis_url="redis://127.0.0.1", agent_api_url=AGENT)
    assert s.worker_name.endswith(f"-{os.getpid()}")
