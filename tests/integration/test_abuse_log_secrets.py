"""The access code never reaches the gateway's log, even in a malformed request (item 7).

aiohttp's HTTP parser logs a request line it cannot parse, raw, in its exception text;
the security review found the access code 585 times in the log that way.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.support.raw_http import raw_request, request_bytes
from tests.support.system import System

pytestmark = pytest.mark.integration

SECRET = "very-secret-code-é-1234"
METRICS_SECRET = "metrics-token-5678"


def _malformed_lines(secret: str) -> list[bytes]:
    encoded = quote(secret, safe="")
    raw = secret.encode()
    return [
        # A byte the parser refuses in the query, after the code.
        b"GET /api/chat/x/messages?accessCode=" + raw + b"\xff HTTP/1.1\r\nHost: a\r\n\r\n",
        # The same, percent-encoded, and with the parameter's name percent-encoded too.
        b"GET /api/chat/x/messages?accessCode=" + encoded.encode() + b"\x7f HTTP/1.1\r\n\r\n",
        b"GET /api/health?access%43ode=" + encoded.encode() + b"\x01 HTTP/1.1\r\n\r\n",
        # A broken version and a broken method.
        b"GET /api/chat?chatId=x&accessCode=" + encoded.encode() + b" HTTP/9\r\n\r\n",
        b"G\x00T /api/chat/x/events?accessCode=" + encoded.encode() + b" HTTP/1.1\r\n\r\n",
        # A bad header carrying the metrics token.
        b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer "
        + METRICS_SECRET.encode()
        + b"\x00\r\n\r\n",
    ]


async def test_malformed_requests_are_logged_without_the_access_code(system: System) -> None:
    gw = system.gateway(CHAT_PASSWORD=SECRET, METRICS_TOKEN=METRICS_SECRET)
    assert gw.port is not None
    statuses = []
    for line in _malformed_lines(SECRET):
        statuses.append((await raw_request(gw.port, line)).status)
    # A well-formed request last: once it is logged, every earlier line has been written.
    ok = await raw_request(gw.port, request_bytes("GET", "/api/config"))
    assert ok.status == 200
    gw.stop()
    output = gw.output()
    assert statuses == [400] * len(statuses)
    # A bad method on a connection's first request is logged by aiohttp at DEBUG only
    # (non-HTTP traffic on a public port is noise); every other one is one warning.
    assert output.count("gateway.malformed_request") == len(statuses) - 1
    for secret in (SECRET, METRICS_SECRET):
        for form in (secret, quote(secret, safe=""), quote(secret), repr(secret.encode())[2:-1]):
            assert form not in output, form
    assert "Traceback" not in output
