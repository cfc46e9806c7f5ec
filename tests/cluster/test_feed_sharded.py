"""The live feed on a Redis Cluster: SSUBSCRIBE per chat on its master, one connection per node.

One module cluster: 3 masters with a replica each. The chat scripts SPUBLISH (``BusKeys``
with ``cluster``); the feed (bus/shard_feed.py) keeps a connection per master that owns a
subscribed chat. Checked here: every event reaches every listener in order with no gap and
no duplicate on every master; a chat whose slot moves to another master, and chats whose
master dies and is replaced by its replica, are followed on their new master and backfilled
from the log; hundreds of listeners churning over every node never make two coroutines
read one connection; and what a sharded event costs on the cluster bus next to a classic
PUBLISH. The failover test runs last: it changes the topology.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from bus import pubsub
from bus.chatlog import ChatLog, EventRecord
from bus.client import RedisOptions, create_redis
from bus.errors import BusError
from bus.keys import BusKeys
from bus.pubsub import ChatFeed
from tests.support.redis_cluster import ClusterNode, RedisCluster
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration]

CLUSTER_REPLICAS = 1
KEYS = BusKeys("feed", 16, cluster=True)
QUEUED = '{"type":"workerState","state":"queued"}'


@pytest.fixture
async def client(redis_cluster: RedisCluster) -> AsyncIterator[Redis]:
    """A cluster client as the gateway builds one (REDIS_CLUSTER)."""
    redis = create_redis(redis_cluster.url, client_name="feed-test", cluster=True)
    try:
        yield redis
    finally:
        await redis.aclose()


@contextlib.asynccontextmanager
async def running_feed(client: Redis) -> AsyncIterator[ChatFeed]:
    feed = ChatFeed(client, KEYS, ChatLog(client, KEYS), linger_seconds=0)
    assert feed.sharded
    feed.start()
    try:
        await wait_until(lambda: feed.connected, timeout=10, message="the feed's slot map")
        yield feed
    finally:
        await feed.close()


@pytest.fixture
async def feed(client: Redis) -> AsyncIterator[ChatFeed]:
    async with running_feed(client) as feed:
        yield feed


def chats_by_master(cluster: RedisCluster, per_master: int, prefix: str) -> dict[str, list[str]]:
    """``per_master`` chat ids on each master (by node address)."""
    owners = cluster.slot_owners()
    wanted = {node.address: per_master for node in cluster.masters()}
    chats: dict[str, list[str]] = {address: [] for address in wanted}
    n = 0
    while any(wanted.values()):
        chat_id = f"{prefix}-{n}"
        n += 1
        address = owners[key_slot(KEYS.chat_channel(chat_id).encode())].address
        if wanted[address] > 0:
            wanted[address] -= 1
            chats[address].append(chat_id)
    return chats


async def follow(feed: ChatFeed, chat_id: str, into: list[str]) -> None:
    """Every event of ``chat_id`` from its start, live, into ``into`` (until cancelled)."""
    async for record in feed.follow(chat_id, "0-0", verify=False):
        into.append(record.event_id)


async def append_retrying(log: ChatLog, chat_id: str, data: str = QUEUED) -> str:
    """Append one event, retrying while its slot moves or its master fails over."""
    for _ in range(400):
        try:
            return await log.append_event(chat_id, data)
        except BusError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"could not append to {chat_id}")


async def log_ids(log: ChatLog, chat_id: str) -> list[str]:
    return [record.event_id for record in await log.events_after(chat_id, "0-0")]


async def caught_up(log: ChatLog, seen: dict[str, list[list[str]]]) -> None:
    """Wait until every follower of every chat saw exactly its chat's log."""

    async def done() -> bool:
        for chat_id, followers in seen.items():
            ids = await log_ids(log, chat_id)
            if any(got != ids for got in followers):
                return False
        return True

    try:
        await wait_until(done, timeout=30, message="every follower to see its chat's log")
    except TimeoutError:
        for chat_id, followers in seen.items():
            ids = await log_ids(log, chat_id)
            for got in followers:
                assert got == ids, f"{chat_id}: {len(got)} seen, {len(ids)} in the log"
        raise


async def replicated(
    cluster: RedisCluster, master: ClusterNode, log: ChatLog, chat_id: str
) -> None:
    """Wait until every replica of ``master`` has ``chat_id``'s log as the master has it.

    What the feed saw must survive a failover: a replica still in its first sync would take
    over without it (and the log restarts for real). Not ``WAIT`` on a control connection:
    it waits only for that connection's own writes, so it answers at once.
    """
    last = await log.last_event_id(chat_id)
    replicas = cluster.replicas_of(master)

    def synced() -> bool:
        for replica in replicas:
            control = cluster.client(replica)
            try:
                control.execute_command("READONLY")  # type: ignore[no-untyped-call]
                if control.hget(KEYS.chat_meta(chat_id), "last") != last:
                    return False
            finally:
                control.close()
        return True

    await wait_until(lambda: asyncio.to_thread(synced), timeout=30, message="the replicas to sync")


def in_order_once(ids: list[str]) -> bool:
    return ids == sorted(set(ids), key=lambda i: tuple(map(int, i.split("-"))))


def info_counter(cluster: RedisCluster, node: ClusterNode, field: str) -> int:
    text = cluster.command(node, "CLUSTER", "INFO")
    fields = dict(line.split(":", 1) for line in str(text).split() if ":" in line)
    return int(fields.get(field, 0))


def bus_messages(cluster: RedisCluster) -> int:
    """Pub/sub messages every live node sent on the cluster bus so far (both kinds)."""
    return sum(
        info_counter(cluster, node, field)
        for node in cluster.live_nodes()
        for field in (
            "cluster_stats_messages_publish_sent",
            "cluster_stats_messages_publishshard_sent",
        )
    )


# --- tests -------------------------------------------------------------------------------


async def test_listeners_on_every_master_get_every_event_in_order(
    feed: ChatFeed, redis_cluster: RedisCluster
) -> None:
    by_master = chats_by_master(redis_cluster, 2, "spread")
    chats = [chat_id for ids in by_master.values() for chat_id in ids]
    seen: dict[str, list[list[str]]] = {chat_id: [[], []] for chat_id in chats}
    tasks = [
        asyncio.create_task(follow(feed, chat_id, into))
        for chat_id, followers in seen.items()
        for into in followers
    ]
    try:
        await wait_until(
            lambda: feed.chat_count == len(chats), timeout=10, message="every chat subscribed"
        )
        assert feed.nodes == {address: 2 for address in by_master}  # one link per master

        async def writer(chat_id: str) -> None:
            for _ in range(25):
                await feed.log.append_event(chat_id, QUEUED)

        await asyncio.gather(*(writer(chat_id) for chat_id in chats))
        await caught_up(feed.log, seen)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for followers in seen.values():
        for ids in followers:
            assert len(ids) == 25
            assert in_order_once(ids)
    assert feed.reconnects == 0


async def test_a_sharded_event_costs_no_cluster_bus_message_to_other_shards(
    feed: ChatFeed, redis_cluster: RedisCluster, client: Redis
) -> None:
    """SPUBLISH goes to the shard's replica only (1 message per event here); a classic
    PUBLISH is copied to every other node (5 in this 6-node cluster)."""
    chat_id = chats_by_master(redis_cluster, 1, "cost")[redis_cluster.masters()[0].address][0]
    events = 50
    got: list[str] = []
    task = asyncio.create_task(follow(feed, chat_id, got))
    try:
        await wait_until(lambda: feed.chat_count == 1, timeout=10, message="the subscription")
        before = bus_messages(redis_cluster)
        for _ in range(events):
            await feed.log.append_event(chat_id, QUEUED)
        await wait_until(lambda: len(got) == events, timeout=10, message="every event")
        sharded = bus_messages(redis_cluster) - before
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    classic_log = ChatLog(client, BusKeys("feed", 16, cluster=False))  # scripts that PUBLISH
    before = bus_messages(redis_cluster)
    for _ in range(events):
        await classic_log.append_event(chat_id, QUEUED)
    classic = bus_messages(redis_cluster) - before

    nodes = len(redis_cluster.live_nodes())
    print(
        f"\ncluster-bus messages per event: sharded {sharded / events}, classic {classic / events}"
    )
    assert sharded == events * CLUSTER_REPLICAS
    assert classic == events * (nodes - 1)


async def test_a_slot_moved_under_a_chat_is_followed_on_its_new_master(
    feed: ChatFeed, redis_cluster: RedisCluster
) -> None:
    by_master = chats_by_master(redis_cluster, 1, "moved")
    source_address, (chat_id,) = next(iter(by_master.items()))
    target = next(n for n in redis_cluster.masters() if n.address != source_address)
    slot = key_slot(KEYS.chat_channel(chat_id).encode())
    seen: dict[str, list[list[str]]] = {chat_id: [[]]}
    task = asyncio.create_task(follow(feed, chat_id, seen[chat_id][0]))
    appending = True

    async def appender() -> None:
        while appending:
            await append_retrying(feed.log, chat_id)
            await asyncio.sleep(0.005)

    writer = asyncio.create_task(appender())
    try:
        await wait_until(lambda: len(seen[chat_id][0]) >= 20, timeout=10, message="live events")
        reconnects = feed.reconnects
        await asyncio.to_thread(redis_cluster.migrate_slot, slot, target)
        await wait_until(
            lambda: feed.nodes.get(target.address) == 1 and not feed.homeless,
            timeout=15,
            message="the chat subscribed on its new master",
        )
        count = len(seen[chat_id][0])
        await wait_until(
            lambda: len(seen[chat_id][0]) >= count + 20, timeout=10, message="events after"
        )
        appending = False
        await writer
        await caught_up(feed.log, seen)
    finally:
        appending = False
        for t in (task, writer):
            t.cancel()
        await asyncio.gather(task, writer, return_exceptions=True)
    assert in_order_once(seen[chat_id][0])
    assert source_address not in feed.nodes
    assert feed.reconnects == reconnects  # the node said so: not a lost connection


async def test_a_chat_in_a_slot_moved_unseen_is_subscribed_after_moved(
    feed: ChatFeed, redis_cluster: RedisCluster
) -> None:
    """The feed's slot map is stale (the slot moved while it had no chat there): the old
    master answers SSUBSCRIBE with MOVED and the chat is subscribed on the new one."""
    source_address, (chat_id,) = next(iter(chats_by_master(redis_cluster, 1, "stale").items()))
    target = next(n for n in redis_cluster.masters() if n.address != source_address)
    await wait_until(lambda: feed.connected, timeout=10, message="the slot map")
    await asyncio.to_thread(
        redis_cluster.migrate_slot, key_slot(KEYS.chat_channel(chat_id).encode()), target
    )
    async with feed.listen(chat_id) as listener:  # confirmed on the new master, or times out
        assert feed.nodes == {target.address: 1}
        event_id = await append_retrying(feed.log, chat_id)
        record = await asyncio.wait_for(listener.get(), 10)
    assert record.event_id == event_id


async def test_hundreds_of_listeners_churning_over_every_node(
    feed: ChatFeed, redis_cluster: RedisCluster
) -> None:
    """Listeners come and go on 60 chats over 3 masters (subscribe, unsubscribe, new links)
    while the masters drop the feed's connections: no listener fails, none reads another's
    connection (``RuntimeError: read() called while another coroutine ...``)."""
    chats = [c for ids in chats_by_master(redis_cluster, 20, "churn").values() for c in ids]
    failures: list[BaseException] = []
    dropped = asyncio.Event()

    async def listener(n: int) -> None:
        rng = random.Random(n)
        rounds = 0
        while rounds < 4 or not dropped.is_set():  # churning until the drops were seen
            rounds += 1
            chat_id = rng.choice(chats)
            try:
                async with feed.listen(chat_id) as live:
                    event_id = await append_retrying(feed.log, chat_id)
                    while True:
                        record: EventRecord = await asyncio.wait_for(live.get(), 20)
                        if record.event_id == event_id:
                            break
            except Exception as exc:
                failures.append(exc)
            await asyncio.sleep(rng.random() / 20)

    async def drop_links() -> None:
        # At least three rounds, and until the feed has seen a drop (a round can land while
        # no link is open: the listeners between two chats).
        for attempt in range(100):
            await asyncio.sleep(0.3)
            for node in redis_cluster.masters():
                await asyncio.to_thread(
                    redis_cluster.command, node, "CLIENT", "KILL", "TYPE", "pubsub"
                )
            if attempt >= 2 and feed.reconnects >= 1:
                break
        dropped.set()

    await asyncio.gather(*(listener(n) for n in range(300)), drop_links())
    assert [f"{exc!r} from {exc.__cause__!r}" for exc in failures] == []
    assert feed.reconnects >= 1  # the drops were seen, and survived


async def test_chats_resume_with_no_gap_after_their_master_fails_over(
    feed: ChatFeed, redis_cluster: RedisCluster
) -> None:
    """Kill a master: its chats move to the promoted replica and are backfilled; chats on
    the other masters keep their connections and keep flowing meanwhile."""
    by_master = chats_by_master(redis_cluster, 1, "failover")
    victim_address, (victim_chat,) = next(iter(by_master.items()))
    others = [ids[0] for address, ids in by_master.items() if address != victim_address]
    victim = next(n for n in redis_cluster.masters() if n.address == victim_address)
    seen: dict[str, list[list[str]]] = {c: [[]] for c in [victim_chat, *others]}
    tasks = [asyncio.create_task(follow(feed, c, into[0])) for c, into in seen.items()]
    try:
        await wait_until(lambda: feed.chat_count == 3, timeout=10, message="the subscriptions")
        for chat_id in seen:
            for _ in range(10):
                await feed.log.append_event(chat_id, QUEUED)
        await caught_up(feed.log, seen)
        # What the feed saw must survive the failover: the replica has it all.
        await replicated(redis_cluster, victim, feed.log, victim_chat)
        links = _links(feed)

        redis_cluster.kill(victim)
        for chat_id in others:  # the other masters' chats flow while the victim is down
            await feed.log.append_event(chat_id, QUEUED)
        await caught_up(feed.log, {c: seen[c] for c in others})
        assert feed.connected  # one master down is not an outage: readiness stays

        heir = await asyncio.to_thread(redis_cluster.wait_failover, victim)
        for chat_id in seen:
            for _ in range(10):
                await append_retrying(feed.log, chat_id)
        await caught_up(feed.log, seen)
        await wait_until(lambda: not feed.homeless, timeout=15, message="the feed to settle")
        assert feed.connected
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for followers in seen.values():
        assert in_order_once(followers[0])
    assert feed.nodes.get(heir.address) == 1
    after = _links(feed)
    for address in by_master:
        if address != victim_address:
            assert after[address] is links[address], "another master's connection was dropped"
    assert feed.reconnects >= 1


def _links(feed: ChatFeed) -> dict[str, Any]:
    """The feed's connection object per node (identity tells a reconnect)."""
    shards: Any = feed._shards
    return {node: link.connection for node, link in shards._links.items()}


async def test_chats_of_a_hung_master_move_to_its_replica(
    redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A master that stops answering (SIGSTOP: its sockets stay open) is noticed by the
    watchdog, and its chats move to the replica that takes over, backfilled: the feed never
    waits for ever on a node that accepts a connection and then says nothing.

    The cluster client gets short timeouts here: a hung master costs it (socket timeout x
    node retries x cluster retries) before the feed's confirmation read goes on, a budget
    that is the deployment's, not the feed's. It used to fail 1 run in 4: a new connection
    to the hung master (the client still routing there) chained handshake after handshake
    (bus.connection), and the read waited there for as long as the master hung."""
    monkeypatch.setattr(pubsub, "PING_INTERVAL", 0.1)
    monkeypatch.setattr(pubsub, "DEAD_AFTER", 0.5)
    options = RedisOptions(socket_timeout=1.0, connect_timeout=1.0, retries=1)
    client = create_redis(redis_cluster.url, client_name="feed-test", options=options, cluster=True)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(client.aclose)
        feed = await stack.enter_async_context(running_feed(client))
        await _hung_master(feed, redis_cluster)


async def _hung_master(feed: ChatFeed, redis_cluster: RedisCluster) -> None:
    victim = next(n for n in redis_cluster.masters() if redis_cluster.replicas_of(n))
    chat_id = chats_by_master(redis_cluster, 1, "hung")[victim.address][0]
    seen: dict[str, list[list[str]]] = {chat_id: [[]]}
    task = asyncio.create_task(follow(feed, chat_id, seen[chat_id][0]))
    assert victim.proc is not None
    try:
        await wait_until(lambda: feed.chat_count == 1, timeout=10, message="the subscription")
        for _ in range(5):
            await feed.log.append_event(chat_id, QUEUED)
        await caught_up(feed.log, seen)
        await replicated(redis_cluster, victim, feed.log, chat_id)
        slot = key_slot(KEYS.chat_channel(chat_id).encode())
        witness = next(n for n in redis_cluster.masters() if n is not victim)
        victim.proc.send_signal(signal.SIGSTOP)
        try:

            def promoted() -> ClusterNode | None:  # asked of a node that still answers
                owner = redis_cluster.slot_owners(witness).get(slot)
                return owner if owner is not None and owner is not victim else None

            heir = await wait_until(promoted, timeout=30, message="a replica to take over")
            for _ in range(5):
                await append_retrying(feed.log, chat_id)
            await caught_up(feed.log, seen)
        finally:
            victim.proc.send_signal(signal.SIGCONT)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert in_order_once(seen[chat_id][0])
    assert feed.nodes.get(heir.address) == 1
