"""The console as the read-only ``ops`` Redis user, over TLS, with the committed ACL.

Every read verb works with ``ops``; ``requeue`` is refused with one line that says the verb
writes, and works as ``admin``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from bus import BusKeys, ChatLog
from bus.client import RedisOptions, create_redis
from tests.integration.test_ops_console import CHAT, Ran, interrupt, run_ops
from tests.integration.test_redis_acl_tls import RedisTLS, redis_tls  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def url(server: RedisTLS, user: str) -> str:
    return f"rediss://{user}:{server.passwords[user][0]}@localhost:{server.port}/0"


async def ops(server: RedisTLS, user: str, *args: str) -> Ran:
    return await run_ops(url(server, user), *args, env={"REDIS_CA_CERT": server.ca})


async def test_read_verbs_run_as_ops_and_requeue_needs_a_writer(
    redis_tls: RedisTLS,  # noqa: F811
) -> None:
    admin = create_redis(
        url(redis_tls, "admin"), client_name="test", options=RedisOptions(ssl_ca_certs=redis_tls.ca)
    )
    try:
        log = ChatLog(admin, BusKeys())
        accepted = await log.accept_visitor_message(CHAT, "Hello over TLS")
        await admin.xgroup_create(BusKeys().jobs, "workers", id="0", mkstream=True)
        (_, [(entry_id, fields)]), *_ = await admin.xreadgroup(
            "workers", "w1", {BusKeys().jobs: ">"}, count=1
        )
        await admin.xadd(
            BusKeys().dead_letters,
            {"d": fields["d"], "entry_id": entry_id, "reason": "delivered 4 times"},
        )
        await admin.xack(BusKeys().jobs, "workers", entry_id)
    finally:
        await admin.aclose()

    for args in (["chats"], ["show", CHAT[:8]], ["export", CHAT], ["jobs"], ["dead", "--json"]):
        ran = await ops(redis_tls, "ops", *args)
        assert ran.status == 0, (args, ran.err)
    (dead,) = [
        json.loads(line)
        for line in (await ops(redis_tls, "ops", "dead", "--json")).out.splitlines()
    ]
    assert dead["messageId"] == accepted.message["id"]

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops",
        "follow",
        "--all",
        env={**os.environ, "REDIS_URL": url(redis_tls, "ops"), "REDIS_CA_CERT": redis_tls.ca},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert line == b"following every chat (Ctrl-C to stop)\n"
    finally:
        await interrupt(proc)

    refused = await ops(redis_tls, "ops", "requeue", dead["deadLetterId"])
    assert refused.status == 1
    assert refused.err == (
        f"terrarium-ops: Redis refused the command (NOPERM) at rediss://localhost:"
        f"{redis_tls.port} (this verb writes: use a Redis user allowed to)\n"
    )
    assert redis_tls.passwords["ops"][0] not in refused.err
    done = await ops(redis_tls, "admin", "requeue", dead["deadLetterId"])
    assert done.status == 0, done.err
    assert done.out.startswith(f"requeued dead letter {dead['deadLetterId']} as job ")
