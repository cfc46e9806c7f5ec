"""A private Redis Cluster per test module: M masters with R replicas each, on free loopback ports.

Every node is a ``redis-server --cluster-enabled yes`` in its own directory; the cluster is
created by ``redis-cli --cluster create`` (the tool operators use) and is ready when every
node reports ``cluster_state:ok``, sees every slot covered, knows every node, and every
replica's link to its master is up. Nodes fail over quickly (``cluster-node-timeout``
1000 ms by default, any replica may be promoted whatever its data age), and the class
drives what cluster tests need: kill a node and wait for its replica to take over, start
it again, move a slot to another master (``CLUSTER SETSLOT`` IMPORTING / MIGRATING /
``MIGRATE`` / NODE), find the node that owns a key.

Optional ACL users file (``acl_file``, with ``auth`` the admin user that creates the
cluster and that replicas replicate as) and TLS (``tls``: the same files
``infra/redis/gen-certs.sh`` writes) configure every node as ``test_redis_acl_tls.py``
configures one server. Passwords travel through ``REDISCLI_AUTH``, never a command line.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from demo.launcher import free_port, redis_server_args
from tests.support.redis_server import redis_server_binary
from tests.support.wait import wait_until_sync

__all__ = [
    "SLOTS",
    "ClusterNode",
    "ClusterTLS",
    "NodeLine",
    "RedisCluster",
    "parse_cluster_nodes",
]

#: Hash slots of a Redis Cluster.
SLOTS = 16384
#: What a probe of a node raises while it starts, stops or fails over.
NODE_DOWN: tuple[type[Exception], ...] = (redis.RedisError, OSError)


@dataclass(frozen=True)
class ClusterTLS:
    """Certificates as ``infra/redis/gen-certs.sh`` writes them (``ca``, ``server``, clients)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def from_dir(cls, certs: Path, client: str = "admin") -> ClusterTLS:
        """The files of ``gen-certs.sh <certs>`` with ``client``'s certificate."""
        return cls(
            ca=certs / "ca.crt",
            server_cert=certs / "server.crt",
            server_key=certs / "server.key",
            client_cert=certs / f"{client}.crt",
            client_key=certs / f"{client}.key",
        )


@dataclass(eq=False)
class ClusterNode:
    """One redis-server of the cluster; ``proc`` is ``None`` while it is down."""

    index: int
    port: int
    bus_port: int
    workdir: Path
    node_id: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as ``redis-cli --cluster`` and ``CLUSTER NODES`` spell it."""
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        """Whether its process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self) -> Path:
        """The node's log file."""
        return self.workdir / "redis.log"


@dataclass(frozen=True)
class NodeLine:
    """One line of ``CLUSTER NODES``: a node as another node sees it."""

    node_id: str
    flags: frozenset[str]
    #: The master it replicates ("" for a master).
    master_id: str
    #: Slot ranges it serves, inclusive (slots being imported or migrated left out).
    slots: tuple[tuple[int, int], ...]

    @property
    def master(self) -> bool:
        """Whether it is a master (failed or not)."""
        return "master" in self.flags


def parse_cluster_nodes(text: str) -> list[NodeLine]:
    """The lines of a ``CLUSTER NODES`` reply.

    A line is ``<id> <ip:port@cport> <flags> <master|-> <ping> <pong> <epoch> <link>
    <slot|first-last|[slot->-id]|[slot-<-id]>...``.
    """
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        slots = []
        for part in fields[8:]:
            if part.startswith("["):  # a slot being migrated or imported
                continue
            first, _, last = part.partition("-")
            slots.append((int(first), int(last or first)))
        master_id = "" if fields[3] == "-" else fields[3]
        nodes.append(NodeLine(fields[0], frozenset(fields[2].split(",")), master_id, tuple(slots)))
    return nodes


class RedisCluster:
    """Owns the processes of one Redis Cluster; ``url`` names a seed node."""

    def __init__(
        self,
        workdir: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        appendonly: bool = False,
        acl_file: Path | None = None,
        auth: tuple[str, str] | None = None,
        tls: ClusterTLS | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        if acl_file is not None and auth is None:
            raise ValueError("an ACL file needs auth=(user, password) to create the cluster")
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server binary found")
        self.binary = binary
        self.workdir = workdir
        self.masters_wanted = masters
        self.replicas_wanted = replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendonly = appendonly
        self.acl_file = acl_file
        self.auth = auth
        self.tls = tls
        self.extra = list(extra)
        self.nodes: list[ClusterNode] = []

    # --- addresses -----------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        """``rediss`` with TLS, else ``redis``."""
        return "rediss" if self.tls else "redis"

    def node_url(self, node: ClusterNode) -> str:
        """The URL of one node (no credentials)."""
        return f"{self.scheme}://127.0.0.1:{node.port}/0"

    @property
    def urls(self) -> list[str]:
        """The URL of every node, started or not."""
        return [self.node_url(node) for node in self.nodes]

    @property
    def url(self) -> str:
        """A seed node's URL (the first live node): what ``REDIS_URL`` names."""
        return self.node_url(self.live_nodes()[0])

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> RedisCluster:
        """Start every node, create the cluster and wait until it serves every slot."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        count = self.masters_wanted * (1 + self.replicas_wanted)
        try:
            for index in range(count):
                node = ClusterNode(index, 0, 0, self.workdir / f"node{index}")
                self.nodes.append(node)
                self._start_fresh(node)
            for node in self.nodes:
                node.node_id = str(self.command(node, "CLUSTER", "MYID"))
            self._create()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_fresh(self, node: ClusterNode) -> None:
        """First start of a node on new free ports (retried when a port was taken)."""
        for attempt in range(3):
            node.port, node.bus_port = free_port(), free_port()
            self._spawn(node)
            try:
                self._wait_answering(node)
                self._configure(node)
                return
            except RuntimeError:
                if attempt == 2 or "Address already in use" not in node.log.read_text():
                    raise

    def _spawn(self, node: ClusterNode) -> None:
        node.workdir.mkdir(parents=True, exist_ok=True)
        extra = [
            *("--cluster-enabled", "yes"),
            *("--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", str(self.node_timeout_ms)),
            *("--cluster-port", str(node.bus_port)),
            # Any replica may take over, however long its link was down: tests kill masters.
            *("--cluster-replica-validity-factor", "0"),
            # A replica's first full sync starts at once, not after the default 5 s.
            *("--repl-diskless-sync-delay", "0"),
            *("--logfile", str(node.log)),
        ]
        if self.acl_file is not None and self.auth is not None:
            # The admin user is also the replication user; its password stays out of argv.
            extra += ["--aclfile", str(self.acl_file), "--masteruser", self.auth[0]]
        if self.tls is not None:
            extra += [
                *("--tls-port", str(node.port), "--tls-cluster", "yes"),
                *("--tls-replication", "yes"),
                *("--tls-cert-file", str(self.tls.server_cert)),
                *("--tls-key-file", str(self.tls.server_key)),
                *("--tls-ca-cert-file", str(self.tls.ca)),
                *("--tls-client-cert-file", str(self.tls.client_cert)),
                *("--tls-client-key-file", str(self.tls.client_key)),
            ]
        args = redis_server_args(
            self.binary,
            0 if self.tls else node.port,
            node.workdir,
            appendonly=self.appendonly,
            extra=[*extra, *self.extra],
        )
        node.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _configure(self, node: ClusterNode) -> None:
        """Settings given after start: CONFIG SET keeps masterauth out of the process list."""
        if self.auth is not None:
            self.command(node, "CONFIG", "SET", "masterauth", self.auth[1])

    def _wait_answering(self, node: ClusterNode, timeout: float = 10.0) -> None:
        def pong() -> bool:
            if node.proc is None or node.proc.poll() is not None:
                tail = node.log.read_text()[-500:] if node.log.exists() else ""
                raise RuntimeError(f"redis-server on port {node.port} exited: {tail}")
            return bool(self.command(node, "PING", timeout=0.5))

        wait_until_sync(
            pong, timeout, f"cluster node {node.address}", interval=0.02, ignore=NODE_DOWN
        )

    def _redis_cli(self, *args: str) -> str:
        command = ["redis-cli", *args]
        env = dict(os.environ)
        if self.auth is not None:
            command += ["--user", self.auth[0]]
            env["REDISCLI_AUTH"] = self.auth[1]
        if self.tls is not None:
            command += ["--tls", "--cacert", str(self.tls.ca)]
            command += ["--cert", str(self.tls.client_cert), "--key", str(self.tls.client_key)]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=60, env=env, check=False
        )
        if result.returncode != 0 or "[ERR]" in result.stdout:
            raise RuntimeError(f"redis-cli {args[:2]} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def _create(self) -> None:
        self._redis_cli(
            "--cluster",
            "create",
            *(node.address for node in self.nodes),
            *("--cluster-replicas", str(self.replicas_wanted)),
            "--cluster-yes",
        )

    def stop(self) -> None:
        """SIGKILL every node (a test cluster keeps no data)."""
        for node in self.nodes:
            self.kill(node)

    def kill(self, node: ClusterNode) -> None:
        """Hard stop of one node (SIGKILL): what a crashed host looks like to the cluster."""
        if node.proc is not None:
            if node.proc.poll() is None:
                node.proc.kill()
            node.proc.wait(10)
        node.proc = None

    def start_node(self, node: ClusterNode) -> None:
        """Start a killed node again (same ports, same ``nodes.conf``): it rejoins the cluster."""
        if node.alive:
            return
        self._spawn(node)
        self._wait_answering(node)
        self._configure(node)

    # --- clients ---------------------------------------------------------------------------
    def client(self, node: ClusterNode, *, timeout: float = 5.0) -> redis.Redis:
        """A plain (not cluster-aware) client of one node, for control commands."""
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": node.port,
            "decode_responses": True,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "single_connection_client": True,
        }
        if self.auth is not None:
            options["username"], options["password"] = self.auth
        if self.tls is not None:
            options |= {
                "ssl": True,
                "ssl_ca_certs": str(self.tls.ca),
                "ssl_certfile": str(self.tls.client_cert),
                "ssl_keyfile": str(self.tls.client_key),
            }
        return redis.Redis(**options)

    def command(self, node: ClusterNode, *args: Any, timeout: float = 5.0) -> Any:
        """Run one command on ``node`` and close the connection."""
        client = self.client(node, timeout=timeout)
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    # --- topology --------------------------------------------------------------------------
    def live_nodes(self) -> list[ClusterNode]:
        """The nodes whose process runs."""
        return [node for node in self.nodes if node.alive]

    def by_id(self, node_id: str) -> ClusterNode:
        """The node with this cluster node id."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def _cluster_nodes(self, via: ClusterNode | None = None) -> list[NodeLine]:
        """``CLUSTER NODES`` of ``via`` (default: the first live node)."""
        source = via or self.live_nodes()[0]
        text = self.command(source, "CLUSTER", "NODES")
        if not isinstance(text, str):  # some redis-py versions parse the reply
            raise TypeError("CLUSTER NODES came back parsed; expected its text")
        return parse_cluster_nodes(text)

    def masters(self) -> list[ClusterNode]:
        """The live masters that own slots, as the first live node sees them."""
        found = []
        for line in self._cluster_nodes():
            if line.master and "fail" not in line.flags and line.slots:
                node = self.by_id(line.node_id)
                if node.alive:
                    found.append(node)
        return sorted(found, key=lambda n: n.index)

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        """The live replicas of ``master``."""
        return [
            self.by_id(line.node_id)
            for line in self._cluster_nodes()
            if line.master_id == master.node_id and self.by_id(line.node_id).alive
        ]

    def slot_owners(self, via: ClusterNode | None = None) -> dict[int, ClusterNode]:
        """Every covered slot and the master that serves it (``CLUSTER NODES`` of ``via``)."""
        owners: dict[int, ClusterNode] = {}
        for line in self._cluster_nodes(via):
            if line.master:
                node = self.by_id(line.node_id)
                for first, last in line.slots:
                    owners.update(dict.fromkeys(range(first, last + 1), node))
        return owners

    def node_for_slot(self, slot: int) -> ClusterNode:
        """The master that serves ``slot``."""
        return self.slot_owners()[slot]

    def node_for_key(self, key: str) -> ClusterNode:
        """The master that serves ``key`` (hash tags honoured)."""
        return self.node_for_slot(key_slot(key.encode()))

    # --- waits -----------------------------------------------------------------------------
    def _healthy(self) -> bool:
        live = self.live_nodes()
        for node in live:
            info = self.command(node, "CLUSTER", "INFO", timeout=1)
            text = info if isinstance(info, str) else str(info)
            fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
            if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != str(SLOTS):
                return False
            if int(fields.get("cluster_known_nodes", 0)) < len(self.nodes):
                return False
        for node in live:
            role = self.command(node, "INFO", "replication", timeout=1)
            if role.get("role") == "slave" and role.get("master_link_status") != "up":
                return False
        # Every live node agrees on who serves each slot.
        maps = [{s: n.node_id for s, n in self.slot_owners(node).items()} for node in live]
        return all(m == maps[0] and len(m) == SLOTS for m in maps)

    def wait_ok(self, timeout: float = 15.0) -> None:
        """Wait until every live node serves every slot and agrees on the slot map."""
        wait_until_sync(
            self._healthy, timeout, "the cluster to be ok", interval=0.05, ignore=NODE_DOWN
        )

    def wait_failover(self, old_master: ClusterNode, timeout: float = 20.0) -> ClusterNode:
        """After ``old_master`` was killed: wait until one of its replicas serves its slots.

        Returns the promoted replica, once every live node agrees and the state is ok.
        """
        slots = [slot for slot, node in self.slot_owners().items() if node is old_master]

        def promoted() -> ClusterNode | None:
            owners = self.slot_owners()
            heirs = {owners.get(slot) for slot in slots}
            if len(heirs) != 1:
                return None
            heir = heirs.pop()
            if heir is None or heir is old_master or not heir.alive:
                return None
            return heir if self._healthy() else None

        return wait_until_sync(
            promoted,
            timeout,
            f"a replica of {old_master.address} to take over",
            interval=0.05,
            ignore=NODE_DOWN,
        )

    # --- slot migration --------------------------------------------------------------------
    def begin_migration(self, slot: int, to_node: ClusterNode) -> ClusterNode:
        """Mark ``slot`` IMPORTING on ``to_node`` and MIGRATING on its owner; return the owner."""
        source = self.node_for_slot(slot)
        if source is to_node:
            raise ValueError(f"slot {slot} is already served by {to_node.address}")
        self.command(to_node, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        self.command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", to_node.node_id)
        return source

    def move_keys(
        self, slot: int, source: ClusterNode, to_node: ClusterNode, *, limit: int | None = None
    ) -> int:
        """``MIGRATE`` the keys of ``slot`` (at most ``limit``, default all) from ``source``
        to ``to_node``; the number moved. A limit leaves the slot half-moved, as between
        two batches of ``redis-cli --cluster reshard``."""
        moved = 0
        auth: list[str] = []
        if self.auth is not None:
            auth = ["AUTH2", *self.auth]
        while limit is None or moved < limit:
            batch = 100 if limit is None else min(100, limit - moved)
            keys = self.command(source, "CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            self.command(
                source, "MIGRATE", "127.0.0.1", to_node.port, "", 0, 5000, *auth, "KEYS", *keys
            )
            moved += len(keys)
        return moved

    def finish_migration(self, slot: int, source: ClusterNode, to_node: ClusterNode) -> None:
        """Assign ``slot`` to ``to_node`` everywhere (target first, as the manual says)."""
        self.command(to_node, "CLUSTER", "SETSLOT", slot, "NODE", to_node.node_id)
        self.command(source, "CLUSTER", "SETSLOT", slot, "NODE", to_node.node_id)
        for node in self.masters():
            if node is not to_node and node is not source:
                self.command(node, "CLUSTER", "SETSLOT", slot, "NODE", to_node.node_id)

    def migrate_slot(self, slot: int, to_node: ClusterNode) -> int:
        """Move ``slot`` (and its keys) to ``to_node``; wait until all nodes agree.

        Returns how many keys moved. The steps are :meth:`begin_migration`,
        :meth:`move_keys` and :meth:`finish_migration`, for tests that act in between.
        """
        source = self.begin_migration(slot, to_node)
        moved = self.move_keys(slot, source, to_node)
        self.finish_migration(slot, source, to_node)
        wait_until_sync(
            lambda: all(self.slot_owners(n).get(slot) is to_node for n in self.live_nodes()),
            10.0,
            f"every node to see slot {slot} on {to_node.address}",
            interval=0.05,
            ignore=NODE_DOWN,
        )
        return moved

    def flushall(self) -> None:
        """Empty every live master (replicas follow)."""
        for node in self.masters():
            self.command(node, "FLUSHALL")
