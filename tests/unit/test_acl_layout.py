"""infra/redis/users.acl grants exactly the key families the code uses (BusKeys is the source),
for both key layouts (legacy, and partitioned: REDIS_PARTITIONS > 1 or REDIS_CLUSTER)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from bus.keys import ROLE_FAMILIES, BusKeys

ACL = Path(__file__).resolve().parents[2] / "infra" / "redis" / "users.acl"
KEY_RULE = re.compile(r"^%(?:R|W|RW)?~|^~")
LAYOUTS = [BusKeys("terra"), BusKeys("terra", 4), BusKeys("terra", 16, cluster=True)]


def acl_rules() -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for line in ACL.read_text().splitlines():
        if line.startswith("user "):
            tokens = line.replace("(", " ").replace(")", " ").split()
            users[tokens[1]] = tokens[2:]
    return users


def granted_keys(tokens: list[str]) -> set[str]:
    return {KEY_RULE.sub("", token) for token in tokens if KEY_RULE.match(token)}


def every_name(keys: BusKeys) -> list[str]:
    """One instance of every key and channel name the bus can produce."""
    chat = "c1"
    p = keys.partition_of(chat)
    return [
        keys.chat_events(chat),
        keys.chat_messages(chat),
        keys.chat_meta(chat),
        keys.chat_idempotency(chat, "m1"),
        keys.chat_replies(chat),
        keys.chat_lease(chat),
        keys.chat_cancel(chat),
        keys.chat_memory(chat),
        keys.chat_rate(chat, 1),
        keys.chat_budget(chat),
        keys.ip_rate("192.0.2.1", 1),
        keys.jobs_stream(p),
        keys.dead_letters_stream(p),
        keys.queue_ring(p),
        keys.queue_waiting(p),
        keys.queue_clock(p),
        keys.queue_lane(p, "0123abcd"),
        f"{keys.queue_lane(p, '0123abcd')}:served",
        f"{keys.queue_lane(p, '0123abcd')}:bytes",
        keys.client_bytes("0123abcd"),
        keys.access_codes,
        keys.workers,
        keys.worker_alive("host-1"),
        keys.arq_queue,
        f"{keys.arq_queue}:health-check",
        "arq:job:abc",
    ]


@pytest.mark.parametrize("user", sorted(ROLE_FAMILIES))
def test_each_users_key_patterns_are_generated_from_bus_keys(user: str) -> None:
    """users.acl grants the union of both layouts' globs: one file serves every deployment."""
    rules = acl_rules()
    assert granted_keys(rules[user]) == set().union(*(k.acl_key_globs(user) for k in LAYOUTS))


@pytest.mark.parametrize("keys", LAYOUTS, ids=repr)
def test_every_granted_family_matches_a_name_the_code_produces(keys: BusKeys) -> None:
    names = every_name(keys)
    for family, glob in keys.families().items():
        assert any(fnmatch.fnmatchcase(name, glob) for name in names), family


@pytest.mark.parametrize("keys", LAYOUTS, ids=repr)
def test_every_name_the_code_produces_is_granted_to_some_user(keys: BusKeys) -> None:
    granted = set().union(*(keys.acl_key_globs(user) for user in ROLE_FAMILIES))
    for name in every_name(keys):
        assert any(fnmatch.fnmatchcase(name, glob) for glob in granted), name


@pytest.mark.parametrize("keys", LAYOUTS, ids=repr)
def test_the_workers_grants_never_reach_a_visitors_idempotency_record(keys: BusKeys) -> None:
    """Whatever the layout, whatever the client message id ends in."""
    worker = granted_keys(acl_rules()["worker"])
    for part in ("events", "meta", "messages", "replies", "memory", "cancel", "lease"):
        for cmid in (part, f"x_{part}", f"x:{part}", f"{part}:x"):
            for chat in ("c1", part):
                idem = keys.chat_idempotency(chat, cmid)
                assert not any(fnmatch.fnmatchcase(idem, glob) for glob in worker), idem
    assert not any(fnmatch.fnmatchcase(keys.chat_budget("c1"), glob) for glob in worker)


@pytest.mark.parametrize("user", ["gateway", "worker", "ops"])
def test_sharded_pubsub_is_granted_beside_classic_pubsub(user: str) -> None:
    """A cluster deployment SPUBLISHes and SSUBSCRIBEs where a single Redis PUBLISHes and
    SUBSCRIBEs, with the same users file."""
    tokens = set(acl_rules()[user])
    for classic, sharded in (
        ("+publish", "+spublish"),
        ("+subscribe", "+ssubscribe"),
        ("+unsubscribe", "+sunsubscribe"),
    ):
        assert (classic in tokens) == (sharded in tokens), (user, sharded)


@pytest.mark.parametrize("keys", LAYOUTS, ids=repr)
def test_channel_patterns_match_bus_keys(keys: BusKeys) -> None:
    for user, tokens in acl_rules().items():
        channels = {t[1:] for t in tokens if t.startswith("&")}
        if user in ("gateway", "worker", "ops"):
            assert channels == set(keys.channel_globs()), user
    assert fnmatch.fnmatchcase(keys.chat_channel("c1"), next(iter(keys.channel_globs())))


def test_only_admin_may_touch_every_key() -> None:
    for user, tokens in acl_rules().items():
        if user not in ("admin", "default"):
            assert "~*" not in tokens, user


@pytest.mark.parametrize("user", ["gateway", "worker", "ops"])
def test_every_app_user_may_read_the_cluster_slot_map(user: str) -> None:
    """A cluster client discovers the nodes with CLUSTER SLOTS; without it, it fails with
    'Cluster mode is not enabled' against an ACL user."""
    assert "+cluster|slots" in acl_rules()[user]
