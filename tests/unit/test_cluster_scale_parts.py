"""The scale benchmark's pure parts: socket plan, setups, per-node deltas, frame tally.

The end-to-end run (``--quick``) is tests/integration/test_cluster_scale_smoke.py.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from benchmarks.cluster_scale import SetupSpec, parse_args, plan_sockets
from benchmarks.redis_nodes import NodeStats, _cluster_info, delta
from benchmarks.scale_clients import Tally


def test_a_chats_sockets_sit_on_different_gateways_and_gateways_get_even_shares() -> None:
    chats, plan = plan_sockets(sockets=12, chats=6, ports=[1, 2, 3])

    assert len(chats) == 6
    by_chat: dict[str, list[str]] = {}
    for url, chat in plan:
        assert f"chatId={chat}&" in url
        by_chat.setdefault(chat, []).append(url.split("/api/")[0])
    assert all(len(set(urls)) == len(urls) == 2 for urls in by_chat.values())
    per_gateway = Counter(url.split("/api/")[0] for url, _ in plan)
    assert sorted(per_gateway.values()) == [4, 4, 4]


def test_setups_name_their_layout() -> None:
    args = parse_args(["--partitions", "8"])
    single, cluster = args.setups
    assert (single.kind, single.label, single.partitions) == ("single", "single", None)
    assert (cluster.kind, cluster.label, cluster.partitions) == ("cluster", "cluster-3", 8)
    assert SetupSpec.parse("single:4", args) == SetupSpec("single", "single:4", 4)
    assert parse_args(["--setups", "cluster"]).setups[0].partitions is None  # its default
    for bad in ("redis", "single:x", ""):
        with pytest.raises(SystemExit):
            parse_args(["--setups", bad])
    with pytest.raises(SystemExit):
        parse_args(["--streams", "300", "--sockets", "200"])


def test_node_deltas_leave_out_the_benchmarks_own_commands() -> None:
    before = [NodeStats("n1", {"evalsha": 10, "info": 3}, 100, 5, {"ping": 7, "publish": 0})]
    after = [
        NodeStats("n1", {"evalsha": 25, "info": 6, "xadd": 4}, 300, 9, {"ping": 9, "publish": 0})
    ]

    (node,) = delta(before, after)

    assert node.calls == {"evalsha": 15, "xadd": 4}
    assert node.commands == 19
    assert (node.used_memory_before, node.used_memory, node.keys_before, node.keys) == (
        100,
        300,
        5,
        9,
    )
    assert node.bus_sent == {"ping": 2, "publish": 0}


def test_cluster_info_is_read_from_its_text_form() -> None:
    text = "cluster_state:ok\r\ncluster_stats_messages_ping_sent:12\r\n"
    assert _cluster_info(text) == {"cluster_state": "ok", "cluster_stats_messages_ping_sent": "12"}
    assert _cluster_info({"cluster_state": "ok"}) == {"cluster_state": "ok"}


def _frame(**fields: object) -> str:
    return json.dumps(fields)


def test_the_tally_times_chunks_by_their_event_id_and_counts_answers_once() -> None:
    tally = Tally(frames=[0, 0], last=[(0, 0), (0, 0)], out_of_order=[0, 0])
    chunk = _frame(type="assistantChunk", content="hi", eventId="1000000-0")

    tally.frame(0, "c1", chunk, now=1000.0125)
    tally.frame(1, "c1", chunk, now=1000.02)
    answer = _frame(sender="Terra", replyTo="m1", content="hi", eventId="1000001-0")
    tally.frame(0, "c1", answer, now=1000.03)
    tally.frame(1, "c1", answer, now=1000.03)
    tally.frame(0, "c1", _frame(type="resync", chatId="c1"), now=1000.04)

    assert list(tally.chunk_lag_ms) == pytest.approx([12.5, 20.0])
    assert tally.frames == [2, 2]
    assert tally.new_answers == [("c1", "m1", "complete")]
    assert tally.twice == 0

    tally.frame(0, "c1", chunk, now=1000.05)  # an old event again: out of order
    other = _frame(sender="Terra", replyTo="m1", content="again", eventId="1000002-0")
    tally.frame(0, "c1", other, now=1000.06)  # a second answer to m1
    assert tally.out_of_order == [1, 0]
    assert tally.twice == 1
