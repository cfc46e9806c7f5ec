"""Embedding: one script tag on someone else's page, whatever that page's CSS does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page, expect

from tests.e2e.system import RunningSystem
from tests.e2e.widget import Widget

pytestmark = pytest.mark.e2e

HOSTILE_CSS = """
  /* Everything a careless or hostile stylesheet can throw at an embedded widget. */
  html { font-size: 4px !important; }
  body * { display: none !important; }
  * {
    font: italic 3px/0 "Comic Sans MS", cursive !important; color: red !important;
    background: yellow !important; letter-spacing: 6px !important;
    text-transform: uppercase !important;
    box-sizing: content-box !important; pointer-events: none !important; cursor: wait !important;
  }
  div, section, button, textarea, input, ol, li, p, span, form, header {
    all: unset !important; display: none !important;
    position: fixed !important; top: -999px !important;
  }
  terra-chat {
    display: none !important; visibility: hidden !important; opacity: 0 !important;
    position: absolute !important; left: -9999px !important;
    width: 0 !important; height: 0 !important;
    transform: scale(0) !important; filter: blur(8px) !important; clip-path: inset(50%) !important;
    z-index: -1 !important; contain: strict !important; overflow: hidden !important;
  }
  terra-chat::before, terra-chat::after {
    content: "covered" !important; display: block !important; position: fixed !important;
    inset: 0 !important; background: black !important; z-index: 2147483647 !important;
  }
  /* And something to cover the corner, at the top of the page's own stacking order. */
  #cover {
    display: block !important; position: fixed !important; right: 0; bottom: 0;
    width: 50px; height: 50px; z-index: 1000 !important; background: purple !important;
  }
"""


def host_page(body: str, css: str = "") -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Someone's site</title>
<style>{css}</style></head><body>{body}</body></html>"""


def load_host_page(page: Page, system: RunningSystem, html: str) -> None:
    """Show `html` as a page of the gateway's own origin, as a site owner's page would be.

    The document comes from a real response (so Chromium treats it as a loopback page and
    lets it open loopback sockets), then is replaced by the host page's markup.
    """
    page.goto(system.url + "healthz")
    page.set_content(html)


def test_hostile_host_css_cannot_hide_or_break_the_widget(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    load_host_page(
        page,
        system,
        host_page(
            '<h1>Hostile page</h1><div id="cover"></div><p>Lots of text</p>'
            '<script async src="/widget.js" data-title="Terra" data-theme="light"></script>',
            HOSTILE_CSS,
        ),
    )
    widget = Widget(page)
    expect(widget.launcher).to_be_visible()
    box = widget.launcher.bounding_box()
    assert box is not None
    assert box["width"] == 60
    assert box["height"] == 60
    assert box["x"] + box["width"] <= 1200
    assert box["y"] + box["height"] <= 820
    widget.launcher.click()  # Playwright checks nothing covers it
    expect(widget.panel).to_be_visible()
    widget.shot(shots, "17-hostile-host-gate")

    widget.enter_code(system.access_code)
    widget.wait_connected()
    widget.send("Does this page's CSS leak in? [[demo:echo]]")
    reply = widget.wait_reply()
    styles = reply.locator(".bubble").evaluate(
        "b => { const s = getComputedStyle(b);"
        " return [s.fontSize, s.color, s.textTransform, s.letterSpacing]; }"
    )
    assert styles[0] == "15px"
    assert styles[1] != "rgb(255, 0, 0)"
    assert styles[2] == "none"
    assert styles[3] == "normal"
    assert widget.textarea.evaluate("t => getComputedStyle(t).fontSize") == "16px"
    widget.shot(shots, "18-hostile-host-chat")
    # And the widget's own styles did not leak out onto the page.
    assert page.locator("h1").evaluate("h => getComputedStyle(h).color") == "rgb(255, 0, 0)"


def test_inline_mode_with_target_title_theme_and_api_base(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    load_host_page(
        page,
        system,
        host_page(
            '<h1>My garden blog</h1><div id="chat-slot" style="width:520px;height:640px"></div>'
            f'<script src="/widget.js" data-mode="inline" data-target="#chat-slot" '
            'data-title="Garden helper" data-theme="dark" '
            f'data-api-base="{system.url}api/"></script>',
            "body { font-family: Georgia, serif; margin: 24px; }",
        ),
    )
    widget = Widget(page, host="#chat-slot > terra-chat")
    expect(widget.code_input).to_be_visible()
    expect(widget.launcher).to_be_hidden()
    expect(widget.host.locator("h2.title")).to_have_text("Garden helper")
    expect(widget.root).to_have_class(re.compile(r"\bdark\b"))
    box = widget.panel.bounding_box()
    assert box is not None
    assert round(box["width"]) == 520
    assert round(box["height"]) == 640
    with page.expect_request(re.compile(r".*/api/session$")):
        widget.enter_code(system.access_code)
    widget.wait_connected()
    widget.send("Inline hello [[demo:echo]]")
    widget.wait_reply()
    widget.shot(shots, "19-inline-dark")


def test_api_base_is_derived_from_the_script_address(page: Page, system: RunningSystem) -> None:
    """Loaded as /static/widget.js, the widget still finds /api at the gateway's root."""
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    load_host_page(page, system, host_page('<script src="/static/widget.js"></script>'))
    widget = Widget(page)
    widget.start_chat(system.access_code)
    api_calls = [u for u in requests if "/api/" in u]
    assert api_calls
    assert all(u.startswith(system.url + "api/") for u in api_calls), api_calls


def test_the_demo_page_says_it_runs_the_demo_agent(page: Page, system: RunningSystem) -> None:
    page.goto(system.url)
    expect(page.locator("#demo-note")).to_be_visible()
    expect(page.locator("#demo-note")).to_contain_text("offline demo agent")
    expect(page.locator("#snippet")).to_contain_text(f'src="{system.url}widget.js"')
    expect(page.locator("terra-chat")).to_have_count(1)
