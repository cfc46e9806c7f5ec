"""The visitor API against a real redis-server: statuses, mounts, idempotency, resume."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bus import ChatLog
from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def post(
    session: aiohttp.ClientSession, server: TestServer, chat: str, body: Any, **kw: Any
) -> aiohttp.ClientResponse:
    return await session.post(url(server, f"/api/chat/{chat}/messages"), json=body, **kw)


async def test_post_returns_stored_message_and_history_and_state(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        r = await post(s, gateway, "chat-1", {"content": "héllo 🌱", "accessCode": ACCESS_CODE})
        assert r.status == 200
        msg = await r.json()
        assert set(msg) == {"id", "chatId", "sender", "content", "createdAt", "eventId"}
        assert (msg["chatId"], msg["sender"], msg["content"]) == ("chat-1", "Visitor", "héllo 🌱")
        assert msg["createdAt"].endswith("Z")
        hist = await (
            await s.get(
                url(gateway, "/api/chat/chat-1/messages"), params={"accessCode": ACCESS_CODE}
            )
        ).json()
        assert hist == [msg]
        state = await (
            await s.get(
                url(gateway, "/api/chat/chat-1/worker-state"), params={"accessCode": ACCESS_CODE}
            )
        ).json()
        assert state["state"] == "queued"
        idle = await (
            await s.get(
                url(gateway, "/api/chat/other/worker-state"), params={"accessCode": "rotated-code"}
            )
        ).json()
        assert idle == {"state": "idle", "detail": None, "updatedAt": "1970-01-01T00:00:00.000Z"}


async def test_history_limit_keeps_newest(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        for i in range(5):
            assert (
                await post(s, gateway, "lim", {"content": f"m{i}", "accessCode": ACCESS_CODE})
            ).status == 200
        hist = await (
            await s.get(
                url(gateway, "/api/chat/lim/messages"),
                params={"accessCode": ACCESS_CODE, "limit": "2"},
            )
        ).json()
        assert [m["content"] for m in hist] == ["m3", "m4"]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "error"),
    [
        (
            "/api/chat/bad%2F..%2Fid/messages",
            {"content": "x", "accessCode": ACCESS_CODE},
            {},
            400,
            "Invalid chat id",
        ),
        (
            "/api/chat/" + "a" * 65 + "/messages",
            {"content": "x", "accessCode": ACCESS_CODE},
            {},
            400,
            "Invalid chat id",
        ),
        (
            "/api/chat/c/messages",
            {"content": "x", "accessCode": "wrong"},
            {},
            401,
            "Invalid access code",
        ),
        ("/api/chat/c/messages", {"content": "x"}, {}, 401, "Invalid access code"),
        (
            "/api/chat/c/messages",
            {"content": "", "accessCode": ACCESS_CODE},
            {},
            400,
            "Message content required",
        ),
        (
            "/api/chat/c/messages",
            {"content": 42, "accessCode": ACCESS_CODE},
            {},
            400,
            "Message content required",
        ),
        ("/api/chat/c/messages", {"accessCode": ACCESS_CODE}, {}, 400, "Message content required"),
        (
            "/api/chat/c/messages",
            {"content": "x" * 4001, "accessCode": ACCESS_CODE},
            {},
            413,
            "Message too long",
        ),
        ("/api/chat/c/messages", [1, 2], {}, 400, "JSON body must be an object"),
        ("/api/nope", {}, {}, 404, "Not found"),
    ],
)
async def test_post_errors(
    gateway: TestServer, path: str, body: Any, headers: dict[str, str], status: int, error: str
) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.post(url(gateway, path), json=body, headers=headers)
        assert r.status == status
        assert r.content_type == "application/json"
        assert (await r.json()) == {"error": error}


async def test_message_length_counts_code_points(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        ok = await post(s, gateway, "cp", {"content": "🌱" * 4000, "accessCode": ACCESS_CODE})
        assert ok.status == 200


async def test_malformed_json_wrong_type_and_oversized_body(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        target = url(gateway, "/api/chat/c/messages")
        r = await s.post(target, data=b"{not json", headers={"Content-Type": "application/json"})
        assert (r.status, await r.json()) == (400, {"error": "Malformed JSON body"})
        r = await s.post(target, data=b"content=x", headers={"Content-Type": "text/plain"})
        assert r.status == 415
        assert "error" in await r.json()
        big = json.dumps({"content": "x" * 300_000, "accessCode": ACCESS_CODE}).encode()
        r = await s.post(target, data=big, headers={"Content-Type": "application/json"})
        assert (r.status, await r.json()) == (413, {"error": "Request body too large"})
        # nothing was stored by any of these
        hist = await (
            await s.get(url(gateway, "/api/chat/c/messages"), params={"accessCode": ACCESS_CODE})
        ).json()
        assert hist == []


async def test_get_routes_require_the_code(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        for path in (
            "/api/chat/c/messages",
            "/api/chat/c/worker-state",
            "/api/health",
            "/api/chat/c/events",
            "/api/chat/c/transcript",
        ):
            r = await s.get(url(gateway, path), params={"accessCode": "nope"})
            assert (r.status, await r.json()) == (401, {"error": "Invalid access code"}), path


async def test_base_path_mount_serves_the_same_api(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            url(gateway, "/terrarium/api/chat/bp/messages"),
            json={"content": "via base path", "accessCode": ACCESS_CODE},
        )
        assert r.status == 200
        hist = await (
            await s.get(url(gateway, "/api/chat/bp/messages"), params={"accessCode": ACCESS_CODE})
        ).json()
        assert [m["content"] for m in hist] == ["via base path"]
        async with s.ws_connect(
            url(gateway, "/terrarium/api/chat?chatId=bp&accessCode=" + ACCESS_CODE)
        ) as ws:
            await post(s, gateway, "bp", {"content": "live", "accessCode": ACCESS_CODE})
            frame = await ws.receive_json(timeout=5)
            assert frame["content"] == "live"


async def test_idempotent_post_returns_same_message_and_one_job(
    gateway: TestServer, chat_log: ChatLog
) -> None:
    async with aiohttp.ClientSession() as s:
        body = {"content": "once", "accessCode": ACCESS_CODE, "clientMessageId": "cm-1"}
        first = await (await post(s, gateway, "idem", body)).json()
        second = await (await post(s, gateway, "idem", body)).json()
        by_header = await (
            await post(
                s,
                gateway,
                "idem",
                {"content": "once", "accessCode": ACCESS_CODE},
                headers={"Idempotency-Key": "cm-1"},
            )
        ).json()
        assert first == second == by_header
        assert await chat_log.redis.xlen(chat_log.keys.jobs_stream(0)) == 1
        hist = await chat_log.history("idem")
        assert len(hist) == 1


async def test_rate_limits_per_chat_and_per_ip(redis_server: RedisServer) -> None:
    settings = gateway_settings(
        redis_server.url, rate_limit_max_per_chat=2, rate_limit_max_per_ip=4
    )
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            body = {"content": "x", "accessCode": ACCESS_CODE}
            statuses = [(await post(s, server, "rl", body)).status for _ in range(3)]
            assert statuses == [200, 200, 429]
            r = await post(s, server, "rl2", body)
            assert r.status == 200
            r = await post(s, server, "rl3", body)
            assert r.status == 429
            assert int(r.headers["Retry-After"]) >= 1
            assert (await r.json())["error"].startswith("You are sending messages too quickly.")
    finally:
        await server.close()


async def test_websocket_auth_and_origin(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url(gateway, "/api/chat?chatId=c&accessCode=wrong")) as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008
            assert msg.extra == "Unauthorized"
        async with s.ws_connect(url(gateway, f"/api/chat?accessCode={ACCESS_CODE}")) as ws:
            await ws.receive(timeout=5)
            assert ws.close_code == 1008
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await s.ws_connect(
                url(gateway, f"/api/chat?chatId=c&accessCode={ACCESS_CODE}"),
                headers={"Origin": "https://evil.example"},
            )
        assert err.value.status == 403
        r = await s.get(
            url(gateway, "/api/chat/c/events"),
            params={"accessCode": ACCESS_CODE},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status == 403


async def _collect_ws(
    ws: aiohttp.ClientWebSocketResponse, until: Any, deadline: float = 10
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(deadline):
        while True:
            frame = await ws.receive_json()
            frames.append(frame)
            if until(frame):
                return frames


async def test_ws_resume_mid_reply_is_gap_and_duplicate_free(
    gateway: TestServer, chat_log: ChatLog
) -> None:
    """A socket dropped in the middle of a reply resumes from its last eventId."""
    async with aiohttp.ClientSession() as s:
        msg = await (
            await post(s, gateway, "res", {"content": "q", "accessCode": ACCESS_CODE})
        ).json()
        base = f"/api/chat?chatId=res&accessCode={ACCESS_CODE}&v=2"
        ws = await s.ws_connect(url(gateway, base + "&lastEventId=0-0"))
        pieces = [f"p{i} " for i in range(40)]
        writer_done = asyncio.Event()

        async def fake_worker() -> None:
            for piece in pieces:
                await chat_log.append_chunk("res", msg["id"], piece)
                await asyncio.sleep(0.002)
            await chat_log.finish_reply("res", msg["id"], "".join(pieces))
            writer_done.set()

        task = asyncio.create_task(fake_worker())
        first = await _collect_ws(
            ws, lambda f: f.get("type") == "assistantChunk" and f["content"] == "p10 "
        )
        await ws.close()
        last_id = first[-1]["eventId"]
        ws2 = await s.ws_connect(url(gateway, base + f"&lastEventId={last_id}"))
        rest = await _collect_ws(
            ws2, lambda f: f.get("type") == "workerState" and f["state"] == "responded"
        )
        await ws2.close()
        await task
        frames = first + rest
        ids = [f["eventId"] for f in frames]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
        assert len(ids) == len(set(ids))
        text = "".join(f["content"] for f in frames if f.get("type") == "assistantChunk")
        final = next(f for f in frames if f.get("sender") == "Terra")
        assert text == final["content"] == "".join(pieces)
        history_ids = {m["eventId"] for m in await chat_log.history("res")}
        assert history_ids <= set(ids)


async def test_sse_resume_with_last_event_id(gateway: TestServer, chat_log: ChatLog) -> None:
    async with aiohttp.ClientSession() as s:
        msg = await (
            await post(s, gateway, "sse", {"content": "q", "accessCode": ACCESS_CODE})
        ).json()
        for i in range(5):
            await chat_log.append_chunk("sse", msg["id"], f"c{i}")
        r = await s.get(
            url(gateway, "/api/chat/sse/events"),
            params={"accessCode": ACCESS_CODE, "v": "2"},
            headers={"Last-Event-ID": msg["eventId"]},
        )
        assert r.headers["Content-Type"].startswith("text/event-stream")
        got: list[tuple[str, dict[str, Any]]] = []
        event_id = None
        async with asyncio.timeout(5):
            async for line in r.content:
                text = line.decode().rstrip("\n")
                if text.startswith("id:"):
                    event_id = text[3:].strip()
                elif text.startswith("data:"):
                    got.append((str(event_id), json.loads(text[5:])))
                    if len(got) == 6:
                        break
        r.close()
        assert [f["type"] for _, f in got] == ["workerState"] + ["assistantChunk"] * 5
        assert all(eid == f["eventId"] for eid, f in got)


async def test_resume_point_lost_gives_resync_to_v2_only(
    gateway: TestServer, chat_log: ChatLog
) -> None:
    async with aiohttp.ClientSession() as s:
        await post(s, gateway, "gone", {"content": "q", "accessCode": ACCESS_CODE})
        await chat_log.redis.flushall()
        await post(s, gateway, "gone", {"content": "after restart", "accessCode": ACCESS_CODE})
        stale = "1000-0"
        ws = await s.ws_connect(
            url(gateway, f"/api/chat?chatId=gone&accessCode={ACCESS_CODE}&v=2&lastEventId={stale}")
        )
        frame = await ws.receive_json(timeout=5)
        assert frame["type"] == "resync"
        await ws.close()
        ws1 = await s.ws_connect(
            url(gateway, f"/api/chat?chatId=gone&accessCode={ACCESS_CODE}&lastEventId={stale}")
        )
        await post(s, gateway, "gone", {"content": "live", "accessCode": ACCESS_CODE})
        frame = await ws1.receive_json(timeout=5)
        assert frame["content"] == "live"  # v1: no resync frame, just live
        await ws1.close()


async def test_v1_clients_get_only_original_frame_types(
    gateway: TestServer, chat_log: ChatLog
) -> None:
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(url(gateway, f"/api/chat?chatId=v1&accessCode={ACCESS_CODE}"))
        await chat_log.append_event(
            "v1", json.dumps({"type": "toolActivity", "v": 1, "chatId": "v1", "tool": "x"})
        )
        msg = await (
            await post(s, gateway, "v1", {"content": "q", "accessCode": ACCESS_CODE})
        ).json()
        frame = await ws.receive_json(timeout=5)
        assert frame["id"] == msg["id"]
        assert "type" not in frame
        await ws.close()


async def test_two_sockets_on_one_chat_see_the_same_frames(
    gateway: TestServer, chat_log: ChatLog
) -> None:
    async with aiohttp.ClientSession() as s:
        target = url(gateway, f"/api/chat?chatId=two&accessCode={ACCESS_CODE}")
        a, b = await s.ws_connect(target), await s.ws_connect(target)
        msg = await (
            await post(s, gateway, "two", {"content": "q", "accessCode": ACCESS_CODE})
        ).json()
        for i in range(10):
            await chat_log.append_chunk("two", msg["id"], str(i))
        await chat_log.finish_reply("two", msg["id"], "0123456789")
        done = lambda f: f.get("type") == "workerState" and f["state"] == "responded"  # noqa: E731
        fa, fb = await _collect_ws(a, done), await _collect_ws(b, done)
        assert fa == fb
        assert len(fa) == 15
        await a.close()
        await b.close()


async def test_slow_reader_is_disconnected_others_keep_receiving(
    redis_server: RedisServer, chat_log: ChatLog
) -> None:
    settings = gateway_settings(redis_server.url, socket_queue_size=50)
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            target = url(server, f"/api/chat?chatId=slow&accessCode={ACCESS_CODE}")
            # a reader that never reads: tiny receive buffer, paused transport
            slow = await s.ws_connect(target, max_msg_size=0)
            transport = slow._response.connection.transport  # type: ignore[union-attr]
            assert transport is not None
            transport.pause_reading()
            fast = await s.ws_connect(target)
            msg = await (
                await post(s, server, "slow", {"content": "q", "accessCode": ACCESS_CODE})
            ).json()
            big = "x" * 4000
            received = 0

            async def read_fast() -> None:
                nonlocal received
                while received < 2 + 3000:
                    await fast.receive_json(timeout=10)
                    received += 1

            reader = asyncio.create_task(read_fast())
            for _ in range(3000):
                await chat_log.append_chunk("slow", msg["id"], big)
            await asyncio.wait_for(reader, 30)
            assert received == 3002
            metrics = await (await s.get(url(server, "/metrics"))).text()
            assert "terrarium_slow_consumers_total 1.0" in metrics
            transport.resume_reading()
            await slow.close()
            await fast.close()
    finally:
        await server.close()


async def test_resume_from_a_trimmed_point_gives_resync(redis_server: RedisServer) -> None:
    settings = gateway_settings(redis_server.url, events_maxlen=10)
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            first = await (
                await post(s, server, "trim", {"content": "q", "accessCode": ACCESS_CODE})
            ).json()
            from bus import BusKeys, ChatLog
            from bus.chatlog import ChatLimits
            from bus.client import create_redis

            redis = create_redis(redis_server.url, client_name="test")
            log = ChatLog(redis, BusKeys(), ChatLimits(events_maxlen=10))
            for i in range(400):  # MAXLEN ~ trims whole stream nodes (100 entries)
                await log.append_chunk("trim", first["id"], str(i))
            await redis.aclose()
            ws = await s.ws_connect(
                url(
                    server,
                    f"/api/chat?chatId=trim&accessCode={ACCESS_CODE}&v=2"
                    f"&lastEventId={first['eventId']}",
                )
            )
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "resync"
            await ws.close()
    finally:
        await server.close()


async def test_cors_for_allowed_origins_and_public_static(redis_server: RedisServer) -> None:
    settings = gateway_settings(redis_server.url, allowed_origins="https://site.example")
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            pre = await s.options(
                url(server, "/api/chat/c/messages"),
                headers={"Origin": "https://site.example", "Access-Control-Request-Method": "POST"},
            )
            assert pre.status == 204
            assert pre.headers["Access-Control-Allow-Origin"] == "https://site.example"
            denied = await s.options(
                url(server, "/api/chat/c/messages"),
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            )
            assert denied.status == 403
            r = await post(
                s,
                server,
                "c",
                {"content": "x", "accessCode": "nope"},
                headers={"Origin": "https://site.example"},
            )
            assert r.status == 401
            assert r.headers["Access-Control-Allow-Origin"] == "https://site.example"
            js = await s.get(url(server, "/widget.js"), headers={"Origin": "https://any.example"})
            assert js.status == 200
            assert js.headers["Access-Control-Allow-Origin"] == "*"
            assert "max-age" in js.headers["Cache-Control"]
            assert js.headers.get("ETag")
    finally:
        await server.close()


async def test_cors_reaches_an_sse_stream_of_an_allowed_origin(redis_server: RedisServer) -> None:
    """An SSE stream is prepared inside its handler, before the CORS middleware sees the
    response: an allowed origin's EventSource got no Access-Control-Allow-Origin and the
    browser refused the stream; a refused origin still gets none."""
    settings = gateway_settings(redis_server.url, allowed_origins="https://site.example")
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            target = url(server, f"/api/chat/c/events?accessCode={ACCESS_CODE}")
            async with s.get(target, headers={"Origin": "https://site.example"}) as stream:
                assert stream.status == 200
                assert stream.headers["Access-Control-Allow-Origin"] == "https://site.example"
                assert stream.headers["Vary"] == "Origin"
            async with s.get(target, headers={"Origin": "https://evil.example"}) as other:
                assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        await server.close()


async def test_forwarded_host_counts_only_from_a_trusted_proxy(gateway: TestServer) -> None:
    target = url(gateway, f"/api/chat?chatId=c&accessCode={ACCESS_CODE}")
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await s.ws_connect(
                target,
                headers={"Origin": "https://evil.example", "X-Forwarded-Host": "evil.example"},
            )
        assert err.value.status == 403
        same = f"http://{gateway.host}:{gateway.port}"
        async with s.ws_connect(target, headers={"Origin": same}) as ws:
            assert not ws.closed


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_v1_client_joining_mid_reply_gets_the_reply_from_its_start(
    gateway: TestServer, chat_log: ChatLog, transport: str
) -> None:
    """The original front end reconnects after a page refresh without a resume point: the
    partial answer must be whole, not just its tail."""
    chat = f"mid-{transport}"
    async with aiohttp.ClientSession() as s:
        msg = await (
            await post(s, gateway, chat, {"content": "q", "accessCode": ACCESS_CODE})
        ).json()
        await chat_log.append_chunk(chat, msg["id"], "Hello")
        await chat_log.append_chunk(chat, msg["id"], ", wor")
        query = f"chatId={chat}&accessCode={ACCESS_CODE}"
        chunks: list[str] = []
        if transport == "ws":
            ws = await s.ws_connect(url(gateway, f"/api/chat?{query}"))
            await chat_log.append_chunk(chat, msg["id"], "ld")
            while len(chunks) < 3:
                frame = await ws.receive_json(timeout=5)
                if frame.get("type") == "assistantChunk":
                    chunks.append(frame["content"])
            await ws.close()
        else:
            response = await s.get(url(gateway, f"/api/chat/{chat}/events?{query}"))
            await chat_log.append_chunk(chat, msg["id"], "ld")
            while len(chunks) < 3:
                line = (await asyncio.wait_for(response.content.readline(), 5)).decode()
                if line.startswith("data:"):
                    frame = json.loads(line[5:])
                    if frame.get("type") == "assistantChunk":
                        chunks.append(frame["content"])
            response.close()
    assert "".join(chunks) == "Hello, world"


async def test_a_finished_reply_is_not_replayed_to_a_new_v1_client(
    gateway: TestServer, chat_log: ChatLog
) -> None:
    async with aiohttp.ClientSession() as s:
        msg = await (
            await post(s, gateway, "fin", {"content": "q", "accessCode": ACCESS_CODE})
        ).json()
        await chat_log.append_chunk("fin", msg["id"], "old")
        await chat_log.finish_reply("fin", msg["id"], "old")
        ws = await s.ws_connect(url(gateway, f"/api/chat?chatId=fin&accessCode={ACCESS_CODE}"))
        second = await (
            await post(s, gateway, "fin", {"content": "q2", "accessCode": ACCESS_CODE})
        ).json()
        frame = await ws.receive_json(timeout=5)
        assert frame["id"] == second["id"]  # nothing of the finished reply came first
        await ws.close()


async def test_a_stalled_reader_is_cut_off_by_bytes_not_frames(
    redis_server: RedisServer, chat_log: ChatLog
) -> None:
    """A socket that stops reading is closed (4000, resume) once ~SOCKET_BUFFER_BYTES are
    waiting for it, in our queue or the transport's buffers, however few frames that is."""
    settings = gateway_settings(
        redis_server.url, socket_queue_size=100_000, socket_buffer_bytes=256 * 1024
    )
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            target = url(server, f"/api/chat?chatId=stall&accessCode={ACCESS_CODE}")
            slow = await s.ws_connect(target, max_msg_size=0)
            transport = slow._response.connection.transport  # type: ignore[union-attr]
            assert transport is not None
            transport.pause_reading()
            msg = await (
                await post(s, server, "stall", {"content": "q", "accessCode": ACCESS_CODE})
            ).json()
            big = "x" * 4000

            async def slow_consumers() -> bool:
                text = await (await s.get(url(server, "/metrics"))).text()
                return "terrarium_slow_consumers_total 1.0" in text

            for _ in range(3000):  # 12 MB: far past the budget, far below the frame cap
                await chat_log.append_chunk("stall", msg["id"], big)
            await wait_until(slow_consumers, timeout=20, message="stalled socket never cut off")
            transport.resume_reading()
            await slow.close()
    finally:
        await server.close()
