"""The widget when things go wrong: gateway crash, lost responses, refused messages, v=2 frames."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page, Route, WebSocketRoute, expect

from tests.e2e.system import RunningSystem
from tests.e2e.widget import SLOW_ANSWER, Widget
from tests.support.wait import wait_until_sync

pytestmark = pytest.mark.e2e

POSTS = re.compile(r".*/api/chat/[^/]+/messages$")
HISTORY = re.compile(r".*/api/chat/[^/]+/messages\?.*")


def chat(page: Page, system: RunningSystem) -> Widget:
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    return widget


def test_gateway_down_then_back_resumes_the_answer(
    page: Page, own_system: RunningSystem, shots: Path
) -> None:
    widget = chat(page, own_system)
    widget.send(f"Keep talking while the relay restarts {SLOW_ANSWER}")
    expect(widget.stream.locator(".bubble")).to_be_visible(timeout=20_000)
    before = widget.stream_text()

    own_system.kill_gateway()
    expect(widget.banner).to_be_visible(timeout=10_000)
    expect(widget.banner).to_have_text(re.compile(r"^Terra is reconnecting…"))
    # The header follows the connection, not the "send your first message" fallback.
    expect(widget.host.locator(".status-text")).to_have_text("Reconnecting to Terra…")
    widget.shot(shots, "13-reconnect-banner")

    own_system.start_gateway()
    # Backoff is at most ~10.5 s; the banner says so, then that we are back.
    expect(widget.banner).to_contain_text("Reconnected", timeout=20_000)
    expect(widget.banner).to_be_hidden(timeout=10_000)

    # The frames produced while the gateway was down arrive after the resume point.
    reply = widget.wait_reply(timeout=40_000)
    final = reply.locator(".bubble").inner_text()
    assert final.count(before[:30]) == 1, "the answer's beginning is missing or doubled"
    expect(widget.terra).to_have_count(1)
    widget.send("Still there? [[demo:echo]]")
    widget.wait_reply(count=2)
    widget.shot(shots, "14-recovered-after-gateway-restart")


def test_a_lost_response_is_retried_without_a_duplicate(page: Page, system: RunningSystem) -> None:
    """The first POST reaches the gateway but its answer is lost: the retry must not double it."""
    widget = chat(page, system)
    bodies: list[dict[str, Any]] = []

    def lose_first_response(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        bodies.append(json.loads(route.request.post_data or "{}"))
        if len(bodies) == 1:
            route.fetch()  # delivered to the gateway...
            route.abort("connectionreset")  # ...but the browser never hears back
        else:
            route.continue_()

    page.route(POSTS, lose_first_response)
    widget.send("Only once, please [[demo:echo]]")
    widget.wait_reply()
    expect(widget.visitor).to_have_count(1)
    # The socket showed the stored message already; the retry still goes out, harmlessly.
    wait_until_sync(
        lambda: len(bodies) == 2,
        10,
        "the retried POST",
        pause=lambda seconds: page.wait_for_timeout(seconds * 1000),
    )
    expect(widget.host.locator("li.visitor.pending, li.visitor.failed")).to_have_count(0)
    assert bodies[0]["clientMessageId"] == bodies[1]["clientMessageId"]
    chat_id = page.evaluate("sessionStorage.getItem('terrarium-chat-id')")
    history = page.request.get(
        f"{system.url}api/chat/{chat_id}/messages?accessCode={system.access_code}"
    ).json()
    assert [m["sender"] for m in history] == ["Visitor", "Terra"]


def test_overload_is_retried_after_retry_after(page: Page, system: RunningSystem) -> None:
    widget = chat(page, system)
    calls: list[str] = []

    def busy_once(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        calls.append(json.loads(route.request.post_data or "{}")["clientMessageId"])
        if len(calls) == 1:
            route.fulfill(
                status=429,
                headers={"Retry-After": "2", "Content-Type": "application/json"},
                body=json.dumps({"error": "Too many messages"}),
            )
        else:
            route.continue_()

    page.route(POSTS, busy_once)
    widget.send("Busy? [[demo:echo]]")
    expect(widget.visitor.first).to_contain_text("retrying")
    widget.wait_reply()
    assert len(calls) == 2
    assert calls[0] == calls[1]


def test_a_refused_message_is_not_retried(page: Page, system: RunningSystem, shots: Path) -> None:
    # The page's clock is ours: any retry timer the widget may have set is run out below.
    page.clock.install()
    widget = chat(page, system)
    posts: list[str] = []

    def refuse_the_first(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        posts.append(route.request.url)
        if len(posts) > 1:
            route.continue_()
            return
        route.fulfill(
            status=413,
            content_type="application/json",
            body=json.dumps({"error": "Message too long"}),
        )

    page.route(POSTS, refuse_the_first)
    widget.send("This one is refused")
    failed = widget.host.locator("li.visitor.failed")
    expect(failed).to_be_visible()
    expect(failed).to_contain_text("too long")
    widget.shot(shots, "15-refused-message")
    page.clock.run_for("02:00")  # past the longest backoff and the largest Retry-After

    # The visitor may try again by hand, with the same id; this time the gateway takes it.
    # That POST is the barrier: an automatic retry would have reached the route before it.
    failed.locator("button", has_text="Retry").click()
    widget.wait_reply()
    expect(failed).to_have_count(0)
    assert len(posts) == 2, "a 4xx other than 429 must never be retried"


def test_v2_frames_tool_activity_reasoning_reset_and_resync(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    """Frames the demo worker may never send are injected into the real socket."""
    sockets: list[WebSocketRoute] = []

    def tap(ws: WebSocketRoute) -> None:
        ws.connect_to_server()  # real frames still flow both ways
        sockets.append(ws)

    page.route_web_socket(re.compile(r".*/api/chat\?.*"), tap)
    widget = chat(page, system)
    assert sockets, "the widget did not open its socket"
    live = sockets[-1]
    assert "v=2" in live.url

    def inject(frame: dict[str, Any]) -> None:
        # No eventId: injected frames must not move the real resume point.
        live.send(json.dumps({"chatId": "x", **frame}))

    inject(
        {
            "type": "workerState",
            "state": "processing",
            "detail": None,
            "updatedAt": "2030-01-01T00:00:00.000Z",
        }
    )
    expect(widget.typing).to_be_visible()
    expect(widget.typing).to_contain_text("Terra is typing…")
    inject({"type": "toolActivity", "name": "search_site", "status": "started", "callId": "c1"})
    inject({"type": "reasoning", "content": "The visitor wants the garden page."})
    inject(
        {
            "type": "assistantChunk",
            "content": "PARTIAL-ANSWER-TO-DISCARD",
            "done": False,
            "emittedAt": "x",
        }
    )
    stream = widget.stream
    expect(stream.locator(".bubble")).to_contain_text("PARTIAL-ANSWER-TO-DISCARD")
    toggle = stream.locator(".thoughts-toggle")
    expect(toggle).to_have_text("Show thoughts (2)")
    toggle.click()
    expect(stream.locator(".thoughts")).to_contain_text("Using search_site")
    expect(stream.locator(".thoughts")).to_contain_text("garden page")
    inject({"type": "toolActivity", "name": "search_site", "status": "done", "callId": "c1"})
    expect(stream.locator(".thoughts")).to_contain_text("Used search_site")
    widget.shot(shots, "16-tool-activity-drawer")

    inject({"type": "streamReset"})
    expect(stream.locator(".bubble")).to_have_count(0)
    expect(widget.host.locator(".streaming")).not_to_contain_text("PARTIAL-ANSWER-TO-DISCARD")

    with page.expect_request(lambda r: r.method == "GET" and HISTORY.match(r.url) is not None):
        inject({"type": "resync"})
    inject(
        {
            "type": "workerState",
            "state": "idle",
            "detail": None,
            "updatedAt": "2030-01-01T00:00:01.000Z",
        }
    )
    expect(widget.stream).to_have_count(0)
    # The chat still works end to end afterwards.
    widget.send("After the resync [[demo:echo]]")
    widget.wait_reply()
