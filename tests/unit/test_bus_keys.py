"""The key layouts (bus/keys.py): legacy names unchanged, partitions spread over the slots,
one slot for everything a chat's accept touches, and worker globs that cannot reach a
visitor's idempotency record."""

from __future__ import annotations

import fnmatch
from collections import Counter

import pytest
from pydantic import ValidationError
from redis.crc import key_slot

from bus.keys import MAX_PARTITIONS, BusKeys, partition_tag
from bus.layout import main
from bus.settings import BusSettings, describe_settings_error

#: A 3-master cluster as ``redis-cli --cluster create`` splits the slots.
THREE_MASTERS = ((0, 5460), (5461, 10922), (10923, 16383))


def slot(name: str) -> int:
    return key_slot(name.encode())


def accept_keys(keys: BusKeys, chat_id: str) -> list[str]:
    """Every key and channel the accept script of ``chat_id`` touches."""
    p = keys.partition_of(chat_id)
    return [
        keys.chat_events(chat_id),
        keys.chat_meta(chat_id),
        keys.chat_messages(chat_id),
        keys.chat_replies(chat_id),
        keys.chat_memory(chat_id),
        keys.chat_cancel(chat_id),
        keys.chat_lease(chat_id),
        keys.chat_idempotency(chat_id, "m-1"),
        keys.chat_budget(chat_id),
        keys.chat_channel(chat_id),
        keys.jobs_stream(p),
        keys.dead_letters_stream(p),
        keys.queue_ring(p),
        keys.queue_waiting(p),
        keys.queue_clock(p),
        keys.queue_lane(p, "0123abcd"),
        f"{keys.queue_lane(p, '0123abcd')}:bytes",
    ]


def test_legacy_layout_names_are_byte_for_byte_those_of_every_release() -> None:
    keys = BusKeys("terra")
    assert not keys.partitioned
    assert list(keys.partitions) == [0]
    assert keys.partition_of("anything") == 0
    assert keys.chat_events("c1") == "terra:chat:{c1}:events"
    assert keys.chat_messages("c1") == "terra:chat:{c1}:messages"
    assert keys.chat_meta("c1") == "terra:chat:{c1}:meta"
    assert keys.chat_replies("c1") == "terra:chat:{c1}:replies"
    assert keys.chat_lease("c1") == "terra:chat:{c1}:lease"
    assert keys.chat_cancel("c1") == "terra:chat:{c1}:cancel"
    assert keys.chat_memory("c1") == "terra:chat:{c1}:memory"
    assert keys.chat_budget("c1") == "terra:chat:{c1}:rl"
    assert keys.chat_rate("c1", 7) == "terra:chat:{c1}:rl:7"
    assert keys.chat_idempotency("c1", "m:1") == "terra:chat:{c1}:idem:m:1"
    assert keys.chat_channel("c1") == "terra:chat:{c1}:live"
    assert keys.jobs_stream(0) == "terra:jobs"
    assert keys.dead_letters_stream(0) == "terra:jobs:dead"
    assert keys.queue_ring(0) == "terra:queue:ring"
    assert keys.queue_waiting(0) == "terra:queue:waiting"
    assert keys.queue_clock(0) == "terra:queue:clock"
    assert keys.queue_lane_prefix(0) == "terra:queue:lane:"
    assert keys.queue_lane(0, "ab12") == "terra:queue:lane:ab12"
    assert keys.jobs_group == "workers"
    assert keys.workers == "terra:workers"
    with pytest.raises(ValueError, match="partition 1"):
        keys.jobs_stream(1)


def test_partitioned_names_put_the_part_before_the_chat_id() -> None:
    keys = BusKeys("terra", 4)
    assert keys.partitioned
    assert not keys.cluster
    p = keys.partition_of("c1")
    tag = keys.tag(p)
    assert keys.chat_events("c1") == f"terra:chat:{{{tag}}}:events:c1"
    assert keys.chat_idempotency("c1", "m:1") == f"terra:chat:{{{tag}}}:idem:c1:m:1"
    assert keys.chat_channel("c1") == f"terra:chat:{{{tag}}}:live:c1"
    assert keys.jobs_stream(p) == f"terra:jobs:{{{tag}}}"
    assert keys.dead_letters_stream(p) == f"terra:jobs:{{{tag}}}:dead"
    assert keys.queue_ring(p) == f"terra:queue:{{{tag}}}:ring"
    assert keys.queue_lane(p, "ab12") == f"terra:queue:{{{tag}}}:lane:ab12"


def test_a_cluster_is_partitioned_even_with_one_partition() -> None:
    keys = BusKeys("terra", 1, cluster=True)
    assert keys.partitioned
    assert keys.chat_events("c1") == f"terra:chat:{{{keys.tag(0)}}}:events:c1"


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 7, 16, 100, MAX_PARTITIONS])
def test_each_partition_tag_hashes_into_its_own_share_of_the_slots(partitions: int) -> None:
    for p in range(partitions):
        low, high = p * 16384 // partitions, (p + 1) * 16384 // partitions
        assert low <= slot("{" + partition_tag(p, partitions) + "}") < high, p


@pytest.mark.parametrize("partitions", [3, 16, 64])
def test_partitions_spread_evenly_over_three_masters(partitions: int) -> None:
    keys = BusKeys("terra", partitions, cluster=True)
    per_master = Counter(
        next(i for i, (lo, hi) in enumerate(THREE_MASTERS) if lo <= slot(keys.jobs_stream(p)) <= hi)
        for p in keys.partitions
    )
    assert len(per_master) == 3
    assert max(per_master.values()) - min(per_master.values()) <= 1


def test_chats_spread_evenly_over_partitions() -> None:
    keys = BusKeys("terra", 16)
    counts = Counter(keys.partition_of(f"chat-{i}") for i in range(16_000))
    assert len(counts) == 16
    assert min(counts.values()) > 800
    assert max(counts.values()) < 1200


def test_partition_of_is_stable_across_processes_and_releases() -> None:
    """crc32 of the chat id, not Python's salted hash(): pinned values."""
    keys = BusKeys("terra", 16)
    assert [keys.partition_of(c) for c in ("c1", "abc", "chat-42")] == [1, 2, 3]
    assert BusKeys("other", 16).partition_of("abc") == 2  # the prefix plays no part
    assert [partition_tag(p, 4) for p in range(4)] == ["0.1", "1.3", "2.1", "3.3"]


@pytest.mark.parametrize("cluster", [False, True])
def test_everything_a_chats_accept_touches_shares_one_slot(cluster: bool) -> None:
    keys = BusKeys("terra", 8, cluster=cluster)
    for chat_id in ("c1", "abc", "chat-42", "Z" * 64):
        assert len({slot(name) for name in accept_keys(keys, chat_id)}) == 1, chat_id


def test_channels_map_back_to_their_chat_in_both_layouts() -> None:
    for keys in (BusKeys("pfx"), BusKeys("pfx", 4), BusKeys("pfx", 16, cluster=True)):
        for chat_id in ("a-b_c", "c1", "x" * 64):
            assert keys.chat_id_from_channel(keys.chat_channel(chat_id)) == chat_id
        assert keys.chat_id_from_channel("other:chat:{x}:live") is None
        assert keys.chat_id_from_channel(keys.chat_events("c1")) is None
    legacy, parted = BusKeys("pfx"), BusKeys("pfx", 4)
    assert parted.chat_id_from_channel(legacy.chat_channel("c1")) is None
    assert legacy.chat_id_from_channel(parted.chat_channel("c1")) is None
    wrong_tag = parted.chat_channel("c1").replace(parted.tag(parted.partition_of("c1")), "9.9")
    assert parted.chat_id_from_channel(wrong_tag) is None


@pytest.mark.parametrize("keys", [BusKeys("terra"), BusKeys("terra", 4)], ids=repr)
def test_worker_globs_never_match_an_idempotency_key(keys: BusKeys) -> None:
    """A client message id may end in any part's name (``..._events``, ``x:meta``)."""
    worker_globs = keys.acl_key_globs("worker")
    chat_globs = [g for g in worker_globs if ":chat:" in g]
    assert chat_globs
    for part in ("events", "meta", "messages", "replies", "memory", "cancel", "lease", "live"):
        for cmid in (part, f"x:{part}", f"x_{part}", f"{part}:x", f"a:{part}:b"):
            idem = keys.chat_idempotency("c1", cmid)
            assert not any(fnmatch.fnmatchcase(idem, g) for g in chat_globs), (idem, part)
        budget = keys.chat_budget("c1")
        assert not any(fnmatch.fnmatchcase(budget, g) for g in chat_globs)


def test_keys_compare_by_layout() -> None:
    assert BusKeys("t", 4) == BusKeys("t", 4)
    assert BusKeys("t", 4) != BusKeys("t", 4, cluster=True)
    assert len({BusKeys("t"), BusKeys("t", 1)}) == 1
    with pytest.raises(AttributeError, match="immutable"):
        BusKeys("t").prefix = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="partitions"):
        BusKeys("t", 0)
    with pytest.raises(ValueError, match="partitions"):
        BusKeys("t", MAX_PARTITIONS + 1)


def settings(**env: object) -> BusSettings:
    return BusSettings(redis_url="redis://localhost:6399", **env)  # type: ignore[arg-type]


def test_more_cluster_nodes_are_seeds_of_the_cluster_client() -> None:
    seeded = settings(redis_cluster=True, redis_cluster_nodes="n2:7000, [::1]:7001,")
    assert seeded.cluster_seeds == (("n2", 7000), ("::1", 7001))
    assert seeded.redis_options().seeds == seeded.cluster_seeds
    assert settings().redis_options().seeds == ()


def test_settings_pick_the_layout() -> None:
    assert settings().bus_keys == BusKeys("terra")
    assert settings(redis_partitions=4).bus_keys == BusKeys("terra", 4)
    assert settings(redis_cluster=True).bus_keys == BusKeys("terra", 16, cluster=True)
    assert settings(redis_cluster=True, redis_partitions=3).bus_keys == BusKeys("terra", 3, True)
    assert settings(redis_key_prefix="p", redis_partitions=2).bus_keys == BusKeys("p", 2)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"redis_partitions": 0}, "REDIS_PARTITIONS"),
        ({"redis_partitions": MAX_PARTITIONS + 1}, "REDIS_PARTITIONS"),
        ({"redis_partitions": "many"}, "REDIS_PARTITIONS"),
        ({"redis_cluster": "maybe"}, "REDIS_CLUSTER"),
        ({"redis_cluster": True, "redis_url": "redis://u:s3cret@h:7000/2"}, "REDIS_CLUSTER"),
        ({"redis_cluster_nodes": "n2:7000"}, "REDIS_CLUSTER_NODES"),  # without REDIS_CLUSTER
        ({"redis_cluster": True, "redis_cluster_nodes": "n2"}, "REDIS_CLUSTER_NODES"),
        ({"redis_cluster": True, "redis_cluster_nodes": "n2:70000"}, "REDIS_CLUSTER_NODES"),
    ],
)
def test_bad_layout_settings_are_named_in_one_line(env: dict[str, object], named: str) -> None:
    env = {"redis_url": "redis://localhost:6399", **env}
    with pytest.raises(ValidationError) as caught:
        BusSettings(**env)  # type: ignore[arg-type]
    line = describe_settings_error(caught.value)
    assert line.startswith(f"{named} (")
    assert "s3cret" not in line
    assert "\n" not in line


def test_a_clients_budgets_share_a_slot_in_the_partitioned_layout() -> None:
    """One script spends a route's budget and looks at the failed-code one."""
    assert BusKeys("terra").client_budget("post", "192.0.2.1") == "terra:rl:post:192.0.2.1"
    keys = BusKeys("terra", 4)
    for client in ("192.0.2.1", "2001:db8:1:2::/64"):
        names = [keys.client_budget(family, client) for family in ("post", "failed-code", "read")]
        assert len({slot(name) for name in names}) == 1


def test_the_layout_command_prints_either_layout_and_refuses_a_bad_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["terra", "16", "--cluster"])
    out = capsys.readouterr().out
    assert "16 partitions on a cluster" in out
    assert "partition tags: 0.13 1.10 2.3 3.0 " in out
    main([])
    assert "legacy: one partition" in capsys.readouterr().out
    for argv in (["--help"], ["terra", "0"]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == (0 if argv == ["--help"] else 2)
