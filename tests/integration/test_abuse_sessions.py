"""Session tokens instead of the access code in URLs (issue 11, item 10 and "secrets out of
URLs"): ``POST /api/session`` exchanges the code for a short-lived signed token, which
REST takes as ``Authorization: Bearer`` and WebSocket/SSE as ``token=``; the code in the
query keeps working for the original front end.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.keys import AppKeys
from gateway.session_tokens import SessionTokens
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.integration


async def start(redis_server: RedisServer, **overrides: Any) -> TestServer:
    server = TestServer(create_app(gateway_settings(redis_server.url, **overrides)))
    await server.start_server()
    return server


@pytest.fixture
async def gateway(redis_server: RedisServer) -> AsyncIterator[TestServer]:
    server = await start(redis_server)
    try:
        yield server
    finally:
        await server.close()


async def open_session(server: TestServer, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(server.make_url("/api/session"), json=body) as r,
    ):
        return r.status, await r.json()


async def token_for(server: TestServer, code: str = ACCESS_CODE) -> str:
    status, body = await open_session(server, {"accessCode": code})
    assert status == 200, body
    return str(body["token"])


async def get_status(server: TestServer, path: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as s, s.get(server.make_url(path), headers=headers) as r:
        return r.status  # headers only: an SSE stream's body never ends


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_code_is_exchanged_for_a_token_that_opens_rest(gateway: TestServer) -> None:
    status, body = await open_session(gateway, {"accessCode": ACCESS_CODE})
    assert status == 200
    assert ACCESS_CODE not in body["token"]
    assert 60 <= body["expiresIn"] <= 3600
    assert body["expiresAt"].endswith("Z")
    token = body["token"]
    assert await get_status(gateway, "/api/chat/s1/messages", bearer(token)) == 200
    assert await get_status(gateway, "/api/health", bearer(token)) == 200
    assert await get_status(gateway, "/terrarium/api/chat/s1/worker-state", bearer(token)) == 200
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gateway.make_url("/api/chat/s1/messages"),
            json={"content": "hello", "clientMessageId": "t-1"},
            headers=bearer(token),
        ) as r,
    ):
        assert r.status == 200, await r.text()


async def test_the_code_in_the_query_keeps_working(gateway: TestServer) -> None:
    """The original React front end never asks for a session."""
    path = f"/api/chat/s2/messages?accessCode={ACCESS_CODE}"
    assert await get_status(gateway, path) == 200
    assert await get_status(gateway, "/api/chat/s2/events?accessCode=rotated-code") == 200


@pytest.mark.parametrize(
    "body",
    [{"accessCode": "wrong"}, {}, {"accessCode": 7}, {"accessCode": ""}],
    ids=["wrong", "missing", "not-a-string", "empty"],
)
async def test_a_wrong_code_gets_no_token(gateway: TestServer, body: dict[str, Any]) -> None:
    status, answer = await open_session(gateway, body)
    assert (status, answer) == (401, {"error": "Invalid access code"})


async def test_forged_and_expired_tokens_are_refused(gateway: TestServer) -> None:
    token = await token_for(gateway)
    prefix, code_id, expires, signature = token.split(".")
    later = f"{prefix}.{code_id}.{int(expires) + 86400}.{signature}"
    tail = "AA" if signature[-2:] != "AA" else "BB"
    flipped = f"{prefix}.{code_id}.{expires}.{signature[:-2]}{tail}"
    for forged in (later, flipped, "s1.x.1.y", token + "x", ""):
        assert await get_status(gateway, "/api/chat/s3/messages", bearer(forged)) == 401
    gate = gateway.app[AppKeys.gate]
    old, _ = gate.tokens.issue(code_id, time.time() - 2 * gate.tokens.ttl_seconds)
    async with (
        aiohttp.ClientSession() as s,
        s.get(gateway.make_url("/api/chat/s3/messages"), headers=bearer(old)) as r,
    ):
        assert (r.status, await r.json()) == (401, {"error": "Session expired"})


async def test_an_expired_token_spends_no_failed_code_attempt(redis_server: RedisServer) -> None:
    """A tab left open past SESSION_TTL_SECONDS is not a guess: its genuine but expired
    token gets 401 "Session expired" without using up the client's failed-code budget, while
    a wrong code sent beside that token still counts (a stale token is no free pass)."""
    server = await start(redis_server, rate_limit_failed_codes_per_ip=2)
    try:
        gate = server.app[AppKeys.gate]
        code_id = gate.check_token(await token_for(server), time.time()).code_id
        assert code_id is not None
        old, _ = gate.tokens.issue(code_id, time.time() - 2 * gate.tokens.ttl_seconds)
        for _ in range(4):
            assert await get_status(server, "/api/chat/s5/messages", bearer(old)) == 401
        async with aiohttp.ClientSession() as s:
            url = server.make_url(f"/api/chat?chatId=s5&token={old}")
            async with s.ws_connect(url) as ws:
                assert (await ws.receive(timeout=10)).data == 1008
        assert await get_status(server, f"/api/health?accessCode={ACCESS_CODE}") == 200
        wrong = "/api/chat/s5/messages?accessCode=wrong"
        assert await get_status(server, wrong, bearer(old)) == 401
        assert await get_status(server, wrong, bearer(old)) == 401
        assert await get_status(server, wrong, bearer(old)) == 429
    finally:
        await server.close()


async def test_a_token_signed_by_another_deployment_is_refused(
    gateway: TestServer, redis_server: RedisServer
) -> None:
    other = await start(redis_server, CHAT_PASSWORD=ACCESS_CODE, SESSION_SECRET="x" * 32)
    try:
        foreign = await token_for(other)
        assert await get_status(other, "/api/health", bearer(foreign)) == 200
        assert await get_status(gateway, "/api/health", bearer(foreign)) == 401
    finally:
        await other.close()


async def test_secret_rotation_keeps_old_tokens_valid(redis_server: RedisServer) -> None:
    old_secret, new_secret = "old-secret-" + "o" * 16, "new-secret-" + "n" * 16
    before = await start(redis_server, SESSION_SECRET=old_secret)
    after = await start(redis_server, SESSION_SECRET=f"{new_secret},{old_secret}")
    only_new = await start(redis_server, SESSION_SECRET=new_secret)
    try:
        token = await token_for(before)
        assert await get_status(after, "/api/health", bearer(token)) == 200
        assert await get_status(only_new, "/api/health", bearer(token)) == 401
        fresh = await token_for(after)
        assert await get_status(only_new, "/api/health", bearer(fresh)) == 200
    finally:
        for server in (before, after, only_new):
            await server.close()


async def test_gateways_sharing_chat_password_share_tokens(redis_server: RedisServer) -> None:
    """Without SESSION_SECRET the signing secret derives from the codes: any gateway of
    the deployment accepts any other's tokens (the widget may reconnect elsewhere)."""
    one, two = await start(redis_server), await start(redis_server)
    try:
        assert await get_status(two, "/api/health", bearer(await token_for(one))) == 200
    finally:
        await one.close()
        await two.close()


async def test_sse_and_websocket_take_the_token_in_the_query(gateway: TestServer) -> None:
    token = await token_for(gateway)
    assert await get_status(gateway, f"/api/chat/s4/events?token={token}&v=2") == 200
    assert await get_status(gateway, "/api/chat/s4/events?token=forged") == 401
    async with aiohttp.ClientSession() as s:
        url = gateway.make_url(f"/api/chat?chatId=s4&token={token}&v=2")
        async with s.ws_connect(url) as ws:
            async with s.post(
                gateway.make_url("/api/chat/s4/messages"),
                json={"content": "over the socket"},
                headers=bearer(token),
            ) as r:
                assert r.status == 200
            frame = json.loads((await ws.receive(timeout=10)).data)
            assert "type" not in frame  # a Message
            assert frame["content"] == "over the socket"
        async with s.ws_connect(gateway.make_url("/api/chat?chatId=s4&token=forged")) as ws:
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == 1008


async def test_tokens_and_sessions_are_bounded_by_settings() -> None:
    tokens = SessionTokens([b"k" * 32], ttl_seconds=120)
    token, expires = tokens.issue("abc", now=1000.0)
    assert expires == 1120
    assert tokens.check(token, now=1119.0).code_id == "abc"
    assert tokens.check(token, now=1120.0).expired


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"SESSION_SECRET": "short"}, "SESSION_SECRET"),
        ({"SESSION_TTL_SECONDS": "5"}, "SESSION_TTL_SECONDS"),
        ({"CAPTCHA_VERIFY_URL": "https://captcha.example/siteverify"}, "settings"),
        ({"CAPTCHA_VERIFY_URL": "ftp://x", "CAPTCHA_SECRET": "s"}, "CAPTCHA_VERIFY_URL"),
    ],
)
def test_bad_session_settings_are_named(
    redis_server: RedisServer, overrides: dict[str, str], setting: str
) -> None:
    from pydantic import ValidationError

    from bus import describe_settings_error

    with pytest.raises(ValidationError) as caught:
        gateway_settings(redis_server.url, **overrides)
    line = describe_settings_error(caught.value)
    assert setting in line
    assert "\n" not in line


async def test_neither_the_code_nor_the_token_is_logged(
    gateway: TestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = await token_for(gateway)
    assert await get_status(gateway, f"/api/chat/s5/events?token={token}") == 200
    assert await get_status(gateway, f"/api/chat/s5/messages?token={token}") == 200
    assert await get_status(gateway, f"/api/chat/s5/messages?accessCode={ACCESS_CODE}") == 200
    logged = capsys.readouterr()
    assert "gateway.session_started" in logged.out
    signature = token.rsplit(".", 1)[1]
    for text in (logged.out, logged.err):
        assert signature not in text
        assert ACCESS_CODE not in text


def test_session_and_captcha_secrets_are_masked_in_logs(redis_server: RedisServer) -> None:
    import io
    import logging

    from gateway.logs import protect_logs

    session_secret, captcha_secret = "s" * 20 + "-session", "c" * 20 + "-captcha"
    settings = gateway_settings(
        redis_server.url,
        SESSION_SECRET=session_secret,
        CAPTCHA_VERIFY_URL="https://captcha.example/siteverify",
        CAPTCHA_SECRET=captcha_secret,
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        protect_logs(settings)
        logging.getLogger("test").warning("leak %s and %s", session_secret, captcha_secret)
    finally:
        root.removeHandler(handler)
    assert stream.getvalue() == "leak [redacted] and [redacted]\n"
