"""Small things that help: copy buttons, marked deceptive links, a motion-aware opening."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.system import RunningSystem
from tests.e2e.widget import Widget

pytestmark = pytest.mark.e2e

REPLY = (
    "Links: [https://example.org/docs](https://evil.example/phish) and "
    "[example.org](https://example.org/ok) and [the docs](https://example.net/).\n\n"
    "```\nprint('moss')\n```\n"
)


def test_copy_buttons_and_deceptive_links(
    page: Page, context: BrowserContext, system: RunningSystem, shots: Path
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=system.url)
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    widget.send(REPLY + "[[demo:echo]]")
    reply = widget.wait_reply()

    # The link whose text names example.org but leads to evil.example says so.
    marked = reply.locator("a.deceptive")
    expect(marked).to_have_count(1)
    expect(marked).to_have_attribute("href", "https://evil.example/phish")
    expect(reply.locator(".link-host")).to_have_text(" (goes to evil.example)")
    expect(reply.locator("a[href='https://example.org/ok']")).not_to_have_class("deceptive")
    expect(reply.locator("a[href='https://example.net/']")).not_to_have_class("deceptive")

    reply.locator("button.copy-code").click()
    expect(reply.locator("button.copy-code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "print('moss')\n"
    reply.locator("button.copy-answer").click()
    assert page.evaluate("navigator.clipboard.readText()").startswith("Links: [https://")

    # The full chat id, for a support request.
    widget.host.locator("button.copy-id").click()
    chat_id = page.evaluate("sessionStorage.getItem('terrarium-chat-id')")
    assert page.evaluate("navigator.clipboard.readText()") == chat_id
    widget.shot(shots, "delight-01-copy-and-links")


@pytest.mark.parametrize(
    ("motion", "animation"), [("no-preference", "panel-in"), ("reduce", "none")]
)
def test_the_panel_opens_with_motion_only_when_welcome(
    page: Page, system: RunningSystem, motion: str, animation: str
) -> None:
    page.emulate_media(reduced_motion="reduce" if motion == "reduce" else "no-preference")
    page.goto(system.url)
    widget = Widget(page)
    widget.open()
    name = widget.panel.evaluate("(panel) => getComputedStyle(panel).animationName")
    assert name == animation
