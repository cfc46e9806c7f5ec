"""Bring your own model behind the CAPTCHA hook (review F2): a code alone opens no BYO
route once sessions are required, and the session token opens them all (providers,
models, messages), as it does Terra's routes.

A real redis-server, the gateway in-process, a fake OpenAI-compatible provider and a fake
siteverify server, both real HTTP servers on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.fake_provider import run_fake_provider
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

KEY = "sk-test-visitor-key-0123456789abcdef"
SECRET = "captcha-secret-value"


async def siteverify(request: web.Request) -> web.Response:
    form = await request.post()
    return web.json_response({"success": form.get("response") == "human"})


@pytest.fixture
async def server(redis_server: RedisServer) -> AsyncIterator[TestServer]:
    verify_app = web.Application()
    verify_app.router.add_post("/siteverify", siteverify)
    verifier = TestServer(verify_app)
    await verifier.start_server()
    async with run_fake_provider(KEY) as fake:
        settings = gateway_settings(
            redis_server.url,
            byo_custom_providers=[
                {"id": "fake", "name": "Fake AI", "baseUrl": fake.base_url, "modelsEndpoint": True}
            ],
            CAPTCHA_VERIFY_URL=str(verifier.make_url("/siteverify")),
            CAPTCHA_SECRET=SECRET,
            CAPTCHA_SITE_KEY="public-site-key",
            CAPTCHA_SCRIPT_URL="https://js.captcha.example/1/api.js?render=explicit",
            CAPTCHA_SCRIPT_GLOBAL="turnstile",
        )
        gateway = TestServer(create_app(settings))
        await gateway.start_server()
        try:
            yield gateway
        finally:
            await gateway.close()
            await verifier.close()


async def call(
    s: aiohttp.ClientSession,
    server: TestServer,
    method: str,
    path: str,
    *,
    token: str | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with s.request(method, server.make_url(path), headers=headers, **kwargs) as r:
        return r.status, await r.json()


async def test_byo_routes_need_the_session_token_when_the_captcha_is_on(
    server: TestServer,
) -> None:
    message = {"content": "hello", "provider": "fake", "model": "echo", "apiKey": KEY}
    models = {"provider": "fake", "apiKey": KEY}
    code = {"accessCode": ACCESS_CODE}
    async with aiohttp.ClientSession() as s:
        cases: tuple[tuple[str, str, dict[str, Any]], ...] = (
            ("GET", "/api/byo/providers", {"params": code}),
            ("POST", "/api/byo/models", {"json": {**models, **code}}),
            ("POST", "/api/chat/byo-cap/byo", {"json": {**message, **code}}),
        )
        for method, path, kwargs in cases:
            status, body = await call(s, server, method, path, **kwargs)
            assert status == 401, (path, body)
            assert body["error"].startswith("Please start a session first"), path

        status, body = await call(
            s, server, "POST", "/api/session", json={**code, "captchaToken": "human"}
        )
        assert status == 200, body
        token = body["token"]
        status, body = await call(s, server, "GET", "/api/byo/providers", token=token)
        assert status == 200
        assert [p["id"] for p in body["providers"]] == ["fake"]
        status, body = await call(s, server, "POST", "/api/byo/models", token=token, json=models)
        assert status == 200
        assert "echo" in body["models"]
        status, body = await call(
            s, server, "POST", "/api/chat/byo-cap/byo", token=token, json=message
        )
        assert status == 200, body

        async def answered() -> list[Any] | None:
            status, history = await call(
                s, server, "GET", "/api/chat/byo-cap/messages", token=token
            )
            assert status == 200
            return history if any(m["sender"] == "Terra" for m in history) else None

        history = await wait_until(answered, 10, "the provider's answer stored")
        assert history[-1]["content"] == "You said: hello"
