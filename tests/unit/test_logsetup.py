"""The log redaction: secrets never reach a log line, and counts that merely sound like
secrets (``tokens``) stay readable."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
from structlog.contextvars import bound_contextvars

from logsetup import MASK, configure_logging, redact


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


@pytest.fixture
def json_lines() -> Iterator[io.BytesIO]:
    """configure_logging's JSON path writing into a buffer; the defaults back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.BytesIO()
    configure_logging("INFO", json_logs=True, stream=out)
    yield out
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def _lines(out: io.BytesIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_context_level_logger_and_time(json_lines: io.BytesIO) -> None:
    log = structlog.get_logger("worker")
    with bound_contextvars(chat_id="c1"):
        log.info("worker.job_finished", tokens=5, outcome="answered")
    log.debug("worker.too_chatty", x=1)  # below LOG_LEVEL: no line
    [line] = _lines(json_lines)
    assert line["event"] == "worker.job_finished"
    assert (line["chat_id"], line["tokens"], line["outcome"]) == ("c1", 5, "answered")
    assert (line["level"], line["logger"]) == ("info", "worker")
    assert line["timestamp"].endswith("Z")


def test_json_lines_mask_secrets(json_lines: io.BytesIO) -> None:
    structlog.get_logger("gateway.http").warning(
        "gateway.request",
        access_code="s3cr3t",
        url="https://gw/api?chatId=c&accessCode=s3cr3t",
        redis="rediss://worker:s3cr3t@redis:6380/0",
        headers={"Authorization": "Bearer s3cr3t"},
    )
    raw = json_lines.getvalue()
    assert b"s3cr3t" not in raw
    assert raw.count(MASK.encode()) == 4


def test_json_lines_carry_the_traceback(json_lines: io.BytesIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("worker").exception("worker.answer_crashed")
    [line] = _lines(json_lines)
    assert line["level"] == "error"
    assert "ValueError: boom" in line["exception"]


def test_json_lines_take_values_json_cannot(json_lines: io.BytesIO) -> None:
    structlog.get_logger("worker").info("worker.odd", when=object(), keys={1: "a"})
    [line] = _lines(json_lines)
    assert line["when"].startswith("<object object")
    assert line["keys"] == {"1": "a"}
