"""Accessibility: axe-core finds nothing in the widget or on /terra, in every main state."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Browser, Page, expect

from tests.e2e.axe import summary, violations
from tests.e2e.system import RunningSystem
from tests.e2e.widget import Widget

pytestmark = pytest.mark.e2e

Theme = Literal["light", "dark"]

MARKDOWN = (
    "## A heading\\n\\nSome *text* and a [link](https://example.org/).\\n\\n"
    "```\\n" + "a_very_long_line_of_code_that_scrolls_sideways() " * 4 + "\\n```\\n\\n"
    "| plant | light | water | soil | notes |\\n|---|---|---|---|---|\\n"
    "| moss | low | often | peat | grows slowly and keeps the glass humid all year |\\n"
)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page that may inject axe-core although the gateway's pages send a strict CSP."""
    context = browser.new_context(viewport={"width": 1200, "height": 820}, bypass_csp=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def assert_clean(page: Page, state: str) -> None:
    found = violations(page)
    assert not found, f"axe violations ({state}):\n{summary(found)}"


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_widget_states_have_no_axe_violations(
    page: Page, system: RunningSystem, shots: Path, theme: Theme
) -> None:
    page.emulate_media(color_scheme=theme)
    page.goto(system.url)
    widget = Widget(page)
    expect(widget.launcher).to_be_visible()
    assert_clean(page, "host page, bubble closed")

    widget.open()
    assert_clean(page, "gate")
    widget.enter_code("not-the-code")
    expect(widget.gate_error).to_contain_text("rejected")
    assert_clean(page, "gate with an error")

    widget.enter_code(system.access_code)
    widget.wait_connected()
    expect(widget.host.locator(".starters button").first).to_be_visible()
    assert_clean(page, "empty chat with starter prompts")
    widget.send(MARKDOWN.replace("\\n", "\n") + "[[demo:echo]]")
    reply = widget.wait_reply()
    expect(reply.locator("pre")).to_be_visible()
    assert_clean(page, "chat with a Markdown reply")
    # The truncated reply streams without a delay per piece (as in test_widget_replies.py):
    # at the default 15 ms its 1024 kept pieces took 15 s, and axe checks the end state.
    widget.send(
        "Look it up [[demo:tool=search_site]] [[demo:reasoning]] [[demo:tokens=1100]] "
        "[[demo:delay=0]]"
    )
    reply = widget.wait_reply(2, timeout=60_000)
    expect(reply.locator(".tag.truncated")).to_be_visible()
    reply.locator("button.thoughts-toggle").click()
    expect(reply.locator(".thoughts")).to_be_visible()
    assert_clean(page, "a truncated reply with its thoughts open")
    widget.chain_toggle.click()
    expect(widget.chain_panel).to_be_visible()
    assert_clean(page, "status details open")
    widget.shot(shots, f"a11y-01-chat-{theme}")


def test_full_page_has_no_axe_violations(page: Page, system: RunningSystem) -> None:
    page.goto(system.url + "terra")
    widget = Widget(page)
    expect(widget.code_input).to_be_visible()
    assert_clean(page, "/terra gate")
    widget.start_chat(system.access_code)
    widget.send(MARKDOWN.replace("\\n", "\n") + "[[demo:echo]]")
    widget.wait_reply()
    assert_clean(page, "/terra chat")


def luminance(rgb: str) -> float:
    """Relative luminance of a computed `rgb(r, g, b)` colour (WCAG 2.2)."""
    channels = [int(part) / 255 for part in re.findall(r"\d+", rgb)[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


FOCUS_STYLE = """
(node) => {
  const style = getComputedStyle(node);
  const panel = node.getRootNode().querySelector('.panel');  // none before the chat loads
  return {outline: style.outlineStyle, width: parseFloat(style.outlineWidth),
          color: style.outlineColor,
          panel: panel ? getComputedStyle(panel).backgroundColor : 'rgb(255, 255, 255)'};
}
"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_keyboard_focus_is_visible_on_every_control(
    page: Page, system: RunningSystem, shots: Path, theme: Theme
) -> None:
    page.emulate_media(color_scheme=theme)
    page.goto(system.url)
    widget = Widget(page)
    expect(widget.launcher).to_be_visible()
    # Tab from the page to the launcher: a ring that shows on any host background.
    for _ in range(10):
        page.keyboard.press("Tab")
        if widget.launcher.evaluate("(node) => node.matches(':focus-visible')"):
            break
    ring = widget.launcher.evaluate(FOCUS_STYLE)
    assert ring["outline"] == "solid", ring
    assert ring["width"] >= 2, ring
    assert contrast(ring["color"], "rgb(255, 255, 255)") >= 3, ring
    widget.shot(shots, f"a11y-02-launcher-focus-{theme}")

    page.keyboard.press("Enter")
    expect(widget.code_input).to_be_focused()
    page.keyboard.type(system.access_code)
    page.keyboard.press("Enter")
    expect(widget.textarea).to_be_focused()
    widget.wait_connected()
    # Every control in the panel, reached with Tab, shows a ring of 3:1 against the panel.
    checked = 0
    for _ in range(14):
        page.keyboard.press("Shift+Tab")
        focused = widget.host.evaluate("(host) => host.shadowRoot.activeElement?.className ?? ''")
        if not focused or "launcher" in focused:
            break
        active = widget.host.locator(":focus-visible").first
        ring = active.evaluate(FOCUS_STYLE)
        assert ring["outline"] == "solid", (focused, ring)
        assert ring["width"] >= 2, (focused, ring)
        assert contrast(ring["color"], ring["panel"]) >= 3, (focused, ring)
        checked += 1
    assert checked >= 5, f"only {checked} controls reached by keyboard"


def test_gate_error_is_red_and_replies_are_announced_while_closed(
    page: Page, system: RunningSystem
) -> None:
    page.goto(system.url)
    widget = Widget(page)
    widget.open()
    widget.enter_code("not-the-code")
    expect(widget.gate_error).to_contain_text("rejected")
    color = widget.gate_error.evaluate("(node) => getComputedStyle(node).color")
    assert color == "rgb(179, 38, 30)", f"the gate error is not in the danger colour: {color}"

    widget.enter_code(system.access_code)
    widget.wait_connected()
    widget.send("Tell me later [[demo:echo]] [[demo:delay=300]]")
    widget.textarea.press("Escape")
    expect(widget.panel).to_be_hidden()
    expect(widget.badge).to_have_text("1", timeout=20_000)
    # The live region is outside the closed panel, so a screen reader hears the reply.
    expect(widget.announcer).to_have_text("Terra replied: Tell me later")
    hidden = widget.announcer.evaluate("(node) => Boolean(node.closest('[hidden]'))")
    assert not hidden
