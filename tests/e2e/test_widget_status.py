"""What the visitor is told about Terra: quiet when all is well, one truthful notice when not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page, Route, WebSocketRoute, expect

from tests.e2e.system import RunningSystem
from tests.e2e.widget import Widget

pytestmark = pytest.mark.e2e

COULD_NOT_ANSWER = "Couldn\N{RIGHT SINGLE QUOTATION MARK}t answer"

#: Counts rewrites of every live region inside the widget (role=status/alert, aria-live).
COUNT_LIVE_REWRITES = """
(host) => {
  const root = host.shadowRoot;
  const counts = {};
  const observer = new MutationObserver((records) => {
    for (const record of records) {
      let node = record.target.nodeType === 1 ? record.target : record.target.parentElement;
      const region = node?.closest('[role=status], [role=alert], [aria-live]');
      if (!region) continue;
      const name = region.getAttribute('role') || 'aria-live';
      counts[name] = (counts[name] || 0) + 1;
    }
  });
  const options = {subtree: true, childList: true, characterData: true};
  observer.observe(root, options);
  window.__liveRewrites = counts;
}
"""


def chat(page: Page, system: RunningSystem) -> Widget:
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    return widget


def test_a_normal_exchange_is_quiet(page: Page, system: RunningSystem, shots: Path) -> None:
    widget = chat(page, system)
    expect(widget.status_text).to_have_text("Terra is online", timeout=15_000)
    widget.host.evaluate(COUNT_LIVE_REWRITES)
    widget.send("Tell me something [[demo:tokens=60]] [[demo:delay=20]]")
    expect(widget.typing).to_have_text(re.compile("Terra is typing"), timeout=10_000)
    widget.wait_reply()
    expect(widget.stream).to_have_count(0)
    expect(widget.typing).to_be_hidden()
    expect(widget.announcer).to_contain_text("Terra replied:")

    # Only the visitor's message and Terra's reply: no system lines, no notice.
    expect(widget.messages).to_have_count(2)
    expect(widget.banner).to_be_hidden()
    rewrites = page.evaluate("window.__liveRewrites")
    # The reply is announced once; no status line is rewritten per chunk.
    assert rewrites.get("status", 0) == 0, rewrites
    assert rewrites.get("aria-live", 0) <= 2, rewrites
    widget.shot(shots, "status-01-quiet-exchange")


def test_a_failed_reply_says_so_plainly_and_can_be_retried(
    page: Page, fragile_system: RunningSystem, shots: Path
) -> None:
    widget = chat(page, fragile_system)
    expect(widget.status_text).to_have_text("Terra is online", timeout=15_000)
    fragile_system.fail_agent(1, "http500")
    widget.send("What grows in a terrarium? [[demo:echo]]")
    reply = widget.wait_reply()

    # Plain words in the conversation and in the one notice line; internals behind Details.
    expect(reply.locator(".tag")).to_have_text(COULD_NOT_ANSWER)
    expect(widget.banner).to_be_visible()
    notice_text = widget.banner.locator(".notice-text")
    expect(notice_text).to_have_text(re.compile(f"^{COULD_NOT_ANSWER}\\."))
    details = widget.banner.locator("details")
    expect(details).to_have_count(1)
    expect(details.locator("p")).to_be_hidden()
    for visible in (widget.banner.locator(".notice-text"), reply.locator(".bubble")):
        expect(visible).not_to_contain_text("HTTP 500")
        expect(visible).not_to_contain_text("server_error")
    details.locator("summary").click()
    expect(details.locator("p")).to_be_visible()
    expect(details.locator("p")).not_to_be_empty()
    widget.shot(shots, "status-02-failed-reply")

    # Retry (on the reply) asks the same question again; this time Terra answers.
    reply.locator("button.retry-reply").click()
    answer = widget.wait_reply(2)
    expect(answer.locator(".bubble")).to_have_text("What grows in a terrarium?")
    expect(widget.banner).to_be_hidden()
    expect(widget.terra.first.locator("button.retry-reply")).to_have_count(0)
    expect(widget.visitor).to_have_count(2)


def test_a_stopped_worker_is_reported_and_the_message_waits(
    page: Page, fragile_system: RunningSystem, shots: Path
) -> None:
    widget = chat(page, fragile_system)
    expect(widget.status_text).to_have_text("Terra is online", timeout=15_000)
    fragile_system.pause_worker()
    try:
        widget.send("Are you there? [[demo:echo]]")
        # The header follows the worker's heartbeat; the notice says the message waits.
        expect(widget.status_text).to_have_text("Terra is away: messages will wait", timeout=20_000)
        expect(widget.banner).to_contain_text("your message is queued", timeout=10_000)
        expect(widget.host.locator(".dot.offline").first).to_be_visible()
        expect(widget.typing).to_be_hidden()  # nobody is typing while the worker is away
        widget.shot(shots, "status-03-worker-away")
    finally:
        fragile_system.resume_worker()
    widget.wait_reply(timeout=30_000)
    expect(widget.banner).to_be_hidden()
    expect(widget.status_text).to_have_text("Terra is online", timeout=15_000)


def test_a_worker_at_work_is_not_called_away_by_an_older_health_check(
    page: Page, system: RunningSystem
) -> None:
    """Health said the worker had not checked in; then a live frame says it is answering.
    The frame is the newer truth: the widget checks again at once instead of showing
    "Terra is away" and hiding the typing dots until its next poll."""
    checks: list[bool] = []
    stale = [True]

    def health(route: Route) -> None:
        answer = route.fetch()
        body = answer.json()
        if stale[0]:
            body["workerReady"] = False
            for node in body["chain"]:
                if node["id"] in ("worker", "agent", "llm"):
                    node.update(status="offline", detail="Worker has not checked in yet")
        checks.append(stale[0])
        route.fulfill(response=answer, json=body)

    sockets: list[WebSocketRoute] = []

    def tap(ws: WebSocketRoute) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    page.clock.install()
    page.route(re.compile(r".*/api/health(\?.*)?$"), health)
    page.route_web_socket(re.compile(r".*/api/chat\?.*"), tap)
    widget = chat(page, system)
    expect(widget.status_text).to_have_text("Terra is away: messages will wait")
    # From here the page's timers stand still: no periodic health poll can come.
    page.clock.pause_at(page.evaluate("Date.now()") / 1000)  # seconds, in Python
    stale[0] = False
    before = len(checks)
    frame = {"type": "workerState", "state": "processing", "detail": None}
    sockets[-1].send(json.dumps({"chatId": "x", "updatedAt": "2030-01-01T00:00:00.000Z", **frame}))
    page.clock.run_for(50)  # what the widget schedules "now" runs; a poll 5 s away does not
    expect(widget.typing).to_be_visible()
    expect(widget.status_text).to_have_text("Terra is online")
    assert checks[before:] == [False], "exactly one fresh health check"


def test_a_page_whose_origin_is_not_allowed_is_told_so(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    """A site missing from ALLOWED_ORIGINS: a plain sentence at the gate, not 'offline' forever."""
    port = system.url.rstrip("/").rsplit(":", 1)[1]
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # Another origin on this machine (a real loopback response, so Chromium lets it reach
    # loopback addresses), then someone else's page in it.
    page.goto(f"http://localhost:{port}/healthz")
    page.set_content(
        '<!doctype html><html lang="en"><head><title>Elsewhere</title></head><body>'
        f'<main>Another site</main><script src="{system.url}widget.js"></script></body></html>'
    )
    widget = Widget(page)
    widget.open()
    widget.enter_code(system.access_code)
    expect(widget.gate_error).to_contain_text("set up for this website")
    expect(widget.textarea).to_be_hidden()
    assert any("ALLOWED_ORIGINS" in text for text in errors), errors
    widget.shot(shots, "status-04-origin-not-allowed")
