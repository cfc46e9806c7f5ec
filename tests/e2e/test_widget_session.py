"""The widget keeps the access code out of URLs (issue 11): it exchanges the code once for a
session token (POST /api/session) and sends the token instead, in a header on REST and in
the WebSocket URL, where a header is impossible."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page, Request, WebSocket

from tests.e2e.system import RunningSystem
from tests.e2e.widget import Widget

pytestmark = pytest.mark.e2e


def test_no_url_carries_the_access_code(page: Page, system: RunningSystem) -> None:
    requests: list[Request] = []
    sockets: list[str] = []

    def on_request(request: Request) -> None:
        requests.append(request)

    page.on("request", on_request)

    def on_socket(ws: WebSocket) -> None:
        sockets.append(ws.url)

    page.on("websocket", on_socket)
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    widget.wait_connected()
    widget.send("Session please [[demo:echo]]")
    widget.wait_reply()

    api = [r for r in requests if "/api/" in r.url]
    sessions = [r for r in api if urlsplit(r.url).path.endswith("/api/session")]
    assert [r.method for r in sessions] == ["POST"]
    assert system.access_code in (sessions[0].post_data or "")
    for url in [*(r.url for r in api), *sockets]:
        assert system.access_code not in url, url
    for request in api:
        if request not in sessions:
            assert system.access_code not in (request.post_data or ""), request.url
    authorized = [r for r in api if r.headers.get("authorization", "").startswith("Bearer ")]
    assert any(urlsplit(r.url).path.endswith("/messages") for r in authorized)
    assert sockets
    assert all("token" in parse_qs(urlsplit(url).query) for url in sockets)
