"""The widget as a visitor uses it: gate, send, streamed answer, resume, stop, safety."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Browser, Page, expect

from tests.e2e.system import RunningSystem
from tests.e2e.widget import SLOW_ANSWER, Widget

pytestmark = pytest.mark.e2e

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def open_widget(page: Page, system: RunningSystem) -> Widget:
    page.goto(system.url)
    widget = Widget(page)
    expect(widget.launcher).to_be_visible()
    return widget


def test_gate_locks_status_until_a_valid_code(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    widget = open_widget(page, system)
    widget.shot(shots, "01-launcher-closed")
    widget.open()
    expect(widget.code_input).to_be_focused()
    expect(widget.status_text).to_have_text("Enter the access code")
    expect(widget.chain_toggle).to_have_text("Details")
    expect(widget.chain_panel.locator(".node-dot.locked")).to_have_count(3)
    expect(widget.demo_note).to_be_visible()  # the launcher runs the offline demo agent
    expect(widget.gate_button).to_be_disabled()

    widget.enter_code("not-the-code")
    expect(widget.gate_error).to_contain_text("access code was rejected")
    expect(widget.textarea).to_be_hidden()
    widget.shot(shots, "02-gate-rejected")

    widget.code_input.fill(system.access_code)
    widget.code_input.press("Enter")
    widget.wait_connected()
    expect(widget.textarea).to_be_focused()
    expect(widget.chain_panel.locator(".node-dot.locked")).to_have_count(0)
    # The header says what Terra can do, from the real health chain.
    expect(widget.status_text).to_have_text("Terra is online", timeout=15_000)
    storage = page.evaluate(
        "['terrarium-access-code', 'terrarium-chat-id'].map((key) => sessionStorage.getItem(key))"
    )
    assert storage[0] == system.access_code
    assert UUID.match(storage[1])
    widget.chain_toggle.click()
    expect(widget.chain_panel).to_be_visible()
    expect(widget.chain_panel.locator("li")).to_have_count(5)
    expect(widget.chain_panel).to_contain_text("Webchat worker")
    widget.shot(shots, "03-chat-ready-status-chain")
    page.keyboard.press("Escape")
    expect(widget.chain_panel).to_be_hidden()


def test_send_shows_thinking_then_a_streamed_answer(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    widget = open_widget(page, system)
    widget.start_chat(system.access_code)

    widget.send("Hello Terra! [[demo:think]] [[demo:tokens=80]] [[demo:delay=40]]")
    expect(widget.visitor).to_have_count(1)
    expect(widget.visitor.first).to_contain_text("Hello Terra!")
    expect(widget.stop_button).to_be_visible()
    expect(widget.stream.locator(".bubble")).to_be_visible(timeout=20_000)
    expect(widget.typing).to_be_hidden()  # the stream replaces the dots
    widget.shot(shots, "04-streaming")

    reply = widget.wait_reply()
    expect(widget.stream).to_have_count(0, timeout=10_000)
    expect(widget.stop_button).to_be_hidden()
    # No grey system lines: the conversation holds only the two messages.
    expect(widget.messages).to_have_count(2)
    expect(widget.banner).to_be_hidden()
    expect(widget.announcer).to_contain_text("Terra replied:")
    # <think> content is kept out of the bubble, behind the drawer toggle.
    toggle = reply.locator(".thoughts-toggle")
    expect(toggle).to_have_text(re.compile(r"Show thoughts \(\d+\)"))
    expect(reply.locator(".thoughts")).to_be_hidden()
    toggle.click()
    expect(reply.locator(".thoughts")).to_be_visible()
    expect(reply.locator(".bubble")).not_to_contain_text("<think>")
    widget.shot(shots, "05-answered-with-thoughts")


def test_refresh_in_the_middle_of_an_answer_resumes_it(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    widget = open_widget(page, system)
    widget.start_chat(system.access_code)
    widget.send(f"Tell me a long story {SLOW_ANSWER}")
    expect(widget.stream.locator(".bubble")).to_be_visible(timeout=20_000)
    page.wait_for_function(
        "() => (document.querySelector('terra-chat').shadowRoot.querySelector('.streaming .bubble')"
        "?.textContent.length ?? 0) > 60"
    )
    before = widget.stream_text()

    page.reload()
    widget = Widget(page)
    # Same chat, panel still open, no gate; the partial answer comes back and goes on.
    expect(widget.textarea).to_be_visible()
    expect(widget.visitor).to_have_count(1)
    expect(widget.stream.locator(".bubble")).to_be_visible(timeout=10_000)
    resumed = widget.stream_text()
    assert resumed[:40] == before[:40], "the resumed stream is not the same answer"
    widget.shot(shots, "06-resumed-after-refresh")

    reply = widget.wait_reply(timeout=40_000)
    final = reply.locator(".bubble").inner_text()
    assert len(final) > len(before)
    assert final.count(before[:30]) == 1, "the answer's beginning appears twice"
    expect(widget.visitor).to_have_count(1)
    expect(widget.terra).to_have_count(1)


def test_stop_ends_the_reply_and_new_messages_badge(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    widget = open_widget(page, system)
    widget.start_chat(system.access_code)
    widget.send(f"Please ramble {SLOW_ANSWER}")
    expect(widget.stream.locator(".bubble")).to_be_visible(timeout=20_000)
    page.wait_for_function(
        "() => { const log = document.querySelector('terra-chat').shadowRoot.querySelector('.log');"
        " return log.scrollHeight > log.clientHeight + 80; }",
        timeout=20_000,
    )
    # Scrolled up while Terra writes: auto-scroll pauses and the badge offers a way back.
    widget.log.evaluate("log => { log.scrollTop = 0; log.dispatchEvent(new Event('scroll')); }")
    expect(widget.new_messages).to_be_visible()
    widget.shot(shots, "07-new-messages-badge")
    widget.new_messages.click()
    expect(widget.new_messages).to_be_hidden()
    assert widget.log.evaluate("log => log.scrollHeight - log.scrollTop - log.clientHeight") <= 40

    widget.stop_button.click()
    expect(widget.stop_button).to_be_hidden(timeout=10_000)
    expect(widget.stream).to_have_count(0, timeout=10_000)
    expect(widget.typing).to_be_hidden()
    widget.shot(shots, "08-stopped")
    # Whatever Terra had written is kept and marked as stopped; nothing more streams.
    stopped = widget.terra.count()
    if stopped:
        expect(widget.terra.last.locator(".tag")).to_have_text("Stopped")
    kept = widget.terra.last.locator(".bubble").inner_text() if stopped else ""
    # The next reply is the barrier: more of the stopped one would have arrived before it.
    widget.send("And now? [[demo:echo]]")
    expect(widget.wait_reply(count=stopped + 1)).to_contain_text("And now?")
    expect(widget.stream).to_have_count(0)
    if stopped:
        assert widget.terra.first.locator(".bubble").inner_text() == kept


XSS = (
    '<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> '
    '[click me](javascript:window.__xss=3) <a href="javascript:window.__xss=4">link</a> '
    '<svg onload="window.__xss=5"></svg> <iframe src="javascript:window.__xss=6"></iframe> **bold**'
)


def test_an_xss_payload_renders_inert(page: Page, system: RunningSystem, shots: Path) -> None:
    widget = open_widget(page, system)
    widget.start_chat(system.access_code)
    widget.send(f"{XSS} [[demo:echo]]")
    reply = widget.wait_reply()
    expect(reply).to_contain_text("bold")
    # A broken image of our own is the barrier: the reply's handlers would have run first.
    page.evaluate(
        "() => new Promise(done => { const img = new Image(); img.onerror = () => done();"
        " img.src = '/xss-barrier.png'; })"
    )

    assert page.evaluate("window.__xss") is None
    # Visitor text is shown as typed; Terra's Markdown is sanitised.
    expect(widget.visitor.first.locator(".bubble")).to_contain_text(
        '<img src=x onerror="window.__xss=1">'
    )
    dangerous = widget.shadow_eval(
        "root.querySelectorAll('ol.messages img, ol.messages script, ol.messages svg,"
        " ol.messages iframe, ol.messages [onerror], ol.messages [onload],"
        ' ol.messages a[href^="javascript"]\').length'
    )
    assert dangerous == 0
    expect(reply.locator("strong")).to_have_text("bold")
    widget.shot(shots, "09-xss-inert")


def test_keyboard_only_use(page: Page, system: RunningSystem) -> None:
    widget = open_widget(page, system)
    widget.launcher.focus()
    page.keyboard.press("Enter")
    expect(widget.panel).to_be_visible()
    expect(widget.code_input).to_be_focused()
    page.keyboard.type(system.access_code)
    page.keyboard.press("Enter")
    expect(widget.textarea).to_be_focused()
    widget.wait_connected()

    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two [[demo:echo]]")
    expect(widget.textarea).to_have_value("line one\nline two [[demo:echo]]")
    page.keyboard.press("Enter")
    expect(widget.visitor).to_have_count(1)
    expect(widget.visitor.first.locator(".bubble")).to_have_text("line one\nline two [[demo:echo]]")
    expect(widget.textarea).to_have_value("")
    widget.wait_reply()

    page.keyboard.press("Escape")
    expect(widget.panel).to_be_hidden()
    expect(widget.launcher).to_be_focused()
    expect(widget.launcher).to_have_attribute("aria-expanded", "false")


def test_unread_badge_while_the_panel_is_closed(page: Page, system: RunningSystem) -> None:
    widget = open_widget(page, system)
    widget.start_chat(system.access_code)
    widget.send("Answer while I look away [[demo:echo]] [[demo:delay=300]]")
    widget.textarea.press("Escape")
    expect(widget.panel).to_be_hidden()
    expect(widget.badge).to_have_text("1", timeout=20_000)
    expect(widget.launcher).to_have_attribute("aria-label", "Open chat with Terra (1 new)")
    widget.launcher.click()
    expect(widget.badge).to_be_hidden()
    expect(widget.terra).to_have_count(1)


def test_transcript_theme_and_reset(page: Page, system: RunningSystem, shots: Path) -> None:
    widget = open_widget(page, system)
    widget.start_chat(system.access_code)
    widget.send("hello transcript [[demo:echo]]")
    widget.wait_reply()

    with page.expect_download() as download_info:
        widget.download_button.click()
    download = download_info.value
    assert download.suggested_filename.endswith(".md")
    text = Path(download.path()).read_text(encoding="utf-8")
    assert "hello transcript" in text

    expect(widget.root).not_to_have_class(re.compile(r"\bdark\b"))
    widget.theme_button.click()
    expect(widget.root).to_have_class(re.compile(r"\bdark\b"))
    assert page.evaluate("localStorage.getItem('terra-theme')") == "dark"
    page.reload()
    widget = Widget(page)
    expect(widget.root).to_have_class(re.compile(r"\bdark\b"))
    expect(widget.terra).to_have_count(1)  # history came back after the refresh
    widget.shot(shots, "10-dark-theme")

    widget.reset_button.click()
    widget.host.locator(".confirm-reset").click()
    expect(widget.code_input).to_be_visible()
    expect(widget.code_input).to_have_value(system.access_code)
    expect(widget.gate_button).to_have_text("Start a new chat")
    assert page.evaluate("sessionStorage.getItem('terrarium-chat-id')") is None


def test_full_page_mode(page: Page, system: RunningSystem, shots: Path) -> None:
    page.goto(system.url + "terra")
    widget = Widget(page)
    expect(widget.code_input).to_be_visible()
    expect(widget.launcher).to_be_hidden()
    expect(widget.close_button).to_be_hidden()
    box = widget.panel.bounding_box()
    assert box is not None
    assert box["width"] >= 1100
    assert box["height"] >= 800
    widget.start_chat(system.access_code)
    widget.send("Hi from the full page [[demo:echo]]")
    widget.wait_reply()
    widget.shot(shots, "11-full-page")


def test_phone_layout_is_full_screen(browser: Browser, system: RunningSystem, shots: Path) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        page = context.new_page()
        widget = open_widget(page, system)
        widget.launcher.tap()
        expect(widget.panel).to_be_visible()
        widget.settle()
        box = widget.panel.bounding_box()
        assert box == {"x": 0, "y": 0, "width": 390, "height": 844}
        widget.enter_code(system.access_code)
        widget.wait_connected()
        font_size = widget.textarea.evaluate("t => getComputedStyle(t).fontSize")
        assert font_size == "16px", "smaller inputs make iOS zoom the page"
        widget.send("Hello from a phone [[demo:echo]]")
        widget.wait_reply()
        widget.shot(shots, "12-phone")
    finally:
        context.close()
