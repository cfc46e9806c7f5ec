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


def tls_env(server: RedisTLS, user: str) -> dict[str, str]:
    """The console's TLS files: the CA, and the user's client certificate (required)."""
    cert = server.cert(user)
    return {
        "REDIS_CA_CERT": server.ca,
        "REDIS_CLIENT_CERT": cert["ssl_certfile"],
        "REDIS_CLIENT_KEY": cert["ssl_keyfile"],
    }


async def ops(server: RedisTLS, user: str, *args: str) -> Ran:
    return await run_ops(url(server, user), *args, env=tls_env(server, user))


async def test_read_verbs_run_as_ops_and_requeue_needs_a_writer(
    redis_tls: RedisTLS,  # noqa: F811
) -> None:
    cert = redis_tls.cert("admin")
    admin = create_redis(
        url(redis_tls, "admin"),
        client_name="test",
        options=RedisOptions(
            ssl_ca_certs=redis_tls.ca,
            ssl_certfile=cert["ssl_certfile"],
            ssl_keyfile=cert["ssl_keyfile"],
        ),
    )
    try:
        log = ChatLog(admin, BusKeys())
        accepted = await log.accept_visitor_message(CHAT, "Hello over TLS")
        await admin.xgroup_create(BusKeys().jobs_stream(0), "workers", id="0", mkstream=True)
        (_, [(entry_id, fields)]), *_ = await admin.xreadgroup(
            "workers", "w1", {BusKeys().jobs_stream(0): ">"}, count=1
        )
        await admin.xadd(
            BusKeys().dead_letters_stream(0),
            {"d": fields["d"], "entry_id": entry_id, "reason": "delivered 4 times"},
        )
        await admin.xack(BusKeys().jobs_stream(0), "workers", entry_id)
    finally:
        await admin.aclose()

    # The read verbs change nothing: their processes run side by side.
    verbs = (["chats"], ["show", CHAT[:8]], ["export", CHAT], ["jobs"], ["dead", "--json"])
    runs = await asyncio.gather(*(ops(redis_tls, "ops", *args) for args in verbs))
    for args, ran in zip(verbs, runs, strict=True):
        assert ran.status == 0, (args, ran.err)
    (dead,) = [json.loads(line) for line in runs[-1].out.splitlines()]
    assert dead["messageId"] == accepted.message["id"]

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops",
        "follow",
        "--all",
        env={**os.environ, "REDIS_URL": url(redis_tls, "ops"), **tls_env(redis_tls, "ops")},
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
    # One line: the refusal's kind and Redis's own words, where, and what to do.
    assert refused.err.startswith("terrarium-ops: Redis refused the command (NOPERM): ")
    assert refused.err.endswith(
        f" at rediss://localhost:{redis_tls.port} (this verb writes: use a Redis user allowed to)\n"
    )
    assert refused.err.count("\n") == 1
    assert redis_tls.passwords["ops"][0] not in refused.err
    done = await ops(redis_tls, "admin", "requeue", dead["deadLetterId"])
    assert done.status == 0, done.err
    assert done.out.startswith(f"requeued dead letter {dead['deadLetterId']} as job ")


async def test_codes_are_listed_as_ops_and_added_or_revoked_only_by_a_writer(
    redis_tls: RedisTLS,  # noqa: F811
) -> None:
    refused = await ops(redis_tls, "ops", "codes", "add", "--label", "nope")
    assert refused.status == 1
    assert refused.err.endswith("(this verb writes: use a Redis user allowed to)\n")
    added = await ops(redis_tls, "admin", "codes", "add", "--label", "tls", "--json")
    assert added.status == 0, added.err
    record = json.loads(added.out)
    listed = await ops(redis_tls, "ops", "codes", "list")
    assert listed.status == 0, listed.err
    assert record["id"] in listed.out
    assert record["code"] not in listed.out
    assert (await ops(redis_tls, "ops", "codes", "revoke", record["id"])).status == 1
    assert (await ops(redis_tls, "admin", "codes", "revoke", record["id"])).status == 0
