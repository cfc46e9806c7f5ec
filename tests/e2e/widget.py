"""A page object for <terra-chat>: what a visitor sees and does, as Playwright locators.

Playwright's CSS locators pierce open shadow roots, so "terra-chat .launcher" finds the
launcher inside the widget's shadow DOM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

SLOW_ANSWER = "[[demo:tokens=300]] [[demo:delay=30]]"


class Widget:
    def __init__(self, page: Page, host: str = "terra-chat") -> None:
        self.page = page
        self.host = page.locator(host)
        find = self.host.locator
        self.launcher = find(".launcher")
        self.badge = find(".launcher .badge")
        self.panel = find(".panel")
        self.close_button = find(".icon-button[aria-label='Close chat']")
        self.status_text = find(".status-text")
        self.chain_toggle = find(".chain-toggle")
        self.chain_panel = find(".chain-panel")
        self.banner = find(".banner[role='status']")
        self.demo_note = find(".demo-note")
        self.code_input = find("#terra-code")
        self.gate_button = find(".gate button[type='submit']")
        self.gate_error = find("#terra-gate-error")
        self.textarea = find("textarea")
        self.send_button = find("button.send")
        self.stop_button = find("button.stop")
        self.messages = find("ol.messages > li")
        self.visitor = find("ol.messages > li.visitor")
        self.terra = find("ol.messages > li.terra")
        self.stream = find(".streaming")
        self.typing = find(".typing")
        self.new_messages = find(".new-messages")
        self.log = find(".log")
        self.announcer = find("[aria-live='polite']")
        self.download_button = find(".icon-button[aria-label='Download transcript']")
        self.reset_button = find(".icon-button[aria-label='Reset chat']")
        self.theme_button = find(".icon-button[aria-label^='Switch to']")
        self.root = find(".root")

    # --- actions -------------------------------------------------------------------

    def open(self) -> None:
        self.launcher.click()
        expect(self.panel).to_be_visible()
        self.settle()

    def settle(self) -> None:
        """Wait for the panel's opening animation to end (boxes measured after it are final)."""
        self.panel.evaluate("(panel) => Promise.all(panel.getAnimations().map((a) => a.finished))")

    def enter_code(self, code: str) -> None:
        self.code_input.fill(code)
        self.code_input.press("Enter")

    def start_chat(self, code: str) -> None:
        """Open (when a bubble), pass the gate and wait for the live connection."""
        # A bubble shows only its launcher until opened (the chat's modules load then).
        expect(self.launcher.or_(self.root).first).to_be_attached()
        if self.host.get_attribute("mode") == "bubble" and not self.panel.is_visible():
            self.open()
        expect(self.root).to_be_attached()
        self.enter_code(code)
        expect(self.textarea).to_be_visible()
        self.wait_connected()

    def wait_connected(self, timeout: float = 15_000) -> None:
        expect(self.host.locator(".meta")).to_contain_text("connected", timeout=timeout)

    def send(self, text: str) -> None:
        self.textarea.fill(text)
        self.textarea.press("Enter")

    def wait_reply(self, count: int = 1, timeout: float = 30_000) -> Locator:
        """Wait until `count` Terra messages are shown; return the last one."""
        expect(self.terra).to_have_count(count, timeout=timeout)
        return self.terra.nth(count - 1)

    def stream_text(self) -> str:
        bubble = self.stream.locator(".bubble")
        return bubble.inner_text() if bubble.count() else ""

    def shot(self, folder: Path, name: str) -> Path:
        path = folder / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def shadow_eval(self, script: str) -> Any:
        """Evaluate `script` with `root` bound to the widget's shadow root."""
        return self.host.evaluate(
            f"(host) => {{ const root = host.shadowRoot; return ({script}); }}"
        )
