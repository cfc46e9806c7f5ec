"""The test cluster's reading of ``CLUSTER NODES`` (tests/support/redis_cluster.py)."""

from __future__ import annotations

from tests.support.redis_cluster import parse_cluster_nodes

#: Two masters, one migrating slot 5000 to the other, a failed master and its promoted replica.
REPLY = """\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-4999 5001 [5000->-b2]
b2 127.0.0.1:7002@17002 master - 0 1700000000000 2 connected 5002-10000 [5000-<-a1]
c3 127.0.0.1:7003@17003 master,fail - 1700000000000 1700000000000 3 disconnected
d4 127.0.0.1:7004@17004 master - 0 1700000000000 4 connected 10001-16383
e5 127.0.0.1:7005@17005 slave a1 0 1700000000000 1 connected
"""


def test_masters_slot_ranges_and_replicas() -> None:
    nodes = {n.node_id: n for n in parse_cluster_nodes(REPLY)}
    assert nodes["a1"].slots == ((0, 4999), (5001, 5001))  # the migrating slot is not counted
    assert nodes["b2"].slots == ((5002, 10000),)  # nor the importing one
    assert nodes["c3"].master
    assert "fail" in nodes["c3"].flags
    assert nodes["c3"].slots == ()
    assert nodes["d4"].master_id == ""
    assert not nodes["e5"].master
    assert nodes["e5"].master_id == "a1"


def test_blank_and_short_lines_are_skipped() -> None:
    assert parse_cluster_nodes("\n  \nbroken line\n") == []
