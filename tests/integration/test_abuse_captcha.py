"""The CAPTCHA hook (issue 11): off by default; when set, starting a session needs an answer
the verifier accepts, and a code alone opens nothing else. The verifier here is a real HTTP
server speaking the siteverify protocol (hCaptcha, Turnstile, reCAPTCHA)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.integration

SECRET = "captcha-secret-value"


class FakeSiteVerify:
    """Accepts the answer ``human``; ``status`` other than 200 plays an outage."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.forms.append({k: str(v) for k, v in form.items()})
        if self.status != 200:
            return web.Response(status=self.status)
        ok = form.get("secret") == SECRET and form.get("response") == "human"
        return web.json_response({"success": ok})


@pytest.fixture
async def verifier() -> AsyncIterator[tuple[FakeSiteVerify, str]]:
    fake = FakeSiteVerify()
    app = web.Application()
    app.router.add_post("/siteverify", fake.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield fake, str(server.make_url("/siteverify"))
    finally:
        await server.close()


async def start(redis_server: RedisServer, **overrides: Any) -> TestServer:
    server = TestServer(create_app(gateway_settings(redis_server.url, **overrides)))
    await server.start_server()
    return server


@pytest.fixture
async def gateway(
    redis_server: RedisServer, verifier: tuple[FakeSiteVerify, str]
) -> AsyncIterator[TestServer]:
    server = await start(
        redis_server,
        CAPTCHA_VERIFY_URL=verifier[1],
        CAPTCHA_SECRET=SECRET,
        CAPTCHA_SITE_KEY="public-site-key",
        CAPTCHA_SCRIPT_URL="https://js.captcha.example/1/api.js?render=explicit",
        CAPTCHA_SCRIPT_GLOBAL="turnstile",
    )
    try:
        yield server
    finally:
        await server.close()


async def post_session(server: TestServer, body: dict[str, Any]) -> tuple[int, Any, str | None]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(server.make_url("/api/session"), json=body) as r,
    ):
        return r.status, await r.json(), r.headers.get("Retry-After")


async def get_messages(server: TestServer, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(server.make_url("/api/chat/cap/messages"), **kwargs) as r,
    ):
        return r.status, await r.json()


async def test_a_session_needs_an_accepted_answer(
    gateway: TestServer, verifier: tuple[FakeSiteVerify, str]
) -> None:
    fake, _ = verifier
    status, body, _ = await post_session(gateway, {"accessCode": ACCESS_CODE})
    assert (status, body) == (403, {"error": "Please complete the check that you are a person."})
    status, body, _ = await post_session(
        gateway, {"accessCode": ACCESS_CODE, "captchaToken": "robot"}
    )
    assert status == 403
    assert body["error"].startswith("The check that you are a person failed.")
    status, body, _ = await post_session(
        gateway, {"accessCode": ACCESS_CODE, "captchaToken": "human"}
    )
    assert status == 200
    assert fake.forms[-1] == {"secret": SECRET, "response": "human", "remoteip": "127.0.0.1"}
    headers = {"Authorization": f"Bearer {body['token']}"}
    assert (await get_messages(gateway, headers=headers))[0] == 200


async def test_a_wrong_code_never_reaches_the_verifier(
    gateway: TestServer, verifier: tuple[FakeSiteVerify, str]
) -> None:
    fake, _ = verifier
    status, _, _ = await post_session(gateway, {"accessCode": "wrong", "captchaToken": "human"})
    assert status == 401
    assert fake.forms == []


async def test_with_a_captcha_the_code_alone_opens_nothing_else(gateway: TestServer) -> None:
    status, body = await get_messages(gateway, params={"accessCode": ACCESS_CODE})
    assert status == 401
    assert body["error"].startswith("Please start a session first")


async def test_an_unreachable_verifier_is_a_503_never_a_pass(
    gateway: TestServer, verifier: tuple[FakeSiteVerify, str]
) -> None:
    verifier[0].status = 502
    status, body, retry_after = await post_session(
        gateway, {"accessCode": ACCESS_CODE, "captchaToken": "human"}
    )
    assert status == 503
    assert retry_after == "10"
    assert "unavailable" in body["error"]


async def test_off_by_default(redis_server: RedisServer) -> None:
    server = await start(redis_server)
    try:
        status, _, _ = await post_session(server, {"accessCode": ACCESS_CODE})
        assert status == 200
        assert (await get_messages(server, params={"accessCode": ACCESS_CODE}))[0] == 200
    finally:
        await server.close()


async def get(server: TestServer, path: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as s, s.get(server.make_url(path)) as r:
        await r.read()
        return r


async def test_the_config_names_what_the_widget_needs_to_show_the_challenge(
    gateway: TestServer,
) -> None:
    async with aiohttp.ClientSession() as s, s.get(gateway.make_url("/api/config")) as r:
        config = await r.json()
    assert config["captcha"] == {
        "siteKey": "public-site-key",
        "scriptUrl": "https://js.captcha.example/1/api.js?render=explicit",
        "global": "turnstile",
    }
    assert SECRET not in str(config)


async def test_the_pages_let_the_provider_script_and_frames_in(gateway: TestServer) -> None:
    for path in ("/", "/terra"):
        csp = (await get(gateway, path)).headers["Content-Security-Policy"]
        directives = {d.split(" ", 1)[0]: d for d in csp.split("; ")}
        assert "https://js.captcha.example" in directives["script-src"], csp
        assert "https://js.captcha.example" in directives["frame-src"], csp
        assert "https://js.captcha.example" in directives["connect-src"], csp


async def test_without_the_hook_no_captcha_in_config_or_csp(redis_server: RedisServer) -> None:
    server = await start(redis_server, CAPTCHA_SCRIPT_URL="https://js.captcha.example/api.js")
    try:
        async with aiohttp.ClientSession() as s, s.get(server.make_url("/api/config")) as r:
            assert (await r.json())["captcha"] is None
        csp = (await get(server, "/terra")).headers["Content-Security-Policy"]
        assert "captcha.example" not in csp
        assert "frame-src" not in csp
    finally:
        await server.close()


async def test_the_csp_sources_can_be_named(
    redis_server: RedisServer, verifier: tuple[FakeSiteVerify, str]
) -> None:
    server = await start(
        redis_server,
        CAPTCHA_VERIFY_URL=verifier[1],
        CAPTCHA_SECRET=SECRET,
        CAPTCHA_SCRIPT_URL="https://js.hcaptcha.com/1/api.js",
        CAPTCHA_CSP_SOURCES="https://hcaptcha.com, https://*.hcaptcha.com",
    )
    try:
        csp = (await get(server, "/terra")).headers["Content-Security-Policy"]
        directives = {d.split(" ", 1)[0]: d for d in csp.split("; ")}
        for name in ("script-src", "frame-src", "style-src", "connect-src"):
            assert "https://hcaptcha.com https://*.hcaptcha.com" in directives[name], csp
    finally:
        await server.close()


@pytest.mark.parametrize(
    "value", ["https://a.example; script-src *", "'unsafe-inline'", "*", "javascript:x"]
)
def test_a_csp_source_that_could_widen_the_policy_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="captcha_csp_sources"):
        gateway_settings("rediss://127.0.0.1:1", CAPTCHA_CSP_SOURCES=value)


async def test_a_live_session_renews_without_a_second_answer(
    gateway: TestServer, verifier: tuple[FakeSiteVerify, str]
) -> None:
    fake, _ = verifier
    _, first, _ = await post_session(gateway, {"accessCode": ACCESS_CODE, "captchaToken": "human"})
    asked = len(fake.forms)
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gateway.make_url("/api/session"),
            json={"accessCode": ACCESS_CODE},
            headers={"Authorization": f"Bearer {first['token']}"},
        ) as r,
    ):
        assert r.status == 200
        assert (await r.json())["token"]
    assert len(fake.forms) == asked
    for bad in (first["token"] + "x", "not-a-token"):
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                gateway.make_url("/api/session"),
                json={"accessCode": ACCESS_CODE},
                headers={"Authorization": f"Bearer {bad}"},
            ) as r,
        ):
            assert r.status == 403
    # A token stands in for the answer only with its own code: the code is still checked.
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gateway.make_url("/api/session"),
            json={"accessCode": "wrong"},
            headers={"Authorization": f"Bearer {first['token']}"},
        ) as r,
    ):
        assert r.status == 401
