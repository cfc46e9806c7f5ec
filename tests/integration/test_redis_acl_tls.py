"""The committed Redis config, ACL template and scripts, against a real redis-server.

One redis-server (>= 7.0, TLS-capable) per module, on a free port in a temporary
directory, started from ``infra/redis/redis.conf`` with only the paths and the port
overridden. Certificates come from ``infra/redis/gen-certs.sh`` and the ACL file from
``infra/redis/render-acl.sh`` applied to ``infra/redis/users.acl``, so the files a
deployment uses are the files under test. The shared service on 6379 is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from bus import BusKeys, ChatLog, Presence
from bus.client import RedisOptions, create_redis
from bus.thoughts import read_thoughts
from demo.agent import DemoAgentConfig, run_demo_agent
from demo.launcher import redis_major
from tests.support.redis_server import free_port, redis_server_binary
from tests.support.wait import wait_until, wait_until_sync
from tests.support.worker_settings import fast_settings
from worker import Worker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REDIS_DIR = REPO / "infra" / "redis"
USERS = ("admin", "gateway", "worker", "ops")
#: A client certificate each (gen-certs.sh -c), as infra/secrets/generate.sh issues them.
CERT_USERS = USERS
CHAT = "terra:chat:{abc}"
JOBS = "terra:jobs"
GROUP = "workers"
START_TIMEOUT_S = 15.0


def _run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed ({result.returncode}): {result.stderr}")


@dataclass(frozen=True)
class RedisTLS:
    port: int
    certs: Path
    passwords: dict[str, list[str]]
    log: Path

    @property
    def ca(self) -> str:
        return str(self.certs / "ca.crt")

    def cert(self, user: str | None) -> dict[str, Any]:
        """The user's client certificate (Redis requires one: ``tls-auth-clients yes``)."""
        name = user if user in CERT_USERS else "gateway"
        return {
            "ssl_certfile": str(self.certs / f"{name}.crt"),
            "ssl_keyfile": str(self.certs / f"{name}.key"),
        }

    def client(
        self, user: str | None, password: str | None = None, **kwargs: Any
    ) -> aioredis.Redis:
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "ssl": True,
            "ssl_ca_certs": self.ca,
            "ssl_check_hostname": True,
            "socket_timeout": 5,
            "socket_connect_timeout": 5,
            "decode_responses": True,
            **self.cert(user),
        }
        if user is not None:
            options["username"] = user
            options["password"] = password if password is not None else self.passwords[user][0]
        options.update(kwargs)
        return aioredis.Redis(**options)


def _wait_ready(proc: subprocess.Popen[bytes], server: RedisTLS) -> None:
    def pong() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited {proc.returncode}: {server.log.read_text()}")
        client = redis.Redis(
            host="127.0.0.1",
            port=server.port,
            ssl=True,
            ssl_ca_certs=server.ca,
            username="ops",
            password=server.passwords["ops"][0],
            **server.cert("ops"),
            socket_timeout=1,
            socket_connect_timeout=1,
        )
        try:
            return bool(client.ping())
        finally:
            client.close()

    wait_until_sync(
        pong, START_TIMEOUT_S, "the TLS redis-server to answer PING", ignore=(redis.RedisError,)
    )


@pytest.fixture(scope="module")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisTLS]:
    binary = redis_server_binary()  # $REDIS_SERVER_BIN, else the first >= 7 on PATH
    if binary is None or redis_major(binary) < 7:
        pytest.skip("needs redis-server >= 7.0 with TLS (set REDIS_SERVER_BIN to pick one)")
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl for infra/redis/gen-certs.sh")

    root = tmp_path_factory.mktemp("redis-acl-tls")
    certs = root / "tls"
    clients = [arg for user in CERT_USERS for arg in ("-c", user)]
    _run("sh", REDIS_DIR / "gen-certs.sh", "-d", "2", *clients, certs)

    secrets_dir = root / "secrets"
    secrets_dir.mkdir()
    passwords = {user: [secrets.token_hex(16)] for user in USERS}
    # The worker's file holds two passwords, as during a rotation.
    passwords["worker"].append(secrets.token_hex(16))
    for user, values in passwords.items():
        (secrets_dir / f"redis_{user}_password").write_text("\n".join(values) + "\n")
    acl = root / "users.acl"
    _run("sh", REDIS_DIR / "render-acl.sh", REDIS_DIR / "users.acl", secrets_dir, acl)

    data = root / "data"
    data.mkdir()
    server: RedisTLS | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(3):  # the free port can be taken between probe and bind
            server = RedisTLS(free_port(), certs, passwords, root / "redis.log")
            command = [
                binary,
                str(REDIS_DIR / "redis.conf"),
                *("--tls-port", str(server.port), "--bind", "127.0.0.1"),
                *("--dir", str(data), "--aclfile", str(acl)),
                *("--tls-cert-file", str(certs / "server.crt")),
                *("--tls-key-file", str(certs / "server.key")),
                *("--tls-ca-cert-file", str(certs / "ca.crt")),
                *("--pidfile", str(root / "redis.pid"), "--logfile", str(server.log)),
                *("--supervised", "no", "--save", ""),
            ]
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            try:
                _wait_ready(proc, server)
                break
            except RuntimeError:
                if proc.poll() is None or "Address already in use" not in server.log.read_text():
                    raise
        assert server is not None
        yield server
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


Connect = Callable[..., aioredis.Redis]


@pytest.fixture
async def connect(redis_tls: RedisTLS) -> AsyncIterator[Connect]:
    opened: list[aioredis.Redis] = []

    def _connect(user: str | None, password: str | None = None, **kwargs: Any) -> aioredis.Redis:
        client = redis_tls.client(user, password, **kwargs)
        opened.append(client)
        return client

    yield _connect
    for client in opened:
        await client.aclose()


async def _ensure_group(worker: aioredis.Redis) -> None:
    with contextlib.suppress(ResponseError):  # BUSYGROUP: created by an earlier test
        await worker.xgroup_create(JOBS, GROUP, id="0", mkstream=True)


async def _publish_when_subscribed(publisher: aioredis.Redis, channel: str, data: str) -> None:
    for _ in range(500):
        if await publisher.publish(channel, data) > 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nobody subscribed to {channel}")


async def _next_message(pubsub: PubSub) -> dict[str, Any]:
    for _ in range(10):
        message: dict[str, Any] | None = await pubsub.get_message(timeout=1)
        if message is not None:
            return message
    raise AssertionError("no pub/sub message within 10 s")


# --- the server runs the committed configuration ---------------------------------


async def test_server_runs_committed_config(connect: Connect) -> None:
    admin = connect("admin")
    config = await admin.config_get("*")
    assert config["port"] == "0"  # no plaintext listener
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory"] == str(256 * 1024 * 1024)
    assert config["maxmemory-policy"] == "noeviction"
    assert config["protected-mode"] == "yes"
    assert config["tls-auth-clients"] == "yes"
    assert set(await admin.acl_users()) == {"default", *USERS}


# --- worker -----------------------------------------------------------------------


async def test_worker_consumes_jobs(connect: Connect) -> None:
    gateway, worker = connect("gateway"), connect("worker")
    await _ensure_group(worker)
    job_id = await gateway.xadd(JOBS, {"data": '{"type": "StartChat", "v": 1}'})

    entries = await worker.xreadgroup(GROUP, "w1", {JOBS: ">"}, count=10, block=1000)
    assert job_id in [entry_id for _stream, batch in entries for entry_id, _ in batch]
    assert await worker.xack(JOBS, GROUP, job_id) == 1
    await worker.xpending(JOBS, GROUP)
    await worker.xautoclaim(JOBS, GROUP, "w2", min_idle_time=60_000, start_id="0-0")
    await worker.xinfo_groups(JOBS)
    await worker.xadd(f"{JOBS}:dead", {"data": "{}"}, maxlen=1000, approximate=True)


async def test_worker_writes_chat_state_caches_and_heartbeats(connect: Connect) -> None:
    worker = connect("worker", client_name="terrarium-worker")
    assert await worker.hset(f"{CHAT}:meta", mapping={"state": "processing"}) == 1  # type: ignore[misc]
    assert await worker.set(f"{CHAT}:lease", "w1", nx=True, px=30_000)
    assert await worker.xadd(f"{CHAT}:events", {"data": "{}"}, maxlen=5000, approximate=True)
    assert await worker.rpush(f"{CHAT}:memory", "turn") >= 1  # type: ignore[misc]
    assert await worker.get(f"{CHAT}:cancel") is None
    assert await worker.publish(f"{CHAT}:live", "{}") >= 0
    await worker.hset("terra:workers", "w1", '{"at": 0}')  # type: ignore[misc]
    await worker.set("terra:workers:alive:w1", "1", px=6000)
    await worker.zadd("terra:arq", {"job": 1})
    await worker.set("arq:job:x", "1", px=1000)
    script = "redis.call('HSET', KEYS[1], 's', ARGV[1]); return redis.call('PEXPIRE', KEYS[1], 9)"
    assert await worker.eval(script, 1, f"{CHAT}:meta", "responded") == 1  # type: ignore[misc]
    async with worker.pipeline(transaction=True) as pipe:
        pipe.xadd(f"{CHAT}:events", {"data": "{}"})
        pipe.hset(f"{CHAT}:replies", "m1", "e1")
        await pipe.execute()
    assert "redis_version" in await worker.info("server")


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "maxmemory"),
        ("KEYS", "*"),
        ("GET", "other:key"),
        ("SET", "terra:elsewhere", "x"),
        ("DEL", "terra:rl:ip:1.2.3.4:1"),
        ("ACL", "LIST"),
        ("SHUTDOWN",),
        ("BGREWRITEAOF",),
        ("SCRIPT", "FLUSH"),
        ("XGROUP", "DESTROY", JOBS, GROUP),
        ("MONITOR",),
        # Issue 11: a chat's rate limits and idempotency records are the gateway's alone.
        ("GET", f"{CHAT}:idem:m1"),
        ("SET", f"{CHAT}:idem:m1", "x"),
        ("GET", f"{CHAT}:idem:m1:events"),
        ("HGETALL", f"{CHAT}:rl"),
        ("INCR", f"{CHAT}:rl:1"),
        ("EVAL", "return redis.call('GET', KEYS[1])", "1", f"{CHAT}:idem:m1"),
        ("HGETALL", "terra:access:codes"),
        ("SELECT", "1"),
    ],
    ids=lambda c: "-".join(c).lower(),
)
async def test_worker_denied(connect: Connect, command: tuple[str, ...]) -> None:
    with pytest.raises(NoPermissionError):
        await connect("worker").execute_command(*command)  # type: ignore[no-untyped-call]


async def test_worker_cannot_subscribe(connect: Connect) -> None:
    pubsub = connect("worker").pubsub()
    try:
        await pubsub.subscribe(f"{CHAT}:live")  # the reply, an error, is read next
        with pytest.raises(NoPermissionError):
            await pubsub.get_message(timeout=1)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_worker_runs_arq(redis_tls: RedisTLS) -> None:
    """arq (scheduled jobs) works within the worker's keys: queue terra:arq plus arq:*."""
    arq_connections = pytest.importorskip("arq.connections")
    arq_worker = pytest.importorskip("arq.worker")

    async def ping(ctx: dict[str, Any]) -> str:
        return "pong"

    settings = arq_connections.RedisSettings(
        host="127.0.0.1",
        port=redis_tls.port,
        username="worker",
        password=redis_tls.passwords["worker"][0],
        ssl=True,
        ssl_ca_certs=redis_tls.ca,
        ssl_check_hostname=True,
        **redis_tls.cert("worker"),
    )
    pool = await arq_connections.create_pool(settings, default_queue_name="terra:arq")
    try:
        await pool.delete("terra:arq")  # an entry written by another test is not a job
        job = await pool.enqueue_job("ping")
        assert job is not None
        runner = arq_worker.Worker(
            functions=[arq_worker.func(ping, name="ping")],
            redis_pool=pool,
            queue_name="terra:arq",
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
        )
        assert await runner.run_check() == 1
        assert await job.result(timeout=5) == "pong"
    finally:
        await pool.aclose()


# --- gateway ----------------------------------------------------------------------


async def test_gateway_serves_visitors(connect: Connect) -> None:
    gateway = connect("gateway", client_name="terrarium-gateway")
    event_id = await gateway.xadd(f"{CHAT}:events", {"data": "{}"}, maxlen=5000)
    assert [e for e, _ in await gateway.xrange(f"{CHAT}:events", min=event_id)] == [event_id]
    await gateway.xrevrange(f"{CHAT}:events", count=10)
    await gateway.xadd(f"{CHAT}:messages", {"data": "{}"})
    assert await gateway.set(f"{CHAT}:idem:m1", "1", nx=True, px=60_000)
    assert await gateway.hset(f"{CHAT}:meta", mapping={"state": "queued"}) >= 0  # type: ignore[misc]
    await gateway.hgetall(f"{CHAT}:meta")  # type: ignore[misc]
    await gateway.set(f"{CHAT}:cancel", "1", px=60_000)
    assert await gateway.incr(f"{CHAT}:rl:1") >= 1
    assert await gateway.incr("terra:rl:ip:203.0.113.7:1") >= 1
    await gateway.pexpire("terra:rl:ip:203.0.113.7:1", 60_000)
    assert await gateway.pttl("terra:rl:ip:203.0.113.7:1") > 0
    script = (
        "local n = redis.call('INCR', KEYS[1]); redis.call('PEXPIRE', KEYS[1], ARGV[1]) return n"
    )
    sha = await gateway.script_load(script)
    assert await gateway.evalsha(sha, 1, f"{CHAT}:rl:2", "60000") == 1  # type: ignore[misc]
    await gateway.hgetall("terra:workers")  # type: ignore[misc]
    assert "redis_version" in await gateway.info("server")


async def test_gateway_enqueues_with_xadd_multi_and_script(connect: Connect) -> None:
    gateway = connect("gateway")
    assert await gateway.xadd(JOBS, {"data": "{}"})
    async with gateway.pipeline(transaction=True) as pipe:
        pipe.xadd(f"{CHAT}:events", {"data": "{}"})
        pipe.xadd(JOBS, {"data": "{}"})
        await pipe.execute()
    # The shape of bus.chatlog's accept script: chat keys and the job stream in KEYS.
    script = """
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100, '*', 'd', ARGV[2])
    redis.call('HSET', KEYS[2], 'last', id)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100, id, 'd', ARGV[2])
    for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], 60000) end
    redis.call('SET', KEYS[6], id, 'PX', 60000)
    local jid = redis.call('XADD', KEYS[7], 'MAXLEN', '~', 1000, '*', 'd', ARGV[3])
    redis.call('PUBLISH', ARGV[1], id)
    return {id, jid}
    """
    keys = [f"{CHAT}:{k}" for k in ("events", "meta", "messages", "replies", "memory")]
    result = await gateway.eval(  # type: ignore[misc]
        script, 7, *keys, f"{CHAT}:idem:c1", JOBS, f"{CHAT}:live", "{}", "{}"
    )
    assert len(result) == 2


async def test_gateway_reads_queue_stats_and_heartbeats(connect: Connect) -> None:
    gateway = connect("gateway")
    await _ensure_group(connect("worker"))
    assert await gateway.xlen(JOBS) >= 0
    assert "pending" in await gateway.xpending(JOBS, GROUP)
    assert await gateway.xlen(f"{JOBS}:dead") >= 0
    await gateway.hgetall("terra:workers")  # type: ignore[misc]
    await gateway.xadd(f"{CHAT}:events", {"data": "{}"})
    assert (await gateway.xinfo_stream(f"{CHAT}:events"))["length"] >= 1


async def test_gateway_script_cannot_read_jobs(connect: Connect) -> None:
    """Declaring terra:jobs in a script's KEYS gives the script nothing extra."""
    with pytest.raises(ResponseError, match=r"can't access|NOPERM|no permissions"):
        await connect("gateway").eval("return redis.call('XRANGE', KEYS[1], '-', '+')", 1, JOBS)  # type: ignore[misc]


async def test_gateway_receives_what_worker_publishes(connect: Connect) -> None:
    gateway, worker = connect("gateway"), connect("worker")
    channel = f"{CHAT}:live"
    pubsub = gateway.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(channel)
        await _publish_when_subscribed(worker, channel, "frame")
        assert (await _next_message(pubsub))["data"] == "frame"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "command",
    [
        ("XREADGROUP", "GROUP", GROUP, "g1", "COUNT", "1", "STREAMS", JOBS, ">"),
        ("XACK", JOBS, GROUP, "0-1"),
        ("XAUTOCLAIM", JOBS, GROUP, "g1", "0", "0-0"),
        ("XCLAIM", JOBS, GROUP, "g1", "0", "0-1"),
        ("XGROUP", "CREATE", JOBS, "other", "$"),
        ("XRANGE", JOBS, "-", "+"),
        ("XDEL", JOBS, "0-1"),
        ("XADD", f"{JOBS}:dead", "*", "data", "{}"),
        ("GET", "terra:github:repos"),
        ("SET", "terra:github:repos", "[]"),
        ("HSET", "terra:workers", "w1", "{}"),
        ("ZADD", "terra:arq", "1", "job"),
        ("GET", "arq:job:x"),
        ("XINFO", "STREAM", JOBS),
        ("XREAD", "STREAMS", JOBS, "0-0"),
        ("XTRIM", JOBS, "MAXLEN", "0"),
        ("HDEL", "terra:workers", "w1"),
        ("EVAL", "return 1", "1", "terra:github:repos"),
        ("RPUSH", f"{CHAT}:memory", "x"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "maxmemory"),
        ("SCRIPT", "FLUSH"),
    ],
    ids=lambda c: "-".join(c[:2]).lower(),
)
async def test_gateway_denied(connect: Connect, command: tuple[str, ...]) -> None:
    worker = connect("worker")
    await _ensure_group(worker)
    with pytest.raises(NoPermissionError):
        await connect("gateway").execute_command(*command)  # type: ignore[no-untyped-call]


# --- ops --------------------------------------------------------------------------


async def test_ops_reads_replays_and_watches(connect: Connect) -> None:
    worker, ops = connect("worker"), connect("ops")
    await _ensure_group(worker)
    await worker.xadd(f"{CHAT}:events", {"data": "{}"})
    assert await ops.xrange(f"{CHAT}:events", count=5)
    assert await ops.xrevrange(f"{CHAT}:events", count=5)
    await ops.xread({f"{CHAT}:events": "0-0"}, count=5)
    await ops.xinfo_stream(JOBS)
    await ops.xinfo_groups(JOBS)
    await ops.xpending(JOBS, GROUP)
    await ops.xlen(f"{JOBS}:dead")
    await ops.hgetall("terra:workers")  # type: ignore[misc]
    await ops.hgetall(f"{CHAT}:meta")  # type: ignore[misc]
    await ops.scan(match="terra:chat:*", count=100)
    await ops.info("memory")
    await ops.slowlog_get(10)
    await ops.execute_command("LATENCY", "LATEST")  # type: ignore[no-untyped-call]
    channel = f"{CHAT}:live"
    pubsub = ops.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(channel)
        await _publish_when_subscribed(worker, channel, "watched")
        assert (await _next_message(pubsub))["data"] == "watched"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "command",
    [
        ("SET", f"{CHAT}:cancel", "1"),
        ("DEL", f"{CHAT}:events"),
        ("XADD", f"{CHAT}:events", "*", "data", "{}"),
        ("XTRIM", f"{CHAT}:events", "MAXLEN", "0"),
        ("HSET", f"{CHAT}:meta", "state", "idle"),
        ("EXPIRE", f"{CHAT}:meta", "1"),
        ("PUBLISH", f"{CHAT}:live", "x"),
        ("XACK", JOBS, GROUP, "0-1"),
        ("XREADGROUP", "GROUP", GROUP, "o1", "COUNT", "1", "STREAMS", JOBS, ">"),
        ("XGROUP", "CREATE", JOBS, "ops", "$"),
        ("EVAL", "return 1", "0"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "maxmemory"),
    ],
    ids=lambda c: "-".join(c[:2]).lower(),
)
async def test_ops_cannot_write(connect: Connect, command: tuple[str, ...]) -> None:
    with pytest.raises(NoPermissionError):
        await connect("ops").execute_command(*command)  # type: ignore[no-untyped-call]


# --- authentication and transport --------------------------------------------------


async def test_default_user_is_off(connect: Connect) -> None:
    with pytest.raises(AuthenticationError):
        await connect(None).ping()


async def test_wrong_password_is_refused(connect: Connect) -> None:
    with pytest.raises(AuthenticationError):
        await connect("worker", "not-the-password").ping()


async def test_both_passwords_work_during_rotation(connect: Connect, redis_tls: RedisTLS) -> None:
    old, new = redis_tls.passwords["worker"]
    assert await connect("worker", old).ping()
    assert await connect("worker", new).ping()


async def test_dsn_from_env_example_works(redis_tls: RedisTLS) -> None:
    """The REDIS_URL form documented in infra/env/*.env.example, hostname checked."""
    password = quote(redis_tls.passwords["worker"][0], safe="")
    url = (
        f"rediss://worker:{password}@localhost:{redis_tls.port}/0"
        f"?ssl_ca_certs={quote(redis_tls.ca)}&ssl_check_hostname=true"
        f"&ssl_certfile={quote(redis_tls.cert('worker')['ssl_certfile'])}"
        f"&ssl_keyfile={quote(redis_tls.cert('worker')['ssl_keyfile'])}"
    )
    client = aioredis.Redis.from_url(url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_mutual_tls_client_certificate(connect: Connect, redis_tls: RedisTLS) -> None:
    client = connect(
        "worker",
        ssl_certfile=str(redis_tls.certs / "worker.crt"),
        ssl_keyfile=str(redis_tls.certs / "worker.key"),
    )
    assert await client.ping()


async def test_a_client_without_a_certificate_is_refused(redis_tls: RedisTLS) -> None:
    """Issue 11, item 9: the right password over TLS is not enough without a certificate."""
    client = redis_tls.client("worker", ssl_certfile=None, ssl_keyfile=None)
    try:
        with pytest.raises(redis.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()


async def test_a_certificate_from_another_ca_is_refused(
    redis_tls: RedisTLS, tmp_path: Path
) -> None:
    _run("sh", REDIS_DIR / "gen-certs.sh", "-d", "2", "-c", "worker", tmp_path / "other")
    client = redis_tls.client(
        "worker",
        ssl_certfile=str(tmp_path / "other" / "worker.crt"),
        ssl_keyfile=str(tmp_path / "other" / "worker.key"),
    )
    try:
        with pytest.raises(redis.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()


async def test_plaintext_connection_fails(redis_tls: RedisTLS) -> None:
    client = aioredis.Redis(
        host="127.0.0.1",
        port=redis_tls.port,
        username="worker",
        password=redis_tls.passwords["worker"][0],
        socket_timeout=3,
        socket_connect_timeout=3,
    )
    try:
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            await client.ping()
    finally:
        await client.aclose()


async def test_server_from_another_ca_is_rejected(redis_tls: RedisTLS, tmp_path: Path) -> None:
    _run("sh", REDIS_DIR / "gen-certs.sh", "-d", "2", tmp_path / "other")
    client = redis_tls.client("worker", ssl_ca_certs=str(tmp_path / "other" / "ca.crt"))
    try:
        with pytest.raises(redis.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()


# --- the project's own clients over TLS + ACL ------------------------------------------


async def test_gateway_and_worker_code_run_over_tls_with_their_users(redis_tls: RedisTLS) -> None:
    """bus.create_redis with rediss:// (CA-verified) as the gateway and worker ACL users:
    a visitor message accepted with the gateway's client is answered by a real Worker."""

    def dsn(user: str) -> str:
        password = quote(redis_tls.passwords[user][0], safe="")
        return f"rediss://{user}:{password}@localhost:{redis_tls.port}/0"

    gateway_cert = redis_tls.cert("gateway")
    gateway = create_redis(
        dsn("gateway"),
        client_name="test-gateway",
        options=RedisOptions(
            ssl_ca_certs=redis_tls.ca,
            ssl_certfile=gateway_cert["ssl_certfile"],
            ssl_keyfile=gateway_cert["ssl_keyfile"],
        ),
    )
    log = ChatLog(gateway, BusKeys())
    try:
        async with run_demo_agent(DemoAgentConfig(token_delay_ms=1)) as agent_url:
            settings = fast_settings(
                dsn("worker"),
                agent_url,
                redis_ca_cert=redis_tls.ca,
                redis_client_cert=redis_tls.cert("worker")["ssl_certfile"],
                redis_client_key=redis_tls.cert("worker")["ssl_keyfile"],
                worker_name="tls-worker",
            )
            async with Worker(settings):
                accepted = await log.accept_visitor_message("tls", "[[demo:echo]] over TLS")

                async def replied() -> str | None:
                    return await log.reply_event_id("tls", accepted.message["id"])

                await wait_until(replied, timeout=15, message="the reply over TLS")
                assert await Presence(gateway, BusKeys()).freshest() is not None
        history = await log.history("tls")
        assert [m["content"] for m in history] == ["[[demo:echo]] over TLS", "over TLS"]
        # History's thoughts scan (a script over the event log) runs as the gateway user.
        span = history[0]["eventId"], history[-1]["eventId"]
        assert await read_thoughts(gateway, BusKeys(), "tls", *span) == {}
    finally:
        await gateway.aclose()


@pytest.mark.parametrize("user", ["gateway", "worker", "ops"])
async def test_no_user_but_admin_selects_another_database(connect: Connect, user: str) -> None:
    with pytest.raises(NoPermissionError):
        await connect(user).execute_command("SELECT", "1")  # type: ignore[no-untyped-call]


async def test_gateway_reads_the_access_codes_and_cannot_change_them(connect: Connect) -> None:
    await connect("admin").hset("terra:access:codes", "0123abcd", "{}")  # type: ignore[misc]
    assert await connect("gateway").hgetall("terra:access:codes") == {"0123abcd": "{}"}  # type: ignore[misc]
    with pytest.raises(NoPermissionError):
        await connect("gateway").hset("terra:access:codes", "0123abcd", "{}")  # type: ignore[misc]
    with pytest.raises(NoPermissionError):
        await connect("gateway").hdel("terra:access:codes", "0123abcd")  # type: ignore[misc]
