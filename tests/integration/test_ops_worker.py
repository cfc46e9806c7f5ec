"""``requeue`` and ``replay --dry-run`` against a real worker process and the demo agent.

The dead letter is made the way production makes one: a job delivered more than
``MAX_DELIVERIES`` times is dead-lettered by the worker's reclaim sweep, with an apology to
the visitor.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bus import BusKeys, ChatLog, JobQueue
from bus.client import create_redis
from bus.ops import DeadLetter, OpsBus, open_ops_bus
from bus.schemas import AnswerMessage, encode
from bus.settings import BusSettings
from tests.integration.test_ops_console import run_ops
from tests.support.agent import agent_requests
from tests.support.redis_server import RedisServer
from tests.support.system import System
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAT = "ops-requeue-chat"


@pytest.fixture
async def chatlog(redis_server: RedisServer) -> AsyncIterator[ChatLog]:
    redis = create_redis(redis_server.url, client_name="test")
    try:
        yield ChatLog(redis, BusKeys())
    finally:
        await redis.aclose()


@pytest.fixture
async def ops_bus(redis_server: RedisServer) -> AsyncIterator[OpsBus]:
    async with open_ops_bus(BusSettings(redis_url=redis_server.url)) as bus:
        yield bus


async def replies(chatlog: ChatLog, chat_id: str, message_id: str) -> list[dict[str, Any]]:
    return [
        m
        for m in await chatlog.history(chat_id)
        if m["sender"] == "Terra" and m.get("replyTo") == message_id
    ]


async def test_requeue_delivers_a_dead_letter_once(
    system: System, redis_server: RedisServer, chatlog: ChatLog, ops_bus: OpsBus
) -> None:
    accepted = await chatlog.accept_visitor_message(CHAT, "Are you there, Terra?")
    message_id = accepted.message["id"]
    # A consumer that keeps dying with the job: delivered 4 times and left pending (a job
    # handed back at a graceful stop would cost no delivery; one a worker died with does).
    stuck = JobQueue(chatlog.redis, BusKeys(), consumer="dying-worker")
    await stuck.ensure_group()
    await stuck.read(count=1, block_ms=100)
    for _ in range(3):
        await stuck.reclaim(min_idle_ms=0)

    system.start_agent(token_delay_ms=1)
    system.worker(RECLAIM_MIN_IDLE_MS="1000", RECLAIM_INTERVAL_MS="200")

    async def dead_letter() -> DeadLetter | None:
        letters = await ops_bus.dead_letters()
        return letters[0] if letters else None

    dead = await wait_until(dead_letter, 30, "the worker to dead-letter the job")
    assert dead.reason == "delivered 5 times"
    apology = await wait_until(lambda: replies(chatlog, CHAT, message_id), 10, "the apology")
    assert [m.get("status") for m in apology] == ["error"]

    listed = await run_ops(redis_server.url, "dead")
    assert listed.status == 0, listed.err
    assert listed.out.splitlines()[0].startswith(f"{dead.dead_id}  ")
    assert f"chat {CHAT} message {message_id}" in listed.out
    assert "  reason: delivered 5 times (job " in listed.out
    assert f"terrarium-ops requeue {dead.dead_id}" in listed.out
    print(listed.out)  # the closing note quotes a real output

    done = await run_ops(redis_server.url, "requeue", dead.dead_id)
    assert done.status == 0, done.err
    answered = await wait_until(
        lambda: _two(replies(chatlog, CHAT, message_id)), 30, "the real answer after requeue"
    )
    assert [m.get("status") for m in answered] == ["error", None]
    assert "Are you there, Terra?" in answered[1]["content"]
    # The second reply is marked in the chat log, between the apology and the answer.
    events = await ops_bus.events(CHAT)
    marks = [
        e for e in events if e.type == "workerState" and "requeued" in (e.fields["detail"] or "")
    ]
    assert len(marks) == 1
    assert answered[0]["eventId"] < marks[0].event_id < answered[1]["eventId"]
    asked = [
        r
        for r in await agent_requests(system.agent_base)
        if r["messages"][-1].get("content") == "Are you there, Terra?"
    ]
    assert len(asked) == 1

    again = await run_ops(redis_server.url, "requeue", dead.dead_id)
    assert again.status == 1
    assert again.err == f"terrarium-ops: no dead letter {dead.dead_id} (already requeued?)\n"
    waiting, in_progress = await wait_until(
        lambda: _idle(ops_bus), 20, "the requeued job to be acked"
    )
    assert (waiting, in_progress) == ([], [])
    assert await ops_bus.dead_letters() == []


async def _two(pending: Any) -> list[dict[str, Any]] | None:
    found = await pending
    return found if len(found) == 2 else None


async def _idle(bus: OpsBus) -> tuple[list[Any], list[Any]] | None:
    waiting, in_progress = await bus.jobs()
    return (waiting, in_progress) if not waiting and not in_progress else None


async def test_requeue_refuses_a_malformed_or_answered_job(
    redis_server: RedisServer, chatlog: ChatLog
) -> None:
    keys = BusKeys()
    await chatlog.redis.xadd(
        keys.dead_letters_stream(0),
        {"d": '{"type": "answerMessage", "chat_id": 7}', "entry_id": "1-0", "reason": "malformed"},
    )
    (dead_id, _), *_ = await chatlog.redis.xrange(keys.dead_letters_stream(0))
    ran = await run_ops(redis_server.url, "requeue", dead_id)
    assert ran.status == 1
    assert ran.err == (
        "terrarium-ops: the job is malformed: job_id: Field required; chat_id: Input should "
        "be a valid string; message_id: Field required; request_id: Field required; "
        "enqueued_at: Field required\n"
    )
    shown = await run_ops(redis_server.url, "dead")
    assert "    - chat_id: Input should be a valid string" in shown.out

    accepted = await chatlog.accept_visitor_message(CHAT, "Hello")
    await chatlog.finish_reply(CHAT, accepted.message["id"], "Hi!")
    job = AnswerMessage(
        job_id="j1",
        chat_id=CHAT,
        message_id=accepted.message["id"],
        request_id="r1",
        enqueued_at=1.0,
    )
    answered_id = await chatlog.redis.xadd(
        keys.dead_letters_stream(0),
        {"d": encode(job), "entry_id": "2-0", "reason": "delivered 4 times"},
    )
    ran = await run_ops(redis_server.url, "requeue", str(answered_id))
    assert ran.status == 1
    assert ran.err.startswith(f"terrarium-ops: message {accepted.message['id']} already has a")


async def test_replay_dry_run_reaches_the_agent_and_publishes_nothing(
    system: System, redis_server: RedisServer, chatlog: ChatLog, ops_bus: OpsBus
) -> None:
    system.start_agent(token_delay_ms=1)
    system.worker()
    first = await chatlog.accept_visitor_message(CHAT, "What projects are on the site?")
    await wait_until(lambda: replies(chatlog, CHAT, first.message["id"]), 30, "the first reply")
    second = await chatlog.accept_visitor_message(CHAT, "Thanks! Anything else?")
    await wait_until(lambda: replies(chatlog, CHAT, second.message["id"]), 30, "the second reply")
    worker_asked = [
        r
        for r in await agent_requests(system.agent_base)
        if r["messages"][-1].get("content") == "Thanks! Anything else?"
    ]
    assert len(worker_asked) == 1
    # The first answer used a tool: its turns are part of the second question's prompt.
    assert any(m["role"] == "tool" for m in worker_asked[0]["messages"])

    events_before = len(await ops_bus.events(CHAT))
    jobs_before = await chatlog.redis.xlen(BusKeys().jobs_stream(0))
    agent_url = f"{system.agent_base}/v1/chat/completions"
    shown = await run_ops(
        redis_server.url,
        "replay",
        CHAT,
        "--message",
        second.message["id"][:8],
        "--dry-run",
        "--show-prompt",
    )
    assert shown.status == 0, shown.err
    body = json.loads(shown.out)
    for field in ("model", "messages", "tools", "tool_choice", "temperature", "stream"):
        assert body[field] == worker_asked[0][field], field

    replayed = await run_ops(
        redis_server.url, "replay", CHAT[:6], "--dry-run", "--agent-url", agent_url
    )
    assert replayed.status == 0, replayed.err
    assert "nothing was written to the chat" in replayed.err
    again = [
        r
        for r in await agent_requests(system.agent_base)
        if r["messages"][-1].get("content") == "Thanks! Anything else?"
    ]
    assert len(again) == 2
    assert again[1]["messages"] == worker_asked[0]["messages"]
    assert replayed.out.strip()  # the streamed answer
    assert len(await ops_bus.events(CHAT)) == events_before
    assert await chatlog.redis.xlen(BusKeys().jobs_stream(0)) == jobs_before

    no_flag = await run_ops(redis_server.url, "replay", CHAT)
    assert no_flag.status == 2
    assert no_flag.err == (
        "terrarium-ops: replay runs only with --dry-run (it never writes to the chat)\n"
    )
