"""The worker answering jobs: real redis-server, real demo agent over HTTP, in-process worker."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from bus import BusKeys, ChatLog, Presence, open_worker_bus, scripts
from bus.answering import FINISH_CLOSE
from bus.client import create_redis
from bus.schemas import WorkerHeartbeat
from demo.agent import DemoAgentConfig, run_demo_agent
from tests.support.agent import agent_requests
from tests.support.redis_server import RedisServer, free_port
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from worker import Worker

pytestmark = pytest.mark.integration


@pytest.fixture
async def chatlog(redis_server: RedisServer) -> AsyncIterator[ChatLog]:
    redis = create_redis(redis_server.url, client_name="test")
    try:
        yield ChatLog(redis, BusKeys())
    finally:
        await redis.aclose()


async def reply_to(chatlog: ChatLog, chat_id: str, message_id: str) -> dict[str, Any] | None:
    """Terra's stored reply to ``message_id``, as a frame, or None."""
    for frame in await chatlog.history(chat_id):
        if frame["sender"] == "Terra" and frame.get("replyTo") == message_id:
            return frame
    return None


async def wait_reply(
    chatlog: ChatLog, chat_id: str, message_id: str, within: float = 15.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return await reply_to(chatlog, chat_id, message_id)

    return await wait_until(probe, timeout=within, message=f"reply to {message_id}")


async def chunks_of(chatlog: ChatLog, chat_id: str, message_id: str) -> list[dict[str, Any]]:
    events = await chatlog.events_after(chat_id, "0-0")
    return [
        e.frame()
        for e in events
        if e.type == "assistantChunk" and e.fields.get("replyTo") == message_id
    ]


async def post(chatlog: ChatLog, chat_id: str, content: str) -> str:
    accepted = await chatlog.accept_visitor_message(chat_id, content)
    return str(accepted.message["id"])


async def test_reply_streams_chunks_that_add_up_to_the_message(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    settings = fast_settings(redis_server.url, agent_url)
    async with Worker(settings):
        message_id = await post(chatlog, "chat-a", "Hello there [[demo:tokens=30]]")
        reply = await wait_reply(chatlog, "chat-a", message_id)

    chunks = await chunks_of(chatlog, "chat-a", message_id)
    assert chunks[-1]["done"] is True
    assert chunks[-1]["content"] == ""
    streamed = "".join(c["content"] for c in chunks if not c["done"])
    assert streamed == reply["content"]
    assert reply["content"]
    assert "status" not in reply  # a complete reply has no status on the wire
    state = await chatlog.worker_state("chat-a")
    assert state["state"] == "responded"
    # the event log shows: message, queued, processing, chunks..., reply, done, responded
    kinds = [(e.type, e.fields.get("state")) for e in await chatlog.events_after("chat-a", "0-0")]
    start = [("message", None), ("workerState", "queued"), ("workerState", "processing")]
    end = [("message", None), ("assistantChunk", None), ("workerState", "responded")]
    assert kinds[:3] == start
    assert kinds[-3:] == end


async def test_chunks_are_coalesced(redis_server: RedisServer, chatlog: ChatLog) -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=1)) as url:
        settings = fast_settings(redis_server.url, url, chunk_interval_ms=35)
        async with Worker(settings) as worker:
            message_id = await post(chatlog, "coalesce", "Tell me [[demo:tokens=200]]")
            reply = await wait_reply(chatlog, "coalesce", message_id)
            requests = await agent_requests(url)

    chunks = [c for c in await chunks_of(chatlog, "coalesce", message_id) if not c["done"]]
    assert "".join(c["content"] for c in chunks) == reply["content"]
    assert len(requests) == 1
    # 200 pieces at >= 1 ms each take >= 200 ms: about 6-10 writes at 35 ms, never 200.
    assert 2 <= len(chunks) <= 40, len(chunks)
    assert worker.metrics.registry.get_sample_value("terrarium_worker_chunks_total") == len(chunks)


async def test_one_chat_stays_in_order_while_other_chats_run(
    redis_server: RedisServer, chatlog: ChatLog
) -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=3)) as url:
        settings = fast_settings(redis_server.url, url, max_concurrent_chats=4)
        async with Worker(settings):
            ids = [await post(chatlog, "busy", f"[[demo:echo]] message {i}") for i in range(5)]
            others = [await post(chatlog, f"other-{i}", "[[demo:echo]] hi") for i in range(3)]
            for i, message_id in enumerate(ids):
                reply = await wait_reply(chatlog, "busy", message_id)
                assert reply["content"] == f"message {i}"
            for i, message_id in enumerate(others):
                await wait_reply(chatlog, f"other-{i}", message_id)

    history = await chatlog.history("busy")
    # replies were stored in the order of their questions
    replies = [m["content"] for m in history if m["sender"] == "Terra"]
    assert replies == [f"message {i}" for i in range(5)]
    assert [m.get("replyTo") for m in history if m["sender"] == "Terra"] == ids
    # and each reply's chunks are not interleaved with another reply's
    events = await chatlog.events_after("busy", "0-0")
    order = [e.fields["replyTo"] for e in events if e.type == "assistantChunk"]
    collapsed = [r for i, r in enumerate(order) if i == 0 or order[i - 1] != r]
    assert collapsed == ids


async def test_conversation_has_prior_turns_and_nothing_later(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    settings = fast_settings(redis_server.url, agent_url)
    async with Worker(settings):
        first = await post(chatlog, "convo", "[[demo:echo]] first question")
        await wait_reply(chatlog, "convo", first)
        second = await post(chatlog, "convo", "[[demo:echo]] second question")
        third = await post(chatlog, "convo", "[[demo:echo]] third question")
        await wait_reply(chatlog, "convo", third)
        requests = await agent_requests(agent_url)

    assert len(requests) == 3
    roles = [[(m["role"], m["content"]) for m in r["messages"]] for r in requests]
    for messages in roles:
        assert messages[0][0] == "system"
    assert roles[0][1:] == [("user", "[[demo:echo]] first question")]
    # answering the second: prior turns, the question, and NOT the third message
    assert roles[1][1:] == [
        ("user", "[[demo:echo]] first question"),
        ("assistant", "first question"),
        ("user", "[[demo:echo]] second question"),
    ]
    # answering the third: the second's reply follows the second question, no duplicates
    assert roles[2][1:] == [
        ("user", "[[demo:echo]] first question"),
        ("assistant", "first question"),
        ("user", "[[demo:echo]] second question"),
        ("assistant", "second question"),
        ("user", "[[demo:echo]] third question"),
    ]
    assert second


async def test_conversation_keeps_the_last_max_turns(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    settings = fast_settings(redis_server.url, agent_url, max_turns=3, system_prompt="Be brief.")
    async with Worker(settings):
        last = ""
        for i in range(3):
            last = await post(chatlog, "turns", f"[[demo:echo]] q{i}")
            await wait_reply(chatlog, "turns", last)
        requests = await agent_requests(agent_url)

    messages = [(m["role"], m["content"]) for m in requests[-1]["messages"]]
    assert messages == [
        ("system", "Be brief."),
        ("user", "[[demo:echo]] q1"),
        ("assistant", "q1"),
        ("user", "[[demo:echo]] q2"),
    ]


async def test_cancel_stops_the_reply_within_a_few_chunks(
    redis_server: RedisServer, chatlog: ChatLog
) -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=10)) as url:
        settings = fast_settings(redis_server.url, url, chunk_interval_ms=25)
        async with Worker(settings):
            message_id = await post(chatlog, "stop-me", "Go on [[demo:tokens=400]]")

            async def first_chunk() -> bool:
                return bool(await chunks_of(chatlog, "stop-me", message_id))

            await wait_until(first_chunk, message="first chunk")
            await chatlog.request_cancel("stop-me", message_id)
            reply = await wait_reply(chatlog, "stop-me", message_id, within=5)

    assert reply["status"] == "stopped"
    chunks = await chunks_of(chatlog, "stop-me", message_id)
    body = [c for c in chunks if not c["done"]]
    assert "".join(c["content"] for c in body) == reply["content"]
    # 400 pieces at 10 ms would take 4 s and ~160 chunks: it stopped after a few
    assert len(body) < 15
    assert len(reply["content"].split()) < 100
    state = await chatlog.worker_state("stop-me")
    assert state == {**state, "state": "responded", "detail": "stopped"}
    assert not await chatlog.cancel_requested("stop-me", message_id)


async def test_heartbeat_reports_agent_and_llm(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    settings = fast_settings(redis_server.url, agent_url, worker_name="beating")
    presence = Presence(chatlog.redis, BusKeys())
    await presence.beat(WorkerHeartbeat(consumer="gone-for-days", seen_at_ms=1))
    async with Worker(settings):

        async def probed() -> Any:
            hb = await presence.freshest()
            return hb if hb is not None and hb.llm.status == "online" else None

        heartbeat = await wait_until(probed, message="a heartbeat with probe results")
        assert heartbeat.consumer == "beating"
        assert heartbeat.agent.status == "online"
        assert heartbeat.agent.latencyMs is not None
        assert heartbeat.capacity == 2
        beats = await chatlog.redis.hgetall(BusKeys().workers)  # type: ignore[misc]
        assert set(beats) == {"beating"}  # the long-gone worker was pruned
    assert await presence.freshest() is None  # removed on a clean stop


async def test_heartbeat_sees_an_unreachable_agent(
    redis_server: RedisServer, chatlog: ChatLog
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    presence = Presence(chatlog.redis, BusKeys())
    async with Worker(fast_settings(redis_server.url, dead)):

        async def probed() -> Any:
            hb = await presence.freshest()
            return hb if hb is not None and hb.agent.status != "unknown" else None

        heartbeat = await wait_until(probed, message="a heartbeat with probe results")
    assert heartbeat.agent.status == "offline"
    assert heartbeat.llm.status == "offline"
    assert str(heartbeat.llm.detail).startswith("network")


async def test_one_summary_line_per_job_without_the_prompt(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    with capture_logs(processors=[merge_contextvars]) as logs:
        async with Worker(fast_settings(redis_server.url, agent_url)):
            accepted = await chatlog.accept_visitor_message(
                "logged", "[[demo:echo]] my secret question", request_id="req-1"
            )
            await wait_reply(chatlog, "logged", str(accepted.message["id"]))
    finished = [e for e in logs if e["event"] == "worker.job_finished"]
    assert len(finished) == 1
    line = finished[0]
    assert line["chat_id"] == "logged"
    assert line["job_id"] == accepted.job_id
    assert line["request_id"] == "req-1"
    assert line["outcome"] == "answered"
    assert line["tokens"] >= 3
    assert line["duration_ms"] > 0
    assert line["deliveries"] == 1
    assert [e["event"] for e in logs if str(e["event"]).startswith("worker.job_")] == [
        "worker.job_finished"
    ]
    assert "my secret question" not in repr(logs)


async def test_metrics_are_exposed_on_a_local_port(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    port = free_port()
    settings = fast_settings(redis_server.url, agent_url, worker_metrics_port=port)
    async with Worker(settings):
        message_id = await post(chatlog, "counted", "[[demo:echo]] count me")
        await wait_reply(chatlog, "counted", message_id)

        async def finished() -> str | None:
            # The reply is stored before the job is acked and counted: wait for the count.
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/metrics") as resp,
            ):
                text = await resp.text()
            return text if 'jobs_total{outcome="answered"} 1.0' in text else None

        text = await wait_until(finished, timeout=10, message="the job to be counted")
    assert 'terrarium_worker_jobs_total{outcome="answered"} 1.0' in text
    assert "terrarium_worker_time_to_first_token_seconds_count 1.0" in text
    assert "terrarium_worker_active_jobs 0.0" in text
    assert "terrarium_worker_job_duration_seconds_bucket" in text
    assert "terrarium_worker_chunks_total" in text


async def test_an_idle_worker_stops_after_its_blocking_read(
    redis_server: RedisServer, agent_url: str
) -> None:
    """A stop lets the blocking job read in flight return (a read cut off could take a job
    and keep it from everyone until a reclaim), then ends: it never hangs on the reader."""
    worker = Worker(fast_settings(redis_server.url, agent_url, job_block_ms=2000))
    await worker.start()
    admin = create_redis(redis_server.url, client_name="test-admin")
    try:

        async def blocked() -> bool:
            return any("b" in c["flags"] for c in await admin.client_list())

        await wait_until(blocked, timeout=10, message="the worker's blocking job read")
    finally:
        await admin.aclose()
    async with asyncio.timeout(20):  # a hang guard, 5x the read's block and slack
        await worker.stop()


async def test_a_worker_answers_through_an_injected_bus(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    settings = fast_settings(redis_server.url, agent_url)
    async with (
        open_worker_bus(settings, name=settings.worker_name, block_ms=settings.job_block_ms) as bus,
        Worker(settings, bus=bus) as worker,
    ):
        assert worker.bus is bus
        accepted = await chatlog.accept_visitor_message("injected", "[[demo:echo]] via my bus")
        reply = await wait_reply(chatlog, "injected", str(accepted.message["id"]))
    assert reply["content"] == "via my bus"


class Monitor:
    """Redis's MONITOR feed, read in the background; :meth:`mark` is a barrier: when it
    returns, every command Redis ran before it has been read."""

    def __init__(self, url: str) -> None:
        self.redis = create_redis(url, client_name="monitor")
        self.lines: list[str] = []
        self._conn: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Monitor:
        self._conn = self.redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        await self._conn.connect()
        await self._conn.send_command("MONITOR")
        await self._conn.read_response()
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            self.lines.append(str(await self._conn.read_response()))

    async def mark(self, name: str) -> int:
        """Run ``ECHO name`` and wait until the feed shows it; its index in :attr:`lines`."""
        await self.redis.echo(name)
        return await wait_until(
            lambda: next((i for i, line in enumerate(self.lines) if name in line), None),
            timeout=10,
            message=f"MONITOR shows {name}",
        )

    async def __aexit__(self, *exc: object) -> None:
        assert self._reader is not None
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._conn.disconnect()
        await self.redis.aclose()


async def test_a_reply_complete_in_one_read_costs_no_chunk_round_trip(
    redis_server: RedisServer, chatlog: ChatLog
) -> None:
    """An agent whose whole short reply arrives in one read: the reply's text goes as a
    chunk inside the FINISH round trip, not in a CHUNK call of its own (issue 10), and the
    events are those of a streamed reply: chunk, Message, done chunk, state. With nothing
    else waiting, the worker goes from its blocking read back to it without a take in
    between (its read saw every lane empty)."""

    async def complete(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = [{"content": "Hi "}, {"content": "there."}, {}]
        body = b"".join(
            b"data: "
            + orjson.dumps(
                {"choices": [{"index": 0, "delta": d, "finish_reason": None if d else "stop"}]}
            )
            + b"\n\n"
            for d in events
        )
        await resp.write(body + b"data: [DONE]\n\n")  # one write: one read for the worker
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    chunk_sha = hashlib.sha1(scripts.CHUNK.encode()).hexdigest()
    finish_sha = hashlib.sha1(FINISH_CLOSE.encode()).hexdigest()
    take_sha = hashlib.sha1(scripts.JOBS_TAKE.encode()).hexdigest()
    try:
        settings = fast_settings(redis_server.url, f"http://127.0.0.1:{port}")
        async with Worker(settings), Monitor(redis_server.url) as monitor:
            await wait_reply(chatlog, "one-read", await post(chatlog, "one-read", "warm-up"))
            for turn in range(3):  # the scripts are loaded now: one EVALSHA each
                start = await monitor.mark(f"start-{turn}")
                message_id = await post(chatlog, "one-read", f"hello {turn}")
                reply = await wait_reply(chatlog, "one-read", message_id)
                end = await monitor.mark(f"end-{turn}")
                ran = monitor.lines[start:end]
                assert not [line for line in ran if chunk_sha in line]
                assert not [line for line in ran if take_sha in line]
                assert len([line for line in ran if finish_sha in line]) == 1
                assert reply["content"] == "Hi there."
                events = [e for e in await chatlog.events_after("one-read", "0-0")][-4:]
                assert [(e.type, e.fields.get("content")) for e in events] == [
                    ("assistantChunk", "Hi there."),
                    ("message", "Hi there."),
                    ("assistantChunk", ""),
                    ("workerState", None),
                ]
    finally:
        await runner.cleanup()
