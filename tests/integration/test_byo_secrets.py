"""Bring your own model, against a real gateway process: the key is never kept anywhere,
and a gateway shutting down mid-answer ends it as interrupted.

The key scan runs a whole BYO conversation (providers, models, answers over WebSocket and
SSE, a stop, a refused key, an unknown model, a quota error) and then reads every Redis key
and value, every line the gateway logged, and /metrics: neither the visitor's key nor the
wrong key they tried appear, in any spelling.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from redis.asyncio import Redis

from bus import BusKeys
from tests.support.fake_provider import FakeProvider, run_fake_provider
from tests.support.system import ACCESS_CODE, Process, System
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

KEY = "sk-proj-Visitor+Key/0123456789-secret"
WRONG_KEY = "sk-wrong-Typed+Key/9876543210"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with run_fake_provider(KEY, slow_delay=0.05) as provider:
        yield provider


def byo_gateway(system: System, fake: FakeProvider, **env: str) -> Process:
    providers = [
        {"id": "fake", "name": "Fake AI", "baseUrl": fake.base_url, "modelsEndpoint": True}
    ]
    return system.gateway(BYO_CUSTOM_PROVIDERS=json.dumps(providers), LOG_LEVEL="DEBUG", **env)


def spellings(secret: str) -> set[str]:
    return {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        repr(secret.encode())[2:-1],
        base64.b64encode(secret.encode()).decode(),
        secret[:12],  # a provider's "sk-proj-Visi...cret" style partial echo
        secret[-12:],
    }


async def dump_redis(redis: Redis) -> str:
    """Every key name and every value in the database, as text."""
    parts: list[str] = []
    async for key in redis.scan_iter(count=500):
        parts.append(str(key))
        kind = await redis.type(key)
        if kind == "string":
            parts.append(str(await redis.get(key)))
        elif kind == "hash":
            parts.append(json.dumps(await redis.hgetall(key)))  # type: ignore[misc]
        elif kind == "stream":
            parts.append(json.dumps(await redis.xrange(key)))
        elif kind == "list":
            parts.append(json.dumps(await redis.lrange(key, 0, -1)))  # type: ignore[misc]
        elif kind == "set":
            parts.append(json.dumps(sorted(await redis.smembers(key))))  # type: ignore[misc]
        elif kind == "zset":
            parts.append(json.dumps(await redis.zrange(key, 0, -1, withscores=True)))
        else:
            parts.append(f"<{kind}>")
    return "\n".join(parts)


class Visitor:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.s = session
        self.base = f"http://127.0.0.1:{port}"

    async def send(self, chat: str, content: str, *, model: str = "echo", key: str = KEY) -> int:
        body = {
            "accessCode": ACCESS_CODE,
            "content": content,
            "provider": "fake",
            "model": model,
            "apiKey": key,
        }
        async with self.s.post(f"{self.base}/api/chat/{chat}/byo", json=body) as r:
            return r.status

    async def history(self, chat: str) -> list[dict[str, Any]]:
        async with self.s.get(
            f"{self.base}/api/chat/{chat}/messages", params={"accessCode": ACCESS_CODE}
        ) as r:
            return list(await r.json())

    async def answers(self, chat: str, count: int = 1) -> list[dict[str, Any]]:
        async def probe() -> list[dict[str, Any]] | None:
            found = [m for m in await self.history(chat) if m["sender"] == "Terra"]
            return found if len(found) >= count else None

        return await wait_until(probe, 15, f"{count} answer(s) in {chat}")


async def test_a_whole_byo_conversation_leaves_the_key_nowhere(
    system: System, fake: FakeProvider, redis_client: Redis
) -> None:
    gw = byo_gateway(system, fake)
    assert gw.port is not None
    async with aiohttp.ClientSession() as s:
        v = Visitor(s, gw.port)
        async with s.get(f"{v.base}/api/byo/providers", params={"accessCode": ACCESS_CODE}) as r:
            assert r.status == 200
        for key in (KEY, WRONG_KEY):
            body = {"accessCode": ACCESS_CODE, "provider": "fake", "apiKey": key}
            async with s.post(f"{v.base}/api/byo/models", json=body) as r:
                assert r.status == (200 if key == KEY else 502)
        ws = await s.ws_connect(
            f"{v.base}/api/chat", params={"chatId": "scan", "accessCode": ACCESS_CODE, "v": "2"}
        )
        sse = await s.get(
            f"{v.base}/api/chat/scan/events", params={"accessCode": ACCESS_CODE, "v": "2"}
        )
        assert await v.send("scan", "first question") == 200
        await v.answers("scan", 1)
        assert await v.send("scan", "tell me more", model="slow") == 200
        await wait_until(
            lambda: any(r["model"] == "slow" for r in fake.requests), 10, "the slow request"
        )
        async with s.post(f"{v.base}/api/chat/scan/cancel", json={"accessCode": ACCESS_CODE}) as r:
            assert r.status == 200
        await v.answers("scan", 2)
        # One at a time: BYO_STREAMS_PER_CLIENT (2) would refuse a third answer in progress.
        assert await v.send("scan", "with the wrong key", key=WRONG_KEY) == 200
        answers = await v.answers("scan", 3)
        assert await v.send("scan-2", "unknown model", model="nope") == 200
        answers += await v.answers("scan-2")
        assert await v.send("scan-3", "over quota", model="fail-429") == 200
        answers += await v.answers("scan-3")
        assert [a.get("status") for a in answers] == [None, "stopped", "error", "error", "error"]
        for chat in ("scan", "scan-2", "scan-3"):
            async with s.get(
                f"{v.base}/api/chat/{chat}/transcript", params={"accessCode": ACCESS_CODE}
            ) as r:
                transcript = await r.text()
            for secret in (KEY, WRONG_KEY):
                assert secret not in transcript
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1].get("status") != "error":
            frames.append(json.loads((await ws.receive(timeout=10)).data))
        await ws.close()
        sse.close()
        async with s.get(f"{v.base}/metrics") as r:
            metrics = await r.text()
    assert sum(req["authorized"] for req in fake.requests) >= 4  # the key did reach the provider
    for outcome in ("complete", "stopped", "bad_key", "model_not_found", "quota"):
        assert f'terrarium_byo_answers_total{{outcome="{outcome}"}} 1.0' in metrics, outcome
    assert "terrarium_byo_streams 0.0" in metrics
    gw.stop()
    stored = await dump_redis(redis_client)
    assert "first question" in stored  # the scan reads the chats
    output = gw.output()
    assert "gateway.byo_answer_finished" in output  # the log is the gateway's, at DEBUG
    places = {
        "redis": stored,
        "log": output,
        "metrics": metrics,
        "frames": json.dumps(frames),
    }
    for secret in (KEY, WRONG_KEY):
        for form in spellings(secret):
            for place, text in places.items():
                assert form not in text, f"{form!r} found in {place}"


async def test_a_gateway_shutting_down_mid_answer_ends_it_as_interrupted(
    system: System, fake: FakeProvider, redis_client: Redis
) -> None:
    gw = byo_gateway(system, fake)
    other = system.gateway("gateway-2")
    assert gw.port is not None
    assert other.port is not None

    async def streamed_both_words() -> bool:
        # The provider has sent "You said:"; the gateway has read it once it is in the chat's
        # log (on a busy box the provider's stall came before the gateway read the second
        # word, and the interrupted answer held "You" only).
        entries = await redis_client.xrange(BusKeys().chat_events("down"))
        return " said:" in "".join(str(fields) for _, fields in entries)

    async with aiohttp.ClientSession() as s:
        v = Visitor(s, gw.port)
        assert await v.send("down", "please wait", model="stall") == 200
        await asyncio.wait_for(fake.stalled.wait(), 10)
        await wait_until(streamed_both_words, 10, "the gateway streamed the first two words")
        gw.signal(signal.SIGTERM)
        assert gw.wait(15) == 0
        # Another gateway serves the chat: the answer ended, saying what to do.
        answer = (await Visitor(s, other.port).answers("down"))[-1]
    assert answer["status"] == "error"
    assert answer["content"].startswith("You said:")
    assert "interrupted" in answer["content"]
    assert "send your message again" in answer["content"]
