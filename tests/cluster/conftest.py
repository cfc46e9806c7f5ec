"""The cluster tier: real Redis Clusters (``tests.support.redis_cluster``), shared by the modules.

A module sets ``CLUSTER_REPLICAS = 1`` for a replica per master (failover tests); the
default is 3 masters without replicas. Skipped without redis-server >= 7 and redis-cli.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.launcher import redis_major
from tests.support.redis_cluster import NODE_DOWN, ClusterTLS, RedisCluster
from tests.support.redis_server import redis_server_binary
from tests.support.wait import wait_until_sync


def cluster_unavailable() -> str | None:
    """Why no test cluster can start here (``None`` when it can)."""
    binary = redis_server_binary()
    if binary is None or redis_major(binary) < 7:
        return "needs redis-server >= 7 (sharded pub/sub, cluster-port)"
    if shutil.which("redis-cli") is None:
        return "needs redis-cli (redis-cli --cluster create)"
    return None


#: What healing a lent cluster may raise: it is then stopped, not lent again.
HEAL_FAILED: tuple[type[Exception], ...] = (RuntimeError, TimeoutError, *NODE_DOWN)


def _shaped(cluster: RedisCluster) -> bool:
    """Whether the cluster is as it was made: its masters, each with its replicas, every
    node a master with slots or a replica (a restarted master joins as a replica a moment
    after it answers)."""
    masters = cluster.masters()
    if len(masters) != cluster.masters_wanted:
        return False
    replicas = [cluster.replicas_of(master) for master in masters]
    if any(len(of) != cluster.replicas_wanted for of in replicas):
        return False
    return len(masters) + sum(len(of) for of in replicas) == len(cluster.nodes)


class ClusterPool:
    """The package's clusters, one per replica count, lent to module after module.

    Starting 3 (or 6) nodes and creating the cluster costs seconds a module; a module that
    only reads and writes keys leaves nothing the next one could trip on once every master
    is emptied. A module that killed or stopped nodes gets them back: killed nodes start
    again (a former master rejoins as its heir's replica), stopped ones are continued, and
    the cluster is lent again only once every slot is served, every master has its
    replicas again and every replica is linked; otherwise it is stopped and the next module gets a
    new one. Which node is a master may so differ from module to module: tests ask
    ``masters()`` and ``node_for_key()``, never assume the first three nodes.
    """

    def __init__(self, root: pytest.TempPathFactory) -> None:
        self.root = root
        self.clusters: dict[int, RedisCluster] = {}

    def borrow(self, replicas: int) -> RedisCluster:
        """A healthy, empty cluster with ``replicas`` replicas per master."""
        cluster = self.clusters.pop(replicas, None)
        if cluster is not None and not self._heal(cluster):
            cluster.stop()
            cluster = None
        if cluster is None:
            cluster = RedisCluster(self.root.mktemp("cluster"), replicas=replicas).start()
        else:
            cluster.flushall()
        return cluster

    def give_back(self, replicas: int, cluster: RedisCluster) -> None:
        """Keep ``cluster`` for the next module that wants ``replicas``."""
        self.clusters[replicas] = cluster

    @staticmethod
    def _heal(cluster: RedisCluster) -> bool:
        try:
            for node in cluster.nodes:
                if node.alive:
                    assert node.proc is not None
                    node.proc.send_signal(signal.SIGCONT)  # a no-op unless it was stopped
                else:
                    cluster.start_node(node)
            wait_until_sync(
                lambda: cluster._healthy() and _shaped(cluster),
                20,
                "the lent cluster to be whole again",
                interval=0.05,
                ignore=NODE_DOWN,
            )
            # A slot left half-moved (IMPORTING / MIGRATING) would redirect the next module.
            return not any(
                "->-" in text or "-<-" in text
                for text in (cluster.command(node, "CLUSTER", "NODES") for node in cluster.nodes)
            )
        except HEAL_FAILED:
            return False

    def close(self) -> None:
        """Stop every cluster."""
        for cluster in self.clusters.values():
            cluster.stop()
        self.clusters.clear()


@pytest.fixture(scope="package")
def cluster_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPool]:
    """The clusters the package's modules share (see :class:`ClusterPool`)."""
    pool = ClusterPool(tmp_path_factory)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def redis_cluster(
    request: pytest.FixtureRequest, cluster_pool: ClusterPool
) -> Iterator[RedisCluster]:
    """A 3-master cluster for the module (``CLUSTER_REPLICAS`` replicas per master), empty.

    Borrowed from the package's :class:`ClusterPool`; ``CLUSTER_PRIVATE = True`` in a
    module gets a cluster of its own, stopped after the module.
    """
    reason = cluster_unavailable()
    if reason is not None:
        pytest.skip(reason)
    replicas = int(getattr(request.module, "CLUSTER_REPLICAS", 0))
    if getattr(request.module, "CLUSTER_PRIVATE", False):
        cluster = RedisCluster(cluster_pool.root.mktemp("cluster"), replicas=replicas).start()
        try:
            yield cluster
        finally:
            cluster.stop()
        return
    cluster = cluster_pool.borrow(replicas)
    try:
        yield cluster
    finally:
        cluster_pool.give_back(replicas, cluster)


REDIS_DIR = Path(__file__).resolve().parents[2] / "infra" / "redis"
#: The committed ACL's users; a secure cluster has a password for each.
USERS = ("admin", "gateway", "worker", "ops")


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="package")
def secure_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisCluster, dict[str, str]]]:
    """A 3-master cluster with TLS on every port and the committed ACL (``render-acl.sh`` on
    ``infra/redis/users.acl``), client certificates for admin, gateway and worker; with
    each user's password."""
    reason = cluster_unavailable()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl for infra/redis/gen-certs.sh")
    root = tmp_path_factory.mktemp("cluster-acl-tls")
    certs = root / "tls"
    clients = [arg for user in ("admin", "gateway", "worker") for arg in ("-c", user)]
    _run("sh", REDIS_DIR / "gen-certs.sh", "-d", "2", *clients, certs)
    passwords = {user: secrets.token_hex(16) for user in USERS}
    secrets_dir = root / "secrets"
    secrets_dir.mkdir()
    for user, password in passwords.items():
        (secrets_dir / f"redis_{user}_password").write_text(password + "\n")
    acl = root / "users.acl"
    _run("sh", REDIS_DIR / "render-acl.sh", REDIS_DIR / "users.acl", secrets_dir, acl)
    cluster = RedisCluster(
        root / "cluster",
        acl_file=acl,
        auth=("admin", passwords["admin"]),
        tls=ClusterTLS.from_dir(certs),
    ).start()
    try:
        yield cluster, passwords
    finally:
        cluster.stop()
