"""One run of the guarantee checker: start the rig, drive the fleet through its phases while
injecting faults, wait on observable barriers, then snapshot Redis and check.

Phases: (1) old chats answered before any socket opens; (2) a burst of sockets on new chats,
each posting right after its handshake, plus sockets on the old chats (from ``0-0`` and from
the handshake); (3) rounds of churn: posts (with and without ``clientMessageId``, some sent
twice), random drops and resumes, and one fault per round; (4) every accepted message
answered and every socket caught up, or the deadline; then the checks.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.chatlog import EventRecord
from bus.schemas import EVENT_TYPES_V1, render_frame
from tests.guarantees.checker import (
    ChatSnapshot,
    Findings,
    JobsSnapshot,
    Takeover,
    check_process_log,
    check_run,
)
from tests.guarantees.fleet import KINDS, Fleet, Post, Socket
from tests.guarantees.plan import Fault, Plan
from tests.guarantees.rig import KEYS, REDIS_DOWN, Rig
from tests.support.wait import wait_until

__all__ = ["Activity", "Outcome", "run_plan"]

#: A reply long enough to be mid-stream when its worker is killed (pieces).
_LONG_REPLY_TOKENS = 400
#: Messages posted concurrently while building a backlog.
_BACKLOG_BATCH = 50


@dataclass
class Activity:
    """What the run did (the first half of the report)."""

    faults: Counter[str] = field(default_factory=Counter)
    drops: int = 0
    repeats: int = 0
    backlog_posted: int = 0
    backlog_refused: int = 0
    takeovers: list[Takeover] = field(default_factory=list)
    #: ``(phase, seconds)`` in order.
    phases: list[tuple[str, float]] = field(default_factory=list)
    #: Barriers that ran out of time (their violations show in the checks).
    timeouts: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """A finished run: the plan, what it did, what it found."""

    plan: Plan
    activity: Activity
    findings: Findings
    sockets: list[Socket]
    posts: list[Post]
    chats: int
    events: int
    seconds: float


@dataclass
class _Kill:
    chat_id: str
    worker: str
    at_ms: int


class _Run:
    """The state of one run while it is driven."""

    def __init__(self, plan: Plan, rig: Rig) -> None:
        self.plan = plan
        self.rig = rig
        self.rng = random.Random(plan.seed)
        self.fleet = Fleet(self.rng, rig.ports)
        self.activity = Activity()
        self.chat_ids: list[str] = []
        self.followed: list[str] = []  # chats with at least one socket
        self.kills: list[_Kill] = []
        #: Sockets behind their chat's log at the last catch-up probe.
        self.behind: list[str] = []
        self._serial = 0

    # --- helpers -----------------------------------------------------------------------------

    def new_chat(self) -> str:
        self._serial += 1
        chat_id = f"g{self.plan.seed}-{self._serial}-{self.rng.getrandbits(32):08x}"
        self.chat_ids.append(chat_id)
        return chat_id

    def content(self, tokens: int | None = None, directive: str = "") -> str:
        return self.fleet.ledger.content(self.plan.tokens if tokens is None else tokens, directive)

    async def phase(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        started = time.monotonic()
        self.fleet.phase = name
        await body()
        self.activity.phases.append((name, round(time.monotonic() - started, 1)))

    async def barrier(self, probe: Any, within: float, what: str) -> bool:
        """Wait for ``probe``; on timeout note it and go on (the checks will say what broke)."""
        try:
            await wait_until(probe, within, what, interval=0.2, ignore=REDIS_DOWN)
        except TimeoutError:
            self.activity.timeouts.append(what)
            return False
        return True

    async def unanswered(self) -> int:
        """Visitor messages stored in the run's chats that have no reply yet."""
        pipe = self.rig.redis.pipeline(transaction=False)
        for chat_id in self.chat_ids:
            pipe.xlen(KEYS.chat_messages(chat_id))
            pipe.hlen(KEYS.chat_replies(chat_id))
        counts = await pipe.execute()
        total = 0
        for messages, replies in zip(counts[::2], counts[1::2], strict=True):
            total += max(0, int(messages) - 2 * int(replies))
        return total

    async def all_answered(self) -> bool:
        return await self.unanswered() == 0

    async def streaming(self, chat_id: str) -> bool:
        return bool(await self.rig.redis.hexists(KEYS.chat_meta(chat_id), "streaming"))  # type: ignore[misc]

    # --- phases ------------------------------------------------------------------------------

    async def old_chats(self) -> None:
        chats = [self.new_chat() for _ in range(self.plan.old_chats)]
        await asyncio.gather(
            *(self.fleet.post(c, self.content(), with_client_id=True) for c in chats)
        )
        await self.barrier(self.all_answered, self.plan.answers_within, "old chats answered")

    async def burst(self) -> None:
        """Many sockets at once on new chats, each posting right after its handshake (#1)."""
        gateways = len(self.rig.ports)
        jobs: list[Awaitable[Any]] = []
        new = [self.new_chat() for _ in range(self.plan.burst_chats)]
        for index, chat_id in enumerate(new):
            kind = KINDS[index % len(KINDS)]
            with_id = self.rng.random() < self.plan.client_id_share
            jobs.append(self._open_and_post(chat_id, kind, index % gateways, with_id))
        for index in range(self.plan.burst_second_sockets):
            chat_id = new[self.rng.randrange(len(new))]
            kind = KINDS[self.rng.randrange(len(KINDS))]
            jobs.append(self.fleet.open(chat_id, kind, first_port=(index + 1) % gateways))
        old = self.chat_ids[: self.plan.old_chats]
        for index, chat_id in enumerate(old):
            kind = KINDS[index % len(KINDS)]
            after = "0-0" if index % 2 == 0 else None
            jobs.append(self.fleet.open(chat_id, kind, after=after, first_port=index % gateways))
        self.followed = [*new, *old]
        await asyncio.gather(*jobs)

    async def _open_and_post(self, chat_id: str, kind: Any, port: int, with_id: bool) -> None:
        content = self.content()
        await self.fleet.open(chat_id, kind, first_port=port)
        await self.fleet.post(chat_id, content, with_client_id=with_id, port_index=port)

    async def churn(self) -> None:
        for round_index in range(self.plan.rounds):
            fault = self.plan.faults[round_index % len(self.plan.faults)]
            self.fleet.phase = f"round {round_index + 1} ({fault.value})"
            await self.churn_round(fault)
        self.fleet.phase = "settle"

    async def churn_round(self, fault: Fault) -> None:
        if fault == Fault.AGENT_STOPPED:
            await self.stop_agent_mid_answer()
        posts = self._round_posts()
        if fault != Fault.AGENT_STOPPED:
            await self.barrier(self._any_streaming, 5, "a reply streaming before the fault")
        self.activity.drops += await self.fleet.drop_some(self.plan.drop_share)
        if fault == Fault.AGENT_STOPPED:
            # The outage lasts this long by definition; posts above land inside it.
            await asyncio.sleep(self.plan.agent_down_seconds)
            await self.rig.start_agent()
        else:
            await self.inject(fault)
        done = await asyncio.gather(*posts)
        repeat = [p for p in done if p.client_message_id and p.accepted]
        for post in repeat[:3]:
            await self.fleet.repeat(post)
            self.activity.repeats += 1

    def _round_posts(self) -> list[asyncio.Task[Post]]:
        tasks = []
        for _ in range(self.plan.posts_per_round):
            chat_id = self.followed[self.rng.randrange(len(self.followed))]
            with_id = self.rng.random() < self.plan.client_id_share
            coro = self.fleet.post(chat_id, self.content(), with_client_id=with_id)
            tasks.append(asyncio.create_task(coro))
        return tasks

    async def _any_streaming(self) -> bool:
        pipe = self.rig.redis.pipeline(transaction=False)
        for chat_id in self.followed:
            pipe.hexists(KEYS.chat_meta(chat_id), "streaming")
        return any(await pipe.execute())

    # --- faults ------------------------------------------------------------------------------

    async def inject(self, fault: Fault) -> None:
        self.activity.faults[fault.value] += 1
        if fault in (Fault.GATEWAY_SIGKILL, Fault.GATEWAY_SIGTERM):
            index = self.rng.randrange(len(self.rig.gateways))
            sig = signal.SIGKILL if fault == Fault.GATEWAY_SIGKILL else signal.SIGTERM
            await self.rig.stop_gateway(index, sig)
            await self.rig.start_gateway(index)
        elif fault == Fault.WORKER_SIGKILL:
            await self.kill_worker_mid_answer()
        elif fault == Fault.WORKER_SIGTERM:
            names = sorted(self.rig.workers)
            await self.rig.stop_worker(names[self.rng.randrange(len(names))], signal.SIGTERM)
            await self.rig.start_worker()
        elif fault == Fault.REDIS_RESTART:
            await self.rig.restart_redis()
        elif fault == Fault.AGENT_FAILS_ONE:
            await self.fail_one_message()
        elif fault == Fault.BACKLOG:
            await self.backlog()

    async def kill_worker_mid_answer(self) -> None:
        """SIGKILL the worker streaming a long reply; a new worker (new name) starts (#7)."""
        chat_id = self.new_chat()
        self.followed.append(chat_id)
        await self.fleet.open(chat_id, "ws-v2")
        await self.fleet.post(chat_id, self.content(_LONG_REPLY_TOKENS), with_client_id=True)
        streaming = await self.barrier(
            lambda: self.streaming(chat_id), 60, "the long reply streaming"
        )
        owner = await self.rig.lease_owner(chat_id) if streaming else None
        if owner is None or owner not in self.rig.workers:
            # Nothing to kill mid-answer: say so rather than count a fault that never happened.
            self.activity.faults[Fault.WORKER_SIGKILL.value] -= 1
            self.activity.faults[f"{Fault.WORKER_SIGKILL.value} (skipped, no reply streaming)"] += 1
            return
        self.kills.append(_Kill(chat_id, owner, int(time.time() * 1000)))
        await self.rig.stop_worker(owner, signal.SIGKILL)
        await self.rig.start_worker()

    async def stop_agent_mid_answer(self) -> None:
        """Stop the agent while a long reply streams: it must wait and start again (#9)."""
        chat_id = self.new_chat()
        self.followed.append(chat_id)
        await self.fleet.open(chat_id, "ws-v2")
        await self.fleet.post(chat_id, self.content(_LONG_REPLY_TOKENS), with_client_id=True)
        streaming = await self.barrier(
            lambda: self.streaming(chat_id), 60, "the long reply streaming"
        )
        await self.rig.stop_agent()
        label = Fault.AGENT_STOPPED.value
        self.activity.faults[label if streaming else f"{label} (no reply streaming)"] += 1

    async def fail_one_message(self) -> None:
        """The agent fails one message; others posted right after must be tried (#3)."""
        chat_id = self.followed[self.rng.randrange(len(self.followed))]
        post = await self.fleet.post(
            chat_id,
            self.content(directive="[[demo:http=500]]"),
            with_client_id=True,
            poisoned=True,
        )
        if post.message_id is not None:
            await self.barrier(
                lambda: self.rig.redis.hexists(KEYS.chat_replies(chat_id), post.message_id),
                20,
                "the failing message's outcome",
            )
        others = [c for c in self.followed if c != chat_id]
        chosen = [others[self.rng.randrange(len(others))] for _ in range(self.plan.bystanders)]
        await asyncio.gather(
            *(self.fleet.post(c, self.content(), with_client_id=True) for c in chosen)
        )

    async def backlog(self) -> None:
        """With no worker running, post past the jobs cap; nothing accepted may be lost (#2)."""
        for name in sorted(self.rig.workers):
            await self.rig.stop_worker(name, signal.SIGTERM)
        cap = self.plan.jobs_cap or 10_000
        total = cap + self.plan.backlog_extra
        chats = [self.new_chat() for _ in range(max(1, total // 10))]
        posted: list[Post] = []
        for start in range(0, total, _BACKLOG_BATCH):
            batch = [
                self.fleet.post(
                    chats[i % len(chats)],
                    self.content(1),
                    with_client_id=False,
                    port_index=i,
                )
                for i in range(start, min(total, start + _BACKLOG_BATCH))
            ]
            posted.extend(await asyncio.gather(*batch))
        self.activity.backlog_posted += len(posted)
        self.activity.backlog_refused += sum(1 for p in posted if not p.accepted)
        await asyncio.gather(*(self.rig.start_worker() for _ in range(self.plan.workers)))

    # --- the end -----------------------------------------------------------------------------

    async def settle(self) -> None:
        await self.barrier(
            self.all_answered, self.plan.answers_within, "every stored message answered"
        )
        if not await self.barrier(
            self.caught_up, self.plan.catch_up_within, "every socket caught up"
        ):
            self.activity.timeouts[-1] += f" ({len(self.behind)} behind, e.g. {self.behind[:2]})"

    async def caught_up(self) -> bool:
        pipe = self.rig.redis.pipeline(transaction=False)
        chats = sorted({s.chat_id for s in self.fleet.sockets})
        for chat_id in chats:
            pipe.xrevrange(KEYS.chat_events(chat_id), count=50)
        tails = dict(zip(chats, await pipe.execute(), strict=True))
        behind = []
        for socket in self.fleet.sockets:
            want = _last_visible(tails[socket.chat_id], socket.v2)
            if want is None or socket.last_event_id == want:
                continue
            done_ms = socket.handshake_done_ms()
            quiet_since_handshake = done_ms is not None and int(want.split("-")[0]) <= done_ms
            if socket.last_event_id is None and quiet_since_handshake:
                continue  # nothing happened in the chat since this stream began
            behind.append(
                f"{socket.kind} on {socket.chat_id} at {socket.last_event_id}, log at {want}"
            )
        self.behind = behind
        return not behind

    async def snapshot(self) -> tuple[dict[str, ChatSnapshot], JobsSnapshot]:
        chats: dict[str, ChatSnapshot] = {}
        redis = self.rig.redis
        for chat_id in self.chat_ids:
            entries = await redis.xrange(KEYS.chat_events(chat_id))
            events = [EventRecord(str(eid), f["d"]) for eid, f in entries]
            stored = await redis.xrange(KEYS.chat_messages(chat_id))
            messages = [render_frame(f["d"], str(eid)) for eid, f in stored]
            epoch, state = await redis.hmget(KEYS.chat_meta(chat_id), ["epoch", "state"])  # type: ignore[misc]
            state_name = json.loads(state).get("state") if state else None
            chats[chat_id] = ChatSnapshot(chat_id, events, messages, epoch, state_name)
        pending = await redis.xpending_range(KEYS.jobs_stream(0), KEYS.jobs_group, "-", "+", 10_000)
        dead = [dict(f) for _, f in await redis.xrange(KEYS.dead_letters_stream(0))]
        queued: set[str] = set()
        for _, fields in await redis.xrange(KEYS.jobs_stream(0)):
            job = json.loads(fields.get("d", "{}"))
            queued.add(str(job.get("messageId") or job.get("message_id")))
        jobs = JobsSnapshot([str(row["message_id"]) for row in pending], dead, queued)
        return chats, jobs

    async def takeovers(self, chats: dict[str, ChatSnapshot]) -> list[Takeover]:
        found = []
        for kill in self.kills:
            seconds = None
            for event in chats[kill.chat_id].events:
                ms = int(event.event_id.split("-")[0])
                if ms > kill.at_ms and event.type in ("streamReset", "message"):
                    seconds = round((ms - kill.at_ms) / 1000, 2)
                    break
            found.append(Takeover(kill.chat_id, kill.worker, seconds))
        return found


def _last_visible(tail: list[tuple[str, dict[str, str]]], v2: bool) -> str | None:
    """The newest event id a socket of that version receives, from ``XREVRANGE`` entries."""
    for event_id, fields in tail:
        kind = str(json.loads(fields["d"]).get("type", "message"))
        if v2 or kind in EVENT_TYPES_V1 or kind == "streamReset":
            return str(event_id)
    return None


def _write_evidence(
    path: Path,
    findings: Findings,
    sockets: list[Socket],
    chats: dict[str, ChatSnapshot],
    behind: list[str],
) -> None:
    """Frames and logs of the chats with a violation or a socket behind, for a closer look."""
    flagged = {v.chat_id for v in findings.violations} | {b.split()[2] for b in behind}
    body = {
        "violations": [
            {"kind": v.kind, "chat": v.chat_id, "detail": v.detail} for v in findings.violations
        ],
        "chats": {
            chat_id: {
                "log": [[e.event_id, e.type] for e in chats[chat_id].events],
                "epoch": chats[chat_id].epoch,
                "sockets": [
                    {
                        "kind": s.kind,
                        "after": s.after,
                        "last": s.last_event_id,
                        "fresh_starts": [round(t, 3) for t in s.fresh_starts],
                        "drops": s.drops,
                        "connects": [[n, round(at, 3)] for n, at in s.connects],
                        "closes": [[n, str(c), round(at, 3)] for n, c, at in s.closes],
                        "frames": [
                            [f.event_id, f.type, f.connection, round(f.at, 3)] for f in s.frames
                        ],
                    }
                    for s in sockets
                    if s.chat_id == chat_id
                ],
            }
            for chat_id in sorted(flagged & set(chats))
        },
    }
    path.write_text(json.dumps(body, indent=1))


async def run_plan(plan: Plan, workdir: Path) -> Outcome:
    """Run ``plan`` on fresh processes under ``workdir``; the processes are gone on return."""
    started = time.monotonic()
    rig = Rig(workdir, plan)
    try:
        await rig.start()
        state = _Run(plan, rig)
        try:
            await state.phase("old chats", state.old_chats)
            await state.phase("burst", state.burst)
            await state.phase("churn", state.churn)
            await state.phase("settle", state.settle)
        finally:
            await state.fleet.close()
        chats, jobs = await state.snapshot()
        state.activity.takeovers = await state.takeovers(chats)
        findings = check_run(
            chats,
            state.fleet.sockets,
            state.fleet.ledger.posts,
            jobs,
            state.activity.takeovers,
            plan.takeover_limit_seconds,
        )
        for gateway in rig.gateways:
            check_process_log(gateway.name, gateway.output(), findings)
        _write_evidence(
            workdir / "evidence.json", findings, state.fleet.sockets, chats, state.behind
        )
        return Outcome(
            plan=plan,
            activity=state.activity,
            findings=findings,
            sockets=state.fleet.sockets,
            posts=state.fleet.ledger.posts,
            chats=len(chats),
            events=sum(len(c.events) for c in chats.values()),
            seconds=round(time.monotonic() - started, 1),
        )
    except BaseException:
        print(rig.dump_logs())
        raise
    finally:
        await rig.close()
