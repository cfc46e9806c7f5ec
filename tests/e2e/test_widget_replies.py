"""How replies read: starter prompts on an empty chat, answers cut short, thoughts kept
after a refresh, and a second reply an operator asked for streamed like any other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page, expect

from tests.e2e.system import RunningSystem
from tests.e2e.widget import Widget

pytestmark = pytest.mark.e2e


def chat(page: Page, system: RunningSystem) -> Widget:
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    return widget


def test_starter_prompts_from_the_content_bundle_start_the_chat(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    widget = chat(page, system)
    starters = widget.host.locator(".starters button.starter")
    # The shipped bundle's content/_starter-prompts.md, in file order.
    expect(starters.first).to_have_text("What projects are on this site?")
    expect(widget.host.locator(".starters")).to_have_attribute("aria-label", "Suggested questions")
    assert 1 <= starters.count() <= 4
    widget.shot(shots, "replies-01-starters")

    starters.first.click()
    expect(widget.visitor.first.locator(".bubble")).to_have_text("What projects are on this site?")
    widget.wait_reply()
    expect(widget.host.locator(".empty")).to_be_hidden()
    expect(widget.textarea).to_be_focused()


def test_an_answer_cut_at_the_token_limit_says_so(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    widget = chat(page, system)
    # The demo agent answers with more pieces than AGENT_MAX_TOKENS (1024): finish_reason
    # "length", stored with status "truncated" (docs/protocol.md 9.9).
    widget.send("Go on and on [[demo:tokens=1100]] [[demo:delay=0]]")
    reply = widget.wait_reply(timeout=60_000)
    tag = reply.locator(".msg-meta .tag.truncated")
    expect(tag).to_have_text("Answer cut short")
    expect(tag).to_have_attribute("title", re.compile("length limit for one answer"))
    expect(reply.locator(".tag.warn")).to_have_count(0)  # not a failure
    expect(widget.banner).to_be_hidden()
    reply.scroll_into_view_if_needed()
    widget.shot(shots, "replies-02-truncated")

    # A normal answer carries no such note.
    widget.send("Short one [[demo:tokens=5]]")
    expect(widget.wait_reply(2).locator(".tag")).to_have_count(0)
