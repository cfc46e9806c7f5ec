"""Long chats: a bounded DOM while following, earlier messages on demand, O(new text) streams."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page, WebSocketRoute, expect

from tests.e2e.conftest import require_tools
from tests.e2e.system import RunningSystem, start_system
from tests.e2e.widget import Widget

pytestmark = pytest.mark.e2e


def chat_with_tap(page: Page, system: RunningSystem) -> tuple[Widget, WebSocketRoute]:
    """A chat whose real socket also carries frames the test injects."""
    sockets: list[WebSocketRoute] = []

    def tap(ws: WebSocketRoute) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r".*/api/chat\?.*"), tap)
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    assert sockets, "the widget did not open its socket"
    return widget, sockets[-1]


def inject(live: WebSocketRoute, frame: dict[str, Any]) -> None:
    # No eventId: injected frames must not move the real resume point.
    live.send(json.dumps({"chatId": "x", **frame}))


def test_a_long_chat_keeps_a_bounded_dom_and_pages_back(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    widget, live = chat_with_tap(page, system)
    for index in range(150):
        stamp = f"2030-01-01T00:{index // 60:02d}:{index % 60:02d}.000Z"
        for sender in ("Visitor", "Terra"):
            inject(
                live,
                {
                    "id": f"{sender}-{index}",
                    "sender": sender,
                    "content": f"{sender} line {index}",
                    "createdAt": stamp,
                },
            )
    expect(widget.terra.last).to_contain_text("Terra line 149")
    count = widget.messages.count()
    assert count <= 100, f"{count} messages in the DOM while following the chat"
    earlier = widget.host.locator(".load-earlier")
    expect(earlier).to_be_visible()

    # Paging back adds older messages above without moving what the visitor was reading.
    earlier.scroll_into_view_if_needed()
    first = widget.messages.first
    first_text = first.inner_text()
    top_before = first.evaluate("(node) => node.getBoundingClientRect().top")
    earlier.click()
    expect(widget.messages).to_have_count(count + 50)
    label = re.search(r"(Visitor|Terra) line \d+", first_text)
    assert label is not None
    anchor = widget.messages.filter(has_text=label.group(0)).first
    top_after = anchor.evaluate("(node) => node.getBoundingClientRect().top")
    assert abs(top_after - top_before) < 2, (top_before, top_after)
    widget.shot(shots, "long-01-earlier-messages")
    while earlier.is_visible():
        earlier.click()
    expect(widget.messages).to_have_count(300)
    expect(widget.messages.first).to_contain_text("Visitor line 0")


def test_streaming_renders_only_the_new_text(page: Page, system: RunningSystem) -> None:
    widget, live = chat_with_tap(page, system)
    paragraph = "A settled paragraph about moss and glass. " * 4
    chunk = {"type": "assistantChunk", "content": paragraph + "\n\nThe tail ", "done": False}
    inject(live, chunk)
    piece = widget.stream.locator(".stream-piece").first
    expect(piece).to_contain_text("A settled paragraph")
    piece.evaluate("(node) => { node.__firstRender = true; }")
    for index in range(30):
        inject(
            live,
            {"type": "assistantChunk", "content": f"more text {index} ", "done": False},
        )
    expect(widget.stream.locator(".stream-tail")).to_contain_text("more text 29")
    # The settled paragraph's DOM was never rebuilt while the tail grew.
    assert piece.evaluate("(node) => node.__firstRender === true")
    inject(live, {"type": "assistantChunk", "content": "\n\nSecond paragraph. ", "done": False})
    expect(widget.stream.locator(".stream-piece")).to_have_count(2)
    assert piece.evaluate("(node) => node.__firstRender === true")
    inject(live, {"type": "workerState", "state": "idle", "detail": None, "updatedAt": "x"})


@pytest.fixture
def short_history_system() -> Iterator[RunningSystem]:
    """A system whose history route returns at most 10 messages a page."""
    require_tools()
    yield from start_system({"HISTORY_LIMIT": "10"})


def test_earlier_messages_page_back_through_the_history_route(
    page: Page, short_history_system: RunningSystem, shots: Path
) -> None:
    system = short_history_system
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    for index in range(8):
        widget.send(f"Question {index} [[demo:echo]]")
        expect(widget.terra.last).to_contain_text(f"Question {index}", timeout=30_000)

    page.reload()  # a new page load sees only the newest page of the history
    widget = Widget(page)
    expect(widget.messages).to_have_count(10)
    earlier = widget.host.locator(".load-earlier")
    with page.expect_request(lambda r: "before=" in r.url):
        earlier.click()
    expect(widget.messages).to_have_count(16)
    expect(widget.messages.first).to_contain_text("Question 0")
    expect(earlier).to_be_hidden()
    widget.shot(shots, "long-02-earlier-from-history")
