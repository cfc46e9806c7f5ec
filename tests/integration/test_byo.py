"""Bring your own model: a visitor's provider answers through the same chat log and frames.

A real redis-server, the gateway in-process, and a fake OpenAI-compatible provider on
loopback (tests/support/fake_provider.py) that is in the allow-list only here.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bus import BusKeys, open_gateway_bus
from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.fake_provider import FakeProvider, run_fake_provider
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

KEY = "sk-test-visitor-key-0123456789abcdef"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with run_fake_provider(KEY) as provider:
        yield provider


def byo_settings(redis_url: str, fake: FakeProvider, **overrides: Any) -> Any:
    return gateway_settings(
        redis_url,
        byo_custom_providers=[
            {"id": "fake", "name": "Fake AI", "baseUrl": fake.base_url, "modelsEndpoint": True}
        ],
        **overrides,
    )


@pytest.fixture
async def server(redis_server: RedisServer, fake: FakeProvider) -> AsyncIterator[TestServer]:
    srv = TestServer(create_app(byo_settings(redis_server.url, fake)))
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def send(
    s: aiohttp.ClientSession,
    server: TestServer,
    chat: str,
    content: str,
    *,
    model: str = "echo",
    key: str = KEY,
    provider: str = "fake",
) -> aiohttp.ClientResponse:
    body = {
        "accessCode": ACCESS_CODE,
        "content": content,
        "provider": provider,
        "model": model,
        "apiKey": key,
    }
    return await s.post(url(server, f"/api/chat/{chat}/byo"), json=body)


async def history(s: aiohttp.ClientSession, server: TestServer, chat: str) -> list[Any]:
    r = await s.get(url(server, f"/api/chat/{chat}/messages"), params={"accessCode": ACCESS_CODE})
    assert r.status == 200
    return list(await r.json())


async def answered(
    s: aiohttp.ClientSession, server: TestServer, chat: str, count: int = 1
) -> list[Any]:
    """The history once ``count`` answers are stored."""

    async def probe() -> list[Any] | None:
        messages = await history(s, server, chat)
        return messages if sum(m["sender"] == "Terra" for m in messages) >= count else None

    return await wait_until(probe, 10, f"{count} answer(s) in {chat}")


async def streamed(redis: Redis, chat: str, text: str) -> None:
    """Wait until the chat's log holds exactly ``text`` in chunks: the gateway has read it."""

    async def probe() -> bool:
        entries = await redis.xrange(BusKeys().chat_events(chat))
        chunks = [json.loads(fields["d"]) for _, fields in entries]
        return "".join(c["content"] for c in chunks if c["type"] == "assistantChunk") == text

    await wait_until(probe, 10, f"{text!r} streamed into {chat}'s log")


async def test_providers_are_listed_without_urls(server: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.get(url(server, "/api/byo/providers"), params={"accessCode": ACCESS_CODE})
        assert r.status == 200
        body = await r.json()
        assert body["providers"] == [
            {"id": "fake", "name": "Fake AI", "models": [], "modelsEndpoint": True}
        ]
        assert "127.0.0.1" not in json.dumps(body)
        r = await s.get(url(server, "/api/byo/providers"), params={"accessCode": "wrong"})
        assert r.status == 401
        r = await s.post(
            url(server, "/api/byo/models"),
            json={"accessCode": ACCESS_CODE, "provider": "fake", "apiKey": KEY},
        )
        assert r.status == 200
        assert "echo" in (await r.json())["models"]
        r = await s.post(
            url(server, "/api/byo/models"),
            json={"accessCode": ACCESS_CODE, "provider": "fake", "apiKey": "sk-wrong"},
        )
        assert r.status == 502
        assert "did not accept your API key" in (await r.json())["error"]


async def test_a_conversation_streams_through_the_chat_log(
    server: TestServer, fake: FakeProvider
) -> None:
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(
            url(server, "/api/chat"), params={"chatId": "byo-1", "accessCode": ACCESS_CODE}
        )
        r = await send(s, server, "byo-1", "hello there")
        assert r.status == 200
        visitor = await r.json()
        assert visitor["sender"] == "Visitor"
        assert (visitor["provider"], visitor["model"]) == ("Fake AI", "echo")
        frames: list[dict[str, Any]] = []
        while not any(f.get("sender") == "Terra" for f in frames):
            frames.append(json.loads((await ws.receive(timeout=10)).data))
        answer = frames[-1]
        assert answer["content"] == "You said: hello there"
        assert (answer["provider"], answer["model"], answer["replyTo"]) == (
            "Fake AI",
            "echo",
            visitor["id"],
        )
        assert "status" not in answer
        chunks = [f["content"] for f in frames if f.get("type") == "assistantChunk"]
        assert "".join(chunks) == answer["content"]
        states = [f["state"] for f in frames if f.get("type") == "workerState"]
        assert states[0] == "processing"
        await ws.close()

        # The second message carries the conversation so far to the provider.
        assert (await send(s, server, "byo-1", "and again")).status == 200
        messages = await answered(s, server, "byo-1", 2)
        assert [m["content"] for m in messages] == [
            "hello there",
            "You said: hello there",
            "and again",
            "You said: and again",
        ]
        assert fake.requests[-1]["messages"] == [
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": "You said: hello there"},
            {"role": "user", "content": "and again"},
        ]
        assert all(req["authorized"] for req in fake.requests)
        # The transcript names the provider's answers like Terra's and keeps them.
        r = await s.get(
            url(server, "/api/chat/byo-1/transcript"),
            params={"accessCode": ACCESS_CODE, "format": "json"},
        )
        assert [m["content"] for m in (await r.json())["messages"]][-1] == "You said: and again"
        r = await s.get(
            url(server, "/api/chat/byo-1/transcript"), params={"accessCode": ACCESS_CODE}
        )
        assert "**Fake AI (echo)** — " in await r.text()


@pytest.mark.parametrize(
    ("model", "key", "sentence"),
    [
        ("echo", "sk-wrong-key-1234567890", "did not accept your API key (HTTP 401)"),
        ("fail-429", KEY, "rate limit or quota is used up (HTTP 429)"),
        ("no-such-model", KEY, "does not know the model 'no-such-model' (HTTP 404)"),
        ("fail-500", KEY, "had a problem answering (HTTP 500)"),
        ("fail-402", KEY, "says your account has no credit left (HTTP 402)"),
        ("cut", KEY, "ended the answer before it was complete"),
        ("stream-error", KEY, "reported an error while answering"),
    ],
)
async def test_provider_errors_are_sentences_without_the_key(
    server: TestServer, model: str, key: str, sentence: str
) -> None:
    async with aiohttp.ClientSession() as s:
        chat = f"err-{model}"
        assert (await send(s, server, chat, "hi", model=model, key=key)).status == 200
        answer = (await answered(s, server, chat))[-1]
        assert answer["status"] == "error"
        assert sentence in answer["content"]
        assert answer["content"].split("\n\n")[-1].startswith("Fake AI ")  # after any text
        assert key not in json.dumps(answer)
        r = await s.get(
            url(server, f"/api/chat/{chat}/worker-state"), params={"accessCode": ACCESS_CODE}
        )
        assert (await r.json())["state"] == "error"


async def test_a_chat_is_terra_s_or_byo_never_both(server: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        terra = {"accessCode": ACCESS_CODE, "content": "hi Terra"}
        assert (await s.post(url(server, "/api/chat/t-1/messages"), json=terra)).status == 200
        r = await send(s, server, "t-1", "hi model")
        assert r.status == 409
        assert "This chat is with Terra" in (await r.json())["error"]

        assert (await send(s, server, "b-1", "hi model")).status == 200
        r = await s.post(url(server, "/api/chat/b-1/messages"), json=terra)
        assert r.status == 409
        assert "uses your own model" in (await r.json())["error"]
        await answered(s, server, "b-1")


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"provider": "openai"}, 400, "Unknown provider"),
        ({"provider": None}, 400, "Unknown provider"),
        ({"model": "bad model"}, 400, "Invalid model name"),
        ({"apiKey": ""}, 400, "API key is required"),
        ({"apiKey": "has space"}, 400, "apiKey must be printable ASCII"),
        ({"content": " "}, 400, "Message content required"),
        ({"content": "x" * 4001}, 413, "Message too long"),
        ({"accessCode": "nope"}, 401, "Invalid access code"),
    ],
)
async def test_bad_requests_are_clear_and_never_echo_the_key(
    server: TestServer, change: dict[str, Any], status: int, error: str
) -> None:
    body = {
        "accessCode": ACCESS_CODE,
        "content": "hi",
        "provider": "fake",
        "model": "echo",
        "apiKey": KEY,
        **change,
    }
    async with aiohttp.ClientSession() as s:
        r = await s.post(url(server, "/api/chat/bad/byo"), json=body)
        assert r.status == status
        text = await r.text()
        assert error in json.loads(text)["error"]
        assert KEY not in text
        assert "has space" not in text


async def test_one_answer_at_a_time_and_stop(
    server: TestServer, fake: FakeProvider, redis_client: Redis
) -> None:
    async with aiohttp.ClientSession() as s:
        assert (await send(s, server, "stop-1", "wait", model="stall")).status == 200
        await asyncio.wait_for(fake.stalled.wait(), 10)
        await streamed(redis_client, "stop-1", "You said:")
        r = await send(s, server, "stop-1", "another")
        assert r.status == 409
        assert "still being written" in (await r.json())["error"]
        # The provider is silent: the stop is seen by the poll, not at a chunk write.
        r = await s.post(url(server, "/api/chat/stop-1/cancel"), json={"accessCode": ACCESS_CODE})
        assert r.status == 200
        answer = (await answered(s, server, "stop-1"))[-1]
        assert answer["status"] == "stopped"
        assert answer["content"] == "You said:"
        # The chat takes a new message once the answer ended.
        assert (await send(s, server, "stop-1", "again")).status == 200
        assert (await answered(s, server, "stop-1", 2))[-1]["content"] == "You said: again"


async def test_words_in_hand_reach_the_visitor_while_the_provider_is_silent(
    server: TestServer, fake: FakeProvider, redis_client: Redis
) -> None:
    """Chunks were written only when the next word came, so text the gateway held was kept
    from the visitor for as long as the provider paused (a model thinking, a stall)."""

    async with aiohttp.ClientSession() as s:
        assert (await send(s, server, "pause-1", "wait", model="stall")).status == 200
        await asyncio.wait_for(fake.stalled.wait(), 10)
        await streamed(redis_client, "pause-1", "You said:")
        fake.release.set()
        answer = (await answered(s, server, "pause-1"))[-1]
    assert answer["content"] == "You said: wait"


async def test_answers_are_capped_and_truncated(server: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        assert (await send(s, server, "len-1", "go on", model="length")).status == 200
        answer = (await answered(s, server, "len-1"))[-1]
        assert answer["status"] == "truncated"
        assert answer["content"] == "You said: go on"


async def test_concurrency_per_client_is_capped(
    redis_server: RedisServer, fake: FakeProvider
) -> None:
    srv = TestServer(create_app(byo_settings(redis_server.url, fake, byo_streams_per_client=1)))
    await srv.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            assert (await send(s, srv, "cap-1", "one", model="stall")).status == 200
            await asyncio.wait_for(fake.stalled.wait(), 10)
            r = await send(s, srv, "cap-2", "two")
            assert r.status == 429
            assert r.headers["Retry-After"]
            assert "being written" in (await r.json())["error"]
            fake.release.set()
            await answered(s, srv, "cap-1")

            async def slot_free() -> bool:
                return (await send(s, srv, "cap-2", "two")).status == 200

            await wait_until(slot_free, 10, "the slot is free once the answer is stored")
    finally:
        await srv.close()


async def test_resume_mid_answer_and_a_late_v1_client_see_the_whole_answer(
    server: TestServer, fake: FakeProvider
) -> None:
    fake.slow_delay = 0.05
    words = " ".join(f"word{i}" for i in range(20))
    async with aiohttp.ClientSession() as s:
        params = {"chatId": "resume-1", "accessCode": ACCESS_CODE, "v": "2"}
        ws = await s.ws_connect(url(server, "/api/chat"), params=params)
        assert (await send(s, server, "resume-1", words, model="slow")).status == 200
        seen: list[dict[str, Any]] = []
        while not any(f.get("type") == "assistantChunk" for f in seen):
            seen.append(json.loads((await ws.receive(timeout=10)).data))
        await ws.close()
        # A v1 client (no lastEventId) joining now starts at the answer's first chunk.
        late = await s.ws_connect(
            url(server, "/api/chat"), params={"chatId": "resume-1", "accessCode": ACCESS_CODE}
        )
        resumed = await s.ws_connect(
            url(server, "/api/chat"), params={**params, "lastEventId": seen[-1]["eventId"]}
        )

        async def until_answer(sock: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1].get("sender") != "Terra":
                frames.append(json.loads((await sock.receive(timeout=10)).data))
            return frames

        rest = await until_answer(resumed)
        late_frames = await until_answer(late)
    answer = rest[-1]
    assert answer["content"] == f"You said: {words}"
    both = [*seen, *rest]
    ids = [f["eventId"] for f in both]
    assert ids == sorted(set(ids), key=ids.index)  # no duplicate across the reconnect
    chunks = "".join(f["content"] for f in both if f.get("type") == "assistantChunk")
    assert chunks == answer["content"]
    late_chunks = "".join(f["content"] for f in late_frames if f.get("type") == "assistantChunk")
    assert late_chunks == answer["content"]


async def test_size_and_idle_limits_end_the_answer(
    redis_server: RedisServer, fake: FakeProvider
) -> None:
    settings = byo_settings(
        redis_server.url, fake, byo_max_answer_chars=100, byo_idle_timeout_seconds=0.5
    )
    srv = TestServer(create_app(settings))
    await srv.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            assert (await send(s, srv, "big-1", "talk", model="long")).status == 200
            answer = (await answered(s, srv, "big-1"))[-1]
            assert answer["status"] == "truncated"
            assert len(answer["content"]) == 100
            assert (await send(s, srv, "idle-1", "talk", model="stall")).status == 200
            answer = (await answered(s, srv, "idle-1"))[-1]
            assert answer["status"] == "error"
            assert answer["content"].startswith("You said:")
            assert "Fake AI sent nothing for 0.5 seconds" in answer["content"]
    finally:
        await srv.close()


async def test_byo_messages_spend_the_same_budgets_as_terra_s(
    redis_server: RedisServer, fake: FakeProvider
) -> None:
    srv = TestServer(create_app(byo_settings(redis_server.url, fake, rate_limit_max_per_ip=2)))
    await srv.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            assert (await send(s, srv, "rl-1", "one")).status == 200
            await answered(s, srv, "rl-1")
            terra = {"accessCode": ACCESS_CODE, "content": "hi"}
            assert (await s.post(url(srv, "/api/chat/rl-2/messages"), json=terra)).status == 200
            r = await send(s, srv, "rl-1", "three")
            assert r.status == 429
            assert "sending messages too quickly" in (await r.json())["error"]
    finally:
        await srv.close()


async def test_an_answer_its_gateway_never_finished_is_ended_by_the_next_message(
    server: TestServer, redis_server: RedisServer
) -> None:
    """A gateway killed mid-answer (SIGKILL) leaves the chat's lease to lapse; the next
    message stores the orphan's answer as interrupted, then is answered itself."""
    bus = open_gateway_bus(gateway_settings(redis_server.url))
    try:
        orphan = await bus.accept_byo_message(
            "orphan-1", "lost question", provider="Fake AI", model="echo", lease_ms=1
        )
    finally:
        await bus.aclose()
    async with aiohttp.ClientSession() as s:
        assert (await send(s, server, "orphan-1", "new question")).status == 200
        messages = await answered(s, server, "orphan-1", 2)
    lost = next(m for m in messages if m.get("replyTo") == orphan.message["id"])
    assert lost["status"] == "error"
    assert "interrupted" in lost["content"]
    assert messages[-1]["content"] == "You said: new question"


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"BYO_PROVIDERS": "openai,nope"}, "BYO_PROVIDERS (unknown preset nope; known: deepseek"),
        ({"BYO_CUSTOM_PROVIDERS": "[{"}, "BYO_CUSTOM_PROVIDERS (must be a JSON list of providers)"),
        (
            {"BYO_CUSTOM_PROVIDERS": '[{"id": "x", "name": "X", "baseUrl": "file:///etc"}]'},
            "BYO_CUSTOM_PROVIDERS (baseUrl must be an http(s) URL)",
        ),
        (
            {
                "BYO_PROVIDERS": "groq",
                "BYO_CUSTOM_PROVIDERS": '[{"id": "groq", "name": "G", "baseUrl": "http://h"}]',
            },
            "BYO_CUSTOM_PROVIDERS (provider ids must be unique (presets included))",
        ),
    ],
)
def test_a_bad_provider_setting_stops_the_gateway_with_one_line(
    env: dict[str, str], line: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BYO_", "CHAT_", "REDIS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        env={**base, "CHAT_PASSWORD": "x", "REDIS_URL": "redis://127.0.0.1:1/0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert line in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


async def test_a_refused_message_gives_its_slot_back(
    redis_server: RedisServer, fake: FakeProvider
) -> None:
    srv = TestServer(create_app(byo_settings(redis_server.url, fake, byo_streams_per_client=1)))
    await srv.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            terra = {"accessCode": ACCESS_CODE, "content": "hi Terra"}
            assert (await s.post(url(srv, "/api/chat/slot-t/messages"), json=terra)).status == 200
            for _ in range(3):  # each 409 gives back the one slot it took
                assert (await send(s, srv, "slot-t", "mine?")).status == 409
            assert (await send(s, srv, "slot-b", "mine")).status == 200
            await answered(s, srv, "slot-b")
    finally:
        await srv.close()


async def test_sse_carries_a_byo_answer(server: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        sse = await s.get(
            url(server, "/api/chat/sse-1/events"), params={"accessCode": ACCESS_CODE, "v": "2"}
        )
        assert sse.status == 200
        assert (await send(s, server, "sse-1", "over SSE")).status == 200
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while not frames or frames[-1].get("sender") != "Terra":
                line = (await sse.content.readline()).decode().strip()
                if line.startswith("data:"):
                    frames.append(json.loads(line[5:]))
        sse.close()
    assert frames[-1]["content"] == "You said: over SSE"
    assert frames[-1]["provider"] == "Fake AI"
    chunks = "".join(f["content"] for f in frames if f.get("type") == "assistantChunk")
    assert chunks == frames[-1]["content"]


async def test_a_byo_chat_has_the_same_byte_cap_as_terra_s(
    redis_server: RedisServer, fake: FakeProvider
) -> None:
    """Each message counts itself and the bytes reserved for its answer, as Terra's do."""
    settings = byo_settings(redis_server.url, fake, chat_max_bytes=40_000)
    srv = TestServer(create_app(settings))
    await srv.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            assert (await send(s, srv, "full-1", "one")).status == 200
            await answered(s, srv, "full-1")
            assert (await send(s, srv, "full-1", "two")).status == 200
            await answered(s, srv, "full-1", 2)
            r = await send(s, srv, "full-1", "three")
            assert r.status == 409
            assert "This conversation is full" in (await r.json())["error"]
    finally:
        await srv.close()


async def test_racing_first_messages_never_store_both_modes(
    redis_server: RedisServer, fake: FakeProvider
) -> None:
    """A Terra message and a BYO one posted together on an empty chat: the first stored fixes
    the chat's mode in the same script, the other gets 409 (the mode check is no longer a
    separate read before Terra's accept)."""
    settings = byo_settings(
        redis_server.url,
        fake,
        byo_streams_per_client=200,
        rate_limit_max_per_ip=1000,
        max_queued_per_client=200,  # no worker answers the Terra messages
    )
    srv = TestServer(create_app(settings))
    await srv.start_server()
    terra = {"accessCode": ACCESS_CODE, "content": "hi Terra"}
    try:
        async with aiohttp.ClientSession() as s:
            for n in range(40):
                chat = f"race-{n}"
                posts = [
                    s.post(url(srv, f"/api/chat/{chat}/messages"), json=terra),
                    send(s, srv, chat, "hi model"),
                ]
                if n % 2:  # either request may reach Redis first
                    b, t = await asyncio.gather(posts[1], posts[0])
                else:
                    t, b = await asyncio.gather(*posts)
                statuses = sorted([t.status, b.status])
                assert statuses == [200, 409], (n, await t.text(), await b.text())
                visitors = [m for m in await history(s, srv, chat) if m["sender"] == "Visitor"]
                assert len(visitors) == 1, (n, visitors)
                refused = t if t.status == 409 else b
                assert "Start a new chat" in (await refused.json())["error"]
    finally:
        await srv.close()


async def test_a_terra_message_on_a_byo_chat_is_refused_by_the_bus(
    redis_server: RedisServer,
) -> None:
    """The Terra side of the mode check is inside its accept script: nothing is stored."""
    from bus import ChatModeConflict

    bus = open_gateway_bus(gateway_settings(redis_server.url))
    try:
        await bus.accept_byo_message("bus-b", "hi", provider="Fake AI", model="m", lease_ms=5000)
        with pytest.raises(ChatModeConflict):
            await bus.accept_message("bus-b", "hi Terra", client="203.0.113.9")
        assert len(await bus.history("bus-b", 10)) == 1
        assert await bus.chat_mode("bus-b") == "byo"
        await bus.accept_message("bus-t", "hi Terra", client="203.0.113.9")
        assert await bus.chat_mode("bus-t") == "terra"
    finally:
        await bus.aclose()


async def test_byo_messages_spend_the_client_s_daily_bytes(
    redis_server: RedisServer, fake: FakeProvider
) -> None:
    """CLIENT_BYTES_PER_DAY counts BYO messages (with their answer's reservation) like
    Terra's, in the same counter: BYO is no way round the quota."""
    settings = byo_settings(
        redis_server.url, fake, client_bytes_per_day=40_000, reply_bytes_reserved=16_384
    )
    srv = TestServer(create_app(settings))
    await srv.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            assert (await send(s, srv, "quota-1", "one")).status == 200
            await answered(s, srv, "quota-1")
            assert (await send(s, srv, "quota-2", "two")).status == 200
            await answered(s, srv, "quota-2")
            r = await send(s, srv, "quota-3", "three")
            assert r.status == 429
            assert "a lot of messages today" in (await r.json())["error"]
            assert int(r.headers["Retry-After"]) > 3600
            assert await history(s, srv, "quota-3") == []
            terra = {"accessCode": ACCESS_CODE, "content": "hi Terra"}
            r = await s.post(url(srv, "/api/chat/quota-4/messages"), json=terra)
            assert r.status == 429
    finally:
        await srv.close()
