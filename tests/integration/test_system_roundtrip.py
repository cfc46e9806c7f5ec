"""End to end with real processes: gateway(s), worker(s), demo agent and redis-server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.support.system import ACCESS_CODE, System

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _reply_done(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "workerState" and frame["state"] in ("responded", "error")


async def _post(
    session: aiohttp.ClientSession, base: str, chat: str, content: str, **extra: Any
) -> dict[str, Any]:
    r = await session.post(
        f"{base}/api/chat/{chat}/messages",
        json={"content": content, "accessCode": ACCESS_CODE, **extra},
    )
    assert r.status == 200, await r.text()
    return dict(await r.json())


def _reply_to(message_id: str) -> Any:
    """A `_ws_until` condition: Terra's stored reply to `message_id` arrived."""

    def done(frame: dict[str, Any]) -> bool:
        return frame.get("sender") == "Terra" and frame.get("replyTo") == message_id

    return done


async def _ws_until(
    ws: aiohttp.ClientWebSocketResponse, done: Any, limit: float = 30
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(limit):
        while True:
            frames.append(await ws.receive_json())
            if done(frames[-1]):
                return frames


def _check_reply(frames: list[dict[str, Any]]) -> str:
    """Chunks rebuild the final message; ids strictly increase; no duplicates."""
    ids = [tuple(map(int, f["eventId"].split("-"))) for f in frames if "eventId" in f]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))
    final = [f for f in frames if f.get("sender") == "Terra"]
    assert len(final) == 1
    text = "".join(f["content"] for f in frames if f.get("type") == "assistantChunk")
    assert text == final[0]["content"]
    states = [f["state"] for f in frames if f.get("type") == "workerState"]
    assert states[0] == "queued"
    assert "processing" in states
    assert states[-1] == "responded"
    return str(final[0]["content"])


async def test_round_trip_streams_over_ws_and_sse(system: System) -> None:
    system.start_agent(token_delay_ms=2)
    gw = system.gateway()
    system.worker()
    base = f"http://127.0.0.1:{gw.port}"
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"{base}/api/chat?chatId=rt&accessCode={ACCESS_CODE}")
        sse = await s.get(f"{base}/api/chat/rt/events", params={"accessCode": ACCESS_CODE})
        msg = await _post(s, base, "rt", "Tell me about Terra [[demo:tokens=60]]")
        frames = await _ws_until(ws, _reply_done)
        assert frames[0] == msg
        answer = _check_reply(frames)
        assert len(answer.split()) >= 30
        chunks = [f for f in frames if f.get("type") == "assistantChunk"]
        assert chunks[-1]["done"] is True
        sse_frames: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            async for line in sse.content:
                if line.startswith(b"data:"):
                    sse_frames.append(json.loads(line[5:]))
                    if _reply_done(sse_frames[-1]):
                        break
        assert sse_frames == frames
        history = await (
            await s.get(f"{base}/api/chat/rt/messages", params={"accessCode": ACCESS_CODE})
        ).json()
        assert [m["sender"] for m in history] == ["Visitor", "Terra"]
        health = await (
            await s.get(f"{base}/api/health", params={"accessCode": ACCESS_CODE})
        ).json()
        assert health["workerReady"] is True
        assert [n["id"] for n in health["chain"]] == ["frontend", "relay", "worker", "agent", "llm"]
        assert health["chain"][2]["status"] == "online"
        await ws.close()
        sse.close()


async def test_two_gateways_share_one_redis_and_resume_across_them(system: System) -> None:
    system.start_agent(token_delay_ms=15)
    a, b = system.gateway("gateway-a"), system.gateway("gateway-b")
    system.worker()
    base_a, base_b = f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"
    async with aiohttp.ClientSession() as s:
        on_b = await s.ws_connect(f"{base_b}/api/chat?chatId=gw2&accessCode={ACCESS_CODE}&v=2")
        await _post(s, base_a, "gw2", "long answer please [[demo:tokens=120]]")
        first: list[dict[str, Any]] = await _ws_until(
            on_b, lambda f: f.get("type") == "assistantChunk" and len(f["content"]) > 0
        )
        for _ in range(5):
            first.append(await on_b.receive_json(timeout=10))
        await on_b.close()
        last_id = first[-1]["eventId"]
        # resume on the other gateway, mid-answer
        on_a = await s.ws_connect(
            f"{base_a}/api/chat?chatId=gw2&accessCode={ACCESS_CODE}&v=2&lastEventId={last_id}"
        )
        rest = await _ws_until(on_a, _reply_done)
        await on_a.close()
        _check_reply(first + rest)


async def test_per_chat_order_under_concurrency(system: System) -> None:
    system.start_agent(token_delay_ms=1)
    gw = system.gateway()
    system.worker("worker-1", MAX_CONCURRENT_CHATS="4")
    system.worker("worker-2", MAX_CONCURRENT_CHATS="4")
    base = f"http://127.0.0.1:{gw.port}"
    chats = [f"order-{i}" for i in range(4)]
    async with aiohttp.ClientSession() as s:
        for n in range(4):
            await asyncio.gather(
                *(_post(s, base, chat, f"{chat} message {n} [[demo:echo]]") for chat in chats)
            )
        async with asyncio.timeout(60):
            while True:
                histories = [
                    await (
                        await s.get(
                            f"{base}/api/chat/{c}/messages", params={"accessCode": ACCESS_CODE}
                        )
                    ).json()
                    for c in chats
                ]
                if all(len(h) == 8 for h in histories):
                    break
                await asyncio.sleep(0.2)
        for chat, history in zip(chats, histories, strict=True):
            visitor = [m for m in history if m["sender"] == "Visitor"]
            terra = [m for m in history if m["sender"] == "Terra"]
            assert [m["replyTo"] for m in terra] == [m["id"] for m in visitor]
            assert [m["content"] for m in terra] == [f"{chat} message {n}" for n in range(4)]


async def test_idempotent_post_gets_one_reply(system: System) -> None:
    system.start_agent(token_delay_ms=1)
    gw = system.gateway()
    system.worker()
    base = f"http://127.0.0.1:{gw.port}"
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"{base}/api/chat?chatId=idem&accessCode={ACCESS_CODE}")
        first, second = await asyncio.gather(
            _post(s, base, "idem", "hello", clientMessageId="dbl-1"),
            _post(s, base, "idem", "hello", clientMessageId="dbl-1"),
        )
        assert first == second
        # A later message is the barrier: a second job for "hello" would be answered before it.
        later = await _post(s, base, "idem", "[[demo:echo]] and then")
        await _ws_until(ws, _reply_to(later["id"]))
        history = await (
            await s.get(f"{base}/api/chat/idem/messages", params={"accessCode": ACCESS_CODE})
        ).json()
        assert [m["id"] for m in history if m["sender"] == "Visitor"] == [first["id"], later["id"]]
        assert [m["replyTo"] for m in history if m["sender"] == "Terra"] == [
            first["id"],
            later["id"],
        ]
        await ws.close()


async def test_restarted_worker_does_not_re_answer(system: System) -> None:
    system.start_agent(token_delay_ms=1)
    gw = system.gateway()
    worker = system.worker()
    base = f"http://127.0.0.1:{gw.port}"
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"{base}/api/chat?chatId=rs&accessCode={ACCESS_CODE}")
        await _post(s, base, "rs", "first question")
        await _ws_until(ws, _reply_done)
        await _post(s, base, "rs", "second question")
        await _ws_until(ws, _reply_done)
        completions = await (await s.get(f"{system.agent_base}/_demo/requests")).json()
        answered = [r for r in completions["requests"] if r.get("max_tokens") != 4]
        worker.kill()
        system.worker("worker-again")
        # The new worker answering a new message is the barrier: re-answering an old one
        # (a job read again, a reply not seen) would reach the agent before it.
        third = await _post(s, base, "rs", "third question")
        await _ws_until(ws, _reply_to(third["id"]))
        completions = await (await s.get(f"{system.agent_base}/_demo/requests")).json()
        again = [r for r in completions["requests"] if r.get("max_tokens") != 4]
        assert len(answered) == 2
        assert len(again) == 3
        history = await (
            await s.get(f"{base}/api/chat/rs/messages", params={"accessCode": ACCESS_CODE})
        ).json()
        assert [m["sender"] for m in history] == ["Visitor", "Terra"] * 3
        await ws.close()
