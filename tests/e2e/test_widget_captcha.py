"""The widget's CAPTCHA step (issue 11): with the gateway's CAPTCHA hook on, GET /api/config
names the provider's script and site key, the gate renders the provider's challenge, and
its answer goes with the access code to POST /api/session. The provider here is a fake
script served from another origin (so the page's CSP must let it in) that answers
``human`` or ``robot``, and the verifier a fake siteverify endpoint on the same server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page, expect

from tests.e2e.conftest import require_tools
from tests.e2e.system import RunningSystem
from tests.e2e.widget import Widget

pytestmark = pytest.mark.e2e

SECRET = "captcha-secret-value"
SITE_KEY = "public-site-key"

#: A provider script of the shape hCaptcha, Turnstile and reCAPTCHA share.
FAKE_PROVIDER = """
window.fakecaptcha = {
  rendered: [],
  render(element, options) {
    const id = this.rendered.length;
    this.rendered.push(options.sitekey);
    for (const answer of ["human", "robot"]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "fake-captcha-" + answer;
      button.textContent = "I am a " + answer;
      button.onclick = () => options.callback(answer);
      element.append(button);
    }
    return id;
  },
  reset() { window.fakecaptcha.resets = (window.fakecaptcha.resets || 0) + 1; },
};
"""


class FakeProvider:
    """Serves /api.js (the challenge) and /siteverify (the verifier) from one port."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = FAKE_PROVIDER.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/javascript")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                fake.forms.append(form)
                ok = form.get("secret") == SECRET and form.get("response") == "human"
                body = json.dumps({"success": ok}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    try:
        yield fake
    finally:
        fake.close()


def captcha_env(provider: FakeProvider) -> dict[str, str]:
    return {
        "CAPTCHA_VERIFY_URL": f"{provider.url}/siteverify",
        "CAPTCHA_SECRET": SECRET,
        "CAPTCHA_SITE_KEY": SITE_KEY,
        "CAPTCHA_SCRIPT_URL": f"{provider.url}/api.js",
        "CAPTCHA_SCRIPT_GLOBAL": "fakecaptcha",
    }


@pytest.fixture(scope="module")
def captcha_system(provider: FakeProvider) -> Iterator[RunningSystem]:
    require_tools()
    from tests.e2e.system import start_system

    yield from start_system(captcha_env(provider))


def open_gate(page: Page, system: RunningSystem) -> Widget:
    page.goto(system.url)
    widget = Widget(page)
    widget.open()
    expect(page.locator("terra-chat .fake-captcha-human")).to_be_visible()
    return widget


def test_the_gate_shows_the_challenge_and_sends_its_answer(
    page: Page, captcha_system: RunningSystem, provider: FakeProvider
) -> None:
    widget = open_gate(page, captcha_system)
    assert page.evaluate("window.fakecaptcha.rendered") == [SITE_KEY]
    widget.code_input.fill(captcha_system.access_code)
    expect(widget.gate_button).to_be_disabled()  # not before the challenge is answered
    page.locator("terra-chat .fake-captcha-human").click()
    expect(widget.gate_button).to_be_enabled()
    before = len(provider.forms)
    widget.gate_button.click()
    expect(widget.textarea).to_be_visible()
    widget.wait_connected()
    widget.send("Hello through the check [[demo:echo]]")
    widget.wait_reply()
    answers = [form["response"] for form in provider.forms[before:]]
    assert answers == ["human"]  # one session, one answer


def test_a_refused_answer_says_so_and_asks_again(
    page: Page, captcha_system: RunningSystem, provider: FakeProvider
) -> None:
    widget = open_gate(page, captcha_system)
    widget.code_input.fill(captcha_system.access_code)
    page.locator("terra-chat .fake-captcha-robot").click()
    widget.gate_button.click()
    expect(widget.gate_error).to_contain_text("The check that you are a person failed")
    expect(widget.textarea).to_be_hidden()
    expect(widget.gate_button).to_be_disabled()  # the used answer is gone: solve it again
    assert page.evaluate("window.fakecaptcha.resets") >= 1
    page.locator("terra-chat .fake-captcha-human").click()
    widget.gate_button.click()
    expect(widget.textarea).to_be_visible()


def test_a_wrong_code_never_reaches_the_verifier(
    page: Page, captcha_system: RunningSystem, provider: FakeProvider
) -> None:
    widget = open_gate(page, captcha_system)
    widget.code_input.fill("not-the-code")
    page.locator("terra-chat .fake-captcha-human").click()
    before = len(provider.forms)
    widget.gate_button.click()
    expect(widget.gate_error).to_contain_text("access code was rejected")
    assert len(provider.forms) == before


def test_without_the_hook_there_is_no_challenge(page: Page, system: RunningSystem) -> None:
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    assert page.locator("terra-chat [slot='captcha']").count() == 0


def test_a_page_refresh_resumes_without_a_new_answer(
    page: Page, captcha_system: RunningSystem, provider: FakeProvider
) -> None:
    widget = open_gate(page, captcha_system)
    widget.code_input.fill(captcha_system.access_code)
    page.locator("terra-chat .fake-captcha-human").click()
    widget.gate_button.click()
    widget.wait_connected()
    widget.send("Before the refresh [[demo:echo]]")
    widget.wait_reply()
    before = len(provider.forms)
    page.reload()
    widget = Widget(page)
    expect(widget.launcher.or_(widget.root).first).to_be_attached()
    if not widget.panel.is_visible():
        widget.open()
    widget.wait_connected()
    expect(widget.terra).to_have_count(1)
    expect(widget.textarea).to_be_visible()
    widget.send("After the refresh [[demo:echo]]")
    widget.wait_reply(2)
    assert len(provider.forms) == before  # the session carried over: no second check


def test_the_session_is_renewed_without_a_second_answer(page: Page, provider: FakeProvider) -> None:
    """With the shortest SESSION_TTL_SECONDS (60 s, inside the widget's 60 s renewal margin)
    every request renews the session: each renewal rides on the live token, not a new check."""
    require_tools()
    from tests.e2e.system import start_system

    for short in start_system({**captcha_env(provider), "SESSION_TTL_SECONDS": "60"}):
        widget = open_gate(page, short)
        widget.code_input.fill(short.access_code)
        page.locator("terra-chat .fake-captcha-human").click()
        before = len(provider.forms)
        widget.gate_button.click()
        widget.wait_connected()
        widget.send("Renewed twice over [[demo:echo]]")
        widget.wait_reply()
        expect(widget.gate_error).to_be_hidden()
        assert [form["response"] for form in provider.forms[before:]] == ["human"]
