"""Live fetch against real HTTP servers on 127.0.0.1: every SSRF trick is refused.

Host names map to addresses through a fake DNS resolver injected into the fetcher (the
fetch itself is real). The site's test server is reachable only because the fetcher is
built with ``insecure_loopback_ports={its port}``, which production cannot set.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler
from yarl import URL

from tools import ToolContext, ToolRegistry, ToolSettings, create_default_registry
from tools.base import JsonObject
from tools.errors import ToolNotAllowed
from tools.live_fetch import (
    LiveFetcher,
    LiveFetchFailed,
    LiveFetchRefused,
    LiveFetchTimeout,
    UrlPolicy,
)
from tools.settings import DEFAULT_CONTENT_DIR

PAGE = """<!doctype html><html><head><title>Live &amp; well</title>
<style>body { color: red }</style><script>alert("x")</script></head>
<body><h1>Fresh news</h1><p>The dice   roller
got a <b>histogram</b>.</p><ul><li>one</li><li>two</li></ul></body></html>"""


class FakeDNS(AbstractResolver):
    """Answers from a table; a list of answers is served in turn (the last one repeats)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.lookups: Counter[str] = Counter()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.table:
            raise OSError(f"no such host: {host}")
        answers = self.table[host]
        answer = answers[min(self.lookups[host], len(answers) - 1)]
        self.lookups[host] += 1
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in answer
        ]

    async def close(self) -> None:
        pass


@dataclass
class Site:
    server: TestServer
    hits: Counter[str]

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"


def _site_app(hits: Counter[str]) -> web.Application:
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        hits[request.path] += 1
        return await handler(request)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="plain   text\n\n\n\nsecond", content_type="text/plain")

    async def typed(request: web.Request) -> web.Response:
        return web.Response(body=b"{}", content_type=request.match_info["kind"].replace("-", "/"))

    async def untyped(request: web.Request) -> web.Response:
        response = web.Response(body=b"<p>x</p>")
        response.headers["Content-Type"] = ""
        return response

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="<p>" + "a" * 300_000 + "</p>", content_type="text/html")

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        chunk = b"<p>" + b"z" * 65_536 + b"</p>"
        for _ in range(2_000):  # ~130 MB if nobody stopped reading
            await response.write(chunk)
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late", content_type="text/html")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/loop/{n + 1}")

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application(middlewares=[web.middleware(count)])
    app.router.add_get("/", page)
    app.router.add_get("/page", page)
    app.router.add_get("/secret", page)
    app.router.add_get("/plain", plain)
    app.router.add_get("/typed/{kind}", typed)
    app.router.add_get("/untyped", untyped)
    app.router.add_get("/big", big)
    app.router.add_get("/endless", endless)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop/{n}", loop)
    app.router.add_get("/missing", missing)
    app.router.add_get("/in/owner", page)
    app.router.add_get("/in/owner/posts", page)
    app.router.add_get("/in/ownerevil", page)
    app.router.add_get("/company", page)
    return app


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    hits: Counter[str] = Counter()
    server = TestServer(_site_app(hits), host="127.0.0.1")
    await server.start_server()
    try:
        yield Site(server, hits)
    finally:
        await server.close()


@pytest.fixture
def dns() -> FakeDNS:
    loopback = [["127.0.0.1"]]
    return FakeDNS(
        {
            "site.test": loopback,
            "www.site.test": loopback,
            "social.test": loopback,
            "localhost": loopback,  # reached on port 80: the hatch does not cover it
            "internal.test": [["10.0.0.7"]],
            "meta.test": [["169.254.169.254"]],
            "meta6.test": [["fd00:ec2::254"]],
            "mapped.test": [["::ffff:127.0.0.1"]],
            "mixed.test": [["127.0.0.1", "10.0.0.8"]],
            "rebind.test": [["127.0.0.1"], ["10.0.0.9"]],
        }
    )


@pytest.fixture
def fetcher(site: Site, dns: FakeDNS) -> LiveFetcher:
    policy = UrlPolicy(
        hosts=[
            "site.test", "www.site.test", "internal.test", "meta.test", "meta6.test",
            "mapped.test", "mixed.test", "rebind.test", "localhost",
        ],
        url_prefixes=[site.url("social.test", "/in/owner")],
        extra_ports=[site.port],
    )  # fmt: skip
    return LiveFetcher(
        policy,
        base_url=site.url("site.test", "/"),
        timeout=1.0,
        resolver=dns,
        insecure_loopback_ports={site.port},
    )


async def fetch(fetcher: LiveFetcher, url: str) -> str:
    page = await fetcher.fetch(URL(url))
    return page.text


async def test_allowed_page_is_fetched(fetcher: LiveFetcher, site: Site, dns: FakeDNS) -> None:
    page = await fetcher.fetch(URL(site.url("site.test", "/page")))
    assert page.content_type == "text/html"
    assert "Fresh news" in page.text
    assert not page.truncated
    assert page.url == site.url("site.test", "/page")
    assert dns.lookups["site.test"] == 1
    assert site.hits["/page"] == 1


async def test_same_site_redirects_are_followed(fetcher: LiveFetcher, site: Site) -> None:
    page = await fetcher.fetch(URL(site.url("site.test", "/redirect?to=/plain")))
    assert page.url == site.url("site.test", "/plain")
    assert page.content_type == "text/plain"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://127.0.0.1:{port}/secret", "address hosts are not allowed: 127.0.0.1"),
        ("http://localhost/secret", "localhost resolves to a loopback address"),
        ("http://internal.test:{port}/secret", "internal.test resolves to a private address"),
        ("http://meta.test:{port}/secret", "cloud metadata address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        ("http://[::1]:{port}/secret", "address hosts are not allowed: ::1"),
        ("http://[::ffff:127.0.0.1]:{port}/secret", "address hosts are not allowed"),
        ("http://2130706433:{port}/secret", "address hosts are not allowed: 127.0.0.1"),
        ("http://0x7f.1:{port}/secret", "address hosts are not allowed: 127.0.0.1"),
        ("http://0177.0.0.1:{port}/secret", "address hosts are not allowed: 127.0.0.1"),
        ("http://site.test@127.0.0.1:{port}/secret", "user name or password"),
        ("file:///etc/passwd", "only http and https"),
        ("ftp://site.test/secret", "only http and https"),
        ("http://evil.test:{port}/secret", "host not allowed: evil.test"),
    ],
)
async def test_redirect_targets_are_checked_again(
    fetcher: LiveFetcher, site: Site, target: str, message: str
) -> None:
    location = target.format(port=site.port)
    start = site.url("site.test", "/redirect?" + URL.build(query={"to": location}).query_string)
    with pytest.raises(LiveFetchRefused, match=re.escape(message)):
        await fetcher.fetch(URL(start, encoded=True))
    assert site.hits["/redirect"] == 1
    assert site.hits["/secret"] == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:{port}/secret", "address hosts are not allowed: 127.0.0.1 (loopback)"),
        ("http://[::1]:{port}/secret", "address hosts are not allowed: ::1 (loopback)"),
        ("http://[::ffff:127.0.0.1]:{port}/secret", "::ffff:7f00:1 (loopback (IPv4 127"),
        ("http://2130706433:{port}/secret", "127.0.0.1 (loopback)"),
        ("http://017700000001:{port}/secret", "127.0.0.1 (loopback)"),
        ("http://0x7f000001:{port}/secret", "127.0.0.1 (loopback)"),
        ("http://0x7f.1:{port}/secret", "127.0.0.1 (loopback)"),
        ("http://127.1:{port}/secret", "127.0.0.1 (loopback)"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        ("http://internal.test:{port}/secret", "resolves to a private address"),
        ("http://meta.test:{port}/secret", "resolves to a cloud metadata address"),
        ("http://meta6.test:{port}/secret", "resolves to a cloud metadata address"),
        ("http://mapped.test:{port}/secret", "resolves to a loopback (IPv4 127.0.0.1"),
        ("http://mixed.test:{port}/secret", "resolves to a private address"),
        ("http://site.test@127.0.0.1:{port}/secret", "user name or password"),
        ("http://user:pw@site.test:{port}/secret", "user name or password"),
        ("file:///etc/passwd", "only http and https"),
        ("ftp://site.test:{port}/secret", "only http and https"),
        ("http://site.test:1/secret", "port 1 is not allowed"),
        ("http://social.test:{port}/company", "only specific pages of social.test"),
        ("http://social.test:{port}/in/ownerevil", "only specific pages of social.test"),
    ],
)
async def test_ssrf_tricks_are_refused_before_any_request(
    fetcher: LiveFetcher, site: Site, url: str, message: str
) -> None:
    with pytest.raises(LiveFetchRefused, match=re.escape(message)):
        await fetcher.fetch(URL(url.format(port=site.port)))
    assert sum(site.hits.values()) == 0


async def test_system_resolver_refuses_localhost(site: Site) -> None:
    """No fake DNS and no escape hatch: the real resolver's loopback answer is refused."""
    fetcher = LiveFetcher(
        UrlPolicy(hosts=["localhost"], extra_ports=[site.port]),
        base_url=site.url("localhost", "/"),
        timeout=2,
    )
    with pytest.raises(LiveFetchRefused, match="localhost resolves to a loopback address"):
        await fetcher.fetch(URL(site.url("localhost", "/secret")))
    assert site.hits["/secret"] == 0


async def test_loopback_hatch_covers_only_the_named_port(site: Site, dns: FakeDNS) -> None:
    fetcher = LiveFetcher(
        UrlPolicy(hosts=["site.test"], extra_ports=[site.port]),
        resolver=dns,
        insecure_loopback_ports={site.port + 1},
    )
    with pytest.raises(LiveFetchRefused, match="loopback"):
        await fetcher.fetch(URL(site.url("site.test", "/")))
    assert site.hits["/"] == 0


async def test_dns_rebinding_connects_only_to_the_checked_address(
    fetcher: LiveFetcher, site: Site, dns: FakeDNS
) -> None:
    """rebind.test answers 127.0.0.1 (allowed here), then 10.0.0.9 on the next lookup.

    The first hop is resolved once, checked, and connected to exactly that answer (no
    second lookup between check and connect). The same-host redirect is a new hop: it is
    resolved and checked again, sees the rebound private address and is refused.
    """
    url = site.url("rebind.test", "/redirect?to=/secret")
    with pytest.raises(
        LiveFetchRefused, match=re.escape("rebind.test resolves to a private address")
    ):
        await fetcher.fetch(URL(url))
    assert dns.lookups["rebind.test"] == 2
    assert site.hits["/redirect"] == 1
    assert site.hits["/secret"] == 0


async def test_prefix_allowlist_on_social_hosts(fetcher: LiveFetcher, site: Site) -> None:
    for path in ("/in/owner", "/in/owner/posts"):
        page = await fetcher.fetch(URL(site.url("social.test", path)))
        assert "Fresh news" in page.text


async def test_redirect_limit(fetcher: LiveFetcher, site: Site) -> None:
    with pytest.raises(LiveFetchFailed, match="more than 5 redirects"):
        await fetcher.fetch(URL(site.url("site.test", "/loop/0")))
    assert sum(site.hits[f"/loop/{n}"] for n in range(10)) == 6


async def test_oversize_body_is_cut_at_200_kb(fetcher: LiveFetcher, site: Site) -> None:
    page = await fetcher.fetch(URL(site.url("site.test", "/big")))
    assert page.truncated
    assert len(page.text.encode()) == 200_000


async def test_endless_body_stops_reading(fetcher: LiveFetcher, site: Site) -> None:
    started = time.perf_counter()
    page = await fetcher.fetch(URL(site.url("site.test", "/endless")))
    assert page.truncated
    assert len(page.text) == 200_000
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("kind", ["application-json", "image-png", "application-pdf"])
async def test_wrong_content_type_is_refused(fetcher: LiveFetcher, site: Site, kind: str) -> None:
    with pytest.raises(LiveFetchRefused, match="is not a web page"):
        await fetcher.fetch(URL(site.url("site.test", f"/typed/{kind}")))


async def test_missing_content_type_is_refused(fetcher: LiveFetcher, site: Site) -> None:
    with pytest.raises(LiveFetchRefused, match="is not a web page"):
        await fetcher.fetch(URL(site.url("site.test", "/untyped")))


async def test_timeout(fetcher: LiveFetcher, site: Site) -> None:
    started = time.perf_counter()
    with pytest.raises(LiveFetchTimeout, match="timed out after 1 s"):
        await fetcher.fetch(URL(site.url("site.test", "/slow")))
    assert time.perf_counter() - started < 2


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_http_and_network_errors(fetcher: LiveFetcher, site: Site, dns: FakeDNS) -> None:
    with pytest.raises(LiveFetchFailed, match="HTTP 404"):
        await fetcher.fetch(URL(site.url("site.test", "/missing")))
    closed = _closed_port()
    unreachable = LiveFetcher(
        UrlPolicy(hosts=["site.test", "nowhere.test"], extra_ports=[closed]),
        resolver=dns,
        insecure_loopback_ports={closed},
    )
    with pytest.raises(LiveFetchFailed, match=re.escape("could not connect to site.test")):
        await unreachable.fetch(URL(f"http://site.test:{closed}/"))
    with pytest.raises(LiveFetchFailed, match=re.escape("could not connect to nowhere.test")):
        await unreachable.fetch(URL(f"http://nowhere.test:{closed}/"))


# --- through the registry: payload shapes ------------------------------------------------


@pytest.fixture
def registry(fetcher: LiveFetcher, tmp_path: Path, site: Site) -> ToolRegistry:
    content = tmp_path / "content"
    shutil.copytree(DEFAULT_CONTENT_DIR, content)
    settings = ToolSettings(
        _env_file=None,
        content_dir=content,
        enhancement_dir=tmp_path / "ideas",
        live_site_base_url=site.url("site.test", "/"),
    )
    return create_default_registry(settings, live_fetcher=fetcher)


@pytest.fixture
async def ctx() -> AsyncIterator[ToolContext]:
    async with aiohttp.ClientSession() as http:
        yield ToolContext(chat_id="c", http=http)


async def call(registry: ToolRegistry, ctx: ToolContext, tool: str, arg: str) -> JsonObject:
    return (await registry.execute(tool, {"slug_or_url": arg}, ctx)).payload


async def test_fetch_live_page_returns_text(
    registry: ToolRegistry, ctx: ToolContext, site: Site
) -> None:
    payload = await call(registry, ctx, "fetch_live_page", "page")
    assert payload == {
        "url": site.url("site.test", "/page"),
        "content": "Live & well\n\nFresh news\n\nThe dice roller got a histogram.\n\n- one\n- two",
    }
    payload = await call(registry, ctx, "fetch_live_page", "/plain")
    assert payload["content"] == "plain text\n\nsecond"


async def test_fetch_live_page_html_returns_source(
    registry: ToolRegistry, ctx: ToolContext, site: Site
) -> None:
    payload = await call(registry, ctx, "fetch_live_page_html", site.url("site.test", "/page"))
    assert payload == {"url": site.url("site.test", "/page"), "html": PAGE}
    alias = await registry.execute("fetch_live_page_source", {"slug_or_url": "page"}, ctx)
    assert alias.payload["html"] == PAGE


async def test_fetch_live_page_caps_text(registry: ToolRegistry, ctx: ToolContext) -> None:
    payload = await call(registry, ctx, "fetch_live_page", "big")
    assert len(payload["content"]) == 100_000
    assert payload["truncated"] is True
    payload = await call(registry, ctx, "fetch_live_page_html", "big")
    assert len(payload["html"]) == 100_000


async def test_failures_carry_the_cached_page(
    registry: ToolRegistry, ctx: ToolContext, site: Site
) -> None:
    result = await registry.execute("fetch_live_page", {"slug_or_url": "bio"}, ctx)
    assert not result.ok
    assert result.payload["error"] == "Live fetch failed: HTTP 404"
    assert result.payload["cached"]["slug"] == "bio"
    assert result.error_kind == "unavailable"
    refused = await call(registry, ctx, "fetch_live_page", "http://169.254.169.254/")
    assert refused == {
        "error": "Live fetch failed: address hosts are not allowed: 169.254.169.254 "
        "(cloud metadata address)"
    }
    timed_out = await registry.execute("fetch_live_page", {"slug_or_url": "slow"}, ctx)
    assert timed_out.payload == {"error": "Live fetch failed: timed out after 1 s"}
    assert timed_out.error_kind == "timeout"


async def test_refusals_are_not_allowed_errors(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.execute(
        "fetch_live_page", {"slug_or_url": "http://internal.test/"}, ctx
    )
    assert result.error_kind == ToolNotAllowed.kind
    assert "private" in result.payload["error"]
