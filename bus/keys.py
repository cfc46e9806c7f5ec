"""Every Redis name the project uses: keys, streams, groups and channels.

All names live under one configurable prefix. Per-chat names carry the chat id as a
Redis Cluster hash tag (``{chatId}``) so one chat's keys share a slot and a Lua script
may touch them together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CHAT_ID_PATTERN", "ROLE_FAMILIES", "BusKeys", "is_valid_chat_id"]

CHAT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

JOB_GROUP = "workers"

#: The per-chat keys a worker reads and writes (events, meta, messages, replies, tool
#: memory, cancel requests, the answer lease); see :data:`ROLE_FAMILIES`.
WORKER_CHAT_PARTS = ("events", "meta", "messages", "replies", "memory", "cancel", "lease")


def is_valid_chat_id(chat_id: str) -> bool:
    """True when ``chat_id`` matches ``^[A-Za-z0-9_-]{1,64}$`` (PROTOCOL section 1)."""
    return bool(CHAT_ID_PATTERN.fullmatch(chat_id))


@dataclass(frozen=True, slots=True)
class BusKeys:
    """Name factory for one deployment (one prefix)."""

    prefix: str = "terra"

    def _chat(self, chat_id: str, suffix: str) -> str:
        if not is_valid_chat_id(chat_id):
            raise ValueError("invalid chat id")
        return f"{self.prefix}:chat:{{{chat_id}}}:{suffix}"

    # --- per chat ---------------------------------------------------------------
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
        """Pub/sub channel carrying the chat's events live."""
        return self._chat(chat_id, "live")

    def chat_id_from_channel(self, channel: str) -> str | None:
        """Inverse of :meth:`chat_channel`; ``None`` for a foreign channel."""
        head = f"{self.prefix}:chat:{{"
        tail = "}:live"
        if channel.startswith(head) and channel.endswith(tail):
            return channel[len(head) : -len(tail)]
        return None

    def chat_budget(self, chat_id: str) -> str:
        """Token bucket: visitor messages to this chat."""
        return self._chat(chat_id, "rl")

    # --- global -----------------------------------------------------------------
    def client_budget(self, family: str, client: str) -> str:
        """Token bucket: one client's (address or IPv6 prefix) requests of a route family."""
        return f"{self.prefix}:rl:{family}:{client}"

    def ip_rate(self, ip: str, window: int) -> str:
        """Counter: visitor messages from one client address in one fixed window."""
        return f"{self.prefix}:rl:ip:{ip}:{window}"

    @property
    def jobs(self) -> str:
        """Stream of jobs for the worker consumer group."""
        return f"{self.prefix}:jobs"

    @property
    def jobs_group(self) -> str:
        """Consumer group name on :attr:`jobs`."""
        return JOB_GROUP

    @property
    def dead_letters(self) -> str:
        """Stream of jobs that could not be processed, with the reason."""
        return f"{self.prefix}:jobs:dead"

    @property
    def queue_ring(self) -> str:
        """Sorted set: clients with jobs in their lanes, least recently served first."""
        return f"{self.prefix}:queue:ring"

    @property
    def queue_waiting(self) -> str:
        """Counter: jobs waiting in every client's lane (not yet in :attr:`jobs`)."""
        return f"{self.prefix}:queue:waiting"

    @property
    def queue_clock(self) -> str:
        """Hash: ``seq`` (jobs moved from the lanes to :attr:`jobs`, the ring's clock) and
        ``joins`` (clients that joined the ring since)."""
        return f"{self.prefix}:queue:clock"

    @property
    def queue_lane_prefix(self) -> str:
        """Prefix of a client's lane; a script appends the client's tag."""
        return f"{self.prefix}:queue:lane:"

    def queue_lane(self, client_tag: str) -> str:
        """List: one client's jobs waiting, oldest first, before they enter :attr:`jobs`.

        ``<lane>:served`` (a string with a TTL) remembers when the client was last served.
        """
        return f"{self.queue_lane_prefix}{client_tag}"

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
        """Every key family as a glob, by name (what infra/redis/users.acl grants)."""
        p = self.prefix
        return {
            "chats": f"{p}:chat:*",
            # One chat's keys by what they hold: the worker gets these, never the chat's
            # rate-limit counters or idempotency records (``{*}``: ids have no braces).
            **{f"chat_{part}": f"{p}:chat:{{*}}:{part}" for part in WORKER_CHAT_PARTS},
            "ip_rates": f"{p}:rl:*",
            "jobs": self.jobs,
            "dead_letters": self.dead_letters,
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
