"""History and transcript answers are bounded in bytes and paginated (issue 11, item 2).

The review filled a chat with 200 maximum-size messages: each history GET answered 9.6 MB
(emoji escaped as 12 bytes each), and 100 concurrent GETs took the gateway to 1.2 GB.
"""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.integration

BUDGET = 64 * 1024
BIG = "🌱" * 3990  # about the longest message: 15,960 bytes of UTF-8


async def test_history_pages_stay_within_the_byte_budget_and_walk_back(
    redis_server: RedisServer,
) -> None:
    # 12 messages wait at once (no worker): past MAX_QUEUED_PER_CLIENT's default of 10.
    settings = gateway_settings(
        redis_server.url, history_max_bytes=BUDGET, max_queued_per_client=100
    )
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            posted = []
            for i in range(12):
                r = await s.post(
                    server.make_url("/api/chat/big/messages"),
                    json={"content": f"{i} {BIG}", "accessCode": ACCESS_CODE},
                )
                assert r.status == 200
                posted.append((await r.json())["eventId"])
            seen: list[str] = []
            params = {"accessCode": ACCESS_CODE}
            pages = 0
            while True:
                r = await s.get(server.make_url("/api/chat/big/messages"), params=params)
                assert r.status == 200
                body = await r.read()
                assert len(body) <= BUDGET
                page = json.loads(body)
                assert page, "a page is never empty while older messages remain"
                assert [m["content"].split(" ")[0] for m in page] == [
                    str(posted.index(m["eventId"])) for m in page
                ]
                seen[:0] = [m["eventId"] for m in page]
                pages += 1
                if r.headers.get("X-Has-More") != "true":
                    break
                assert r.headers["X-Next-Before"] == page[0]["eventId"]
                params = {"accessCode": ACCESS_CODE, "before": r.headers["X-Next-Before"]}
            assert seen == posted  # every message once, oldest first
            assert pages >= 3
            transcript = await s.get(
                server.make_url("/api/chat/big/transcript"),
                params={"accessCode": ACCESS_CODE, "format": "json"},
            )
            assert transcript.status == 200
            assert len(await transcript.read()) <= BUDGET
            assert transcript.headers["X-Has-More"] == "true"
            markdown = await s.get(
                server.make_url("/api/chat/big/transcript"), params={"accessCode": ACCESS_CODE}
            )
            assert len(await markdown.read()) <= BUDGET
            bad = await s.get(
                server.make_url("/api/chat/big/messages"),
                params={"accessCode": ACCESS_CODE, "before": "²-1"},
            )
            assert bad.status == 400
            assert (await bad.json())["error"] == "before must be an eventId"
    finally:
        await server.close()
