"""gateway.static: compression, validators and the CSP of the gateway's own pages."""

from __future__ import annotations

import gzip
import re

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import static


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/widget.js", static.serve_file("widget.js"))
    app.router.add_get("/", static.serve_file("index.html"))
    app.router.add_get("/terra", static.serve_file("terra.html"))
    app.router.add_get("/static/{path:.+}", static.static_asset)
    return app


async def test_text_files_are_gzipped_for_clients_that_accept_it() -> None:
    raw = (static.STATIC_DIR / "chat" / "session.js").read_bytes()
    async with TestClient(TestServer(make_app())) as client:
        zipped = await client.get(
            "/static/chat/session.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        )
        body = await zipped.read()
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert zipped.headers["Vary"] == "Accept-Encoding"
        assert zipped.headers["Content-Type"].startswith("text/javascript")
        assert gzip.decompress(body) == raw
        assert len(body) < len(raw) / 2

        plain = await client.get("/static/chat/session.js", headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers
        assert await plain.read() == raw
        refused = await client.get(
            "/static/chat/session.js", headers={"Accept-Encoding": "gzip;q=0"}
        )
        assert "Content-Encoding" not in refused.headers
        # Each encoding has its own validator, so caches never mix them up.
        assert zipped.headers["ETag"] != plain.headers["ETag"]


async def test_a_matching_etag_gets_304_without_a_body() -> None:
    async with TestClient(TestServer(make_app())) as client:
        first = await client.get("/widget.js", headers={"Accept-Encoding": "gzip"})
        etag = first.headers["ETag"]
        again = await client.get(
            "/widget.js", headers={"Accept-Encoding": "gzip", "If-None-Match": etag}
        )
        assert again.status == 304
        assert await again.read() == b""
        assert again.headers["ETag"] == etag
        assert "max-age" in again.headers["Cache-Control"]
        stale = await client.get("/widget.js", headers={"If-None-Match": '"0-0"'})
        assert stale.status == 200


async def test_our_pages_send_a_csp_that_names_their_inline_blocks() -> None:
    async with TestClient(TestServer(make_app())) as client:
        for path in ("/", "/terra"):
            page = await client.get(path)
            csp = page.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp
            assert "object-src 'none'" in csp
            assert "'unsafe-inline'" not in csp
            assert re.search(r"style-src 'self' 'sha256-[A-Za-z0-9+/=]+'", csp), csp
        index = await client.get("/")
        assert re.search(r"script-src 'self' 'sha256-", index.headers["Content-Security-Policy"])
        script = await client.get("/widget.js")
        assert "Content-Security-Policy" not in script.headers
        assert script.headers["X-Content-Type-Options"] == "nosniff"


def test_the_csp_hashes_inline_blocks_but_not_external_scripts() -> None:
    csp = static.content_security_policy(
        "<style>p{}</style><script>go()</script><script src='x.js'></script>"
    )
    assert csp.count("'sha256-") == 2


async def test_nothing_outside_the_static_folder_is_served() -> None:
    async with TestClient(TestServer(make_app())) as client:
        escaped = await client.get("/static/..%2F..%2Fstatic.py")
        assert escaped.status == 404
        missing = await client.get("/static/chat/nope.js")
        assert missing.status == 404
