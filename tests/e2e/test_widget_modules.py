"""The widget's pure helpers, run in the browser exactly as the widget loads them."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page

from tests.e2e.system import RunningSystem

pytestmark = pytest.mark.e2e


def run_module(page: Page, system: RunningSystem, module: str, body: str) -> Any:
    """Import static/chat/<module> in the page and evaluate `body` with it bound to `m`."""
    page.goto(system.url + "healthz")
    url = f"{system.url}static/chat/{module}"
    return page.evaluate(f"async () => {{ const m = await import('{url}'); {body} }}")


def test_event_ids_compare_as_numbers(page: Page, system: RunningSystem) -> None:
    result = run_module(
        page,
        system,
        "util.js",
        "return [m.compareEventIds('10-0', '9-5'), m.compareEventIds('5-2', '5-10'),"
        " m.compareEventIds(null, '1-0'), m.compareEventIds('7-1', '7-1'),"
        " m.maxEventId(null, '3-0')];",
    )
    assert result == [1, -1, -1, 0, "3-0"]


def test_think_blocks_are_split_from_the_text(page: Page, system: RunningSystem) -> None:
    result = run_module(
        page,
        system,
        "content.js",
        "return ["
        " m.splitThoughts('<think>plan</think>Hello'),"
        " m.splitThoughts('Hi <think>half a thou'),"
        " m.splitThoughts('no opening tag</think>Answer'),"
        " m.splitThoughts('<think>only</think>'),"
        "];",
    )
    assert result[0] == {"text": "Hello", "thoughts": ["plan"], "openThought": None}
    assert result[1] == {"text": "Hi", "thoughts": [], "openThought": "half a thou"}
    assert result[2] == {"text": "Answer", "thoughts": ["no opening tag"], "openThought": None}
    assert result[3] == {"text": "", "thoughts": ["only"], "openThought": None}


def test_send_retry_policy(page: Page, system: RunningSystem) -> None:
    """Retry network errors, 5xx and 429 (at least Retry-After); never other 4xx; give up."""
    result = run_module(
        page,
        system,
        "api.js",
        """
        const err = (status, retryAfterMs = null) => new m.HttpError(status, 'x', { retryAfterMs });
        const delay = (e, attempt = 0) => m.retryDelay(e, attempt);
        return {
          network: delay(err(null)) !== null,
          server: delay(err(503)) !== null,
          tooMany: delay(err(429, 5000)),
          tooLong: delay(err(429, 600000)),
          refused: [400, 401, 403, 404, 409, 413, 415, 422].map((s) => delay(err(s))),
          lastAttempt: delay(err(503), m.SEND_RETRY.attempts - 1),
          seconds: m.parseRetryAfter('3'),
          date: m.parseRetryAfter(new Date(Date.now() + 10000).toUTCString()) > 8000,
          base: m.normalizeApiBase('https://h.example/terrarium/api/'),
          base2: m.normalizeApiBase('https://h.example/terrarium'),
        };
        """,
    )
    assert result["network"] is True
    assert result["server"] is True
    assert result["tooMany"] >= 5000
    assert result["tooLong"] is None, "a Retry-After beyond a minute gives up"
    assert result["refused"] == [None] * 8
    assert result["lastAttempt"] is None
    assert result["seconds"] == 3000
    assert result["date"] is True
    assert result["base"] == "https://h.example/terrarium/"
    assert result["base2"] == "https://h.example/terrarium/"
