"""infra/redis/users.acl grants exactly the key families the code uses (BusKeys is the source)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from bus.keys import ROLE_FAMILIES, BusKeys

ACL = Path(__file__).resolve().parents[2] / "infra" / "redis" / "users.acl"
KEY_RULE = re.compile(r"^%(?:R|W|RW)?~|^~")


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
        keys.ip_rate("192.0.2.1", 1),
        keys.jobs,
        keys.dead_letters,
        keys.queue_ring,
        keys.queue_waiting,
        keys.queue_clock,
        keys.queue_lane("0123abcd"),
        f"{keys.queue_lane('0123abcd')}:served",
        keys.access_codes,
        keys.workers,
        keys.worker_alive("host-1"),
        keys.arq_queue,
        f"{keys.arq_queue}:health-check",
        "arq:job:abc",
    ]


@pytest.mark.parametrize("user", sorted(ROLE_FAMILIES))
def test_each_users_key_patterns_are_generated_from_bus_keys(user: str) -> None:
    rules = acl_rules()
    assert granted_keys(rules[user]) == set(BusKeys("terra").acl_key_globs(user))


def test_every_granted_family_matches_a_name_the_code_produces() -> None:
    keys = BusKeys("terra")
    names = every_name(keys)
    for family, glob in keys.families().items():
        assert any(fnmatch.fnmatchcase(name, glob) for name in names), family


def test_every_name_the_code_produces_is_granted_to_some_user() -> None:
    keys = BusKeys("terra")
    granted = set().union(*(keys.acl_key_globs(user) for user in ROLE_FAMILIES))
    for name in every_name(keys):
        assert any(fnmatch.fnmatchcase(name, glob) for glob in granted), name


def test_channel_patterns_match_bus_keys() -> None:
    keys = BusKeys("terra")
    for user, tokens in acl_rules().items():
        channels = {t[1:] for t in tokens if t.startswith("&")}
        if user in ("gateway", "worker", "ops"):
            assert channels == set(keys.channel_globs()), user
    assert fnmatch.fnmatchcase(keys.chat_channel("c1"), next(iter(keys.channel_globs())))


def test_only_admin_may_touch_every_key() -> None:
    for user, tokens in acl_rules().items():
        if user not in ("admin", "default"):
            assert "~*" not in tokens, user
