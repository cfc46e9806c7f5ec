"""The jobs stream and its consumer group, fed round robin from the clients' lanes.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bus import scripts
from bus.chatlog import parse_id
from bus.errors import SchemaError, as_bus_error, translates_redis_errors
from bus.keys import BusKeys
from bus.schemas import AnswerMessage, decode_job, iso_now

__all__ = ["RELEASE_IDLE_MS", "Delivery", "JobQueue"]

#: Idle time given to released jobs: far beyond any ``min_idle_ms``, well below "now"
#: (XCLAIM treats an IDLE that reaches before the epoch as zero).
RELEASE_IDLE_MS = 24 * 3600 * 1000


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


def _to_delivery(entry_id: str, fields: dict[str, str] | None, deliveries: int = 1) -> Delivery:
    raw = (fields or {}).get("d", "")
    try:
        return Delivery(entry_id, raw, decode_job(raw), deliveries)
    except SchemaError as exc:
        return Delivery(entry_id, raw, None, deliveries, str(exc))


@translates_redis_errors
class JobQueue:
    """Consumer-side verbs on the jobs stream, for one named consumer."""

    def __init__(self, redis: Redis, keys: BusKeys, consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self._touch = redis.register_script(scripts.JOBS_TOUCH)
        self._release = redis.register_script(scripts.JOBS_RELEASE)
        self._ack = redis.register_script(scripts.JOBS_ACK)
        self._dead_letter = redis.register_script(scripts.JOBS_DEAD_LETTER)
        self._take_over = redis.register_script(scripts.JOBS_TAKE_OVER)
        self._take = redis.register_script(scripts.JOBS_TAKE)

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing; idempotent."""
        try:
            await self.redis.xgroup_create(
                self.keys.jobs, self.keys.jobs_group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def take(self, count: int, *, keep: int = 0) -> list[Delivery]:
        """Take up to ``count`` new jobs now, served round robin across clients' lanes.

        Moves jobs from the lanes into the stream, one client at a time, until ``count``
        + ``keep`` are ready, then reads up to ``count`` for this consumer without
        blocking. ``take(0, keep=1)`` only refills, so that another idle worker's blocking
        read wakes. An empty result means nothing waits: block in :meth:`read` (the next
        accept wakes it).
        """
        k = self.keys
        try:
            reply = await self._take(
                keys=[k.jobs, k.queue_ring, k.queue_waiting, k.queue_clock],
                args=[k.jobs_group, self.consumer, count, keep, k.queue_lane_prefix],
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self.ensure_group()
                return []
            raise
        out: list[Delivery] = []
        for _stream, entries in reply or []:
            for entry_id, flat in entries:
                out.append(_to_delivery(str(entry_id), _fields(flat)))
        return out

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Wait up to ``block_ms`` for new jobs (XREADGROUP BLOCK, no polling).

        Recreates the group if it vanished (for example after a Redis restart without
        persistence). Raises :class:`BusUnavailable` when Redis is unreachable.
        """
        try:
            reply = await self.redis.xreadgroup(
                self.keys.jobs_group,
                self.consumer,
                {self.keys.jobs: ">"},
                count=count,
                block=block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self.ensure_group()
                return []
            raise
        except RedisError as exc:
            raise as_bus_error(exc) from exc  # an outage, or a refusal (NOPERM, ...)
        out: list[Delivery] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(_to_delivery(str(entry_id), fields))
        return out

    async def ack(self, entry_id: str) -> None:
        """Acknowledge a job: it leaves the pending list and is never redelivered.

        Finished jobs at the front of the stream are trimmed in the same round trip; jobs
        not yet delivered or still pending never are.
        """
        await self._ack(keys=[self.keys.jobs], args=[self.keys.jobs_group, entry_id])

    async def touch(self, entry_ids: list[str]) -> list[str]:
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
            keys=[self.keys.jobs], args=[self.keys.jobs_group, self.consumer, *entry_ids]
        )
        return [str(entry_id) for entry_id in lost or []]

    async def release(self, entry_ids: list[str], idle_ms: int = RELEASE_IDLE_MS) -> int:
        """Hand jobs this consumer still owns back to the group, for a graceful stop.

        Their idle time is set to ``idle_ms`` (a day by default), so the next reclaim sweep
        of any consumer takes them at once instead of after ``min_idle_ms``. The reclaim
        that follows costs no delivery (the release takes one back): a job handed back did not
        fail, so it does not move towards the dead letters. Returns how many were released.
        """
        if not entry_ids:
            return 0
        released = await self._release(
            keys=[self.keys.jobs],
            args=[self.keys.jobs_group, self.consumer, idle_ms, *entry_ids],
        )
        return int(released)

    async def owned(self, count: int = 1000) -> list[str]:
        """Ids of the pending jobs this consumer owns (oldest first, at most ``count``)."""
        rows = await self.redis.xpending_range(
            self.keys.jobs,
            self.keys.jobs_group,
            min="-",
            max="+",
            count=count,
            consumername=self.consumer,
        )
        return [str(row["message_id"]) for row in rows]

    async def reclaim(self, min_idle_ms: int, count: int = 10) -> list[Delivery]:
        """Take over jobs idle for ``min_idle_ms`` (their consumer died), with delivery counts."""
        _next, claimed, *_ = await self.redis.xautoclaim(
            self.keys.jobs,
            self.keys.jobs_group,
            self.consumer,
            min_idle_time=min_idle_ms,
            start_id="0-0",
            count=count,
        )
        if not claimed:
            return []
        ids = [str(entry_id) for entry_id, _ in claimed]
        counts = await self._delivery_counts(ids)
        return [
            _to_delivery(str(entry_id), fields, counts.get(str(entry_id), 1))
            for entry_id, fields in claimed
            if fields is not None
        ]

    async def take_over(self, departed: str, count: int = 100) -> list[Delivery]:
        """Claim every job pending under ``departed`` (a worker whose liveness lapsed) now,
        without waiting for the jobs' idle time; each counts one more delivery."""
        claimed = await self._take_over(
            keys=[self.keys.jobs],
            args=[self.keys.jobs_group, departed, self.consumer, count],
        )
        if not claimed:
            return []
        pairs = [(str(entry[0]), _fields(entry[1])) for entry in claimed if entry[1]]
        counts = await self._delivery_counts([entry_id for entry_id, _ in pairs])
        return [_to_delivery(eid, fields, counts.get(eid, 1)) for eid, fields in pairs]

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        lo, hi = min(ids, key=parse_id), max(ids, key=parse_id)
        rows = await self.redis.xpending_range(
            self.keys.jobs, self.keys.jobs_group, min=lo, max=hi, count=len(ids) + 100
        )
        return {str(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def dead_letter(self, delivery: Delivery, reason: str, maxlen: int = 10_000) -> None:
        """Copy the job to the dead-letter stream with ``reason`` and ack it, atomically."""
        fields = {
            "d": delivery.raw,
            "entry_id": delivery.entry_id,
            "reason": reason,
            "deliveries": str(delivery.deliveries),
            "consumer": self.consumer,
            "at": iso_now(),
        }
        await self._dead_letter(
            keys=[self.keys.jobs, self.keys.dead_letters],
            args=[
                self.keys.jobs_group,
                delivery.entry_id,
                maxlen,
                *(item for pair in fields.items() for item in pair),
            ],
        )

    async def stats(self) -> dict[str, Any]:
        """Queue depth (the stream and the clients' lanes), pending count and dead letters."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.keys.jobs)
        pipe.xpending(self.keys.jobs, self.keys.jobs_group)
        pipe.xlen(self.keys.dead_letters)
        pipe.get(self.keys.queue_waiting)
        length, pending, dead, waiting = await pipe.execute(raise_on_error=False)
        in_lanes = int(waiting) if isinstance(waiting, str | bytes) and waiting.isdigit() else 0
        return {
            "length": (length if isinstance(length, int) else 0) + in_lanes,
            "pending": pending["pending"] if isinstance(pending, dict) else 0,
            "dead": dead if isinstance(dead, int) else 0,
        }
