"""Access codes with a lifecycle (issue 11, "secrets out of URLs and logs"): several at
once, each with an optional expiry, managed with ``terrarium-ops codes``; Redis keeps only
a digest; a revoked code (and every session made with it) stops working within seconds.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bus import BusKeys
from bus.access_codes import AccessCodeStore
from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.integration.test_ops_console import run_ops
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

REFRESH_SECONDS = 0.2


@pytest.fixture
async def gateway(redis_server: RedisServer) -> AsyncIterator[TestServer]:
    settings = gateway_settings(
        redis_server.url,
        ACCESS_CODES_REFRESH_SECONDS=REFRESH_SECONDS,
        # The polls below fail until a refresh: not the guessing the budget is for.
        RATE_LIMIT_FAILED_CODES_PER_IP=10_000,
        RATE_LIMIT_READS_PER_IP=10_000,
    )
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def status_with_code(server: TestServer, code: str) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.get(server.make_url("/api/chat/codes/messages"), params={"accessCode": code}) as r,
    ):
        return r.status


async def status_with_token(server: TestServer, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(server.make_url("/api/chat/codes/messages"), headers=headers) as r,
    ):
        return r.status


async def session(server: TestServer, code: str) -> str:
    async with (
        aiohttp.ClientSession() as s,
        s.post(server.make_url("/api/session"), json={"accessCode": code}) as r,
    ):
        assert r.status == 200
        return str((await r.json())["token"])


async def becomes(probe: object, status: int, what: str) -> None:
    async def check() -> bool | None:
        return (await probe()) == status or None  # type: ignore[operator]

    await wait_until(check, timeout=10, message=what, interval=REFRESH_SECONDS / 2)


async def everything_in(redis: Redis) -> str:
    """Every key and value in the test's Redis, as one string to search."""
    seen = []
    async for key in redis.scan_iter(count=1000):
        seen.append(str(key))
        kind = await redis.type(key)
        if kind in ("hash", b"hash"):
            seen.append(str(await redis.hgetall(key)))  # type: ignore[misc]
        elif kind in ("string", b"string"):
            seen.append(str(await redis.get(key)))
    return "\n".join(seen)


async def test_an_added_code_works_and_a_revoked_one_stops_within_seconds(
    gateway: TestServer, redis_server: RedisServer, redis_client: Redis
) -> None:
    added = await run_ops(redis_server.url, "codes", "add", "--label", "pilot", "--expires", "7d")
    assert added.status == 0, added.err
    code = added.out.strip()
    assert len(code) == 24
    code_id = added.err.split("access code ", 1)[1].split()[0]
    assert "shown only now" in added.err

    await becomes(lambda: status_with_code(gateway, code), 200, "the new code to be accepted")
    token = await session(gateway, code)
    assert await status_with_token(gateway, token) == 200
    assert await status_with_code(gateway, ACCESS_CODE) == 200  # CHAT_PASSWORD still works

    assert code not in await everything_in(redis_client)  # only a digest is kept
    listed = await run_ops(redis_server.url, "codes", "list")
    assert listed.status == 0
    row = next(line for line in listed.out.splitlines() if line.startswith(code_id))
    assert row.split()[1] == "active"
    assert row.endswith("pilot")
    assert code not in listed.out + listed.err

    revoked = await run_ops(redis_server.url, "codes", "revoke", code_id)
    assert revoked.status == 0, revoked.err
    await becomes(lambda: status_with_code(gateway, code), 401, "the revoked code refused")
    assert await status_with_token(gateway, token) == 401  # its sessions end with it
    assert await status_with_code(gateway, ACCESS_CODE) == 200

    again = await run_ops(redis_server.url, "codes", "revoke", code_id)
    assert (again.status, again.err) == (1, f"terrarium-ops: no access code {code_id}\n")


async def test_several_codes_at_once_and_an_expired_one_is_refused(
    gateway: TestServer, redis_client: Redis
) -> None:
    store = AccessCodeStore(redis_client, BusKeys())
    now_ms = int(time.time() * 1000)
    await store.add("code-one-aaaaaaaaaaaaaaa", label="a", created_ms=now_ms, expires_ms=None)
    await store.add("code-two-bbbbbbbbbbbbbbb", label="b", created_ms=now_ms, expires_ms=None)
    await store.add("code-old-ccccccccccccccc", label="c", created_ms=now_ms, expires_ms=now_ms)
    soon = now_ms + 4000
    await store.add("code-soon-dddddddddddddd", label="d", created_ms=now_ms, expires_ms=soon)
    for code in ("code-one-aaaaaaaaaaaaaaa", "code-two-bbbbbbbbbbbbbbb"):
        await becomes(lambda c=code: status_with_code(gateway, c), 200, f"{code} accepted")
    assert await status_with_code(gateway, "code-old-ccccccccccccccc") == 401
    # A code reaching its expiry stops at once (no refresh needed).
    token = await session(gateway, "code-soon-dddddddddddddd")
    await becomes(lambda: status_with_token(gateway, token), 401, "the expired code's session")
    assert await status_with_code(gateway, "code-soon-dddddddddddddd") == 401


@pytest.mark.parametrize(
    ("args", "err"),
    [
        (("codes", "add", "--expires", "soon"), "--expires 'soon': use 90s, 30m, 12h, 7d or 2w"),
        (("codes", "revoke", "zz"), "not an access code id: 'zz'"),
    ],
)
async def test_codes_usage_mistakes_are_one_line(
    redis_server: RedisServer, args: tuple[str, ...], err: str
) -> None:
    ran = await run_ops(redis_server.url, *args)
    assert ran.status == 2
    assert ran.err.startswith(f"terrarium-ops: {err}")
    assert ran.err.count("\n") == 1
