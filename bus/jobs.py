"""The jobs stream and its consumer group.

Guarantees: a job is delivered at least once. It stays in the group's pending list until
acked; a job whose consumer stops renewing it (died) can be reclaimed by another consumer
after ``min_idle_ms``; after ``max_deliveries`` deliveries it is moved to the dead-letter
stream with a reason instead of being retried forever. Jobs are enqueued by
:meth:`bus.chatlog.ChatLog.accept_visitor_message` in the same round trip as the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bus.errors import BusUnavailable, SchemaError
from bus.keys import BusKeys
from bus.schemas import AnswerMessage, decode_job, iso_now

__all__ = ["Delivery", "JobQueue"]


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


class JobQueue:
    """Consumer-side verbs on the jobs stream, for one named consumer."""

    def __init__(self, redis: Redis, keys: BusKeys, consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing; idempotent."""
        try:
            await self.redis.xgroup_create(
                self.keys.jobs, self.keys.jobs_group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

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
            raise BusUnavailable("could not read jobs") from exc
        out: list[Delivery] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(_to_delivery(str(entry_id), fields))
        return out

    async def ack(self, entry_id: str) -> None:
        """Acknowledge a job: it leaves the pending list and is never redelivered."""
        await self.redis.xack(self.keys.jobs, self.keys.jobs_group, entry_id)

    async def touch(self, entry_ids: list[str]) -> None:
        """Renew the lease on jobs still being worked on (resets their idle time).

        A consumer calls this at least every ``min_idle_ms / 3`` for each running job, so
        a live but slow job is never reclaimed by another consumer.
        """
        if not entry_ids:
            return
        await self.redis.xclaim(
            self.keys.jobs,
            self.keys.jobs_group,
            self.consumer,
            min_idle_time=0,
            message_ids=list[Any](entry_ids),
            justid=True,
        )

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

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        lo, hi = min(ids, key=_key), max(ids, key=_key)
        rows = await self.redis.xpending_range(
            self.keys.jobs, self.keys.jobs_group, min=lo, max=hi, count=len(ids) + 100
        )
        return {str(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def dead_letter(self, delivery: Delivery, reason: str, maxlen: int = 10_000) -> None:
        """Copy the job to the dead-letter stream with ``reason``, then ack it."""
        await self.redis.xadd(
            self.keys.dead_letters,
            {
                "d": delivery.raw,
                "entry_id": delivery.entry_id,
                "reason": reason,
                "deliveries": str(delivery.deliveries),
                "consumer": self.consumer,
                "at": iso_now(),
            },
            maxlen=maxlen,
            approximate=True,
        )
        await self.ack(delivery.entry_id)

    async def stats(self) -> dict[str, Any]:
        """Queue depth, pending count and dead letters (for metrics)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.keys.jobs)
        pipe.xpending(self.keys.jobs, self.keys.jobs_group)
        pipe.xlen(self.keys.dead_letters)
        length, pending, dead = await pipe.execute(raise_on_error=False)
        return {
            "length": length if isinstance(length, int) else 0,
            "pending": pending["pending"] if isinstance(pending, dict) else 0,
            "dead": dead if isinstance(dead, int) else 0,
        }


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
