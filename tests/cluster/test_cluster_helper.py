"""The test cluster itself (``tests.support.redis_cluster``): slots, routing, migration,
failover, TLS with ACL users, and clean-up. Other cluster tests trust what these check."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot
from redis.exceptions import ResponseError

from tests.support.redis_cluster import SLOTS, ClusterTLS, RedisCluster

pytestmark = pytest.mark.integration

CLUSTER_REPLICAS = 1
REDIS_DIR = Path(__file__).resolve().parents[2] / "infra" / "redis"


def _client(cluster: RedisCluster) -> ClusterClient:
    client: ClusterClient = ClusterClient.from_url(cluster.url, decode_responses=True)
    return client


def test_every_slot_is_served_by_one_of_three_masters(redis_cluster: RedisCluster) -> None:
    masters = redis_cluster.masters()
    owners = redis_cluster.slot_owners()
    assert len(masters) == 3
    assert len(owners) == SLOTS
    assert set(owners.values()) == set(masters)
    for master in masters:
        assert len(redis_cluster.replicas_of(master)) == 1
    assert redis_cluster.url in redis_cluster.urls


def test_node_for_key_is_the_node_that_holds_it(redis_cluster: RedisCluster) -> None:
    client = _client(redis_cluster)
    keys = [f"{{tag{n}}}:k" for n in range(12)]
    for key in keys:
        client.set(key, key)
    client.close()
    assert len({redis_cluster.node_for_key(key) for key in keys}) == 3  # spread over all
    for key in keys:
        owner = redis_cluster.node_for_key(key)
        assert redis_cluster.command(owner, "GET", key) == key
        other = next(n for n in redis_cluster.masters() if n is not owner)
        with pytest.raises(ResponseError, match="MOVED"):
            redis_cluster.command(other, "GET", key)


def test_migrate_slot_moves_the_keys_and_clients_follow(redis_cluster: RedisCluster) -> None:
    key = "{migrating}:k"
    client = _client(redis_cluster)
    client.set(key, "v")
    source = redis_cluster.node_for_key(key)
    target = next(n for n in redis_cluster.masters() if n is not source)

    assert redis_cluster.migrate_slot(key_slot(key.encode()), target) == 1

    assert redis_cluster.node_for_key(key) is target
    assert redis_cluster.command(target, "GET", key) == "v"
    with pytest.raises(ResponseError, match="MOVED"):
        redis_cluster.command(source, "GET", key)
    assert client.get(key) == "v"  # the cluster client follows MOVED
    client.close()


def test_a_slot_can_be_left_half_moved(redis_cluster: RedisCluster) -> None:
    """Between batches: moved keys answer ASK on the source, the rest stay there."""
    keys = [f"{{half}}:{n}" for n in range(3)]
    client = _client(redis_cluster)
    for key in keys:
        client.set(key, key)
    slot = key_slot(keys[0].encode())
    source = redis_cluster.node_for_slot(slot)
    target = next(n for n in redis_cluster.masters() if n is not source)

    assert redis_cluster.begin_migration(slot, target) is source
    assert redis_cluster.move_keys(slot, source, target, limit=1) == 1
    answers = []
    for key in keys:
        try:
            answers.append(redis_cluster.command(source, "GET", key))
        except ResponseError as exc:
            answers.append(str(exc).split(" ", 1)[0])
    assert answers.count("ASK") == 1
    assert sorted(a for a in answers if a != "ASK") == sorted(
        key for key, answer in zip(keys, answers, strict=True) if answer != "ASK"
    )
    assert redis_cluster.move_keys(slot, source, target) == 2
    redis_cluster.finish_migration(slot, source, target)
    redis_cluster.wait_ok()
    assert redis_cluster.node_for_slot(slot) is target
    assert [client.get(key) for key in keys] == keys
    client.close()


def test_killed_master_is_replaced_by_its_replica_and_rejoins(
    redis_cluster: RedisCluster,
) -> None:
    key = "{failover}:k"
    client = _client(redis_cluster)
    client.set(key, "kept")
    client.wait(1, 1000)  # the write reached the replica before the master dies
    victim = redis_cluster.node_for_key(key)
    replica = redis_cluster.replicas_of(victim)[0]

    redis_cluster.kill(victim)
    heir = redis_cluster.wait_failover(victim)

    assert heir is replica
    assert redis_cluster.node_for_key(key) is heir
    assert redis_cluster.command(heir, "GET", key) == "kept"
    redis_cluster.start_node(victim)
    redis_cluster.wait_ok()
    assert victim in redis_cluster.replicas_of(heir)
    client.close()


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], capture_output=True, timeout=60, check=True)


def test_tls_cluster_with_acl_users_and_stop_ends_every_process(tmp_path: Path) -> None:
    """Every node on TLS only, with the committed ACL template; stop() leaves no process."""
    certs = tmp_path / "tls"
    _run("sh", REDIS_DIR / "gen-certs.sh", "-d", "2", "-c", "admin", "-c", "gateway", certs)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    passwords = {user: secrets.token_hex(16) for user in ("admin", "gateway", "worker", "ops")}
    for user, password in passwords.items():
        (secrets_dir / f"redis_{user}_password").write_text(password + "\n")
    acl = tmp_path / "users.acl"
    _run("sh", REDIS_DIR / "render-acl.sh", REDIS_DIR / "users.acl", secrets_dir, acl)
    tls = ClusterTLS.from_dir(certs)
    cluster = RedisCluster(
        tmp_path / "cluster", acl_file=acl, auth=("admin", passwords["admin"]), tls=tls
    )
    try:
        cluster.start()
        assert cluster.url.startswith("rediss://")
        for node in cluster.nodes:  # the password never reaches a command line
            assert node.proc is not None
            assert passwords["admin"] not in str(node.proc.args)
        client = ClusterClient.from_url(
            cluster.url,
            username="admin",
            password=passwords["admin"],
            ssl_ca_certs=str(certs / "ca.crt"),
            ssl_certfile=str(certs / "admin.crt"),
            ssl_keyfile=str(certs / "admin.key"),
            decode_responses=True,
        )
        keys = [f"terra:chat:{{{n}}}:meta" for n in range(12)]
        for key in keys:
            client.set(key, "x")
        assert {cluster.node_for_key(key) for key in keys} == set(cluster.masters())
        client.close()
        gateway = redis.Redis(
            port=cluster.nodes[0].port,
            username="gateway",
            password=passwords["gateway"],
            ssl=True,
            ssl_ca_certs=str(certs / "ca.crt"),
            ssl_certfile=str(certs / "gateway.crt"),
            ssl_keyfile=str(certs / "gateway.key"),
        )
        with pytest.raises(redis.exceptions.NoPermissionError):  # the ACL file is loaded
            gateway.set("elsewhere", "x")
        gateway.close()
        with pytest.raises(redis.exceptions.ConnectionError):  # no plaintext listener
            redis.Redis(port=cluster.nodes[0].port, socket_timeout=1).ping()
    finally:
        procs = [node.proc for node in cluster.nodes if node.proc is not None]
        cluster.stop()
    assert procs
    assert all(proc.poll() is not None for proc in procs)
