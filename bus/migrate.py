"""Move one Redis from its key layout to another: ``terrarium-ops layout migrate``.

Whatever layout the data is in (legacy, or partitioned with any number of partitions, or a
mix left by an interrupted run), every chat key is renamed (RENAME keeps its TTL) to its name
in the target layout, and every job is moved to its chat's partition in the target layout:
jobs waiting in the clients' lanes or in a jobs stream, and jobs delivered to a worker and
not acked (their workers are gone: the migration refuses to run while one is alive), are
added to the target partition's jobs stream as jobs no worker has taken yet, in their order;
dead letters move to the target partition's dead-letter stream. Each job and each dead letter
moves in one script (added there, removed here), so an interrupted run loses nothing and
a second run finishes the work; a run over migrated data changes nothing. Keys of the old
layout's queue and streams are deleted once empty. Finished jobs not yet trimmed are dropped
with their stream. One Redis only: a cluster starts partitioned and is not migrated.

Jobs moved this way skip the clients' lanes (they are served first) and start a new delivery
count; the clients' byte budgets of the old layout are dropped with its queue keys.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bus.errors import BusError, translates_redis_errors
from bus.keys import BusKeys, is_valid_chat_id
from bus.schemas import decode_job

__all__ = ["LayoutMigration", "MigrationReport", "WorkersAlive"]

#: Move one stream entry to another stream (and ack it in the source's group).
#: KEYS: source, target. ARGV: entry id, group -> 1 moved, 0 gone
_MOVE_ENTRY = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1]
if not entry then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(entry[2]))
redis.pcall('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""

#: Move one job from a client's lane to a jobs stream, keeping the lane's counters true.
#: KEYS: lane, its queue's waiting counter, its queue's ring, target stream.
#: ARGV: the job, the client's tag -> 1 moved, 0 gone
_MOVE_LANE_JOB = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[4], '*', 'd', ARGV[1])
if tonumber(redis.call('DECR', KEYS[2])) < 0 then redis.call('SET', KEYS[2], 0) end
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[3], ARGV[2]) end
return 1
"""

_PAGE = 500
_CHAT_PARTS = ("events", "messages", "meta", "replies", "lease", "cancel", "memory")


class WorkersAlive(BusError):
    """Workers are running: their jobs cannot be moved under them."""

    def __init__(self, workers: list[str]) -> None:
        super().__init__(
            f"{len(workers)} worker(s) alive ({', '.join(workers[:5])}): stop every worker "
            "and gateway first"
        )
        self.workers = workers


@dataclass(slots=True)
class MigrationReport:
    """What a migration moved (or, in a dry run, would move)."""

    target: BusKeys
    dry_run: bool
    chats: set[str] = field(default_factory=set)
    chat_keys: int = 0
    #: Jobs moved, by where they were: ``lane``, ``stream`` (not delivered), ``pending``.
    jobs: Counter[str] = field(default_factory=Counter)
    #: Jobs moved, by target partition.
    into: Counter[int] = field(default_factory=Counter)
    dead_letters: int = 0
    #: Clients' byte budget counters (CLIENT_BYTES_PER_DAY) moved.
    budgets: int = 0
    #: Finished jobs (acked, not yet trimmed) dropped with their old stream.
    finished: int = 0
    removed: list[str] = field(default_factory=list)
    #: Keys left alone: their target name exists already, or their kind is unknown.
    left: list[str] = field(default_factory=list)
    #: The layouts the moved data came from (``legacy``, ``partitioned``).
    sources: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        """Whether anything was (or would be) moved or removed."""
        return bool(
            self.chat_keys or self.jobs or self.dead_letters or self.budgets or self.removed
        )


def _chat_key(prefix: str, name: str) -> tuple[str, str, str] | None:
    """``(chat_id, part, layout)`` of a chat key in either layout; ``part`` as the legacy
    layout spells it after the tag (``events``, ``idem:<cmid>``, ``rl:<window>``)."""
    head = f"{prefix}:chat:{{"
    if not name.startswith(head):
        return None
    tag, sep, rest = name[len(head) :].partition("}:")
    if not sep:
        return None
    if "." not in tag:  # legacy: the tag is the chat id (ids have no dots, tags do)
        return (tag, rest, "legacy") if is_valid_chat_id(tag) else None
    if rest.startswith("idem:"):
        chat_id, _, cmid = rest[len("idem:") :].partition(":")
        part = f"idem:{cmid}"
    else:
        part, _, chat_id = rest.rpartition(":")
    return (chat_id, part, "partitioned") if is_valid_chat_id(chat_id) and part else None


def _chat_name(keys: BusKeys, chat_id: str, part: str) -> str | None:
    """The name of a chat's ``part`` key in ``keys``' layout (``None``: unknown part)."""
    if part in _CHAT_PARTS:
        return str(getattr(keys, f"chat_{part}")(chat_id))
    if part.startswith("idem:"):
        return keys.chat_idempotency(chat_id, part[len("idem:") :])
    if part == "rl":
        return keys.chat_budget(chat_id)
    if re.fullmatch(r"rl:\d+", part):
        return keys.chat_rate(chat_id, int(part[len("rl:") :]))
    return None


@translates_redis_errors
class LayoutMigration:
    """Moves the data of one Redis (one key prefix) to the layout of ``target``."""

    def __init__(self, redis: Redis, target: BusKeys) -> None:
        if target.cluster:
            raise ValueError("a layout migration runs on one Redis, not on a cluster")
        self.redis = redis
        self.target = target
        self.prefix = target.prefix
        self._move_entry = redis.register_script(_MOVE_ENTRY)
        self._move_lane_job = redis.register_script(_MOVE_LANE_JOB)
        t = target
        self._streams = {t.jobs_stream(p): p for p in t.partitions}
        self._dead = {t.dead_letters_stream(p): p for p in t.partitions}
        self._queues = {t.queue_ring(p).removesuffix("ring"): p for p in t.partitions}

    async def alive_workers(self) -> list[str]:
        """Workers whose liveness key is present (names)."""
        head = f"{self.prefix}:workers:alive:"
        return sorted([str(k)[len(head) :] async for k in self.redis.scan_iter(match=f"{head}*")])

    async def run(self, *, dry_run: bool = False) -> MigrationReport:
        """Migrate (or, with ``dry_run``, only count); raises :class:`WorkersAlive`."""
        alive = await self.alive_workers()
        if alive:
            raise WorkersAlive(alive)
        report = MigrationReport(self.target, dry_run)
        await self._chats(report)
        await self._budgets(report)
        streams, dead, queues = await self._job_keys()
        for stream in streams:
            await self._jobs_stream(stream, report)
        for queue in queues:
            await self._queue(queue, report)
        for stream in dead:
            await self._dead_letters(stream, report)
        if not dry_run:
            await self._ensure_groups()
        return report

    def _target_partition(self, raw: str) -> int:
        try:
            return self.target.partition_of(decode_job(raw).chat_id)
        except BusError:
            return 0  # a malformed job: its dead letter is read in partition 0

    async def _chats(self, report: MigrationReport) -> None:
        async for raw in self.redis.scan_iter(match=f"{self.prefix}:chat:*", count=1000):
            name = str(raw)
            parsed = _chat_key(self.prefix, name)
            target = _chat_name(self.target, parsed[0], parsed[1]) if parsed else None
            if parsed is None or target is None:
                report.left.append(name)
                continue
            if target == name:
                continue
            chat_id, _, layout = parsed
            if report.dry_run or await self.redis.renamenx(name, target):
                report.chats.add(chat_id)
                report.chat_keys += 1
                report.sources.add(layout)
            else:
                report.left.append(name)  # both exist: left for an operator to look at

    async def _budgets(self, report: MigrationReport) -> None:
        """Each client's byte counter: beside its lane (legacy), or one per client."""
        queue = f"{self.prefix}:queue:"
        found: list[tuple[str, str]] = []
        async for raw in self.redis.scan_iter(match=f"{queue}lane:*:bytes", count=1000):
            found.append((str(raw), str(raw)[len(f"{queue}lane:") : -len(":bytes")]))
        async for raw in self.redis.scan_iter(match=f"{queue}bytes:{{*}}", count=1000):
            found.append((str(raw), str(raw)[len(f"{queue}bytes:{{") : -1]))
        for name, tag in found:
            target = self.target.client_bytes(tag)
            if target == name or not re.fullmatch(r"[0-9a-f]+", tag):
                continue
            if report.dry_run or await self.redis.renamenx(name, target):
                report.budgets += 1
                report.sources.add(_layout(name.removeprefix(queue + "bytes:")))

    async def _job_keys(self) -> tuple[list[str], list[str], list[str]]:
        """Jobs streams, dead-letter streams and queue prefixes of every layout found."""
        streams: set[str] = set()
        dead: set[str] = set()
        queues: set[str] = set()
        jobs_head, queue_head = f"{self.prefix}:jobs", f"{self.prefix}:queue:"
        async for raw in self.redis.scan_iter(match=f"{jobs_head}*", count=1000):
            name = str(raw)
            rest = name[len(jobs_head) :]
            if rest in ("", ":dead") or re.fullmatch(r":\{[^}]*\}(:dead)?", rest):
                (dead if rest.endswith(":dead") else streams).add(name)
        async for raw in self.redis.scan_iter(match=f"{queue_head}*", count=1000):
            rest = str(raw)[len(queue_head) :]
            match = re.match(r"\{[^}]*\}:", rest)
            queues.add(queue_head + (match.group(0) if match else ""))
        return sorted(streams), sorted(dead), sorted(queues)

    async def _entries(self, stream: str) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        start = "-"
        while True:
            page = await self.redis.xrange(stream, min=start, count=_PAGE)
            out += [(str(eid), fields) for eid, fields in page]
            if len(page) < _PAGE:
                return out
            start = f"({page[-1][0]}"

    async def _delivery(self, stream: str) -> tuple[str | None, set[str]]:
        """The group's last delivered id (``None``: no group) and its pending ids."""
        group = self.target.jobs_group
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return None, set()
        info = next((g for g in groups if str(g["name"]) == group), None)
        if info is None:
            return None, set()
        rows = await self.redis.xpending_range(stream, group, min="-", max="+", count=100_000)
        return str(info["last-delivered-id"]), {str(r["message_id"]) for r in rows}

    async def _jobs_stream(self, stream: str, report: MigrationReport) -> None:
        delivered, pending = await self._delivery(stream)
        stays = stream in self._streams
        for entry_id, fields in await self._entries(stream):
            partition = self._target_partition(str(fields.get("d", "")))
            target = self.target.jobs_stream(partition)
            if target == stream:
                continue
            kind = "pending" if entry_id in pending else "stream"
            if kind == "stream" and delivered is not None and _le(entry_id, delivered):
                report.finished += 1  # acked, waiting to be trimmed: done
                continue
            if report.dry_run or await self._move_entry(
                keys=[stream, target], args=[entry_id, self.target.jobs_group]
            ):
                report.jobs[kind] += 1
                report.into[partition] += 1
                report.sources.add(_layout(stream))
        if not stays:
            await self._remove([stream], report)

    async def _queue(self, queue: str, report: MigrationReport) -> None:
        names = sorted([str(k) async for k in self.redis.scan_iter(match=f"{queue}*", count=1000)])
        if queue == f"{self.prefix}:queue:":  # legacy: skip the partitioned layouts' keys
            names = [n for n in names if "{" not in n[len(queue) :]]
        lane_head = f"{queue}lane:"
        lanes = [
            n for n in names if n.startswith(lane_head) and not n.endswith((":served", ":bytes"))
        ]
        for lane in lanes:
            client = lane[len(lane_head) :]
            for raw in await self.redis.lrange(lane, 0, -1):  # type: ignore[misc]
                partition = self._target_partition(str(raw))
                target = self.target.jobs_stream(partition)
                if self._queues.get(queue) == partition:
                    continue  # already in its partition's lane
                if report.dry_run or await self._move_lane_job(
                    keys=[lane, f"{queue}waiting", f"{queue}ring", target], args=[raw, client]
                ):
                    report.jobs["lane"] += 1
                    report.into[partition] += 1
                    report.sources.add(_layout(queue))
        if queue not in self._queues:
            await self._remove(names, report)

    async def _dead_letters(self, stream: str, report: MigrationReport) -> None:
        for entry_id, fields in await self._entries(stream):
            target = self.target.dead_letters_stream(
                self._target_partition(str(fields.get("d", "")))
            )
            if target == stream:
                continue
            if report.dry_run or await self._move_entry(
                keys=[stream, target], args=[entry_id, self.target.jobs_group]
            ):
                report.dead_letters += 1
                report.sources.add(_layout(stream))
        if stream not in self._dead:
            await self._remove([stream], report)

    async def _remove(self, names: list[str], report: MigrationReport) -> None:
        if not names:
            return
        report.removed += names
        if not report.dry_run:
            await self.redis.delete(*names)

    async def _ensure_groups(self) -> None:
        for stream in self._streams:
            try:
                await self.redis.xgroup_create(
                    stream, self.target.jobs_group, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise


def _le(a: str, b: str) -> bool:
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) <= (int(bms), int(bseq or 0))


def _layout(name: str) -> str:
    return "partitioned" if re.search(r"\{[^}]*\}", name) else "legacy"
