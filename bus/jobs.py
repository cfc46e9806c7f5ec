"""The jobs streams and their consumer group, fed round robin from the clients' lanes.

Guarantees: a job is delivered at least once. It stays in the group's pending list until
acked; a job whose consumer stops renewing it (died) can be reclaimed by another consumer
after ``min_idle_ms``, and one whose consumer stopped gracefully (:meth:`JobQueue.release`)
at the next sweep; a consumer never renews a job another one reclaimed; after
``max_deliveries`` deliveries it is moved to the dead-letter stream with a reason instead
of being retried forever. Jobs are enqueued by
:meth:`bus.chatlog.ChatLog.accept_visitor_message` in the same round trip as the message,
into the client's lane; :meth:`JobQueue.take` moves them into the stream one client at a
time (see :data:`bus.scripts.ACCEPT`), so one client's backlog delays another visitor by
about one job. Lane to stream is one atomic step: a job is always in exactly one of them.

Partitioned layout (``REDIS_PARTITIONS`` > 1 or a cluster): each partition has its own
lanes, ring, jobs stream, group and dead letters (one hash tag, one slot). A job lives and
dies in its chat's partition: a :class:`Delivery` knows it, and every verb on a job runs
there. :meth:`JobQueue.take` walks the partitions round robin from a rotating start, so a
flood in one partition delays another's jobs by at most one take per partition. Blocking
reads: :mod:`bus.job_reads`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bus import scripts
from bus.chatlog import parse_id
from bus.errors import SchemaError, translates_redis_errors
from bus.job_reads import BlockingReads
from bus.keys import BusKeys
from bus.schemas import AnswerMessage, decode_job, iso_now

__all__ = ["RELEASE_IDLE_MS", "Delivery", "JobQueue", "JobRef"]

#: Idle time given to released jobs: far beyond any ``min_idle_ms``, well below "now"
#: (XCLAIM treats an IDLE that reaches before the epoch as zero).
RELEASE_IDLE_MS = 24 * 3600 * 1000


#: Give jobs this consumer was handed and will not run back to the group as new entries
#: (each still pending under it is acked and its fields added again at the end of the
#: stream), so a blocking read of any consumer wakes for them at once; a job handed back by
#: :data:`bus.scripts.JOBS_RELEASE` waits for the next reclaim sweep instead.
#: KEYS: jobs. ARGV: group, consumer, ids... -> number given back
JOBS_GIVE_BACK = """
local n = 0
for i = 3, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if row and row[2] == ARGV[2] then
    local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])[1]
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    if entry then
      redis.call('XADD', KEYS[1], '*', unpack(entry[2]))
      n = n + 1
    end
  end
end
return n
"""


class JobRef(NamedTuple):
    """Where one delivered job is pending: its partition and its entry id there."""

    partition: int
    entry_id: str


def _fields(flat: list[Any]) -> dict[str, str]:
    """A stream entry's fields from Lua's flat ``[name, value, ...]`` list."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a job to this consumer. ``job`` is ``None`` for a malformed entry."""

    entry_id: str
    raw: str
    job: AnswerMessage | None
    deliveries: int = 1
    error: str | None = None
    #: The partition whose stream holds the job (0 in the legacy layout).
    partition: int = 0

    @property
    def ref(self) -> JobRef:
        """The job's :class:`JobRef` (unique across partitions, unlike ``entry_id``)."""
        return JobRef(self.partition, self.entry_id)


def _to_delivery(
    entry_id: str, fields: dict[str, str] | None, deliveries: int = 1, partition: int = 0
) -> Delivery:
    raw = (fields or {}).get("d", "")
    try:
        return Delivery(entry_id, raw, decode_job(raw), deliveries, partition=partition)
    except SchemaError as exc:
        return Delivery(entry_id, raw, None, deliveries, str(exc), partition)


def _by_partition(refs: Iterable[JobRef]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {}
    for partition, entry_id in refs:
        groups.setdefault(partition, []).append(entry_id)
    return groups


@translates_redis_errors
class JobQueue:
    """Consumer-side verbs on the jobs streams, for one named consumer.

    The per-job verbs take the job's ``partition`` (a :class:`Delivery`'s); the ``*_refs``
    verbs work on :class:`JobRef` lists spanning partitions. ``per_partition_reads``
    forces (or forbids) one blocking read per partition (default: on a cluster only).
    """

    def __init__(
        self,
        redis: Redis,
        keys: BusKeys,
        consumer: str,
        *,
        per_partition_reads: bool | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.partitions = list(keys.partitions)
        self._start = random.randrange(len(self.partitions))
        self._touch = redis.register_script(scripts.JOBS_TOUCH)
        self._release = redis.register_script(scripts.JOBS_RELEASE)
        self._ack = redis.register_script(scripts.JOBS_ACK)
        self._dead_letter = redis.register_script(scripts.JOBS_DEAD_LETTER)
        self._take_over = redis.register_script(scripts.JOBS_TAKE_OVER)
        self._take = redis.register_script(scripts.JOBS_TAKE)
        self._give_back = redis.register_script(JOBS_GIVE_BACK)
        per_partition = keys.cluster if per_partition_reads is None else per_partition_reads
        #: Jobs handed to the caller and not yet acked, dead-lettered, released or lost:
        #: a pending job of this consumer that is not here was delivered to no one. Kept
        #: only with per-partition reads (the only ones stopped while in flight).
        self._handed: set[JobRef] = set()
        self._tracking = per_partition
        #: Partitions a read delivered from since: each owes one job ready again, so the
        #: next idle worker's blocking read wakes (paid by the next take or :meth:`refill`).
        self._owed: set[int] = set()
        self._reads = BlockingReads(
            redis,
            keys,
            consumer,
            per_partition=per_partition,
            seen=lambda replies: self._note(JobRef(p, e) for p, e, _ in replies),
            orphans=self._release_orphans,
            release=lambda replies: self.give_back(JobRef(p, e) for p, e, _ in replies),
        )

    def _rotation(self) -> list[int]:
        """The partitions from a start that moves by one at every call."""
        n = len(self.partitions)
        start, self._start = self._start, (self._start + 1) % n
        return [self.partitions[(start + i) % n] for i in range(n)]

    def _note(self, refs: Iterable[JobRef]) -> None:
        """Note jobs as handed out (call it before any other await)."""
        if self._tracking:
            self._handed.update(refs)

    def _hand(self, deliveries: list[Delivery]) -> list[Delivery]:
        self._note(d.ref for d in deliveries)
        return deliveries

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) of every partition if missing."""
        await asyncio.gather(*(self._ensure_group(p) for p in self.partitions))

    async def _ensure_group(self, partition: int) -> None:
        try:
            await self.redis.xgroup_create(
                self.keys.jobs_stream(partition), self.keys.jobs_group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def take(self, count: int, *, keep: int = 0) -> list[Delivery]:
        """Take up to ``count`` new jobs now, served round robin across clients' lanes.

        Moves jobs from the lanes into the stream, one client at a time, until ``count``
        + ``keep`` are ready, then reads up to ``count`` for this consumer without
        blocking; partitions are walked from a rotating start until ``count`` are taken
        (skipping those where one pipelined look finds nothing waiting). ``take(0,
        keep=1)`` only refills (every partition), so that another idle worker's blocking
        read wakes. The refill a read owes (:meth:`refill`) rides along: ``keep`` is at
        least 1 in those partitions, visited even once ``count`` are taken (issue 10: no
        round trip of its own). An empty result means nothing waits: block in
        :meth:`read` (the next accept wakes it).
        """
        if self._reads.nothing_waits and not self._owed and not keep:
            # The blocking read that just returned saw no job left anywhere (BlockingReads).
            self._reads.nothing_waits = False
            return []
        order = self._rotation()
        if len(order) > 1:
            busy = await self._busy_partitions()
            self._owed &= busy  # nothing waits there: nothing to make ready
            order = [p for p in order if p in busy]
        out: list[Delivery] = []
        for partition in order:
            want = max(0, count - len(out))
            owes = partition in self._owed
            if count > 0 and want == 0 and not owes:
                continue
            out += await self._take_in(partition, want, max(keep, 1) if owes else keep)
            self._owed.discard(partition)
        return out

    async def _busy_partitions(self) -> set[int]:
        """Partitions with jobs in their lanes or not yet delivered from their stream (one
        pipelined round trip; on a cluster, one per node at once)."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for p in self.partitions:
            pipe.get(k.queue_waiting(p))
            pipe.xlen(k.jobs_stream(p))
            pipe.xinfo_groups(k.jobs_stream(p))
        replies = await pipe.execute(raise_on_error=False)
        busy: set[int] = set()
        for i, p in enumerate(self.partitions):
            waiting, length, groups = replies[3 * i : 3 * i + 3]
            if isinstance(waiting, str) and waiting.isdigit() and int(waiting) > 0:
                busy.add(p)
            elif isinstance(length, int) and length > 0:
                info = (
                    next((g for g in groups if str(g["name"]) == k.jobs_group), None)
                    if isinstance(groups, list)
                    else None
                )
                lag = info.get("lag") if info is not None else None
                if info is None or (lag is None and length > int(info["pending"])):
                    busy.add(p)  # no group yet (the take creates it), or lag unknown
                elif lag is not None and int(lag) > 0:
                    busy.add(p)
        return busy

    async def refill(self) -> None:
        """Make one job ready in each partition a read delivered from since the last take
        (``take(0, keep=1)`` there), so the next idle worker's blocking read wakes; a
        consumer that will not take now (no room, stopping) calls this."""
        for partition in sorted(self._owed):
            await self._take_in(partition, 0, 1)
            self._owed.discard(partition)

    async def _take_in(self, partition: int, count: int, keep: int) -> list[Delivery]:
        k = self.keys
        try:
            reply = await self._take(
                keys=[
                    k.jobs_stream(partition),
                    k.queue_ring(partition),
                    k.queue_waiting(partition),
                    k.queue_clock(partition),
                ],
                args=[k.jobs_group, self.consumer, count, keep, k.queue_lane_prefix(partition)],
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self._ensure_group(partition)
                return []
            raise
        return self._hand(
            [
                _to_delivery(str(entry_id), _fields(flat), partition=partition)
                for _stream, entries in reply or []
                for entry_id, flat in entries
            ]
        )

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Wait up to ``block_ms`` for new jobs in any partition (XREADGROUP BLOCK).

        Returns at most ``count``; jobs read beyond that are given back at once as new
        jobs (:meth:`give_back`: another consumer's blocking read takes them now, not at
        its next reclaim sweep). Recreates a group that vanished (for
        example after a Redis restart without persistence). Raises
        :class:`BusUnavailable` when Redis is unreachable.
        """
        replies = await self._reads.read(self._rotation(), count, block_ms)
        if replies is None:
            await self.ensure_group()
            return []
        out = [
            _to_delivery(str(entry_id), fields, partition=partition)
            for partition, entry_id, fields in replies
        ]
        if not self._reads.nothing_waits:  # else no lane holds a job to make ready
            self._owed.update(d.partition for d in out[:count])
        extra = [d.ref for d in out[count:]]
        if extra:
            self._reads.nothing_waits = False  # they wait again
            await self.give_back(extra)
        return out[:count]

    def stop_reading(self) -> None:
        """Cancel the blocking reads :meth:`read` left in flight (one per partition on a
        cluster) and hand back what they take: a consumer with no room calls this, so it
        takes no job another consumer could run now."""
        self._reads.stop()

    async def settle(self) -> None:
        """:meth:`stop_reading`, and wait until what the reads took is handed back; a
        stopping consumer calls this before handing back its own jobs."""
        await self._reads.settle()

    async def _release_orphans(self, partitions: Collection[int]) -> None:
        """Hand back jobs pending under this consumer in ``partitions`` that were never
        handed to the caller (a blocking read cancelled as Redis answered it)."""
        before = {r for r in self._handed if r.partition in partitions}
        owned = await asyncio.gather(*(self.owned(partition=p) for p in partitions))
        pending = {JobRef(p, e) for p, ids in zip(partitions, owned, strict=True) for e in ids}
        # Handed out before that look and no longer pending: finished, or taken elsewhere.
        self._handed -= before - pending
        orphans = sorted(pending - self._handed)
        if orphans:
            await self.give_back(orphans)

    async def ack(self, entry_id: str, partition: int = 0) -> None:
        """Acknowledge a job: it leaves the pending list and is never redelivered.

        Finished jobs at the front of the stream are trimmed in the same round trip; jobs
        not yet delivered or still pending never are.
        """
        await self._ack(
            keys=[self.keys.jobs_stream(partition)], args=[self.keys.jobs_group, entry_id]
        )
        self._handed.discard(JobRef(partition, entry_id))

    def settled(self, ref: JobRef) -> None:
        """``ref`` was acked by another script (the worker's FINISH_CLOSE, issue 10)."""
        self._handed.discard(ref)

    async def touch(self, entry_ids: list[str], partition: int = 0) -> list[str]:
        """Renew the lease on jobs still being worked on (resets their idle time).

        A consumer calls this at least every ``min_idle_ms / 3`` for each running job, so
        a live but slow job is never reclaimed by another consumer. Only entries this
        consumer still owns are renewed (one Lua round trip checks XPENDING): a job that
        another consumer reclaimed meanwhile is never taken back. Returns the ids now
        pending under another consumer; acked ids are skipped silently.
        """
        if not entry_ids:
            return []
        lost = await self._touch(
            keys=[self.keys.jobs_stream(partition)],
            args=[self.keys.jobs_group, self.consumer, *entry_ids],
        )
        lost_ids = [str(entry_id) for entry_id in lost or []]
        self._handed.difference_update(JobRef(partition, e) for e in lost_ids)
        return lost_ids

    async def touch_refs(self, refs: Iterable[JobRef]) -> list[JobRef]:
        """:meth:`touch` across partitions; returns the jobs now pending elsewhere."""
        groups = _by_partition(refs)
        lost = await asyncio.gather(*(self.touch(ids, p) for p, ids in groups.items()))
        return [JobRef(p, e) for p, ids in zip(groups, lost, strict=True) for e in ids]

    async def release(
        self, entry_ids: list[str], idle_ms: int = RELEASE_IDLE_MS, partition: int = 0
    ) -> int:
        """Hand jobs this consumer still owns back to the group, for a graceful stop.

        Their idle time is set to ``idle_ms`` (a day by default), so the next reclaim sweep
        of any consumer takes them at once instead of after ``min_idle_ms``. The reclaim
        that follows costs no delivery (the release takes one back): a job handed back did not
        fail, so it does not move towards the dead letters. Returns how many were released.
        """
        if not entry_ids:
            return 0
        released = await self._release(
            keys=[self.keys.jobs_stream(partition)],
            args=[self.keys.jobs_group, self.consumer, idle_ms, *entry_ids],
        )
        self._handed.difference_update(JobRef(partition, e) for e in entry_ids)
        return int(released)

    async def give_back(self, refs: Iterable[JobRef]) -> int:
        """Give jobs this consumer was handed and will not run (a read took more than it
        has room for) back as new jobs, which wake any consumer's blocking read at once
        (:data:`JOBS_GIVE_BACK`); returns how many."""
        groups = _by_partition(refs)
        counts = await asyncio.gather(
            *(
                self._give_back(
                    keys=[self.keys.jobs_stream(p)],
                    args=[self.keys.jobs_group, self.consumer, *ids],
                )
                for p, ids in groups.items()
            )
        )
        self._handed.difference_update(JobRef(p, e) for p, ids in groups.items() for e in ids)
        return sum(int(c) for c in counts)

    async def release_refs(self, refs: Iterable[JobRef]) -> int:
        """:meth:`release` across partitions; returns how many were released."""
        groups = _by_partition(refs)
        counts = await asyncio.gather(
            *(self.release(ids, partition=p) for p, ids in groups.items())
        )
        return sum(counts)

    async def owned(self, count: int = 1000, partition: int = 0) -> list[str]:
        """Ids of the pending jobs this consumer owns (oldest first, at most ``count``)."""
        rows = await self.redis.xpending_range(
            self.keys.jobs_stream(partition),
            self.keys.jobs_group,
            min="-",
            max="+",
            count=count,
            consumername=self.consumer,
        )
        return [str(row["message_id"]) for row in rows]

    async def owned_refs(self, count: int = 1000) -> list[JobRef]:
        """:meth:`owned` in every partition (at most ``count`` in each)."""
        owned = await asyncio.gather(*(self.owned(count, p) for p in self.partitions))
        return [JobRef(p, e) for p, ids in zip(self.partitions, owned, strict=True) for e in ids]

    async def reclaim(self, min_idle_ms: int, count: int = 10) -> list[Delivery]:
        """Take over jobs idle for ``min_idle_ms`` (their consumer died), with delivery
        counts; partitions are swept from a rotating start until ``count`` are taken."""
        out: list[Delivery] = []
        for partition in self._rotation():
            if len(out) >= count:
                break
            out += await self._reclaim_in(partition, min_idle_ms, count - len(out))
        return out

    async def _reclaim_in(self, partition: int, min_idle_ms: int, count: int) -> list[Delivery]:
        _next, claimed, *_ = await self.redis.xautoclaim(
            self.keys.jobs_stream(partition),
            self.keys.jobs_group,
            self.consumer,
            min_idle_time=min_idle_ms,
            start_id="0-0",
            count=count,
        )
        if not claimed:
            return []
        ids = [str(entry_id) for entry_id, _ in claimed]
        self._note(JobRef(partition, e) for e in ids)  # before any other await
        counts = await self._delivery_counts(partition, ids)
        return [
            _to_delivery(str(entry_id), fields, counts.get(str(entry_id), 1), partition)
            for entry_id, fields in claimed
            if fields is not None
        ]

    async def take_over(self, departed: str, count: int = 100) -> list[Delivery]:
        """Claim every job pending under ``departed`` (a worker whose liveness lapsed) now,
        without waiting for the jobs' idle time; each counts one more delivery. Fewer than
        ``count`` returned means none is left in any partition."""
        out: list[Delivery] = []
        for partition in self._rotation():
            if len(out) >= count:
                break
            out += await self._take_over_in(partition, departed, count - len(out))
        return out

    async def _take_over_in(self, partition: int, departed: str, count: int) -> list[Delivery]:
        claimed = await self._take_over(
            keys=[self.keys.jobs_stream(partition)],
            args=[self.keys.jobs_group, departed, self.consumer, count],
        )
        if not claimed:
            return []
        pairs = [(str(entry[0]), _fields(entry[1])) for entry in claimed if entry[1]]
        self._note(JobRef(partition, e) for e, _ in pairs)  # before any other await
        counts = await self._delivery_counts(partition, [entry_id for entry_id, _ in pairs])
        return [_to_delivery(eid, fields, counts.get(eid, 1), partition) for eid, fields in pairs]

    async def _delivery_counts(self, partition: int, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        lo, hi = min(ids, key=parse_id), max(ids, key=parse_id)
        rows = await self.redis.xpending_range(
            self.keys.jobs_stream(partition),
            self.keys.jobs_group,
            min=lo,
            max=hi,
            count=len(ids) + 100,
        )
        return {str(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def dead_letter(self, delivery: Delivery, reason: str, maxlen: int = 10_000) -> None:
        """Copy the job to its partition's dead-letter stream with ``reason`` and ack it,
        atomically."""
        fields = {
            "d": delivery.raw,
            "entry_id": delivery.entry_id,
            "reason": reason,
            "deliveries": str(delivery.deliveries),
            "consumer": self.consumer,
            "at": iso_now(),
        }
        p = delivery.partition
        await self._dead_letter(
            keys=[self.keys.jobs_stream(p), self.keys.dead_letters_stream(p)],
            args=[
                self.keys.jobs_group,
                delivery.entry_id,
                maxlen,
                *(item for pair in fields.items() for item in pair),
            ],
        )
        self._handed.discard(delivery.ref)

    async def stats(self) -> dict[str, Any]:
        """Queue depth (the streams and the clients' lanes), pending count and dead
        letters, summed over the partitions."""
        parts = await asyncio.gather(*(self._stats_in(p) for p in self.partitions))
        return {name: sum(part[name] for part in parts) for name in ("length", "pending", "dead")}

    async def _stats_in(self, partition: int) -> dict[str, int]:
        k = self.keys
        stream = k.jobs_stream(partition)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(stream)
        pipe.xpending(stream, k.jobs_group)
        pipe.xlen(k.dead_letters_stream(partition))
        pipe.get(k.queue_waiting(partition))
        length, pending, dead, waiting = await pipe.execute(raise_on_error=False)
        in_lanes = int(waiting) if isinstance(waiting, str | bytes) and waiting.isdigit() else 0
        return {
            "length": (length if isinstance(length, int) else 0) + in_lanes,
            "pending": pending["pending"] if isinstance(pending, dict) else 0,
            "dead": dead if isinstance(dead, int) else 0,
        }
