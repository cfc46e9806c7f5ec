"""Every Redis name the project uses: keys, streams, groups and channels.

All names live under one configurable prefix. Two layouts (docs/protocol.md):

- **legacy** (one partition, no cluster; today's names): a chat's keys carry the chat id as
  a hash tag (``terra:chat:{<chatId>}:<part>``), the jobs, the queue and the dead letters
  are one set of global keys (``terra:jobs``, ``terra:queue:ring``, ...).
- **partitioned** (``REDIS_PARTITIONS`` > 1 or ``REDIS_CLUSTER``): a chat belongs to one of
  N partitions (:meth:`BusKeys.partition_of`, a stable hash) and every key a chat's accept
  touches carries its partition's tag: the chat's keys
  (``terra:chat:{<tag>}:<part>:<chatId>``), its channel, and its partition's jobs stream,
  ring, clock and lanes (``terra:jobs:{<tag>}``, ``terra:queue:{<tag>}:ring``, ...). On
  Redis Cluster all of them share one slot, so accepting a message and enqueueing its job
  stays one atomic script, and the N partitions spread evenly over the slot space.

The part comes before the chat id so the worker's ACL globs (``terra:chat:{*}:events:*``)
can never match an idempotency key whose client message id ends in ``events``.
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

__all__ = [
    "CHAT_ID_PATTERN",
    "MAX_PARTITIONS",
    "ROLE_FAMILIES",
    "BusKeys",
    "is_valid_chat_id",
    "partition_tag",
]

CHAT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

JOB_GROUP = "workers"

#: ``REDIS_PARTITIONS`` at most (16 hash slots per partition on a cluster).
MAX_PARTITIONS = 1024

#: The per-chat keys a worker reads and writes (events, meta, messages, replies, tool
#: memory, cancel requests, the answer lease); see :data:`ROLE_FAMILIES`.
WORKER_CHAT_PARTS = ("events", "meta", "messages", "replies", "memory", "cancel", "lease")


def is_valid_chat_id(chat_id: str) -> bool:
    """True when ``chat_id`` matches ``^[A-Za-z0-9_-]{1,64}$`` (PROTOCOL section 1)."""
    return bool(CHAT_ID_PATTERN.fullmatch(chat_id))


@functools.lru_cache(maxsize=4 * MAX_PARTITIONS)
def partition_tag(partition: int, partitions: int) -> str:
    """The hash tag of ``partition`` of ``partitions``: the first ``"<p>.<n>"`` (n = 0, 1, ...)
    whose cluster key slot lies in the partition's equal share of the slot space,
    ``[p * 16384 // N, (p + 1) * 16384 // N)``.

    So N partitions spread evenly over masters holding contiguous equal slot ranges (bare
    ``{0}``, ``{1}``, ... hash unevenly). Computed once per process (cached).
    """
    if not 0 <= partition < partitions <= MAX_PARTITIONS:
        raise ValueError(f"partition {partition} is not in 0..{partitions - 1}")
    low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
    high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
    n = 0
    while True:
        tag = f"{partition}.{n}"
        if low <= key_slot(tag.encode()) < high:
            return tag
        n += 1


class BusKeys:
    """Name factory for one deployment: a prefix, a number of partitions, cluster or not.

    ``BusKeys(prefix)`` is the legacy layout (today's names, one partition). With
    ``partitions`` > 1 or ``cluster`` the layout is partitioned (see the module's text).
    Immutable and cheap; compare and hash by value.
    """

    __slots__ = ("_count", "_tags", "cluster", "partitioned", "prefix")

    def __init__(self, prefix: str = "terra", partitions: int = 1, cluster: bool = False) -> None:
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be 1..{MAX_PARTITIONS}")
        self.prefix: Final = prefix
        #: Whether Redis is a cluster (scripts then use SPUBLISH, the feed SSUBSCRIBE).
        self.cluster: Final = cluster
        #: Whether names carry partition tags (partitions > 1, or a cluster).
        self.partitioned: Final = cluster or partitions > 1
        self._count: Final = partitions
        self._tags: Final = (
            tuple(partition_tag(p, partitions) for p in range(partitions))
            if self.partitioned
            else ()
        )

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise AttributeError(f"BusKeys is immutable ({name})")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"BusKeys({self.prefix!r}, partitions={self._count}, cluster={self.cluster})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BusKeys):
            return NotImplemented
        mine = (self.prefix, self._count, self.cluster)
        return mine == (other.prefix, other._count, other.cluster)

    def __hash__(self) -> int:
        return hash((self.prefix, self._count, self.cluster))

    # --- partitions --------------------------------------------------------------------
    @property
    def partition_count(self) -> int:
        """Number of partitions (1 in the legacy layout)."""
        return self._count

    @property
    def partitions(self) -> range:
        """Every partition number: ``range(partition_count)``."""
        return range(self._count)

    def partition_of(self, chat_id: str) -> int:
        """The partition of a chat: ``crc32(chat_id) % partitions`` (stable across processes)."""
        if self._count == 1:
            return 0
        return zlib.crc32(chat_id.encode()) % self._count

    def tag(self, partition: int) -> str:
        """The hash tag of ``partition`` (partitioned layout only)."""
        if not self.partitioned:
            raise ValueError("the legacy layout has no partition tags")
        if not 0 <= partition < self._count:
            raise ValueError(f"partition {partition} is not in 0..{self._count - 1}")
        return self._tags[partition]

    def _check(self, partition: int) -> None:
        if not 0 <= partition < self._count:
            raise ValueError(f"partition {partition} is not in 0..{self._count - 1}")

    # --- per chat ---------------------------------------------------------------
    def _chat(self, chat_id: str, part: str) -> str:
        if not is_valid_chat_id(chat_id):
            raise ValueError("invalid chat id")
        if self.partitioned:
            tag = self._tags[self.partition_of(chat_id)]
            return f"{self.prefix}:chat:{{{tag}}}:{part}:{chat_id}"
        return f"{self.prefix}:chat:{{{chat_id}}}:{part}"

    def chat_events(self, chat_id: str) -> str:
        """Stream: the chat's event log (messages, worker states, chunks, ...)."""
        return self._chat(chat_id, "events")

    def chat_messages(self, chat_id: str) -> str:
        """Stream: only the chat's Messages, same entry ids as in the event log."""
        return self._chat(chat_id, "messages")

    def chat_meta(self, chat_id: str) -> str:
        """Hash: last event id, log epoch, current worker state."""
        return self._chat(chat_id, "meta")

    def chat_idempotency(self, chat_id: str, client_message_id: str) -> str:
        """String: the Message stored for a client message id (retry dedupe)."""
        if self.partitioned:
            return f"{self._chat(chat_id, 'idem')}:{client_message_id}"
        return self._chat(chat_id, f"idem:{client_message_id}")

    def chat_replies(self, chat_id: str) -> str:
        """Hash: visitor message id -> event id of Terra's final reply."""
        return self._chat(chat_id, "replies")

    def chat_lease(self, chat_id: str) -> str:
        """String: which worker currently answers this chat (lease with a TTL)."""
        return self._chat(chat_id, "lease")

    def chat_cancel(self, chat_id: str) -> str:
        """String: the visitor message id whose reply the visitor asked to stop."""
        return self._chat(chat_id, "cancel")

    def chat_memory(self, chat_id: str) -> str:
        """Hash: visitor message id -> JSON list of tool turns kept for the model."""
        return self._chat(chat_id, "memory")

    def chat_rate(self, chat_id: str, window: int) -> str:
        """Counter: visitor messages to this chat in one fixed window."""
        return self._chat(chat_id, f"rl:{window}")

    def chat_channel(self, chat_id: str) -> str:
        """Pub/sub channel carrying the chat's events live (same slot as the chat's keys)."""
        return self._chat(chat_id, "live")

    def chat_id_from_channel(self, channel: str) -> str | None:
        """Inverse of :meth:`chat_channel`; ``None`` for a foreign channel."""
        head = f"{self.prefix}:chat:{{"
        if not channel.startswith(head):
            return None
        if self.partitioned:
            _tag, sep, chat_id = channel[len(head) :].partition("}:live:")
        else:
            chat_id, sep, rest = channel[len(head) :].partition("}:live")
            sep = sep if not rest else ""
        if not sep or not is_valid_chat_id(chat_id) or self.chat_channel(chat_id) != channel:
            return None
        return chat_id

    def chat_budget(self, chat_id: str) -> str:
        """Token bucket: visitor messages to this chat."""
        return self._chat(chat_id, "rl")

    # --- per partition (the legacy layout has one: 0) ------------------------------------
    def _partition(self, partition: int, name: str) -> str:
        self._check(partition)
        if self.partitioned:
            return f"{self.prefix}:{name}:{{{self._tags[partition]}}}"
        return f"{self.prefix}:{name}"

    def jobs_stream(self, partition: int) -> str:
        """Stream of jobs of ``partition`` for the worker consumer group."""
        return self._partition(partition, "jobs")

    @property
    def jobs_group(self) -> str:
        """Consumer group name on every jobs stream."""
        return JOB_GROUP

    def dead_letters_stream(self, partition: int) -> str:
        """Stream of ``partition``'s jobs that could not be processed, with the reason."""
        return f"{self._partition(partition, 'jobs')}:dead"

    def queue_ring(self, partition: int) -> str:
        """Sorted set: clients with jobs in their lanes, least recently served first."""
        return f"{self._partition(partition, 'queue')}:ring"

    def queue_waiting(self, partition: int) -> str:
        """Counter: jobs waiting in the partition's lanes (not yet in its jobs stream)."""
        return f"{self._partition(partition, 'queue')}:waiting"

    def queue_clock(self, partition: int) -> str:
        """Hash: ``seq`` (jobs moved from the lanes to the jobs stream, the ring's clock) and
        ``joins`` (clients that joined the ring since)."""
        return f"{self._partition(partition, 'queue')}:clock"

    def queue_lane_prefix(self, partition: int) -> str:
        """Prefix of a client's lane; a script appends the client's tag."""
        return f"{self._partition(partition, 'queue')}:lane:"

    def queue_lane(self, partition: int, client_tag: str) -> str:
        """List: one client's jobs waiting in ``partition``, oldest first, before they enter
        the partition's jobs stream.

        ``<lane>:served`` (a string with a TTL) remembers when the client was last served;
        ``<lane>:bytes`` counts the bytes it stored in the window.
        """
        return f"{self.queue_lane_prefix(partition)}{client_tag}"

    def client_bytes(self, client_tag: str) -> str:
        """Counter: the bytes one client stored in the window (CLIENT_BYTES_PER_DAY).

        Legacy: beside the client's lane (``<lane>:bytes``), charged by the accept script.
        Partitioned: one counter per client whatever the partition of its chats (a
        partition's lane counter would give a client its budget once per partition),
        charged apart (:data:`bus.scripts.CLIENT_BYTES`).
        """
        if self.partitioned:
            return f"{self.prefix}:queue:bytes:{{{client_tag}}}"
        return f"{self.queue_lane(0, client_tag)}:bytes"

    # --- global -----------------------------------------------------------------
    def client_budget(self, family: str, client: str) -> str:
        """Token bucket: one client's (address or IPv6 prefix) requests of a route family.

        Partitioned, the client is a hash tag: its families' buckets share a slot, so one
        script may spend from several (a route's budget and the failed-code one).
        """
        if self.partitioned:
            return f"{self.prefix}:rl:{family}:{{{client}}}"
        return f"{self.prefix}:rl:{family}:{client}"

    def ip_rate(self, ip: str, window: int) -> str:
        """Counter: visitor messages from one client address in one fixed window."""
        return f"{self.prefix}:rl:ip:{ip}:{window}"

    @property
    def access_codes(self) -> str:
        """Hash: stored visitor access code id -> JSON record with the code's digest
        (:mod:`bus.access_codes`; never the code)."""
        return f"{self.prefix}:access:codes"

    @property
    def workers(self) -> str:
        """Hash: worker consumer name -> JSON heartbeat."""
        return f"{self.prefix}:workers"

    def worker_alive(self, consumer: str) -> str:
        """String with a TTL: present while worker ``consumer`` is alive (Redis's clock)."""
        return f"{self.prefix}:workers:alive:{consumer}"

    @property
    def arq_queue(self) -> str:
        """Queue name of arq's scheduled (non-live) jobs."""
        return f"{self.prefix}:arq"

    # --- the layout, for access control and operators ------------------------------
    def families(self) -> dict[str, str]:
        """Every key family of the active layout as a glob, by name (what
        infra/redis/users.acl grants; it grants both layouts)."""
        p = self.prefix
        # One chat's keys by what they hold: the worker gets these, never the chat's
        # rate-limit counters or idempotency records (``{*}``: ids and tags have no braces).
        tail = ":*" if self.partitioned else ""
        jobs = f"{p}:jobs:{{*}}" if self.partitioned else f"{p}:jobs"
        return {
            "chats": f"{p}:chat:*",
            **{f"chat_{part}": f"{p}:chat:{{*}}:{part}{tail}" for part in WORKER_CHAT_PARTS},
            "ip_rates": f"{p}:rl:*",
            "jobs": jobs,
            "dead_letters": f"{jobs}:dead",
            "queue": f"{p}:queue:*",
            "access_codes": self.access_codes,
            "workers": self.workers,
            "worker_liveness": f"{self.workers}:alive:*",
            "arq_queue": f"{self.arq_queue}*",
            "arq_jobs": "arq:*",  # arq's own job and result keys (not under the prefix)
            "everything": f"{p}:*",
        }

    def acl_key_globs(self, user: str) -> frozenset[str]:
        """The key globs Redis user ``user`` needs (``gateway``, ``worker`` or ``ops``)."""
        families = self.families()
        return frozenset(families[name] for name in ROLE_FAMILIES[user])

    def channel_globs(self) -> frozenset[str]:
        """Every pub/sub channel as a glob (chat channels only)."""
        return frozenset({f"{self.prefix}:chat:*"})


#: Which key families each Redis ACL user is granted (infra/redis/users.acl is checked
#: against this by tests/unit/test_acl_layout.py).
ROLE_FAMILIES: dict[str, tuple[str, ...]] = {
    "gateway": ("chats", "ip_rates", "jobs", "dead_letters", "queue", "access_codes", "workers"),
    "worker": (
        *(f"chat_{part}" for part in WORKER_CHAT_PARTS),
        "jobs",
        "dead_letters",
        "queue",
        "workers",
        "worker_liveness",
        "arq_queue",
        "arq_jobs",
    ),
    "ops": ("everything", "arq_jobs"),
}
