"""Fuzzing the running gateway: no 500, no connection dropped without a status, no secret logged.

Two generators against one real gateway process (with a real redis-server):

- schemathesis, from the OpenAPI document the gateway serves (``/api/openapi.yaml``):
  valid and invalid data for every operation; about half the cases carry the real access
  code so the checks behind it are reached too;
- a raw-socket generator of malformed request lines and headers (what no HTTP client
  sends), seeded so a failure replays;
- a raw-socket generator of malformed WebSocket frames after a real handshake (reserved
  bits, unknown opcodes, unmasked or oversized frames, bad UTF-8, stray continuations,
  bad close codes), also seeded.

``FUZZ_EXAMPLES`` (examples per operation, default 400) and ``FUZZ_RAW_REQUESTS`` (default
5000) scale the run; the defaults send more than 10,000 requests in all. At the end the
gateway's log must hold no spelling of a secret and no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from gateway.logs import secret_spellings
from gateway.openapi import OPENAPI_PATH
from tests.support.raw_http import raw_request, request_bytes
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.system import Process, running_system

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "fuzz-secret-code-ä-0042"
METRICS_SECRET = "fuzz-metrics-token-77"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
RAW_REQUESTS = int(os.environ.get("FUZZ_RAW_REQUESTS", "5000"))
WS_CONNECTIONS = int(os.environ.get("FUZZ_WS_CONNECTIONS", "300"))

#: docs/openapi.yaml is a link to the document the gateway serves.
DOCS_COPY_TARGET = (Path(__file__).parents[2] / "docs" / "openapi.yaml").resolve()
#: Requests sent per generator, for the summary (and the figure in the report).
SENT: dict[str, int] = {"schemathesis": 0, "raw": 0, "ws_frames": 0}


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """One gateway process for the whole module, limits raised so bodies get parsed."""
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary")
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    redis = RedisServer(workdir / "redis").start()
    try:
        with running_system(workdir, redis) as system:
            gateway = system.gateway(
                CHAT_PASSWORD=SECRET,
                METRICS_TOKEN=METRICS_SECRET,
                RATE_LIMIT_MAX_PER_IP="100000000",
                RATE_LIMIT_MAX_PER_CHAT="100000000",
                RATE_LIMIT_FAILED_CODES_PER_IP="100000000",
                LOG_LEVEL="INFO",
            )
            yield gateway
            gateway.stop()
            _assert_log_is_clean(gateway.output())
    finally:
        redis.kill()
        print(f"\nfuzz: requests sent {SENT}")


def _assert_log_is_clean(output: str) -> None:
    for secret in (SECRET, METRICS_SECRET):
        for form in secret_spellings(secret):
            assert form.lower() not in output.lower(), f"a spelling of a secret is logged: {form!r}"
    assert "Traceback" not in output
    assert "gateway.request_failed" not in output  # the 500 path logs this


schema = schemathesis.openapi.from_path(OPENAPI_PATH)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES,
    deterministic=True,
    database="none",
)


async def test_the_gateway_serves_its_openapi_document(fuzz_gateway: Process) -> None:
    assert fuzz_gateway.port is not None
    served = await raw_request(
        fuzz_gateway.port, request_bytes("GET", "/api/openapi.yaml"), within=10
    )
    assert served.status == 200
    assert served.body == OPENAPI_PATH.read_bytes()
    assert DOCS_COPY_TARGET == OPENAPI_PATH


def _with_real_code(case: Any) -> None:
    """Give about half the cases the valid access code (chosen from the case itself)."""
    fingerprint = repr((case.path_parameters, case.query, case.body)).encode()
    if zlib.crc32(fingerprint) % 2:
        return
    if isinstance(case.query, dict) and "accessCode" in case.query:
        case.query["accessCode"] = SECRET
    if isinstance(case.body, dict) and "accessCode" in case.body:
        case.body["accessCode"] = SECRET


@schema.parametrize()
@hypothesis.settings(
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    print_blob=True,
)
def test_no_operation_answers_a_server_error(case: Any, fuzz_gateway: Process) -> None:
    _with_real_code(case)
    base = f"http://127.0.0.1:{fuzz_gateway.port}"
    SENT["schemathesis"] += 1
    if case.path.endswith("/events"):
        # An event stream that starts never ends: read its status only, then hang up.
        with requests.request(
            **case.as_transport_kwargs(base_url=base), stream=True, timeout=10
        ) as streamed:
            assert streamed.status_code < 500, (streamed.status_code, case.as_curl_command())
        return
    response = case.call(base_url=base, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])


def _raw_case(rng: random.Random) -> bytes:
    """One malformed (or merely odd) HTTP/1.1 request."""
    paths = [
        "/api/chat/x/messages",
        "/api/chat/x/events",
        "/api/chat",
        "/api/health",
        "/static/chat/api.js",
        "/terrarium/api/chat/y/transcript",
        "/metrics",
    ]
    junk = [b"\x00", b"\xff", b"\xed\xa0\x80", b"%", b"%zz", b"\r", b" ", b"\x7f", b"\t", b"\\"]
    path = rng.choice(paths).encode()
    query = b"?accessCode=" + rng.choice([SECRET.encode(), b"wrong", b""])
    if rng.random() < 0.5:
        query += b"&lastEventId=" + rng.choice([b"1-1", "²-1".encode(), b"9" * 30 + b"-0"])
    if rng.random() < 0.3:
        query += b"&limit=" + rng.choice([b"5", "²".encode(), b"-1", b"9" * 50])
    method = rng.choice([b"GET"] * 4 + [b"POST"] * 3 + [b"G T", b"\x00GET", b"DELETE", b"get"])
    version = rng.choice([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/9.9", b"HTTP/1", b""])
    target = path + query
    if rng.random() < 0.35:
        cut = rng.randrange(len(target) + 1)
        target = target[:cut] + rng.choice(junk) + target[cut:]
    headers = [b"Host: fuzz"]
    for _ in range(rng.randrange(4)):
        headers.append(
            rng.choice(
                [
                    b"Content-Length: " + rng.choice([b"-1", b"abc", b"99999999999", b"1 1"]),
                    b"Transfer-Encoding: " + rng.choice([b"chunked, identity", b"gzip", b"x"]),
                    b"Last-Event-ID: " + rng.choice(["²-1".encode(), b"1-" + b"9" * 40]),
                    b"X-Request-Id: " + rng.choice([b"\xff\xfe", b"a" * 5000, b"ok-1"]),
                    b"Origin: " + rng.choice([b"http://evil", b"null", b"\xff"]),
                    b"Bad Header: x",
                    b":empty-name",
                    b"Authorization: Bearer " + METRICS_SECRET.encode() + rng.choice(junk),
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13",
                ]
            )
        )
    body = b""
    if method == b"POST":
        body = rng.choice(
            [b"[" * 5000, b'{"accessCode":"\\ud800"}', b'{"content":' + b"\xed\xa0\x80" + b"}"]
        )
        headers.append(b"Content-Type: application/json")
        headers.append(b"Content-Length: " + str(len(body)).encode())
    headers.append(b"Connection: close")
    return (
        method
        + b" "
        + target
        + b" "
        + version
        + b"\r\n"
        + b"\r\n".join(headers)
        + (b"\r\n\r\n" + body)
    )


async def test_malformed_request_lines_get_a_status(fuzz_gateway: Process) -> None:
    assert fuzz_gateway.port is not None
    rng = random.Random(11)
    statuses: dict[int, int] = {}
    for i in range(RAW_REQUESTS):
        data = _raw_case(rng)
        response = await raw_request(fuzz_gateway.port, data)
        SENT["raw"] += 1
        statuses[response.status] = statuses.get(response.status, 0) + 1
        assert response.status != 0, f"case {i}: closed without a status: {data!r}"
        assert response.status < 500, f"case {i}: {response.status} for {data!r}"
        assert b"\r\nHTTP/1." not in response.raw, f"case {i}: two status lines for {data!r}"
    print(f"\nraw fuzz statuses: {sorted(statuses.items())}")


def _ws_frame(
    payload: bytes, *, opcode: int, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One WebSocket frame exactly as given (a client must mask; this one may not)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + size.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _ws_junk(rng: random.Random) -> bytes:
    """One frame a broken or hostile client might send."""
    text = rng.choice(
        [b'{"type":"ping"}', b"{", b"[" * 300, "² \\ud800".encode(), b"\xed\xa0\x80", b"x" * 5000]
    )
    kind = rng.randrange(10)
    if kind == 0:
        return _ws_frame(text, opcode=1)  # well formed text
    if kind == 1:
        return _ws_frame(text, opcode=rng.choice([3, 4, 5, 6, 7, 11, 12, 15]))  # unknown opcode
    if kind == 2:
        return _ws_frame(text, opcode=1, mask=False)  # a client frame must be masked
    if kind == 3:
        return _ws_frame(b"x" * rng.choice([126, 200]), opcode=9)  # control frame > 125 bytes
    if kind == 4:
        return _ws_frame(b"", opcode=rng.choice([8, 9, 10]), fin=False)  # fragmented control
    if kind == 5:
        return _ws_frame(text, opcode=0)  # a continuation with nothing to continue
    if kind == 6:
        code = rng.choice([0, 999, 1004, 1005, 1006, 2999, 5000, 65535])
        return _ws_frame(code.to_bytes(2, "big") + rng.choice([b"", b"\xff"]), opcode=8)
    if kind == 7:
        return bytes([0x81, 0xFF]) + (1 << 62).to_bytes(8, "big") + os.urandom(4)  # 4 EiB
    if kind == 8:
        return _ws_frame(b"\xff\xfe" + text, opcode=1)  # invalid UTF-8 text
    return _ws_frame(text[:20], opcode=1, fin=False)  # a fragment left open


async def _ws_session(port: int, rng: random.Random) -> bytes:
    """Handshake for real, send junk frames ending in one with reserved bits; all bytes back."""
    chat = f"fuzz-ws-{rng.randrange(10**9)}"
    code = quote(SECRET) if rng.random() < 0.8 else "wrong"
    handshake = request_bytes(
        "GET",
        f"/api/chat?chatId={chat}&accessCode={code}&v=2",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ).replace(b"Connection: close\r\n", b"")
    frames = [_ws_junk(rng) for _ in range(rng.randrange(1, 6))]
    frames.append(_ws_frame(b"{}", opcode=1, rsv=rng.choice([1, 2, 4])))  # always a protocol error
    SENT["ws_frames"] += len(frames)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        writer.write(handshake)
        await writer.drain()
        async with asyncio.timeout(10):
            while b"\r\n\r\n" not in received:
                chunk = await reader.read(65536)
                if not chunk:
                    return received
                received += chunk
            for frame in frames:
                writer.write(frame)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            while chunk := await reader.read(65536):  # the server must close
                received += chunk
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return received


async def test_malformed_websocket_frames_end_in_a_close_not_a_500(fuzz_gateway: Process) -> None:
    assert fuzz_gateway.port is not None
    rng = random.Random(13)
    upgraded = 0
    for i in range(WS_CONNECTIONS):
        received = await _ws_session(fuzz_gateway.port, rng)
        status_line = received.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 101"), f"connection {i}: {status_line!r}"
        upgraded += 1
        assert b"HTTP/1.1 5" not in received, f"connection {i}: a 5xx inside the socket"
        health = await raw_request(fuzz_gateway.port, request_bytes("GET", "/healthz"))
        assert health.status == 200, f"connection {i}: the gateway is unwell afterwards"
    print(f"\nws fuzz: {upgraded} sockets, {SENT['ws_frames']} frames")
