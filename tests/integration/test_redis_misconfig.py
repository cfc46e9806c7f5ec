"""A Redis that refuses (here: an ACL user without EVALSHA) is reported as misconfiguration,
not as an outage: the visitor's 503 says "misconfigured", the log carries Redis's words
(never the password), /metrics counts it by kind, and /readyz names it (issue 13)."""

from __future__ import annotations

import logging
import re

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.integration

PASSWORD = "narrow-s3cret-pw"


def narrow_user_url(server: RedisServer) -> str:
    """A user that may do everything but run scripts: every accept is refused (NOPERM)."""
    admin = redis.Redis.from_url(server.url)
    admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "narrow", "on", f">{PASSWORD}", "~*", "&*", "+@all", "-eval", "-evalsha"
    )
    admin.close()
    return server.url.replace("redis://", f"redis://narrow:{PASSWORD}@")


def misconfig_count(text: str, kind: str) -> float:
    match = re.search(rf'^terrarium_redis_misconfig_total{{kind="{kind}"}} (\S+)$', text, re.M)
    assert match, text[-2000:]
    return float(match.group(1))


async def test_a_refused_accept_is_reported_as_misconfiguration(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = TestServer(create_app(gateway_settings(narrow_user_url(redis_server))))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.make_url("/metrics")) as resp:
                before = misconfig_count(await resp.text(), "NOPERM")
            with caplog.at_level(logging.ERROR, logger="bus"):
                async with http.post(
                    server.make_url("/api/chat/c1/messages"),
                    json={"content": "hello", "accessCode": ACCESS_CODE},
                ) as resp:
                    assert resp.status == 503
                    body = await resp.json()
                    assert resp.headers["Retry-After"] == "30"
            assert "misconfigured" in body["error"]
            assert "NOPERM" in body["error"]
            assert "unavailable" not in body["error"].lower()
            async with http.get(server.make_url("/metrics")) as resp:
                assert misconfig_count(await resp.text(), "NOPERM") == before + 1
            async with http.get(server.make_url("/readyz")) as resp:
                assert resp.status == 200  # PING is allowed: the process itself is fine
    finally:
        await server.close()
    logged = [r.getMessage() for r in caplog.records if "bus.misconfigured" in r.getMessage()]
    assert logged
    assert any("evalsha" in line.lower() for line in logged)  # Redis's own words
    assert all(PASSWORD not in line for line in caplog.messages)
    assert PASSWORD not in str(body)


async def test_readiness_names_a_refused_ping_as_misconfiguration(
    redis_server: RedisServer,
) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "mute", "on", f">{PASSWORD}", "~*", "&*", "+@all", "-ping"
    )
    admin.close()
    url = redis_server.url.replace("redis://", f"redis://mute:{PASSWORD}@")
    server = TestServer(create_app(gateway_settings(url)))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http, http.get(server.make_url("/readyz")) as resp:
            assert resp.status == 503
            assert (await resp.json())["reason"] == "redis misconfigured (NOPERM)"
    finally:
        await server.close()
