"""Weight: the launcher alone before the visitor opens the bubble, the rest on open."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page, Request, expect

from tests.e2e.system import RunningSystem
from tests.e2e.widget import Widget

pytestmark = pytest.mark.e2e

CHAT_MODULES = Path(__file__).resolve().parents[2] / "gateway" / "static" / "chat"
LAUNCHER_BUDGET = 15 * 1024  # bytes on the wire, headers included


def widget_requests(page: Page, system: RunningSystem) -> list[Request]:
    """Record every finished request to the gateway's widget files and API."""
    seen: list[Request] = []

    def finished(request: Request) -> None:
        path = request.url.removeprefix(system.url)
        if path.startswith(("widget.js", "static/", "api/")):
            seen.append(request)

    page.on("requestfinished", finished)
    return seen


def wire_bytes(requests: list[Request]) -> int:
    return sum(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"] for r in requests)


def test_only_the_launcher_loads_before_the_bubble_opens(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    seen = widget_requests(page, system)
    page.goto(system.url, wait_until="networkidle")
    widget = Widget(page)
    expect(widget.launcher).to_be_visible()
    page.wait_for_load_state("networkidle")
    paths = [r.url.removeprefix(system.url) for r in seen]
    assert [p for p in paths if p.endswith(".js")] == ["widget.js"], paths
    assert wire_bytes(seen) < LAUNCHER_BUDGET, (wire_bytes(seen), paths)
    widget.shot(shots, "weight-01-launcher-only")

    # Opening loads every chat module at once (modulepreload), then the chat works.
    seen.clear()
    widget.launcher.click()
    expect(widget.code_input).to_be_focused()
    loaded = {r.url.removeprefix(system.url + "static/chat/") for r in seen}
    assert {p.name for p in CHAT_MODULES.glob("*.js")} <= loaded, sorted(loaded)
    widget.enter_code(system.access_code)
    widget.wait_connected()
    widget.send("Hello after a lazy load [[demo:echo]]")
    expect(widget.wait_reply().locator(".bubble")).to_have_text("Hello after a lazy load")


def test_widget_js_lists_every_chat_module() -> None:
    """widget.js preloads its modules from a list: it must name every file in static/chat/."""
    source = (CHAT_MODULES.parent / "widget.js").read_text(encoding="utf-8")
    block = re.search(r"var MODULES = \[(.*?)\];", source, re.S)
    assert block is not None
    listed = set(re.findall(r'"([\w-]+\.js)"', block.group(1)))
    assert listed == {p.name for p in CHAT_MODULES.glob("*.js")}


def test_keyboard_opens_the_lazy_launcher(page: Page, system: RunningSystem) -> None:
    page.goto(system.url)
    widget = Widget(page)
    expect(widget.launcher).to_be_visible()
    widget.launcher.focus()
    page.keyboard.press("Enter")
    expect(widget.panel).to_be_visible()
    expect(widget.code_input).to_be_focused()
    expect(widget.launcher).to_have_attribute("aria-expanded", "true")


def test_a_chat_in_progress_loads_at_once_after_a_refresh(
    page: Page, system: RunningSystem
) -> None:
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    widget.textarea.press("Escape")
    expect(widget.panel).to_be_hidden()
    page.reload()
    widget = Widget(page)
    # The chat is live (unread badge, announcements) without opening the bubble.
    expect(widget.host.locator(".meta")).to_contain_text("connected")
    expect(widget.panel).to_be_hidden()


def test_launcher_stays_in_view_when_the_host_transforms_body(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    page.goto(system.url + "healthz")
    page.set_content(
        '<!doctype html><html lang="en"><head><title>Transformed</title>'
        "<style>body { transform: translateZ(0); filter: saturate(1.1); margin: 0 }</style>"
        '</head><body><main><div style="height: 3000px">Long page</div></main>'
        f'<script src="{system.url}widget.js"></script></body></html>'
    )
    widget = Widget(page)
    expect(widget.launcher).to_be_visible()
    box = widget.launcher.bounding_box()
    viewport = page.viewport_size
    assert box is not None
    assert viewport is not None
    assert box["y"] + box["height"] <= viewport["height"], box
    assert box["x"] + box["width"] <= viewport["width"], box
    widget.shot(shots, "weight-02-transformed-body")


def test_gateway_pages_work_under_their_csp(page: Page, system: RunningSystem) -> None:
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    response = page.goto(system.url + "terra")
    assert response is not None
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers.get("content-encoding") == "gzip"
    widget = Widget(page)
    widget.start_chat(system.access_code)
    widget.send("**Bold** under a CSP [[demo:echo]]")
    expect(widget.wait_reply().locator("strong")).to_have_text("Bold")

    page.goto(system.url)
    widget = Widget(page)
    expect(widget.host.locator(".meta")).to_contain_text("connected")  # same tab: chat resumes
    expect(page.locator("#snippet")).to_contain_text(system.url + "widget.js")
    assert not refused, refused
