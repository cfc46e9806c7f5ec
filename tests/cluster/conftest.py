"""The cluster tier: real Redis Clusters (``tests.support.redis_cluster``), one per module.

A module sets ``CLUSTER_REPLICAS = 1`` for a replica per master (failover tests); the
default is 3 masters without replicas. Skipped without redis-server >= 7 and redis-cli.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.launcher import redis_major
from tests.support.redis_cluster import ClusterTLS, RedisCluster
from tests.support.redis_server import redis_server_binary


def cluster_unavailable() -> str | None:
    """Why no test cluster can start here (``None`` when it can)."""
    binary = redis_server_binary()
    if binary is None or redis_major(binary) < 7:
        return "needs redis-server >= 7 (sharded pub/sub, cluster-port)"
    if shutil.which("redis-cli") is None:
        return "needs redis-cli (redis-cli --cluster create)"
    return None


@pytest.fixture(scope="module")
def redis_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisCluster]:
    """A 3-master cluster for the module (``CLUSTER_REPLICAS`` replicas per master)."""
    reason = cluster_unavailable()
    if reason is not None:
        pytest.skip(reason)
    replicas = int(getattr(request.module, "CLUSTER_REPLICAS", 0))
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"), replicas=replicas).start()
    try:
        yield cluster
    finally:
        cluster.stop()


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
