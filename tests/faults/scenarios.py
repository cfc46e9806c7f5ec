"""Fault scenarios on real processes. Each returns what happened (figures included); the
tests in this folder assert on it and ``python -m tests.faults.report`` prints it.

Every scenario owns its processes (a private redis-server, the demo agent, gateways and
workers started here) and is bounded in time: each wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from tests.faults.harness import KEYS, Harness, elapsed, fault_system
from tests.support.clients import (
    ChatClient,
    Posted,
    StreamCheck,
    cancel,
    check_stream,
    open_stalled_socket,
    post_message,
    readyz,
)
from tests.support.system import ACCESS_CODE
from worker.patience import RECONNECTING_DETAIL

__all__ = [
    "DEFAULT_TIMINGS_ENV",
    "AgentLost",
    "DeadWorker",
    "GatewayRestart",
    "HungRedis",
    "LostLog",
    "Outage",
    "Poison",
    "SlowJob",
    "SlowReader",
    "StopLatency",
    "TabClose",
    "WorkerSigterm",
    "agent_lost",
    "dead_worker",
    "gateway_restart",
    "hung_redis",
    "lost_log",
    "percentile",
    "poison_job",
    "redis_outage",
    "slow_job",
    "slow_reader",
    "stop_latency",
    "tab_close",
    "worker_sigterm",
]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def _pending_once_settled(h: Harness, within: float = 10.0) -> int:
    """Jobs still pending once the last reply's ack had time to land (a worker stores the
    reply, then acks its job: read at once, the count races with that ack)."""

    async def settled() -> bool:
        return not await h.pending()

    with contextlib.suppress(TimeoutError):
        await h.until(settled, within=within, what="every job acked")
    return len(await h.pending())


def _text_after_reset(client: ChatClient, reply_to: str) -> str:
    """The reply text a client shows: chunks after the last reset of that reply."""
    text = ""
    for frame in client.frames:
        data = frame.data
        if data.get("replyTo") != reply_to:
            continue
        if frame.type == "message":
            break  # the final reply replaces the streamed text
        if frame.type == "streamReset" or (
            frame.type == "assistantChunk" and data.get("done") and not client.v2
        ):
            text = ""
        elif frame.type == "assistantChunk":
            text += str(data.get("content") or "")
    return text


# --- 1. a worker dies mid-answer ----------------------------------------------------------------


@dataclass
class DeadWorker:
    """A worker SIGKILLed mid-answer; another one answers."""

    killed: str
    reclaim_seconds: float  # kill -> the new attempt's streamReset reached a v2 client
    answer_seconds: float  # kill -> the final reply reached the client
    replies: int  # Terra Messages answering the visitor message (history)
    resets_v2: int  # streamReset frames the v2 client got for it
    v1_cleared: bool  # the v1 client got an empty done chunk before the new attempt
    v2_text_matches: bool  # chunks after the reset == the final Message
    v1_text_matches: bool
    agent_requests: int
    v2: StreamCheck
    v1: StreamCheck
    sse: StreamCheck
    pending_after: int


#: The worker's own defaults (idle 30 s, sweep 2 s, lease 30 s, heartbeat 2 s, departed
#: after 6 s), for the figure in the note.
DEFAULT_TIMINGS_ENV = {
    "RECLAIM_MIN_IDLE_MS": "30000",
    "RECLAIM_INTERVAL_MS": "2000",
    "CHAT_LEASE_MS": "30000",
    "JOB_BLOCK_MS": "2000",
    "HEARTBEAT_INTERVAL_MS": "2000",
    "WORKER_DEAD_AFTER_MS": "6000",
}


async def dead_worker(workdir: Path, *, default_timings: bool = False) -> DeadWorker:
    chat, marker = "dead-worker", "dw-marker"
    env = DEFAULT_TIMINGS_ENV if default_timings else {}
    within = 60.0 if default_timings else 30.0
    async with fault_system(workdir) as h:
        gw = h.gateway()
        workers = {name: await h.worker(name, **env) for name in ("w1", "w2")}
        v2 = await ChatClient([gw.http], chat).start()
        v1 = await ChatClient([gw.http], chat, v2=False).start()
        sse = await ChatClient([gw.http], chat, transport="sse").start()
        posted = await post_message(
            gw.http, chat, f"Tell me a long story {marker} [[demo:tokens=160]] [[demo:delay=25]]"
        )
        message_id = posted.message_id
        await v2.wait_for(lambda: len(v2.chunks(message_id)) >= 3, what="the reply to stream")
        owner = await h.until(h.owner, what="the job's owner")
        workers[owner].kill()
        killed_at = time.monotonic()
        reset = await v2.wait_for(
            lambda: v2.of_type("streamReset"), within=within, what="the new attempt"
        )
        reclaim = round(reset[0].at - killed_at, 3)
        final = await v2.wait_reply(message_id, within=30)
        answer = round(final.at - killed_at, 3)
        await v1.wait_reply(message_id, within=10)
        await sse.wait_reply(message_id, within=10)
        await h.caught_up((v2, v1, sse))  # the trailing done chunk and state
        for client in (v2, v1, sse):
            await client.stop()
        events = await h.events(chat)
        content = str(final.data["content"])
        cleared = _v1_cleared(v1, message_id)
        return DeadWorker(
            killed=owner,
            reclaim_seconds=reclaim,
            answer_seconds=answer,
            replies=len(await h.terra_replies(chat, message_id)),
            resets_v2=len(v2.of_type("streamReset")),
            v1_cleared=cleared,
            v2_text_matches=_text_after_reset(v2, message_id) == content,
            v1_text_matches=_text_after_reset(v1, message_id) == content,
            agent_requests=await h.agent_requests(marker),
            v2=check_stream(v2, events),
            v1=check_stream(v1, events),
            sse=check_stream(sse, events),
            pending_after=await _pending_once_settled(h),
        )


def _v1_cleared(client: ChatClient, reply_to: str) -> bool:
    """A v1 client got an empty ``done`` chunk between two attempts' text (the reset)."""
    frames = [f.data for f in client.frames if f.data.get("replyTo") == reply_to]
    final = next(i for i, d in enumerate(frames) if "sender" in d)
    texts = [i for i, d in enumerate(frames[:final]) if d.get("content")]
    return any(
        d.get("done") and not d.get("content") and texts[0] < i < texts[-1]
        for i, d in enumerate(frames[:final])
    )


# --- 1a. the agent goes away mid-answer and comes back ----------------------------------------


@dataclass
class AgentLost:
    """The agent process SIGKILLed while a reply streams, started again after a while."""

    waited: bool  # the clients saw "queued: Terra is reconnecting to her model"
    resume_seconds: float  # agent back -> the restarted answer's streamReset reached v2
    replies: int  # Terra Messages answering the visitor message (history)
    status: str | None  # the reply's status (None: a complete answer, not the apology)
    resets_v2: int
    v2_text_matches: bool  # chunks after the reset == the final Message
    v1_cleared: bool  # the v1 client got an empty done chunk between the two attempts
    v1_text_matches: bool
    agent_requests_after: int  # completion requests the restarted agent got for it
    v2: StreamCheck
    v1: StreamCheck
    sse: StreamCheck
    pending_after: int


async def agent_lost(workdir: Path, *, down_seconds: float = 3.0) -> AgentLost:
    """Issue 9: a vLLM restart in the middle of an answer; the visitor gets the whole answer."""
    chat, marker = "agent-lost", "al-marker"
    async with fault_system(workdir) as h:
        agent = h.system.agent
        assert agent is not None
        gw = h.gateway()
        await h.worker("w1")
        v2 = await ChatClient([gw.http], chat).start()
        v1 = await ChatClient([gw.http], chat, v2=False).start()
        sse = await ChatClient([gw.http], chat, transport="sse").start()
        posted = await post_message(
            gw.http, chat, f"Tell me a long story {marker} [[demo:tokens=120]] [[demo:delay=20]]"
        )
        message_id = posted.message_id
        await v2.wait_for(lambda: len(v2.chunks(message_id)) >= 3, what="the reply to stream")
        agent.kill()

        def waiting() -> bool:
            states = v2.of_type("workerState")
            return any(f.data.get("detail") == RECONNECTING_DETAIL for f in states)

        waited = bool(await v2.wait_for(waiting, within=20, what="the reply to wait"))
        # the outage lasts this long by definition (past the client's own quick retries)
        await asyncio.sleep(down_seconds)
        await asyncio.to_thread(agent.start)
        back_at = time.monotonic()
        reset = await v2.wait_for(
            lambda: v2.of_type("streamReset"), within=30, what="the restarted answer"
        )
        final = await v2.wait_reply(message_id, within=30)
        await v1.wait_reply(message_id, within=10)
        await sse.wait_reply(message_id, within=10)
        await h.caught_up((v2, v1, sse))  # the trailing done chunk and state
        for client in (v2, v1, sse):
            await client.stop()
        events = await h.events(chat)
        content = str(final.data["content"])
        return AgentLost(
            waited=waited,
            resume_seconds=round(reset[0].at - back_at, 3),
            replies=len(await h.terra_replies(chat, message_id)),
            status=final.data.get("status"),
            resets_v2=len(v2.of_type("streamReset")),
            v2_text_matches=_text_after_reset(v2, message_id) == content,
            v1_cleared=_v1_cleared(v1, message_id),
            v1_text_matches=_text_after_reset(v1, message_id) == content,
            agent_requests_after=await h.agent_requests(marker),
            v2=check_stream(v2, events),
            v1=check_stream(v1, events),
            sse=check_stream(sse, events),
            pending_after=await _pending_once_settled(h),
        )


# --- 1b. a live but slow job is never taken over ------------------------------------------------


@dataclass
class SlowJob:
    """One generation lasting many idle thresholds, with a second worker trying to reclaim."""

    generation_seconds: float
    min_idle_seconds: float
    max_deliveries_seen: int
    agent_requests: int
    resets: int
    replies: int
    complete: bool
    reclaims_logged: int


async def slow_job(workdir: Path) -> SlowJob:
    chat, marker = "slow-job", "slow-marker"
    # Renewed every 0.5 s; the other worker sweeps every 0.1 s for jobs idle 1.5 s.
    fast = {"RECLAIM_MIN_IDLE_MS": "1500", "CHAT_LEASE_MS": "1500", "RECLAIM_INTERVAL_MS": "100"}
    async with fault_system(workdir) as h:
        gw = h.gateway()
        w1 = await h.worker("s1", **fast)
        w2 = await h.worker("s2", **fast)
        client = await ChatClient([gw.http], chat).start()
        started = time.monotonic()
        posted = await post_message(
            gw.http, chat, f"Take your time {marker} [[demo:tokens=160]] [[demo:delay=55]]"
        )
        message_id = posted.message_id
        most = 0
        while client.reply(message_id) is None and time.monotonic() - started < 40:
            for row in await h.pending():
                most = max(most, int(row["times_delivered"]))
            await asyncio.sleep(0.1)
        final = await client.wait_reply(message_id, within=5)
        await client.stop()
        logs = w1.output() + w2.output()
        return SlowJob(
            generation_seconds=elapsed(started),
            min_idle_seconds=1.5,
            max_deliveries_seen=most,
            agent_requests=await h.agent_requests(marker),
            resets=len(client.of_type("streamReset")),
            replies=len(await h.terra_replies(chat, message_id)),
            complete=final.data.get("status") is None,
            reclaims_logged=logs.count("worker.job_reclaimed"),
        )


# --- 2. a poison job ------------------------------------------------------------------------------


@dataclass
class Poison:
    """A job whose processing kills its worker, every time."""

    kills: int
    deliveries_at_dead_letter: str
    reason: str
    dead_letters: int
    reply_status: str | None
    reply_content: str
    replies: int
    agent_requests: int
    agent_requests_later: int
    pending_after: int
    next_message_answered: bool
    seconds: float


async def poison_job(workdir: Path) -> Poison:
    chat, marker = "poison", "poison-marker"
    async with fault_system(workdir) as h:
        gw = h.gateway()
        client = await ChatClient([gw.http], chat).start()
        started = time.monotonic()
        posted = await post_message(
            gw.http, chat, f"This one kills workers {marker} [[demo:tokens=400]] [[demo:delay=20]]"
        )
        message_id = posted.message_id
        kills = 0
        for attempt in range(1, 4):
            name = f"p{attempt}"
            seen = len(client.chunks(message_id))
            worker = await h.worker(name)

            async def processing(name: str = name, seen: int = seen) -> bool:
                return await h.owner() == name and len(client.chunks(message_id)) > seen

            await h.until(processing, within=20, what=f"{name} to take the poison job")
            worker.kill()  # "the job crashed the worker process"
            kills += 1
        await h.worker("survivor")
        final = await client.wait_reply(message_id, within=30)
        letters = await h.until(h.dead_letters, what="the dead letter")
        requests = await h.agent_requests(marker)
        # Nothing may loop: the next message of the chat is answered after anything the poison
        # job could still cause (a new attempt would come first: one job at a time per chat).
        nxt = await post_message(gw.http, chat, "[[demo:echo]] still there?")
        answered = await client.wait_reply(nxt.message_id, within=20)
        later = await h.agent_requests(marker)
        await client.stop()
        return Poison(
            kills=kills,
            deliveries_at_dead_letter=letters[0].get("deliveries", ""),
            reason=letters[0].get("reason", ""),
            dead_letters=len(letters),
            reply_status=final.data.get("status"),
            reply_content=str(final.data.get("content")),
            replies=len(await h.terra_replies(chat, message_id)),
            agent_requests=requests,
            agent_requests_later=later,
            pending_after=await _pending_once_settled(h),
            next_message_answered=answered.data.get("content") == "still there?",
            seconds=elapsed(started),
        )


# --- 3. stop ------------------------------------------------------------------------------------


@dataclass
class StopLatency:
    """Visitor stops while tokens flow, and while the model is silent."""

    #: cancel sent -> the last text chunk of that reply arrived (0 if none came after)
    emission_end: list[float] = field(default_factory=list)
    #: cancel sent -> the stopped Message arrived
    stopped_message: list[float] = field(default_factory=list)
    #: the same two for a stalled model (no tokens flowing when the stop arrives)
    stalled_stopped_message: list[float] = field(default_factory=list)
    all_stopped: bool = True
    partial_kept: bool = True
    next_answered: bool = False
    cancel_statuses: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "emission_end_p50": percentile(self.emission_end, 50),
            "emission_end_p99": percentile(self.emission_end, 99),
            "emission_end_max": max(self.emission_end, default=float("nan")),
            "stopped_message_p50": percentile(self.stopped_message, 50),
            "stopped_message_p99": percentile(self.stopped_message, 99),
            "stalled_p50": percentile(self.stalled_stopped_message, 50),
            "stalled_p99": percentile(self.stalled_stopped_message, 99),
            "stalled_max": max(self.stalled_stopped_message, default=float("nan")),
        }


async def stop_latency(workdir: Path, trials: int = 10, stalled_trials: int = 4) -> StopLatency:
    chat = "stopper"
    result = StopLatency()
    rng = random.Random(7)
    async with fault_system(workdir) as h:
        gw = h.gateway()
        await h.worker("stop-worker", MAX_CONCURRENT_CHATS="1")
        client = await ChatClient([gw.http], chat).start()
        for trial in range(trials + stalled_trials):
            stalled = trial >= trials
            if stalled:
                content = f"Trial {trial} [[demo:tokens=40]] [[demo:stall=30]]"
            else:
                content = f"Trial {trial} [[demo:tokens=400]] [[demo:delay=12]]"
            message_id = (await post_message(gw.http, chat, content)).message_id
            if stalled:
                await client.wait_for(
                    lambda m=message_id: len(client.chunks(m)) >= 1, what="the first chunk"
                )
                await asyncio.sleep(0.4)  # the model is now silent (stall)
            else:
                wanted = rng.randint(2, 8)
                await client.wait_for(
                    lambda m=message_id, n=wanted: len(client.chunks(m)) >= n, what="chunks"
                )
                await asyncio.sleep(rng.uniform(0, 0.2))
            sent = time.monotonic()
            result.cancel_statuses.append(await cancel(gw.http, chat))
            final = await client.wait_reply(message_id, within=10)
            stopped_after = round(final.at - sent, 4)
            chunks = client.chunks(message_id)
            last = max((f.at for f in chunks), default=sent)
            if stalled:
                result.stalled_stopped_message.append(stopped_after)
            else:
                result.emission_end.append(round(max(0.0, last - sent), 4))
                result.stopped_message.append(stopped_after)
            shown = "".join(str(f.data.get("content")) for f in chunks)
            result.all_stopped &= final.data.get("status") == "stopped"
            result.partial_kept &= bool(shown) and final.data.get("content") == shown
        nxt = (await post_message(gw.http, chat, "[[demo:echo]] next please")).message_id
        answer = await client.wait_reply(nxt, within=15)
        result.next_answered = answer.data.get("content") == "next please"
        await client.stop()
    return result


@dataclass
class TabClose:
    """The visitor's only socket closes mid-answer; the reply must still complete."""

    reply_status: str | None
    words: int
    cancel_requested: bool


async def tab_close(workdir: Path) -> TabClose:
    chat = "tab-close"
    async with fault_system(workdir) as h:
        gw = h.gateway()
        await h.worker("tab-worker")
        client = await ChatClient([gw.http], chat).start()
        message_id = (
            await post_message(gw.http, chat, "Bye [[demo:tokens=120]] [[demo:delay=15]]")
        ).message_id
        await client.wait_for(lambda: len(client.chunks(message_id)) >= 2, what="chunks")
        await client.stop()  # the tab closes
        replies = await h.until(
            lambda: h.terra_replies(chat, message_id), within=20, what="the reply"
        )
        return TabClose(
            reply_status=replies[0].get("status"),
            words=len(str(replies[0]["content"]).split()),
            cancel_requested=await h.redis.exists(KEYS.chat_cancel(chat)) > 0,
        )


# --- 4. Redis outage (AOF) and a Redis that lost everything ---------------------------------------


@dataclass
class Outage:
    """Redis down for ``down_seconds`` (SIGKILL, then restarted on its AOF)."""

    down_seconds: float
    posts_ok: int
    posts_ok_lost: int  # visitor messages that got a 200 and are not in the history
    posts_refused: int
    refused_statuses: list[int | str]
    refused_retry_after: bool
    slowest_refusal_seconds: float
    posts_other: list[str]
    readyz_during: set[int | str]
    ready_after_seconds: float  # Redis back -> /readyz 200
    first_post_after_seconds: float  # Redis back -> first POST answered 200
    live_after_seconds: float  # Redis back -> first live frame reached a connected socket
    answered_after_seconds: float  # Redis back -> the interrupted reply finished
    unanswered: int
    duplicate_replies: int
    interrupted_resets: int
    streams: dict[str, StreamCheck]
    gateway_alive: bool
    worker_alive: bool


async def redis_outage(workdir: Path, down_seconds: float = 10.0) -> Outage:
    chat, posts_chat = "outage", "outage-posts"
    async with fault_system(workdir, appendonly=True) as h:
        gw = h.gateway()
        worker = await h.worker("o1")
        clients = {
            "ws-v2": await ChatClient([gw.http], chat).start(),
            "ws-v1": await ChatClient([gw.http], chat, v2=False).start(),
            "sse-v2": await ChatClient([gw.http], chat, transport="sse").start(),
            "posts-ws": await ChatClient([gw.http], posts_chat).start(),
        }
        main = clients["ws-v2"]
        long_id = (
            await post_message(gw.http, chat, "A long one [[demo:tokens=200]] [[demo:delay=20]]")
        ).message_id
        await main.wait_for(lambda: len(main.chunks(long_id)) >= 3, what="the long reply")

        results: list[tuple[float, Posted]] = []
        posting = True

        async def poster() -> None:
            n = 0
            while posting:
                n += 1
                key = uuid.uuid4().hex
                sent = time.monotonic()
                posted = await post_message(
                    gw.http, posts_chat, f"[[demo:echo]] n{n}", client_message_id=key
                )
                results.append((sent, posted))
                await asyncio.sleep(0.2)

        poster_task = asyncio.create_task(poster())
        await asyncio.sleep(0.6)
        h.redis_server.kill()
        down_at = time.monotonic()
        statuses: set[int | str] = set()
        while time.monotonic() - down_at < down_seconds:
            statuses.add(await readyz(gw.http))
            await asyncio.sleep(0.5)
        await asyncio.to_thread(h.redis_server.start, appendonly=True)
        up_at = time.monotonic()
        frames_before = {name: len(c.frames) for name, c in clients.items()}
        ready_at = None
        while ready_at is None and time.monotonic() - up_at < 20:
            if await readyz(gw.http) == 200:
                ready_at = time.monotonic()
            else:
                await asyncio.sleep(0.05)
        await main.wait_for(
            lambda: len(main.frames) > frames_before["ws-v2"], within=20, what="a live frame"
        )
        live_at = min(
            c.frames[frames_before[name]].at
            for name, c in clients.items()
            if len(c.frames) > frames_before[name]
        )
        long_reply = await main.wait_reply(long_id, within=30)
        await asyncio.sleep(2.0)
        posting = False
        await poster_task

        ok = [(at, p) for at, p in results if p.status == 200]
        refused = [(at, p) for at, p in results if p.status == 503]
        other = [str(p.status) for _, p in results if p.status not in (200, 503)]
        first_ok_after = min((at + p.seconds for at, p in ok if at >= up_at - 0.5), default=up_at)
        posts_client = clients["posts-ws"]
        for _, p in ok:
            with contextlib.suppress(TimeoutError):
                await posts_client.wait_reply(p.message_id, within=20)
        await h.caught_up(clients.values())
        for client in clients.values():
            await client.stop()

        history = await h.history(posts_chat) + await h.history(chat)
        ids = {m["id"] for m in history}
        replies_per: dict[str, int] = {}
        for m in history:
            if m.get("replyTo"):
                replies_per[m["replyTo"]] = replies_per.get(m["replyTo"], 0) + 1
        visitor_ids = {p.message_id for _, p in ok} | {long_id}
        events = {
            name: await h.events(posts_chat if name == "posts-ws" else chat) for name in clients
        }
        return Outage(
            down_seconds=down_seconds,
            posts_ok=len(ok),
            posts_ok_lost=sum(1 for _, p in ok if p.message_id not in ids),
            posts_refused=len(refused),
            refused_statuses=sorted({p.status for _, p in refused}, key=str),
            refused_retry_after=all(p.retry_after for _, p in refused),
            slowest_refusal_seconds=round(max((p.seconds for _, p in refused), default=0.0), 3),
            posts_other=other,
            readyz_during=statuses,
            ready_after_seconds=round((ready_at or time.monotonic()) - up_at, 3),
            first_post_after_seconds=round(first_ok_after - up_at, 3),
            live_after_seconds=round(live_at - up_at, 3),
            answered_after_seconds=round(long_reply.at - up_at, 3),
            unanswered=sum(1 for mid in visitor_ids if replies_per.get(mid, 0) == 0),
            duplicate_replies=sum(n - 1 for n in replies_per.values() if n > 1),
            interrupted_resets=len(main.of_type("streamReset")),
            streams={name: check_stream(c, events[name]) for name, c in clients.items()},
            gateway_alive=gw.running,
            worker_alive=worker.running,
        )


@dataclass
class HungRedis:
    """Redis stops answering (SIGSTOP) without closing connections: nothing may hang."""

    post_status: int | str
    post_seconds: float
    post_retry_after: str | None
    readyz_during: int | str
    handshake_status: int | str
    handshake_seconds: float
    retry_status: int | str
    stored_copies: int  # visitor messages with that content once Redis answers again
    replies: int


async def hung_redis(workdir: Path, hang_seconds: float = 7.0) -> HungRedis:
    chat = "hung"
    async with fault_system(workdir) as h:
        gw = h.gateway()
        await h.worker("h1")
        assert h.redis_server.proc is not None
        pid = h.redis_server.proc.pid
        os.kill(pid, signal.SIGSTOP)
        hung_at = time.monotonic()
        key = uuid.uuid4().hex
        try:
            posted, (handshake, handshake_seconds), ready = await asyncio.gather(
                post_message(gw.http, chat, "[[demo:echo]] hung", client_message_id=key),
                _handshake(gw.http, chat),
                readyz(gw.http),
            )
            await asyncio.sleep(max(0.0, hang_seconds - elapsed(hung_at)))
        finally:
            os.kill(pid, signal.SIGCONT)
        # The visitor's client retries with the same clientMessageId, as the widget does.
        retry = await post_message(gw.http, chat, "[[demo:echo]] hung", client_message_id=key)
        await h.until(lambda: h.terra_replies(chat, retry.message_id), what="the reply")
        history = await h.history(chat)
        return HungRedis(
            post_status=posted.status,
            post_seconds=round(posted.seconds, 3),
            post_retry_after=posted.retry_after,
            readyz_during=ready,
            handshake_status=handshake,
            handshake_seconds=handshake_seconds,
            retry_status=retry.status,
            stored_copies=sum(1 for m in history if m["content"] == "[[demo:echo]] hung"),
            replies=sum(1 for m in history if m.get("sender") == "Terra"),
        )


async def _handshake(port: int, chat_id: str) -> tuple[int | str, float]:
    """A WebSocket handshake: ``(101 or the HTTP status, seconds)``."""
    started = time.monotonic()
    url = f"http://127.0.0.1:{port}/api/chat?chatId={chat_id}&accessCode={ACCESS_CODE}"
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url) as ws:
                await ws.close()
                return 101, elapsed(started)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, elapsed(started)


@dataclass
class LostLog:
    """Redis restarted WITHOUT persistence under live sockets."""

    resync_after_seconds: dict[str, float]  # Redis back -> resync frame (v2 clients)
    v1_resyncs: int
    after_restart: dict[str, StreamCheck]  # frames after the resync vs the new log
    resumed_old_point_resync: bool  # a new client resuming from a lost point gets resync


async def lost_log(workdir: Path) -> LostLog:
    chat = "amnesia"
    async with fault_system(workdir) as h:
        gw = h.gateway()
        await h.worker("l1")
        clients = {
            "ws-v2": await ChatClient([gw.http], chat).start(),
            "sse-v2": await ChatClient([gw.http], chat, transport="sse").start(),
            "ws-v1": await ChatClient([gw.http], chat, v2=False).start(),
        }
        first = (await post_message(gw.http, chat, "[[demo:echo]] one")).message_id
        for client in clients.values():
            await client.wait_reply(first)
        old_point = clients["ws-v2"].last_event_id
        await asyncio.sleep(0.2)
        h.redis_server.kill()
        await asyncio.to_thread(h.redis_server.start)  # no AOF: everything is gone
        up_at = time.monotonic()
        v2s = {k: c for k, c in clients.items() if c.v2}
        for client in v2s.values():
            await client.wait_for(lambda c=client: c.of_type("resync"), within=20, what="resync")
        marks = {k: len(c.frames) for k, c in clients.items()}
        second = (await post_message(gw.http, chat, "[[demo:echo]] two")).message_id
        for client in clients.values():
            await client.wait_reply(second, within=20)
        await h.caught_up(clients.values())
        late = ChatClient([gw.http], chat, after=old_point)
        await late.start()
        await late.wait_for(lambda: late.of_type("resync"), within=10, what="resync on resume")
        await late.stop()
        for client in clients.values():
            await client.stop()
        events = await h.events(chat)
        after: dict[str, StreamCheck] = {}
        for name, client in clients.items():
            tail = ChatClient(client.ports, chat, v2=client.v2)
            tail.frames = client.frames[marks[name] :]
            after[name] = check_stream(tail, events, start="0-0")
        return LostLog(
            resync_after_seconds={
                k: round(c.of_type("resync")[0].at - up_at, 3) for k, c in v2s.items()
            },
            v1_resyncs=len(clients["ws-v1"].of_type("resync")),
            after_restart=after,
            resumed_old_point_resync=bool(late.of_type("resync")),
        )


# --- 5. gateway restart, worker SIGTERM ---------------------------------------------------------


@dataclass
class GatewayRestart:
    """SIGTERM one gateway, then SIGKILL the other, while replies stream."""

    term_close: dict[str, int | str | None]  # first close of each client after SIGTERM
    term_exit_code: int | None
    term_exit_seconds: float
    reconnect_after_term: dict[str, float]
    reconnect_after_kill: dict[str, float]
    streams: dict[str, StreamCheck]
    replies: int
    duplicate_replies: int


async def gateway_restart(workdir: Path) -> GatewayRestart:
    chat = "gw-restart"
    async with fault_system(workdir) as h:
        g1, g2 = h.gateway("g1"), h.gateway("g2")
        await h.worker("gw-worker")
        ports = [g1.http, g2.http]
        clients = {
            "ws-v2": await ChatClient(list(ports), chat).start(),
            "ws-v1": await ChatClient(list(ports), chat, v2=False).start(),
            "sse-v2": await ChatClient(list(ports), chat, transport="sse").start(),
        }
        main = clients["ws-v2"]
        start_points = {k: "0-0" for k in clients}
        first = (
            await post_message(g1.http, chat, "One [[demo:tokens=120]] [[demo:delay=20]]")
        ).message_id
        await main.wait_for(lambda: len(main.chunks(first)) >= 3, what="chunks")
        g1.signal(signal.SIGTERM)
        term_at = time.monotonic()
        for client in clients.values():
            await client.wait_for(lambda c=client: len(c.connects) >= 2, what="a reconnect")
        code = await asyncio.to_thread(g1.wait, 15)
        term_exit = elapsed(term_at)
        term_close = {k: c.closes[0][1] for k, c in clients.items()}
        after_term = {k: round(c.connects[1][1] - term_at, 3) for k, c in clients.items()}
        await main.wait_reply(first, within=20)

        g1.start()  # back on its port: clients now on g2 fail over to it
        second = (
            await post_message(g2.http, chat, "Two [[demo:tokens=120]] [[demo:delay=20]]")
        ).message_id
        await main.wait_for(lambda: len(main.chunks(second)) >= 3, what="chunks")
        g2.kill()
        kill_at = time.monotonic()
        for client in clients.values():
            await client.wait_for(lambda c=client: len(c.connects) >= 3, what="a reconnect")
        after_kill = {k: round(c.connects[2][1] - kill_at, 3) for k, c in clients.items()}
        for client in clients.values():
            await client.wait_reply(second, within=20)
        await h.caught_up(clients.values())
        for client in clients.values():
            await client.stop()
        events = await h.events(chat)
        history = await h.history(chat)
        replies = [m for m in history if m.get("replyTo") in (first, second)]
        return GatewayRestart(
            term_close=term_close,
            term_exit_code=code,
            term_exit_seconds=term_exit,
            reconnect_after_term=after_term,
            reconnect_after_kill=after_kill,
            streams={k: check_stream(c, events, start=start_points[k]) for k, c in clients.items()},
            replies=len(replies),
            duplicate_replies=len(replies) - len({m["replyTo"] for m in replies}),
        )


@dataclass
class WorkerSigterm:
    """SIGTERM a worker mid-answer: with a long grace it finishes; with a short one it hands
    the job back and another worker takes it at once (not after the idle threshold)."""

    finish_exit_code: int | None
    finished_complete: bool
    finished_resets: int
    release_exit_code: int | None
    handover_seconds: float  # SIGTERM -> the other worker's streamReset reached the client
    min_idle_seconds: float
    released_logged: bool
    replies: int
    resets: int
    text_matches: bool


async def worker_sigterm(workdir: Path) -> WorkerSigterm:
    chat = "sigterm"
    async with fault_system(workdir) as h:
        gw = h.gateway()
        client = await ChatClient([gw.http], chat).start()
        patient = await h.worker("patient", SHUTDOWN_GRACE_SECONDS="15")
        first = (
            await post_message(gw.http, chat, "Short [[demo:tokens=60]] [[demo:delay=20]]")
        ).message_id
        await client.wait_for(lambda: len(client.chunks(first)) >= 2, what="chunks")
        patient.signal(signal.SIGTERM)
        finish_code = await asyncio.to_thread(patient.wait, 20)
        done = client.reply(first) or await client.wait_reply(first, within=5)
        finished_resets = len(
            [f for f in client.of_type("streamReset") if f.data.get("replyTo") == first]
        )

        # Idle threshold far beyond the test: only the release can explain a quick handover.
        slow_reclaim = {"RECLAIM_MIN_IDLE_MS": "60000", "RECLAIM_INTERVAL_MS": "300"}
        leaving = await h.worker("leaving", SHUTDOWN_GRACE_SECONDS="0.5", **slow_reclaim)
        second = (
            # long enough (12 s) to be still streaming once the heir below has started
            await post_message(gw.http, chat, "Long [[demo:tokens=600]] [[demo:delay=20]]")
        ).message_id
        await client.wait_for(lambda: len(client.chunks(second)) >= 2, what="chunks")
        await h.worker("heir", **slow_reclaim)
        leaving.signal(signal.SIGTERM)
        term_at = time.monotonic()
        release_code = await asyncio.to_thread(leaving.wait, 20)
        reset = await client.wait_for(
            lambda: [f for f in client.of_type("streamReset") if f.data.get("replyTo") == second],
            within=20,
            what="the handover",
        )
        final = await client.wait_reply(second, within=30)
        await client.stop()
        return WorkerSigterm(
            finish_exit_code=finish_code,
            finished_complete=done.data.get("status") is None,
            finished_resets=finished_resets,
            release_exit_code=release_code,
            handover_seconds=round(reset[0].at - term_at, 3),
            min_idle_seconds=60.0,
            released_logged="worker.jobs_released" in leaving.output(),
            replies=len(await h.terra_replies(chat, second)),
            resets=len(reset),
            text_matches=_text_after_reset(client, second) == final.data.get("content"),
        )


# --- 6. a socket that never reads -----------------------------------------------------------------


@dataclass
class SlowReader:
    """One socket never reads while ``readers`` others on the same chat must get everything."""

    readers: int
    events: int
    event_bytes: int
    queue_size: int
    stalled_close: int | None
    stalled_end: str
    stalled_disconnected_after_events: int | None
    readers_exact: int
    readers_lost: int
    readers_duplicates: int
    readers_disconnected: int
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float


class _CountingReader:
    """A light WebSocket reader: keeps only the event ids (no JSON parsing of 8 KB frames)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.closed: int | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def run(self, session: aiohttp.ClientSession, url: str) -> None:
        async with session.ws_connect(url, heartbeat=None) as ws:
            self.ws = ws
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                text: str = msg.data
                at = text.rfind('"eventId":"')
                self.ids.append(text[at + 11 : text.index('"', at + 11)])
            self.closed = ws.close_code


def _rss_mb(pid: int) -> float:
    return round(float(psutil.Process(pid).memory_info().rss) / 2**20, 1)


async def slow_reader(
    workdir: Path,
    readers: int = 200,
    events: int = 450,
    event_bytes: int = 16384,
    rate: float = 40.0,
    queue_size: int = 100,
) -> SlowReader:
    chat = "fanout"
    async with fault_system(workdir) as h:
        gw = h.gateway(SOCKET_QUEUE_SIZE=str(queue_size), LOG_LEVEL="WARNING")
        url = f"ws://127.0.0.1:{gw.http}/api/chat?chatId={chat}&accessCode=test-access-code&v=2"
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            others = [_CountingReader() for _ in range(readers)]
            tasks = [asyncio.create_task(r.run(session, url)) for r in others]
            await h.until(lambda: _all_open(others), within=30, what="every reader to connect")
            await h.log.append_chunk(chat, "fanout", "warm-up")
            await asyncio.sleep(0.5)
            rss_before = _rss_mb(gw.pid)
            stalled = await open_stalled_socket(gw.http, chat)
            rss_peak = rss_before
            disconnected_after: int | None = None
            pad = "x" * event_bytes
            interval = 1 / rate
            next_at = time.monotonic()
            for n in range(events):
                await h.log.append_chunk(chat, "fanout", pad)
                if n % 25 == 0:
                    rss_peak = max(rss_peak, _rss_mb(gw.pid))
                    if disconnected_after is None and await _slow_consumers(gw.http) > 0:
                        disconnected_after = n
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            wanted = [e.event_id for e in await h.events(chat)]
            await h.until(lambda: _all_received(others, len(wanted)), within=30, what="every frame")
            if disconnected_after is None and await _slow_consumers(gw.http) > 0:
                disconnected_after = events
            code, end = await stalled.drain()
            await asyncio.sleep(1.0)
            rss_after = _rss_mb(gw.pid)
            exact = lost = dups = 0
            for reader in others:
                seen = set(reader.ids)
                missing = sum(1 for i in wanted if i not in seen)
                lost += missing
                dups += len(reader.ids) - len(seen)
                exact += missing == 0 and len(reader.ids) == len(seen)
            for reader in others:
                if reader.ws is not None:
                    await reader.ws.close()
            await asyncio.gather(*tasks, return_exceptions=True)
        return SlowReader(
            readers=readers,
            events=events,
            event_bytes=event_bytes,
            queue_size=queue_size,
            stalled_close=code,
            stalled_end=end,
            stalled_disconnected_after_events=disconnected_after,
            readers_exact=exact,
            readers_lost=lost,
            readers_duplicates=dups,
            readers_disconnected=sum(1 for r in others if r.closed not in (None, 1000)),
            rss_before_mb=rss_before,
            rss_peak_mb=rss_peak,
            rss_after_mb=rss_after,
        )


async def _all_open(readers: list[_CountingReader]) -> bool:
    return all(r.ws is not None for r in readers)


async def _all_received(readers: list[_CountingReader], count: int) -> bool:
    return all(len(r.ids) >= count for r in readers)


async def _slow_consumers(port: int) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("terrarium_slow_consumers_total "):
            return float(line.split()[1])
    return 0.0
