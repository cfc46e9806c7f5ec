"""The widget's "your own model" mode in Chromium, against the demo started with ``--byo``
(the offline demo agent is offered as a provider; it takes any key).

The switch starts a new chat (a chat is Terra's or the visitor's model's), answers name the
provider, the key stays out of localStorage (and out of sessionStorage unless the visitor
ticks "remember"), and a page refresh reopens the chat in the same mode.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from demo.launcher import LaunchOptions, free_port
from tests.e2e.axe import summary, violations
from tests.e2e.conftest import require_tools
from tests.e2e.widget import Widget
from tests.support.launcher import TestLauncher
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.e2e

KEY = "sk-demo-visitor-key-4242"
PROVIDER_TAG = "Demo provider (offline) · terra-demo-offline"


@pytest.fixture(scope="module")
def byo_url() -> Iterator[str]:
    """A demo system with the BYO switch on (``python -m demo --byo``); its page's URL.

    Shared by the module's tests as the session's ``system`` is by the others: each test
    starts a chat of its own in a fresh browser context and breaks nothing."""
    require_tools()
    options = LaunchOptions(
        port=free_port(),
        access_code=ACCESS_CODE,
        quiet=True,
        byo=True,
        extra_env={"RATE_LIMIT_MAX_PER_IP": "10000", "RATE_LIMIT_MAX_PER_CHAT": "10000"},
    )
    launcher = TestLauncher(options)
    try:
        launcher.start()
        yield launcher.url
    finally:
        launcher.kill_all()


def storage(page: Page) -> dict[str, Any]:
    return {
        "local": page.evaluate("() => JSON.stringify(localStorage)"),
        "session": page.evaluate("() => JSON.stringify(sessionStorage)"),
    }


def test_switch_to_your_own_model_and_chat(page: Page, byo_url: str) -> None:
    page.goto(byo_url + "terra")
    widget = Widget(page)
    widget.start_chat(ACCESS_CODE)
    byo = widget.host.locator("section.byo")
    expect(byo).to_be_visible()
    fields = byo.locator(".byo-fields")
    expect(fields).to_be_hidden()

    widget.send("Hello Terra [[demo:echo]]")
    expect(widget.wait_reply().locator(".tag.provider")).to_have_count(0)

    # Switching mode starts a new chat: the Terra chat cannot take the visitor's model.
    byo.get_by_label("Your own model").check()
    expect(fields).to_be_visible()
    expect(byo.locator(".byo-note")).to_contain_text("A new chat started")
    expect(widget.messages).to_have_count(0)
    # The empty chat names who will answer: the visitor's provider, not Terra.
    expect(widget.host.locator(".empty p")).to_have_text(
        "Say hello: your model at Demo provider (offline) will answer here."
    )
    expect(byo.locator(".byo-privacy")).to_contain_text("never stores or logs it")
    expect(byo.get_by_label("Model", exact=True)).to_have_value("terra-demo-offline")

    # No key yet: the message is not sent, and the panel says why.
    widget.send("Without a key [[demo:echo]]")
    expect(byo.locator(".byo-note")).to_have_text("Paste your provider's API key first.")

    expect(widget.textarea).to_have_attribute(
        "placeholder", "Ask your model at Demo provider (offline)…"
    )
    expect(widget.typing.locator("span").last).to_have_text("Demo provider (offline) is typing…")
    byo.get_by_label("API key").fill(KEY)
    widget.send("Hello own model [[demo:echo]]")
    reply = widget.wait_reply()
    expect(reply.locator(".bubble")).to_have_text("Hello own model")
    expect(reply.locator(".tag.provider")).to_have_text(PROVIDER_TAG)
    # Screen readers hear who answered, in the live region and on the stored answer.
    expect(widget.announcer).to_have_text("Demo provider (offline) replied: Hello own model")
    expect(reply.locator(".sr-only").first).to_have_text("Demo provider (offline) said:")
    saved = storage(page)
    assert KEY not in saved["local"]
    assert KEY not in saved["session"]  # memory only, until the visitor asks

    # "Remember" keeps it in this tab's sessionStorage (never localStorage) ...
    byo.get_by_label("Remember the key in this tab").check()
    saved = storage(page)
    assert KEY in json.loads(saved["session"]).values()
    assert KEY not in saved["local"]

    # ... so a refresh reopens the chat in the same mode, key in place, and it goes on.
    page.reload()
    widget = Widget(page)
    widget.wait_connected()
    byo = widget.host.locator("section.byo")
    expect(byo.get_by_label("Your own model")).to_be_checked()
    expect(byo.get_by_label("API key")).to_have_value(KEY)
    expect(widget.terra.locator(".tag.provider")).to_have_text(PROVIDER_TAG)
    widget.send("Once more [[demo:echo]]")
    expect(widget.wait_reply(2).locator(".bubble")).to_have_text("Once more")

    # Unticking forgets it in sessionStorage at once.
    byo.get_by_label("Remember the key in this tab").uncheck()
    assert KEY not in storage(page)["session"]


def test_stop_works_for_your_own_model(page: Page, byo_url: str) -> None:
    page.goto(byo_url + "terra")
    widget = Widget(page)
    widget.start_chat(ACCESS_CODE)
    byo = widget.host.locator("section.byo")
    byo.get_by_label("Your own model").check()
    byo.get_by_label("API key").fill(KEY)
    widget.send("Go slowly [[demo:tokens=400]] [[demo:delay=30]]")
    expect(widget.typing.or_(widget.stream).first).to_be_visible(timeout=15_000)
    expect(widget.stop_button).to_be_visible(timeout=15_000)
    expect(widget.stream).to_be_visible()
    expect(widget.stream.locator(".sr-only").first).to_have_text(
        "Demo provider (offline) (streaming)"
    )
    widget.stop_button.click()
    reply = widget.wait_reply()
    expect(reply.locator(".tag").first).to_be_visible()
    expect(reply.locator(".tag.provider")).to_have_text(PROVIDER_TAG)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_byo_panel_has_no_axe_violations(browser: Browser, byo_url: str, theme: str) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 820}, bypass_csp=True)
    try:
        page = context.new_page()
        page.emulate_media(color_scheme=theme)  # type: ignore[arg-type]
        page.goto(byo_url + "terra")
        widget = Widget(page)
        widget.start_chat(ACCESS_CODE)
        byo = widget.host.locator("section.byo")
        byo.get_by_label("Your own model").check()
        byo.get_by_label("API key").fill(KEY)
        widget.send("Checked by axe [[demo:echo]]")
        expect(widget.wait_reply().locator(".tag.provider")).to_have_text(PROVIDER_TAG)
        found = violations(page)
        assert not found, f"axe violations ({theme}):\n{summary(found)}"
    finally:
        context.close()


def test_a_failed_answer_from_your_own_model_names_the_provider(page: Page, byo_url: str) -> None:
    """The notice line of a failed BYO answer blames the provider, not Terra's model."""
    page.goto(byo_url + "terra")
    widget = Widget(page)
    widget.start_chat(ACCESS_CODE)
    byo = widget.host.locator("section.byo")
    byo.get_by_label("Your own model").check()
    byo.get_by_label("API key").fill(KEY)
    widget.send("Refuse me [[demo:http=401]]")
    reply = widget.wait_reply()
    expect(reply.locator(".bubble")).to_contain_text("did not accept your API key")
    expect(widget.banner).to_contain_text(
        "Demo provider (offline) could not answer; the reply says why."
    )
    expect(widget.banner).not_to_contain_text("Terra")


def test_byo_requests_carry_the_session_token_never_the_code(page: Page, byo_url: str) -> None:
    """Like Terra's routes, the BYO ones (providers, models, messages) take the session
    token in a header: the access code is in no URL and no body but POST /api/session's."""
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r) if "/api/" in r.url else None)
    page.goto(byo_url + "terra")
    widget = Widget(page)
    widget.start_chat(ACCESS_CODE)
    byo = widget.host.locator("section.byo")
    byo.get_by_label("Your own model").check()
    byo.get_by_label("API key").fill(KEY)
    byo.get_by_role("button", name="List models").click()
    expect(byo.locator(".byo-note")).to_contain_text("models listed")
    widget.send("Hello own model [[demo:echo]]")
    expect(widget.wait_reply().locator(".bubble")).to_have_text("Hello own model")
    byo_requests = [r for r in requests if "/byo" in r.url]
    paths = {r.url.split("?")[0].rsplit("/api/", 1)[1] for r in byo_requests}
    assert {"byo/providers", "byo/models"} <= paths
    assert any(p.endswith("/byo") for p in paths), paths
    for request in requests:
        if request.url.split("?")[0].endswith("/api/session"):
            continue
        assert ACCESS_CODE not in request.url, request.url
        assert ACCESS_CODE not in (request.post_data or ""), request.url
    for request in byo_requests:
        assert request.headers.get("authorization", "").startswith("Bearer "), request.url
