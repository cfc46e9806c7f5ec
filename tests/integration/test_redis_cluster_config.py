"""The committed Redis Cluster deployment (infra/redis/cluster/) against real redis-servers.

Six nodes (3 masters, 3 replicas) on free loopback ports, each started the way
``infra/redis/cluster/node-start.sh`` starts one in compose: ``redis.conf``, then
``cluster/node.conf``, then an ``auth.conf`` with the replication password, with only the
paths, ports and announced host name overridden. Certificates come from ``gen-certs.sh``
(with the ``node`` client certificate the nodes present to each other), the ACL from
``render-acl.sh``, and the cluster is created by ``cluster/cluster-init.sh`` itself, as the
compose ``cluster-init`` service runs it. So the files an operator deploys are the files
under test: TLS on the cluster bus and replication, ACL users on every node, a replica
logging in to its master, the host names a client verifies.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from demo.launcher import redis_major
from tests.support.redis_server import free_port, redis_server_binary
from tests.support.wait import wait_until_sync

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REDIS_DIR = REPO / "infra" / "redis"
CLUSTER_DIR = REDIS_DIR / "cluster"
USERS = ("admin", "gateway", "worker", "ops")
MASTERS, REPLICAS = 3, 1
NODE_DOWN = (redis.RedisError, OSError)


def _run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{args[:2]} failed ({result.returncode}): {result.stdout}{result.stderr}"
        )
    return result


@dataclass
class Deployment:
    root: Path
    certs: Path
    secrets: Path
    passwords: dict[str, str]
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def tls(self, user: str) -> dict[str, Any]:
        cert = "node" if user == "admin" else user
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.certs / "ca.crt"),
            "ssl_certfile": str(self.certs / f"{cert}.crt"),
            "ssl_keyfile": str(self.certs / f"{cert}.key"),
            "ssl_check_hostname": True,
        }

    def node(self, port: int, user: str = "admin") -> redis.Redis:
        return redis.Redis(
            host="localhost",
            port=port,
            username=user,
            password=self.passwords[user],
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=5,
            **self.tls(user),
        )

    def command(self, port: int, *args: str) -> Any:
        """One command on one node as admin; the connection is closed after it."""
        client = self.node(port)
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def cluster(self, user: str) -> RedisCluster:
        return RedisCluster(  # type: ignore[no-any-return]
            host="localhost",
            port=self.ports[0],
            username=user,
            password=self.passwords[user],
            decode_responses=True,
            socket_timeout=5,
            **self.tls(user),
        )

    def init(self) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "CLUSTER_NODES": " ".join(f"localhost:{port}" for port in self.ports),
            "CLUSTER_REPLICAS": str(REPLICAS),
            "SECRETS_DIR": str(self.secrets),
        }
        return _run("sh", CLUSTER_DIR / "cluster-init.sh", env=env)


def _start_node(binary: str, deployment: Deployment, index: int) -> None:
    root = deployment.root
    data = root / f"node{index}"
    data.mkdir()
    certs = deployment.certs
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port, bus_port = free_port(), free_port()
        log = data / "redis.log"
        proc = subprocess.Popen(
            [
                binary,
                str(REDIS_DIR / "redis.conf"),
                *("--include", str(CLUSTER_DIR / "node.conf")),
                *("--include", str(root / "auth.conf")),
                *("--cluster-announce-hostname", "localhost"),
                *("--tls-port", str(port), "--cluster-port", str(bus_port)),
                *("--bind", "127.0.0.1", "--dir", str(data)),
                *("--aclfile", str(root / "users.acl")),
                *("--tls-cert-file", str(certs / "server.crt")),
                *("--tls-key-file", str(certs / "server.key")),
                *("--tls-ca-cert-file", str(certs / "ca.crt")),
                *("--tls-client-cert-file", str(certs / "node.crt")),
                *("--tls-client-key-file", str(certs / "node.key")),
                *("--pidfile", str(data / "redis.pid"), "--logfile", str(log)),
                *("--supervised", "no", "--save", ""),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deployment.procs.append(proc)

        def pong(proc: subprocess.Popen[bytes] = proc, port: int = port, log: Path = log) -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {log.read_text()[-800:]}")
            client = deployment.node(port, "ops")
            try:
                return bool(client.ping())
            finally:
                client.close()

        try:
            wait_until_sync(pong, 15, f"cluster node {index}", interval=0.05, ignore=NODE_DOWN)
        except RuntimeError:
            if "Address already in use" not in log.read_text():
                raise
            continue
        deployment.ports.append(port)
        return
    raise RuntimeError(f"no free port for cluster node {index}")


def _cluster_info(deployment: Deployment, port: int) -> dict[str, str]:
    text = str(deployment.command(port, "CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    binary = redis_server_binary()
    if binary is None or redis_major(binary) < 7:
        pytest.skip("needs redis-server >= 7.0 with TLS (set REDIS_SERVER_BIN to pick one)")
    if shutil.which("openssl") is None or shutil.which("redis-cli") is None:
        pytest.skip("needs openssl and redis-cli")
    root = tmp_path_factory.mktemp("redis-cluster-infra")
    certs = root / "tls"
    _run("sh", REDIS_DIR / "gen-certs.sh", "-d", "2", "-c", "node", "-c", "gateway",
         "-c", "worker", "-c", "ops", certs)  # fmt: skip
    secrets_dir = root / "secrets"
    secrets_dir.mkdir()
    passwords = {user: secrets.token_hex(16) for user in USERS}
    for user, value in passwords.items():
        (secrets_dir / f"redis_{user}_password").write_text(value + "\n")
    # The files cluster-init reads, under compose's secret names.
    shutil.copy(certs / "ca.crt", secrets_dir / "redis_tls_ca")
    shutil.copy(certs / "node.crt", secrets_dir / "redis_tls_node_cert")
    shutil.copy(certs / "node.key", secrets_dir / "redis_tls_node_key")
    _run("sh", REDIS_DIR / "render-acl.sh", REDIS_DIR / "users.acl", secrets_dir,
         root / "users.acl")  # fmt: skip
    # What node-start.sh writes: the replication login, outside any command line.
    (root / "auth.conf").write_text(f"masteruser admin\nmasterauth {passwords['admin']}\n")
    deployment = Deployment(root, certs, secrets_dir, passwords)
    try:
        for index in range(MASTERS * (1 + REPLICAS)):
            _start_node(binary, deployment, index)
        yield deployment
    finally:
        for proc in deployment.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def created(deployment: Deployment) -> Deployment:
    """The cluster, as cluster-init.sh creates it; every replica's link up."""
    deployment.init()

    def replicated() -> bool:
        roles = [deployment.command(port, "INFO", "replication") for port in deployment.ports]
        replicas = [role for role in roles if role["role"] == "slave"]
        return len(replicas) == MASTERS * REPLICAS and all(
            role["master_link_status"] == "up" for role in replicas
        )

    wait_until_sync(replicated, 30, "every replica's link to its master", ignore=NODE_DOWN)
    return deployment


def test_cluster_init_creates_three_masters_with_a_replica_each(created: Deployment) -> None:
    for port in created.ports:
        info = _cluster_info(created, port)
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_ok"]) == 16384
        assert int(info["cluster_known_nodes"]) == MASTERS * (1 + REPLICAS)
    roles = [created.command(port, "INFO", "replication")["role"] for port in created.ports]
    assert sorted(roles) == ["master"] * MASTERS + ["slave"] * MASTERS * REPLICAS


def test_cluster_init_is_idempotent(created: Deployment) -> None:
    again = created.init()
    assert "nothing to do" in again.stdout


def test_every_node_keeps_the_single_redis_guarantees(created: Deployment) -> None:
    for port in created.ports:
        pairs = created.command(port, "CONFIG", "GET", "*")
        config = dict(zip(pairs[::2], pairs[1::2], strict=True))
        assert config["appendonly"] == "yes"
        assert config["maxmemory-policy"] == "noeviction"
        assert config["port"] == "0"  # TLS only, as redis.conf
        assert config["tls-auth-clients"] == "yes"
        assert config["tls-cluster"] == "yes"
        assert config["tls-replication"] == "yes"
        assert config["acl-pubsub-default"] == "resetchannels"
        assert config["cluster-preferred-endpoint-type"] == "hostname"
        assert config["masterauth"] == created.passwords["admin"]


def test_clients_follow_the_cluster_as_acl_users_over_verified_tls(created: Deployment) -> None:
    gateway = created.cluster("gateway")
    try:
        # Keys on every master: the client follows MOVED to host names it verifies.
        keys = [f"terra:rl:cluster-infra:{n}" for n in range(30)]
        for key in keys:
            gateway.set(key, "1", px=60_000)
        owners = {key_slot(key.encode()) * MASTERS // 16384 for key in keys}
        assert owners == set(range(MASTERS))
        assert all(gateway.get(key) == "1" for key in keys)
        with pytest.raises(NoPermissionError):
            gateway.set("terra:workers", "x")  # the ACL is on every node
    finally:
        gateway.close()
    ops = created.cluster("ops")
    try:
        assert ops.get(keys[0]) == "1"
        with pytest.raises(NoPermissionError):
            ops.set(keys[0], "2")
    finally:
        ops.close()


def test_the_default_user_and_bad_passwords_are_refused(created: Deployment) -> None:
    anonymous = redis.Redis(host="localhost", port=created.ports[0], **created.tls("gateway"))
    try:
        with pytest.raises((AuthenticationError, ResponseError)):
            anonymous.get("terra:rl:x")
    finally:
        anonymous.close()
    created.passwords["gateway"], real = "wrong", created.passwords["gateway"]
    client = created.node(created.ports[0], "gateway")
    try:
        with pytest.raises(AuthenticationError):
            client.ping()
    finally:
        created.passwords["gateway"] = real
        client.close()
