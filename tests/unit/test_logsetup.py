"""The log redaction: secrets never reach a log line, and counts that merely sound like
secrets (``tokens``) stay readable."""

from __future__ import annotations

from typing import Any

import pytest

from logsetup import MASK, redact


def _redacted(**fields: Any) -> dict[str, Any]:
    return dict(redact(None, "info", dict(fields)))


@pytest.mark.parametrize(
    "key",
    [
        "access_code",
        "accessCode",
        "token",
        "session_token",
        "api_key",
        "apiKey",
        "password",
        "Authorization",
        "cookie",
        "signature",
        "secret",
    ],
)
def test_secret_named_fields_are_masked(key: str) -> None:
    assert _redacted(**{key: "s3cr3t"})[key] == MASK


def test_secrets_nested_and_in_urls_are_masked() -> None:
    line = _redacted(
        request={"headers": {"Authorization": "Bearer abc"}},
        url="https://gw/api/chat?chatId=c&token=abc&accessCode=xyz",
        redis="rediss://worker:hunter2@redis:6380/0",
    )
    assert line["request"] == {"headers": {"Authorization": MASK}}
    assert "abc" not in line["url"]
    assert "xyz" not in line["url"]
    assert "hunter2" not in line["redis"]


@pytest.mark.parametrize("key", ["tokens", "prompt_tokens", "max_tokens", "tokens_per_second"])
def test_token_counts_are_not_secrets(key: str) -> None:
    """The worker's job line reports how many tokens a reply had: a count, not a credential
    (it read "[redacted]" on every job)."""
    assert _redacted(**{key: 212})[key] == 212
