"""Worker reliability: several workers, restarts, dead workers, agent failures, bad jobs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from bus import BusKeys, ChatLease, ChatLog, JobQueue, Presence
from bus.client import create_redis
from demo.agent import DemoAgentConfig, run_demo_agent
from tests.support.agent import agent_requests
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.support.worker_settings import fast_settings
from worker import Worker
from worker.answer import AGENT_APOLOGY, UNEXPECTED_APOLOGY

pytestmark = pytest.mark.integration

KEYS = BusKeys()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_server.url, client_name="test")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def chatlog(redis: Redis) -> ChatLog:
    return ChatLog(redis, KEYS)


async def inject_failures(agent_url: str, count: int, mode: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{agent_url}/_demo/fail", json={"count": count, "mode": mode}) as resp,
    ):
        assert resp.status == 200


async def probed(worker: Worker) -> None:
    """Wait for the worker's first inference probe (it would eat an injected failure)."""

    async def done() -> bool:
        return worker.health.llm.status != "unknown"

    await wait_until(done, message="the first inference probe")


async def post(chatlog: ChatLog, chat_id: str, content: str) -> str:
    accepted = await chatlog.accept_visitor_message(chat_id, content)
    return str(accepted.message["id"])


async def replies(chatlog: ChatLog, chat_id: str) -> list[dict[str, Any]]:
    return [m for m in await chatlog.history(chat_id) if m["sender"] == "Terra"]


async def wait_reply(
    chatlog: ChatLog, chat_id: str, message_id: str, within: float = 15.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        for frame in await replies(chatlog, chat_id):
            if frame.get("replyTo") == message_id:
                return frame
        return None

    return await wait_until(probe, timeout=within, message=f"reply to {message_id}")


def jobs(worker: Worker, outcome: str) -> float:
    """``terrarium_worker_jobs_total{outcome}`` of ``worker``."""
    value = worker.metrics.registry.get_sample_value(
        "terrarium_worker_jobs_total", {"outcome": outcome}
    )
    return value or 0.0


def agent_errors(worker: Worker, category: str) -> float:
    """``terrarium_worker_agent_errors_total{category}`` of ``worker``."""
    value = worker.metrics.registry.get_sample_value(
        "terrarium_worker_agent_errors_total", {"category": category}
    )
    return value or 0.0


async def pending_count(redis: Redis) -> int:
    info = await redis.xpending(KEYS.jobs_stream(0), KEYS.jobs_group)
    return int(info["pending"])


async def dead_letters(redis: Redis) -> list[dict[str, str]]:
    return [fields for _, fields in await redis.xrange(KEYS.dead_letters_stream(0))]


# --- several workers, restarts, dead workers -----------------------------------------------


async def test_two_workers_never_answer_twice(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog, redis: Redis
) -> None:
    chats = [f"pair-{i}" for i in range(4)]
    one = fast_settings(redis_server.url, agent_url, worker_name="w1", max_concurrent_chats=3)
    two = fast_settings(redis_server.url, agent_url, worker_name="w2", max_concurrent_chats=3)
    async with Worker(one) as w1, Worker(two) as w2:
        posted: dict[str, list[str]] = {chat: [] for chat in chats}
        for round_ in range(4):
            for chat in chats:
                posted[chat].append(await post(chatlog, chat, f"[[demo:echo]] {round_}"))
        for chat in chats:
            for message_id in posted[chat]:
                await wait_reply(chatlog, chat, message_id)
        await wait_until(lambda: _zero_pending(redis), message="all jobs acked")

        def finished(w: Worker) -> float:
            return jobs(w, "answered") + jobs(w, "duplicate")

        async def all_counted() -> bool:  # the summary is counted just after the ack
            return finished(w1) + finished(w2) == 16

        await wait_until(all_counted, message="every job counted")
        answered = [finished(w1), finished(w2)]

    requests = await agent_requests(agent_url)
    assert len(requests) == 16  # one agent call per visitor message, in total
    for chat in chats:
        stored = await replies(chatlog, chat)
        assert [r["replyTo"] for r in stored] == posted[chat]
        assert [r["content"] for r in stored] == ["0", "1", "2", "3"]
    assert sum(answered) == 16
    assert min(answered) > 0  # both workers took part


async def _zero_pending(redis: Redis) -> bool:
    return await pending_count(redis) == 0


async def test_restarted_worker_does_not_reanswer(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog, redis: Redis
) -> None:
    settings = fast_settings(redis_server.url, agent_url, worker_name="restart")
    ids = [await post(chatlog, "again", f"[[demo:echo]] q{i}") for i in range(3)]
    # An ack trims finished jobs: copy them now (one is in the stream, two wait in the lane).
    lane = await redis.lrange(KEYS.queue_lane(0, "chat-again"), 0, -1)  # type: ignore[misc]
    queued = [*await redis.xrange(KEYS.jobs_stream(0)), *(("", {"d": raw}) for raw in lane)]
    assert len(queued) == 3
    async with Worker(settings):
        for message_id in ids:
            await wait_reply(chatlog, "again", message_id)
    assert len(await agent_requests(agent_url)) == 3

    # Every job is delivered again (as after a crash between reply and ack).
    for _, fields in queued:
        await redis.xadd(KEYS.jobs_stream(0), fields)

    async with Worker(settings) as fresh:

        async def duplicates_acked() -> bool:
            return jobs(fresh, "duplicate") == 3

        await wait_until(duplicates_acked, message="duplicate jobs acked")
        later = await post(chatlog, "again", "[[demo:echo]] new")
        reply = await wait_reply(chatlog, "again", later)
    assert reply["content"] == "new"
    assert len(await agent_requests(agent_url)) == 4
    assert len(await replies(chatlog, "again")) == 4
    assert await pending_count(redis) == 0


async def test_dead_workers_job_is_reclaimed_and_answered_once(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog, redis: Redis
) -> None:
    dead = JobQueue(redis, KEYS, "dead-worker")
    await dead.ensure_group()
    message_id = await post(chatlog, "orphan", "[[demo:echo]] are you there?")
    taken = await dead.read(count=10, block_ms=100)
    assert len(taken) == 1  # the dead worker took it and never acked

    settings = fast_settings(redis_server.url, agent_url, worker_name="heir")
    async with Worker(settings) as heir:
        reply = await wait_reply(chatlog, "orphan", message_id, within=10)
        await wait_until(lambda: _zero_pending(redis), message="the job acked")
    assert reply["content"] == "are you there?"
    assert len(await agent_requests(agent_url)) == 1
    reclaimed = heir.metrics.registry.get_sample_value(
        "terrarium_worker_job_handovers_total", {"kind": "reclaimed"}
    )
    assert reclaimed == 1


async def test_job_waits_for_a_chat_held_by_another_worker(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog, redis: Redis
) -> None:
    other = ChatLease(redis, KEYS, "other-worker", ttl_ms=10_000)
    assert await other.acquire("held")
    settings = fast_settings(redis_server.url, agent_url)
    async with Worker(settings):
        message_id = await post(chatlog, "held", "[[demo:echo]] wait for it")
        await asyncio.sleep(0.5)
        assert await agent_requests(agent_url) == []
        assert await pending_count(redis) == 1  # still pending while it waits
        await other.release("held")
        reply = await wait_reply(chatlog, "held", message_id)
    assert reply["content"] == "wait for it"


async def test_graceful_stop_finishes_running_replies(
    redis_server: RedisServer, chatlog: ChatLog, redis: Redis
) -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=5)) as url:
        worker = Worker(fast_settings(redis_server.url, url, worker_name="leaving"))
        await worker.start()
        message_id = await post(chatlog, "bye", "Long one [[demo:tokens=60]]")
        await wait_until(_has_chunk(chatlog, "bye"), message="the reply to start")
        await worker.stop(grace_seconds=10)
    reply = await wait_reply(chatlog, "bye", message_id, within=0.1)
    assert reply.get("status") is None
    assert await pending_count(redis) == 0
    assert await Presence(redis, KEYS).freshest() is None
    assert await redis.get(KEYS.chat_lease("bye")) is None


async def test_stop_past_the_grace_leaves_the_job_for_another_worker(
    redis_server: RedisServer, chatlog: ChatLog, redis: Redis
) -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=20)) as url:
        first = Worker(fast_settings(redis_server.url, url, worker_name="slow"))
        await first.start()
        message_id = await post(chatlog, "handover", "Very long [[demo:tokens=120]]")
        await wait_until(_has_chunk(chatlog, "handover"), message="the reply to start")
        await first.stop(grace_seconds=0.1)
        assert await replies(chatlog, "handover") == []
        assert await pending_count(redis) == 1
        assert await redis.get(KEYS.chat_lease("handover")) is None

        second = fast_settings(redis_server.url, url, worker_name="next", chunk_interval_ms=50)
        async with Worker(second):
            reply = await wait_reply(chatlog, "handover", message_id, within=20)
            await wait_until(lambda: _zero_pending(redis), message="the job acked")
    assert len(reply["content"].split()) >= 100
    assert len(await replies(chatlog, "handover")) == 1


async def test_losing_the_chat_lease_stops_the_answer_and_leaves_the_job(
    redis_server: RedisServer, chatlog: ChatLog, redis: Redis
) -> None:
    async with run_demo_agent(DemoAgentConfig(token_delay_ms=20)) as url:
        settings = fast_settings(redis_server.url, url, worker_name="victim")
        async with Worker(settings) as worker:
            message_id = await post(chatlog, "stolen", "Long [[demo:tokens=100]]")
            await wait_until(_has_chunk(chatlog, "stolen"), message="the reply to start")
            # another worker takes the chat (as if this one had stalled past the lease)
            await redis.set(KEYS.chat_lease("stolen"), "thief", px=1000)

            async def abandoned() -> bool:
                return jobs(worker, "abandoned") == 1

            await wait_until(abandoned, message="the job to be abandoned")
            assert await replies(chatlog, "stolen") == []
            # the thief's lease expires; the pending job is reclaimed and answered once
            reply = await wait_reply(chatlog, "stolen", message_id, within=20)
            await wait_until(lambda: _zero_pending(redis), message="the job acked")
    assert len(reply["content"].split()) >= 90
    assert len(await replies(chatlog, "stolen")) == 1


def _has_chunk(chatlog: ChatLog, chat_id: str) -> Any:
    async def probe() -> bool:
        events = await chatlog.events_after(chat_id, "0-0")
        return any(e.type == "assistantChunk" for e in events)

    return probe


async def test_worker_rides_out_a_redis_restart(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    async with Worker(fast_settings(redis_server.url, agent_url)):
        before = await post(chatlog, "survivor", "[[demo:echo]] before")
        await wait_reply(chatlog, "survivor", before)
        await asyncio.to_thread(redis_server.restart, down_for=0.5)  # no persistence: all gone
        after = await post(chatlog, "survivor", "[[demo:echo]] after")
        reply = await wait_reply(chatlog, "survivor", after, within=20)
    assert reply["content"] == "after"


# --- agent failures ----------------------------------------------------------------------


async def test_transient_agent_failures_are_retried(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    async with Worker(fast_settings(redis_server.url, agent_url)) as worker:
        await probed(worker)
        await inject_failures(agent_url, 2, "http503")
        message_id = await post(chatlog, "flaky", "[[demo:echo]] still there?")
        reply = await wait_reply(chatlog, "flaky", message_id)
        errors = agent_errors(worker, "server_error")
    assert reply["content"] == "still there?"
    assert reply.get("status") is None
    assert len(await agent_requests(agent_url)) == 3
    assert errors == 2
    assert (await chatlog.worker_state("flaky"))["state"] == "responded"


async def test_a_permanent_failure_gets_the_apology_and_other_messages_are_still_tried(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    """Issue 9: one message the agent fails on (tried 3 times) gets the apology, and does
    not open the circuit for the next visitor's message."""
    async with Worker(fast_settings(redis_server.url, agent_url)):
        first = await post(chatlog, "broken", "Hello [[demo:http=500]]")
        reply = await wait_reply(chatlog, "broken", first)
        state = await chatlog.worker_state("broken")
        assert len(await agent_requests(agent_url)) == 3  # AGENT_MAX_ATTEMPTS

        second = await post(chatlog, "other", "[[demo:echo]] and now?")
        answer = await wait_reply(chatlog, "other", second)
    assert reply["content"] == AGENT_APOLOGY
    assert reply["status"] == "error"
    assert state["state"] == "error"
    assert state["detail"] == "server_error: HTTP 500"
    assert answer.get("status") is None
    assert "and now?" in answer["content"]
    assert len(await agent_requests(agent_url)) == 4


async def test_client_errors_are_not_retried(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    async with Worker(fast_settings(redis_server.url, agent_url)):
        message_id = await post(chatlog, "bad-request", "Hello [[demo:http=400]]")
        reply = await wait_reply(chatlog, "bad-request", message_id)
        state = await chatlog.worker_state("bad-request")
    assert reply["status"] == "error"
    assert str(state["detail"]).startswith("http_error: HTTP 400")
    assert len(await agent_requests(agent_url)) == 1


async def test_failure_after_text_was_shown_is_retried_once_then_keeps_it_and_apologises(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    """An error the agent reports mid-stream (it is up) starts the answer again once, after
    a stream reset; failing again, the visitor keeps what the second attempt showed."""
    async with Worker(fast_settings(redis_server.url, agent_url)):
        message_id = await post(chatlog, "midway", "Hello [[demo:error]]")
        reply = await wait_reply(chatlog, "midway", message_id)
        state = await chatlog.worker_state("midway")
    events = await chatlog.events_after("midway", "0-0")
    mine = [e for e in events if e.fields.get("replyTo") == message_id]
    resets = [i for i, e in enumerate(mine) if e.type == "streamReset"]
    assert len(resets) == 1
    shown = "".join(e.fields["content"] for e in mine[resets[0] :] if e.type == "assistantChunk")
    assert shown  # the visitor saw a few words before the agent failed again
    assert reply["content"] == f"{shown.rstrip()}\n\n{AGENT_APOLOGY}"
    assert reply["status"] == "error"
    assert state["state"] == "error"
    assert str(state["detail"]).startswith("server_error: demo: injected failure")
    assert len(await agent_requests(agent_url)) == 2  # the answer was started again once


async def test_agent_timeout_before_any_text_is_retried(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    settings = fast_settings(redis_server.url, agent_url, agent_timeout_seconds=0.5)
    async with Worker(settings) as worker:
        await probed(worker)
        await inject_failures(agent_url, 1, "stall")
        # the stall hits halfway through the reasoning, before any content: safe to retry
        message_id = await post(chatlog, "slow-agent", "[[demo:reasoning]] [[demo:echo]] ok")
        reply = await wait_reply(chatlog, "slow-agent", message_id)
        timeouts = agent_errors(worker, "timeout")
    assert reply["content"] == "ok"
    assert reply.get("status") is None
    assert timeouts == 1
    assert len(await agent_requests(agent_url)) == 2


async def test_agent_timeout_after_text_is_waited_on_then_ends_with_the_apology(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog
) -> None:
    """A silent agent after text was shown is waited for (``AGENT_PATIENCE_SECONDS``, here
    1 s) and the answer started again; when it keeps stalling, the apology follows."""
    settings = fast_settings(
        redis_server.url, agent_url, agent_timeout_seconds=0.5, agent_patience_seconds=1
    )
    async with Worker(settings):
        message_id = await post(chatlog, "stalled", "Hi [[demo:tokens=20]] [[demo:stall=3]]")
        reply = await wait_reply(chatlog, "stalled", message_id)
        state = await chatlog.worker_state("stalled")
    assert reply["status"] == "error"
    assert reply["content"].endswith(AGENT_APOLOGY)
    assert len(reply["content"]) > len(AGENT_APOLOGY)  # the words already shown are kept
    assert str(state["detail"]).startswith("timeout")
    assert len(await agent_requests(agent_url)) == 2  # started again once within the patience


# --- bad jobs ----------------------------------------------------------------------------


async def test_malformed_job_is_dead_lettered(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog, redis: Redis
) -> None:
    async with Worker(fast_settings(redis_server.url, agent_url)) as worker:
        await JobQueue(redis, KEYS, "producer").ensure_group()
        await redis.xadd(KEYS.jobs_stream(0), {"d": '{"type": "answerMessage", "nonsense": true}'})
        letters = await wait_until(lambda: dead_letters(redis), message="a dead letter")
        await wait_until(lambda: _zero_pending(redis), message="the bad job acked")
        # the worker carries on
        message_id = await post(chatlog, "after-bad", "[[demo:echo]] fine")
        await wait_reply(chatlog, "after-bad", message_id)

        async def counted() -> bool:
            return jobs(worker, "dead_letter") == 1

        await wait_until(counted, message="the dead letter counted")
    assert letters[0]["reason"].startswith("malformed job")
    assert letters[0]["consumer"] == "test-worker"


async def test_job_delivered_too_often_is_dead_lettered_with_a_polite_reply(
    redis_server: RedisServer, agent_url: str, chatlog: ChatLog, redis: Redis
) -> None:
    crashing = JobQueue(redis, KEYS, "crashing-worker")
    await crashing.ensure_group()
    message_id = await post(chatlog, "poison", "[[demo:echo]] this one kills workers")
    (delivery,) = await crashing.read(count=1, block_ms=100)
    for _ in range(3):  # three more deliveries to workers that died
        await redis.xclaim(
            KEYS.jobs_stream(0), KEYS.jobs_group, "crashing-worker", 0, [delivery.entry_id]
        )

    async with Worker(fast_settings(redis_server.url, agent_url)):
        reply = await wait_reply(chatlog, "poison", message_id, within=10)
        letters = await wait_until(lambda: dead_letters(redis), message="a dead letter")
    assert reply["content"] == UNEXPECTED_APOLOGY
    assert reply["status"] == "error"
    assert (await chatlog.worker_state("poison"))["state"] == "error"
    assert letters[0]["reason"] == "delivered 5 times"
    assert await agent_requests(agent_url) == []
    assert await pending_count(redis) == 0


# --- the process ---------------------------------------------------------------------------


async def test_worker_process_stops_cleanly_on_sigterm(
    redis_server: RedisServer, agent_url: str, redis: Redis
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "AGENT_API_URL": f"{agent_url}/v1/chat/completions",
        "WORKER_NAME": "proc-worker",
        "HEARTBEAT_INTERVAL_MS": "200",
        "JOB_BLOCK_MS": "300",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        presence = Presence(redis, KEYS)
        await wait_until(presence.freshest, timeout=20, message="the worker's heartbeat")
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
        code = proc.returncode
        output = out.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, output
    assert "worker.stopped" in output
    assert await presence.freshest() is None


async def test_worker_process_refuses_bad_settings_without_echoing_them() -> None:
    secret = "rediss://worker:hunter2-secret@redis.example:6380"
    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_API_URL",)}
    env |= {"REDIS_URL": secret.replace("rediss", "http")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    assert proc.returncode == 2
    assert "REDIS_URL" in text
    assert "AGENT_API_URL" in text
    assert "hunter2" not in text
