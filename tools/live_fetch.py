"""Fetch live web pages for the model without letting it reach anything private.

Every request, and every redirect hop (at most 5, followed by hand), passes these checks:

1. ``UrlPolicy.check``: scheme http or https; no user-info (``http://a@b/``); a host name,
   never an address literal in any spelling (``127.0.0.1``, ``[::1]``, ``2130706433``,
   ``0x7f.1``, ``0177.0.0.1``); a standard port (or one named in the configuration); the
   host on the allowlist, or, for hosts with URL prefixes (``LIVE_ALLOWED_URLS``), a path
   under one of those prefixes.
2. ``GuardedResolver``: the connector's only resolver. It resolves the name and refuses the
   whole answer unless *every* address is public (no loopback, private, link-local,
   multicast, reserved, unspecified, shared or cloud-metadata address, including IPv4
   embedded in IPv6). aiohttp connects to exactly the addresses it returns, so a DNS answer
   that changes between check and connect (rebinding) cannot slip through: there is no
   second lookup. The DNS cache is off, so each hop is resolved and checked again.
3. The response: 2xx only, ``text/html``, ``application/xhtml+xml`` or ``text/plain``; the
   body is streamed and cut at 200 KB; the whole fetch, redirects included, has 5 seconds.

No cookies, no proxy from the environment. Tests may let loopback through for named ports
with the ``insecure_loopback_ports`` constructor argument; no setting reaches it.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from tools.errors import ToolInputError, ToolNotAllowed, ToolTimeout, ToolUnavailable
from tools.host_entries import parse_host_entry
from tools.settings import ToolSettings

__all__ = [
    "ALLOWED_CONTENT_TYPES",
    "AddressRefused",
    "GuardedResolver",
    "LiveFetchFailed",
    "LiveFetchRefused",
    "LiveFetchTimeout",
    "LiveFetcher",
    "LivePage",
    "UrlPolicy",
    "address_refusal",
    "parse_ip_host",
]

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 200_000
ALLOWED_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/plain"})
USER_AGENT = "terrarium-webchat/1.0 (live page fetch for a site assistant)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_STANDARD_PORTS = frozenset({80, 443})

IPAddress = IPv4Address | IPv6Address

#: Instance-metadata and similar host-local service addresses of the big clouds. Most are
#: caught by the range checks too; some (Azure's, Oracle's) are globally routable.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS
        "169.254.169.123",  # AWS time sync
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS DNS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure wire server
    )
)
_NAT64 = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")
_SHARED = IPv4Network("100.64.0.0/10")

_DECIMAL = re.compile(r"^[0-9]+$")
_HEX = re.compile(r"^0x[0-9a-f]*$")


class LiveFetchRefused(ToolNotAllowed):
    """The URL, a redirect target, an address or the content type is not allowed."""


class AddressRefused(LiveFetchRefused):
    """A host name resolved to an address we never connect to."""


class LiveFetchTimeout(ToolTimeout):
    """The fetch (redirects included) took longer than its budget."""


class LiveFetchFailed(ToolUnavailable):
    """Network failure or an unusable response (HTTP error, too many redirects)."""


def _legacy_ipv4(host: str) -> IPv4Address | None:
    """``inet_aton`` spellings: 1-4 parts, each decimal, octal (``0``) or hex (``0x``)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if _HEX.fullmatch(part):
            values.append(int(part[2:] or "0", 16))
        elif _DECIMAL.fullmatch(part):
            values.append(int(part, 8) if len(part) > 1 and part.startswith("0") else int(part))
        else:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for value in head:
        number = number * 256 + value
    return IPv4Address(number * 256 ** (4 - len(head)) + last)


def parse_ip_host(host: str) -> IPAddress | None:
    """The address a host string denotes when it is an address literal in any spelling
    (dotted quad, bracketed or zoned IPv6, integer, octal, hex, short forms), else None."""
    candidate = host.strip().lower().strip("[]").rstrip(".").split("%", 1)[0]
    if not candidate:
        return None
    try:
        return ip_address(candidate)
    except ValueError:
        pass
    try:
        return _legacy_ipv4(candidate)
    except ValueError:  # octal digits 8/9
        return None


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return IPv4Address(int(ip))
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why we never connect to ``ip`` (e.g. ``"loopback"``), or None when it is public."""
    if isinstance(ip, IPv6Address):
        if ip.scope_id:
            ip = IPv6Address(ip.compressed.split("%", 1)[0])
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = address_refusal(embedded)
            if inner is not None:
                return f"{inner} (IPv4 {embedded} inside IPv6)"
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    checks = (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
        ("is_site_local", "site-local"),
    )
    for attribute, label in checks:
        if getattr(ip, attribute, False):
            return label
    if isinstance(ip, IPv4Address) and ip in _SHARED:
        return "shared address space"
    if not ip.is_global:
        return "not globally routable"
    return None


def normalise_host(host: str) -> str:
    """Lower-case ASCII (IDNA) form of a host name without a trailing dot."""
    text = host.strip().rstrip(".").lower()
    if "://" in text:
        text = URL(text).raw_host or ""
    if not text:
        return ""
    return (URL.build(scheme="http", host=text).raw_host or "").rstrip(".")


@dataclass(frozen=True, slots=True)
class _Prefix:
    host: str
    port: int | None
    path: str

    def matches(self, url: URL, path: str) -> bool:
        if self.port is not None and url.port != self.port:
            return False
        if self.path in {"", "/"}:
            return True
        base = self.path.rstrip("/").lower()
        lowered = path.rstrip("/").lower() if path != "/" else path
        return lowered == base or lowered.startswith(base + "/")


class UrlPolicy:
    """Which URLs may be fetched: allowlisted hosts, and URL prefixes for restricted hosts.

    A host that appears in any URL prefix may only be fetched under those prefixes (the
    social profiles); other hosts must be on the host list. Raises nothing at construction
    for odd entries: they simply never match.
    """

    def __init__(
        self,
        *,
        hosts: Iterable[str],
        url_prefixes: Iterable[str] = (),
        extra_ports: Iterable[int] = (),
    ) -> None:
        self._hosts: set[str] = set()
        self._prefixes: dict[str, list[_Prefix]] = {}
        self._ports = set(_STANDARD_PORTS) | set(extra_ports)
        for raw in hosts:
            host, port = parse_host_entry(raw)
            self._hosts.add(host)
            if port is not None:
                self._ports.add(port)
        for raw in url_prefixes:
            try:
                parsed = URL(raw.strip())
            except ValueError:
                continue
            host = normalise_host(parsed.raw_host or "")
            if not host or parsed.scheme not in {"http", "https"}:
                continue
            self._prefixes.setdefault(host, []).append(
                _Prefix(host=host, port=parsed.explicit_port, path=parsed.path)
            )
            if parsed.explicit_port is not None:
                self._ports.add(parsed.explicit_port)

    @classmethod
    def from_settings(cls, settings: ToolSettings) -> UrlPolicy:
        """Hosts from LIVE_ALLOWED_HOSTS plus LIVE_SITE_BASE_URL's host and its www. twin."""
        base = URL(str(settings.live_site_base_url))
        site = normalise_host(base.raw_host or "")
        twin = site[4:] if site.startswith("www.") else f"www.{site}"
        ports = [base.explicit_port] if base.explicit_port is not None else []
        return cls(
            hosts=[*settings.live_allowed_hosts, site, twin],
            url_prefixes=settings.live_allowed_urls,
            extra_ports=ports,
        )

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(self._hosts | set(self._prefixes))

    def check(self, url: URL) -> None:
        """Raise ``LiveFetchRefused`` unless ``url`` may be requested."""
        if url.scheme not in {"http", "https"}:
            raise LiveFetchRefused(f"only http and https URLs can be fetched, not {url.scheme!r}")
        if url.user is not None or url.password is not None or "@" in (url.raw_authority or ""):
            raise LiveFetchRefused("URLs with a user name or password are not allowed")
        raw_host = url.raw_host or ""
        literal = parse_ip_host(raw_host)
        if literal is not None:
            reason = address_refusal(literal)
            detail = f" ({reason})" if reason else ""
            raise LiveFetchRefused(f"address hosts are not allowed: {literal}{detail}")
        host = normalise_host(raw_host)
        if not host:
            raise LiveFetchRefused("the URL has no host")
        if url.port not in self._ports:
            raise LiveFetchRefused(f"port {url.port} is not allowed")
        prefixes = self._prefixes.get(host)
        if prefixes is not None:
            path = url.path or "/"
            if any(segment in {".", ".."} for segment in path.split("/")):
                raise LiveFetchRefused("dot segments are not allowed in the path")
            if not any(prefix.matches(url, path) for prefix in prefixes):
                raise LiveFetchRefused(f"only specific pages of {host} may be fetched")
            return
        if host not in self._hosts:
            raise LiveFetchRefused(f"host not allowed: {host}")


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and returns the answer only if every address is public.

    ``loopback_ports`` (tests only) lets loopback addresses through for those ports.
    """

    def __init__(
        self,
        inner: AbstractResolver,
        *,
        loopback_ports: Collection[int] = (),
        close_inner: bool = True,
    ) -> None:
        self._inner = inner
        self._loopback_ports = frozenset(loopback_ports)
        self._close_inner = close_inner
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        literal = parse_ip_host(host)
        if literal is not None:  # the policy refuses these first; never trust a resolver
            raise AddressRefused(f"address hosts are not allowed: {literal}")
        self.lookups += 1
        answers = await self._inner.resolve(host, port, family)
        if not answers:
            raise LiveFetchFailed(f"{host} did not resolve")
        for answer in answers:
            address = parse_ip_host(answer["host"])
            if address is None:
                raise AddressRefused(f"{host} resolved to something that is not an address")
            reason = address_refusal(address)
            if reason == "loopback" and answer["port"] in self._loopback_ports:
                continue
            if reason is not None:
                raise AddressRefused(f"{host} resolves to a {reason} address")
        return answers

    async def close(self) -> None:
        if self._close_inner:
            await self._inner.close()


@dataclass(frozen=True, slots=True)
class LivePage:
    """A fetched page: the final URL, its media type and decoded body (maybe cut)."""

    url: str
    content_type: str
    text: str
    truncated: bool

    @property
    def is_html(self) -> bool:
        return self.content_type != "text/plain"


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes of the body; True when more was on offer."""
    buffer = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        room = limit - len(buffer)
        if len(chunk) > room:
            buffer += chunk[:room]
            return bytes(buffer), True
        buffer += chunk
    return bytes(buffer), False


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _describe(exc: aiohttp.ClientError, url: URL) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect to {url.host}"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return "the server sent an invalid response"
    return f"connection to {url.host} failed"


class LiveFetcher:
    """Fetches allowlisted pages under the guards described in the module docstring.

    ``resolver`` replaces the system resolver (tests use a fake DNS); it is still wrapped
    by ``GuardedResolver``. ``insecure_loopback_ports`` is for tests whose servers listen on
    127.0.0.1; production code never passes it.
    """

    def __init__(
        self,
        policy: UrlPolicy,
        *,
        base_url: URL | str = "https://example.com/",
        timeout: float = 5.0,
        max_bytes: int = MAX_BODY_BYTES,
        max_redirects: int = MAX_REDIRECTS,
        resolver: AbstractResolver | None = None,
        insecure_loopback_ports: Collection[int] = (),
    ) -> None:
        if timeout <= 0 or max_bytes <= 0 or max_redirects < 0:
            raise ValueError("timeout and max_bytes must be positive, max_redirects >= 0")
        self.policy = policy
        self.base_url = URL(str(base_url))
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._resolver = resolver
        self.insecure_loopback_ports = frozenset(insecure_loopback_ports)

    @classmethod
    def from_settings(cls, settings: ToolSettings) -> LiveFetcher:
        """The production fetcher: system DNS, no loopback exceptions."""
        return cls(
            UrlPolicy.from_settings(settings),
            base_url=str(settings.live_site_base_url),
            timeout=settings.live_fetch_timeout_seconds,
        )

    def target_url(self, slug_or_url: str) -> URL:
        """The absolute URL a model argument names.

        Absolute URLs are used as given; ``host.tld/path`` on a known host gets ``https://``;
        anything else is a path relative to the site's base URL. Raises ``ToolInputError``
        for text that is not a URL. The result still has to pass ``UrlPolicy.check``.
        """
        value = slug_or_url.strip()
        if not value:
            raise ToolInputError("slug_or_url is required")
        try:
            if "://" in value or value.startswith("//"):
                return self.base_url.join(URL(value))
            first = value.split("/", 1)[0].lower()
            if "." in first and normalise_host(first.split(":")[0]) in self.policy.hosts:
                return URL(f"https://{value}")
            return self.base_url.join(URL(value.lstrip("/")))
        except (ValueError, TypeError) as exc:
            raise ToolInputError(f"not a valid URL: {value[:200]}") from exc

    async def fetch(self, url: URL) -> LivePage:
        """GET ``url`` under every guard. Raises ``LiveFetchRefused``, ``LiveFetchTimeout``
        or ``LiveFetchFailed``; the body is cut (``truncated``), not refused, when too big."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(url)
        except TimeoutError as exc:
            raise LiveFetchTimeout(f"timed out after {self.timeout:g} s") from exc

    async def _fetch(self, url: URL) -> LivePage:
        resolver = GuardedResolver(
            self._resolver or aiohttp.ThreadedResolver(),
            loopback_ports=self.insecure_loopback_ports,
            close_inner=self._resolver is None,
        )
        connector = aiohttp.TCPConnector(
            resolver=resolver, use_dns_cache=False, force_close=True, limit=1
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            headers={"User-Agent": USER_AGENT, "Accept": "text/html, text/plain;q=0.8"},
        )
        async with session:
            for _hop in range(self.max_redirects + 1):
                self.policy.check(url)
                try:
                    async with session.get(url, allow_redirects=False) as response:
                        if response.status in _REDIRECTS:
                            location = response.headers.get("Location", "").strip()
                            if not location:
                                raise LiveFetchFailed(f"HTTP {response.status} without a Location")
                            try:
                                url = url.join(URL(location))
                            except ValueError as exc:
                                raise LiveFetchRefused("redirect to an invalid URL") from exc
                            continue
                        return await self._read(url, response)
                except aiohttp.ClientError as exc:
                    raise LiveFetchFailed(_describe(exc, url)) from exc
            raise LiveFetchFailed(f"more than {self.max_redirects} redirects")

    async def _read(self, url: URL, response: aiohttp.ClientResponse) -> LivePage:
        if not 200 <= response.status < 300:
            raise LiveFetchFailed(f"HTTP {response.status}")
        content_type = response.content_type.lower()
        if content_type not in ALLOWED_CONTENT_TYPES:
            raise LiveFetchRefused(f"content type {content_type} is not a web page")
        body, truncated = await read_capped(response, self.max_bytes)
        return LivePage(
            url=str(url.with_fragment(None)),
            content_type=content_type,
            text=_decode(body, response.charset),
            truncated=truncated,
        )
