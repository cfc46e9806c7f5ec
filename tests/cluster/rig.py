"""The system under test of the cluster tier: a real Redis Cluster, the demo agent, gateways
and workers started with ``REDIS_CLUSTER=true``, and a cluster-aware client for the checks.

The checks are the guarantee checker's (``tests.guarantees.checker``): :meth:`ClusterRig.snapshot`
reads what Redis holds in the partitioned layout (each chat's log, messages and state; the
jobs, pending entries and dead letters of every partition) into its snapshot types.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from redis.asyncio.cluster import RedisCluster as AsyncClusterClient
from redis.cluster import RedisCluster as ClusterClient
from redis.exceptions import RedisError, ResponseError

from bus import BusKeys
from bus.chatlog import EventRecord, compare_ids
from bus.schemas import EVENT_TYPES_V1, render_frame
from tests.guarantees.checker import ChatSnapshot, Findings, JobsSnapshot, check_process_log
from tests.guarantees.fleet import Post
from tests.support.clients import ChatClient
from tests.support.redis_cluster import ClusterNode, RedisCluster
from tests.support.system import Process, System, running_system
from tests.support.wait import wait_until, wait_until_sync

__all__ = ["PARTITIONS", "ClusterRig", "caught_up", "cluster_rig", "violations"]

#: The gateways' and workers' default on a cluster (REDIS_PARTITIONS unset).
PARTITIONS = 16

#: Every visitor comes from 127.0.0.1: per-IP and per-chat windows must not shape the load.
GATEWAY_ENV = {"RATE_LIMIT_MAX_PER_IP": "10000000", "RATE_LIMIT_MAX_PER_CHAT": "1000000"}
#: Shortened worker timings (as the fault tests': tests/faults/harness.py FAST_WORKER_ENV).
WORKER_ENV = {
    "JOB_BLOCK_MS": "300",
    "RECLAIM_MIN_IDLE_MS": "1500",
    "RECLAIM_INTERVAL_MS": "250",
    "CHAT_LEASE_MS": "1500",
    "SHUTDOWN_GRACE_SECONDS": "5",
    "AGENT_RETRY_BASE_SECONDS": "0.05",
    # Room for every chat of a test at once: two workers answer up to 8 chats side by side.
    "MAX_CONCURRENT_CHATS": "4",
}


class ClusterRig:
    """A :class:`System` on a :class:`RedisCluster`, with the key layout the processes use."""

    def __init__(self, system: System, cluster: RedisCluster) -> None:
        self.system = system
        self.cluster = cluster
        self.keys = BusKeys(partitions=PARTITIONS, cluster=True)
        self.gateways: list[Process] = []
        self.workers: list[Process] = []
        self._serial = itertools.count()

    @property
    def ports(self) -> list[int]:
        """The gateways' ports, in start order."""
        return [proc.port for proc in self.gateways if proc.port is not None]

    def sync_client(self) -> ClusterClient:
        """A blocking cluster client (for fixtures and waits outside an event loop)."""
        client: ClusterClient = ClusterClient.from_url(self.cluster.url, decode_responses=True)
        return client

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[AsyncClusterClient]:
        """A cluster-aware asyncio client, closed on exit."""
        client = AsyncClusterClient.from_url(self.cluster.url, decode_responses=True)
        try:
            yield client
        finally:
            await client.aclose()

    def check_logs(self, findings: Findings) -> None:
        """Add an ``error logged`` finding for each error line of a gateway or worker."""
        for proc in [*self.gateways, *self.workers]:
            check_process_log(proc.name, proc.output(), findings)

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        """Print the end of every process's log when the body fails."""
        try:
            yield
        except BaseException:
            print(self.system.dump_logs())
            raise

    # --- processes -----------------------------------------------------------------------
    def start_many(self, gateways: int, workers: int) -> None:
        """Start ``gateways`` gateways and ``workers`` workers side by side; return once every
        gateway listens and every worker's heartbeat is in Redis."""
        gateway_names = [f"gateway{len(self.gateways) + n}" for n in range(gateways)]
        worker_names = [f"worker{next(self._serial)}" for _ in range(workers)]
        with ThreadPoolExecutor(max_workers=gateways + workers) as pool:
            started_gateways = [pool.submit(self._gateway, name) for name in gateway_names]
            started_workers = [pool.submit(self._worker, name) for name in worker_names]
            self.gateways += [future.result() for future in started_gateways]
            self.workers += [future.result() for future in started_workers]

    def _gateway(self, name: str) -> Process:
        return self.system.gateway(name, **GATEWAY_ENV)

    def _worker(self, name: str) -> Process:
        proc = self.system.worker(name, **WORKER_ENV)
        client = self.sync_client()

        def beating() -> bool:
            if proc.returncode is not None:  # fail at once, with the reason
                raise RuntimeError(f"{name} exited {proc.returncode}: {proc.output()[-2000:]}")
            return bool(client.hexists(self.keys.workers, name))

        try:
            wait_until_sync(
                beating,
                30,
                f"{name}'s heartbeat",
                ignore=(RedisError,),
            )
        finally:
            client.close()
        return proc

    # --- where chats live ----------------------------------------------------------------
    def node_of_chat(self, chat_id: str) -> ClusterNode:
        """The master that holds ``chat_id``'s keys (and its partition's jobs)."""
        return self.cluster.node_for_key(self.keys.chat_events(chat_id))

    def chats_on_every_master(self, per_master: int, prefix: str) -> list[str]:
        """``per_master`` new chat ids on each master, master by master."""
        wanted = {node.node_id: per_master for node in self.cluster.masters()}
        chats: list[str] = []
        for n in itertools.count():
            chat_id = f"{prefix}-{n}"
            node = self.node_of_chat(chat_id)
            if wanted.get(node.node_id, 0) > 0:
                wanted[node.node_id] -= 1
                chats.append(chat_id)
            if not any(wanted.values()):
                return sorted(chats, key=lambda c: self.node_of_chat(c).index)
        raise AssertionError("unreachable")

    # --- what Redis holds ----------------------------------------------------------------
    async def chat(self, redis: AsyncClusterClient, chat_id: str) -> ChatSnapshot:
        """One chat as Redis holds it: log, messages, epoch and worker state."""
        entries = await redis.xrange(self.keys.chat_events(chat_id))
        events = [EventRecord(str(eid), fields["d"]) for eid, fields in entries]
        stored = await redis.xrange(self.keys.chat_messages(chat_id))
        messages = [render_frame(fields["d"], str(eid)) for eid, fields in stored]
        meta = self.keys.chat_meta(chat_id)
        epoch, state = await redis.hmget(meta, ["epoch", "state"])  # type: ignore[misc]
        state_name = json.loads(state).get("state") if state else None
        return ChatSnapshot(chat_id, events, messages, epoch, state_name)

    async def jobs(self, redis: AsyncClusterClient) -> JobsSnapshot:
        """Pending entries, dead letters and queued message ids over every partition."""
        pending: list[str] = []
        dead: list[dict[str, str]] = []
        queued: set[str] = set()
        for p in self.keys.partitions:
            stream = self.keys.jobs_stream(p)
            with contextlib.suppress(ResponseError):  # NOGROUP: no worker read it yet
                rows = await redis.xpending_range(stream, self.keys.jobs_group, "-", "+", 10_000)
                pending += [str(row["message_id"]) for row in rows]
            dead += [dict(f) for _, f in await redis.xrange(self.keys.dead_letters_stream(p))]
            for _, fields in await redis.xrange(stream):
                job = json.loads(fields.get("d", "{}"))
                queued.add(str(job.get("messageId") or job.get("message_id")))
        return JobsSnapshot(pending, dead, queued)

    async def snapshot(
        self, chat_ids: Iterable[str]
    ) -> tuple[dict[str, ChatSnapshot], JobsSnapshot]:
        """Every chat of ``chat_ids`` and the jobs, for ``tests.guarantees.checker.check_run``."""
        async with self.client() as redis:
            chats = {chat_id: await self.chat(redis, chat_id) for chat_id in chat_ids}
            return chats, await self.jobs(redis)


@contextlib.contextmanager
def cluster_rig(
    workdir: Path,
    cluster: RedisCluster,
    *,
    gateways: int = 2,
    workers: int = 2,
    token_delay_ms: float = 5,
) -> Iterator[ClusterRig]:
    """The demo agent, ``gateways`` gateways and ``workers`` workers on ``cluster``.

    Every process is killed on exit; their logs are printed when the body failed.
    """
    with running_system(workdir, cluster) as system:
        rig = ClusterRig(system, cluster)
        system.start_agent(token_delay_ms)
        rig.start_many(gateways, workers)
        yield rig


def _answered(chat: ChatSnapshot, message_ids: set[str]) -> bool:
    replied = {str(m["replyTo"]) for m in chat.messages if m.get("replyTo")}
    return message_ids <= replied and chat.state not in ("queued", "processing")


async def wait_answered(
    rig: ClusterRig, posts: Iterable[Post], within: float = 60.0
) -> dict[str, ChatSnapshot]:
    """Wait until every accepted post has a reply, its chat is idle and no job is pending;
    return the chats then."""
    wanted: dict[str, set[str]] = {}
    for post in posts:
        ids = wanted.setdefault(post.chat_id, set())
        if post.message_id is not None:
            ids.add(post.message_id)
    found: dict[str, ChatSnapshot] = {}

    async def every_reply() -> bool:
        chats, jobs = await rig.snapshot(wanted)
        found.update(chats)
        answered = all(_answered(chats[c], ids) for c, ids in wanted.items())
        return answered and not jobs.pending  # a reply is acknowledged just after it is stored

    await wait_until(every_reply, within, "every accepted message answered", interval=0.2)
    return found


def _owed(socket: ChatClient, chat: ChatSnapshot) -> str | None:
    for event in reversed(chat.events):
        if socket.v2 or event.type in EVENT_TYPES_V1 or event.type == "streamReset":
            return event.event_id
    return None


async def caught_up(
    sockets: Iterable[ChatClient], chats: dict[str, ChatSnapshot], within: float = 20.0
) -> None:
    """Wait until each socket received the last event of its chat's snapshot it is owed;
    on timeout, name every socket still behind (kind, gateway ports, last event, closes)."""
    owed = [(socket, _owed(socket, chats[socket.chat_id])) for socket in sockets]

    def behind() -> list[tuple[ChatClient, str]]:
        return [
            (s, last)
            for s, last in owed
            if last is not None
            and (s.last_event_id is None or compare_ids(s.last_event_id, last) < 0)
        ]

    try:
        await wait_until(lambda: not behind(), within, "every socket caught up", interval=0.05)
    except TimeoutError as exc:
        lines = [
            f"{s.chat_id} {s.transport} v{2 if s.v2 else 1} ports={s.ports} "
            f"last={s.last_event_id} owed={last} frames={len(s.frames)} "
            f"connects={len(s.connects)} closes={[c[1] for c in s.closes]}"
            for s, last in behind()
        ]
        raise AssertionError("sockets behind the log:\n" + "\n".join(lines)) from exc


def violations(findings: Findings) -> str:
    """The findings, one line each, for an assertion message."""
    return "\n".join(f"{v.kind}: {v.chat_id}: {v.detail}" for v in findings.violations)
