"""Client mistakes get a 4xx JSON answer, never a 500 (issue 11, item 6).

Each case is a request the security review saw answered with a 500 (or with a raw 500
written inside an already-started stream), and its siblings on every route and parameter.
Requests go through a raw socket: aiohttp's client would refuse to send most of them.
"""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from tests.integration.conftest import gateway_settings
from tests.support.raw_http import raw_request, request_bytes
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.integration

CODE = ACCESS_CODE.encode()
LONE_SURROGATE = '"\\ud800"'  # a JSON escape that decodes to a lone surrogate
CESU = b'"\xed\xa0\x80"'  # the same surrogate as raw (CESU-8) bytes
NESTED = b"[" * 100_000


def _json_body(**fields: str) -> bytes:
    """A JSON object whose values are inserted verbatim (already JSON-encoded)."""
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


def _post(path: str, body: bytes) -> bytes:
    return request_bytes("POST", path, headers={"Content-Type": "application/json"}, body=body)


def _get(path: bytes | str, **headers: bytes | str) -> bytes:
    return request_bytes("GET", path, headers=headers)


CASES: list[tuple[str, bytes, int]] = [
    # Without any access code.
    ("static NUL", _get("/static/%00"), 404),
    ("static NUL after a real file", _get("/static/chat/api.js%00.html"), 404),
    ("static 300-char name", _get("/static/" + "x" * 300), 404),
    ("static long under base path", _get("/terrarium/static/" + "y" * 300), 404),
    ("nested JSON to cancel", _post("/api/chat/x/cancel", NESTED), 400),
    ("nested JSON to messages", _post("/api/chat/x/messages", NESTED), 400),
    ("nested object JSON", _post("/api/chat/x/messages", b'{"a":' * 50_000), 400),
    (
        "lone surrogate access code",
        _post("/api/chat/x/messages", _json_body(accessCode=LONE_SURROGATE, content='"hi"')),
        400,
    ),
    (
        "CESU access code",
        _post("/api/chat/x/messages", b'{"accessCode":' + CESU + b',"content":"hi"}'),
        400,
    ),
    (
        "lone surrogate access code to cancel",
        _post("/api/chat/x/cancel", _json_body(accessCode=LONE_SURROGATE)),
        400,
    ),
    ("surrogate code in a query", _get("/api/chat/x/messages?accessCode=%ED%A0%80"), 401),
    ("surrogate code to health", _get("/api/health?accessCode=%ED%A0%80"), 401),
    ("latin-1 byte code in a query", _get(b"/api/chat/x/transcript?accessCode=\xff"), 400),
    # With the access code.
    (
        "lone surrogate content",
        _post(
            "/api/chat/x/messages",
            _json_body(accessCode=f'"{ACCESS_CODE}"', content=LONE_SURROGATE),
        ),
        400,
    ),
    (
        "lone surrogate clientMessageId",
        _post(
            "/api/chat/x/messages",
            _json_body(
                accessCode=f'"{ACCESS_CODE}"', content='"hi"', clientMessageId=LONE_SURROGATE
            ),
        ),
        400,
    ),
    (
        "lone surrogate messageId to cancel",
        _post(
            "/api/chat/x/cancel",
            _json_body(accessCode=f'"{ACCESS_CODE}"', messageId=LONE_SURROGATE),
        ),
        400,
    ),
    (
        "oversized messageId to cancel",
        _post(
            "/api/chat/x/cancel",
            _json_body(accessCode=f'"{ACCESS_CODE}"', messageId='"' + "9" * 5000 + '"'),
        ),
        400,
    ),
    ("superscript limit", _get(f"/api/chat/x/messages?accessCode={ACCESS_CODE}&limit=%C2%B2"), 400),
    (
        "arabic digit limit",
        _get(f"/api/chat/x/messages?accessCode={ACCESS_CODE}&limit=%D9%A3"),
        400,
    ),
    ("huge limit", _get(f"/api/chat/x/messages?accessCode={ACCESS_CODE}&limit=" + "9" * 5000), 400),
    (
        "SSE Last-Event-ID superscript",
        _get(f"/api/chat/x/events?accessCode={ACCESS_CODE}", **{"Last-Event-ID": "²-1"}),
        400,
    ),
    (
        "SSE lastEventId beyond 64 bits",
        _get(f"/api/chat/x/events?accessCode={ACCESS_CODE}&lastEventId=99999999999999999999-0"),
        400,
    ),
    (
        "WS lastEventId superscript",
        _get(
            f"/api/chat?chatId=x&accessCode={ACCESS_CODE}&lastEventId=%C2%B2-1",
            Upgrade="websocket",
            Connection="Upgrade",
            **{"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"},
        ),
        400,
    ),
    (
        "history before the first id",
        _get(f"/api/chat/x/messages?accessCode={ACCESS_CODE}&before=0-0"),
        200,
    ),
    (
        "history before 00-00",
        _get(f"/api/chat/x/messages?accessCode={ACCESS_CODE}&before=00-00"),
        200,
    ),
    (
        "SSE resuming after 00-00",
        _get(f"/api/chat/x/events?accessCode={ACCESS_CODE}&lastEventId=00-00"),
        200,
    ),
    (
        "transcript before the first id",
        _get(f"/api/chat/x/transcript?accessCode={ACCESS_CODE}&before=0-0"),
        200,
    ),
    ("WS chatId with a surrogate", _get("/api/chat?chatId=%ED%A0%80&accessCode=x"), 400),
    (
        "request id with bad bytes",
        _get("/api/config", **{"X-Request-Id": b"\xed\xa0\x80" * 50}),
        200,
    ),
]


@pytest.mark.parametrize(
    ("request_data", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_client_mistake_gets_a_json_4xx(
    gateway: TestServer, request_data: bytes, status: int
) -> None:
    assert gateway.port is not None
    response = await raw_request(gateway.port, request_data)
    assert response.status == status, response.raw[:400]
    assert b"\r\nHTTP/1." not in response.raw, "a second status line inside the response"
    if response.raw.startswith(b"HTTP/1.0 400"):
        return  # refused by aiohttp's HTTP parser itself, before any of our code (plain text)
    if status >= 400:
        assert response.headers.get("content-type", "").startswith("application/json")
        assert "error" in json.loads(response.body)


async def test_bad_resume_point_on_an_existing_chat_is_refused_before_the_stream(
    gateway: TestServer,
) -> None:
    """The review's SSE case: the chat exists, so the stream used to start, then break."""
    assert gateway.port is not None
    created = await raw_request(
        gateway.port,
        _post(
            "/api/chat/resume/messages", _json_body(accessCode=f'"{ACCESS_CODE}"', content='"hi"')
        ),
    )
    assert created.status == 200
    response = await raw_request(
        gateway.port,
        _get(f"/api/chat/resume/events?accessCode={ACCESS_CODE}", **{"Last-Event-ID": "²-1"}),
    )
    assert response.status == 400
    assert b"text/event-stream" not in response.raw
    assert b"\r\nHTTP/1." not in response.raw


async def test_bad_bytes_as_metrics_token_are_refused(redis_server: RedisServer) -> None:
    settings = gateway_settings(redis_server.url, metrics_token="metrics-secret")
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        assert server.port is not None
        response = await raw_request(
            server.port, _get("/metrics", Authorization=b"Bearer \xed\xa0\x80\xff")
        )
        assert response.status == 403
    finally:
        await server.close()
