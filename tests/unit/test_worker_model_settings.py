"""The worker's settings for real model servers (issue 16): validated at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker.settings import WorkerSettings

AGENT = "http://127.0.0.1:8080/v1/chat/completions"


def make(**values: object) -> WorkerSettings:
    fields: dict[str, object] = {"redis_url": "redis://127.0.0.1:1", "agent_api_url": AGENT}
    return WorkerSettings.model_validate(fields | values)


def test_defaults_bound_every_answer_and_probe_every_few_seconds() -> None:
    settings = make()
    assert settings.agent_max_tokens == 1024
    assert settings.agent_context_tokens is None
    assert settings.agent_system_role is True
    assert settings.status_poll_interval_seconds <= 5


def test_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")
    monkeypatch.setenv("AGENT_API_URL", AGENT)
    monkeypatch.setenv("AGENT_CONTEXT_TOKENS", "4096")
    monkeypatch.setenv("AGENT_SYSTEM_ROLE", "false")
    monkeypatch.setenv("AGENT_MAX_TOKENS", "300")
    settings = WorkerSettings(_env_file=None)
    assert (settings.agent_context_tokens, settings.agent_system_role) == (4096, False)
    assert settings.agent_max_tokens == 300


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"agent_context_tokens": 100}, "agent_context_tokens"),
        ({"agent_max_tokens": 0}, "agent_max_tokens"),
        ({"agent_system_role": "perhaps"}, "agent_system_role"),
        ({"agent_context_tokens": 1000, "agent_max_tokens": 1000}, "AGENT_MAX_TOKENS"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(values: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make(**values)
    assert named in str(caught.value)
