"""Live-fetch guards without the network: address classification, URL policy, resolver."""

from __future__ import annotations

import socket
from ipaddress import ip_address

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from tools import ToolSettings
from tools.errors import ToolInputError, ToolNotAllowed
from tools.live_fetch import (
    AddressRefused,
    GuardedResolver,
    LiveFetcher,
    LiveFetchRefused,
    UrlPolicy,
    address_refusal,
    parse_ip_host,
)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("169.254.169.254", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
    ],
)
def test_every_spelling_of_an_address_is_recognised(host: str, address: str) -> None:
    assert parse_ip_host(host) == ip_address(address)


@pytest.mark.parametrize(
    "host", ["example.com", "0x7f.example.com", "1.2.3.4.5", "08.1", "256.1.1.1.1", "cafe", ""]
)
def test_names_are_not_addresses(host: str) -> None:
    assert parse_ip_host(host) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "cloud metadata address"),
        ("169.254.170.2", "cloud metadata address"),
        ("fd00:ec2::254", "cloud metadata address"),
        ("100.100.100.200", "cloud metadata address"),
        ("168.63.129.16", "cloud metadata address"),
        ("192.0.0.192", "cloud metadata address"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "shared address space"),
        ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("::ffff:10.0.0.1", "private (IPv4 10.0.0.1 inside IPv6)"),
        ("::ffff:169.254.169.254", "cloud metadata address (IPv4 169.254.169.254 inside IPv6)"),
        ("64:ff9b::7f00:1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("2002:7f00:1::", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("::127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert address_refusal(ip_address(address)) == reason


@pytest.mark.parametrize("address", ["240.0.0.1", "255.255.255.255", "192.0.2.1", "2001:db8::1"])
def test_reserved_and_documentation_addresses_are_refused(address: str) -> None:
    assert address_refusal(ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ip_address(address)) is None


@pytest.fixture
def policy() -> UrlPolicy:
    return UrlPolicy.from_settings(
        ToolSettings(
            _env_file=None,
            live_site_base_url="https://example.com",
            live_allowed_hosts="blog.example.net",
            live_allowed_urls="https://www.linkedin.com/in/owner, https://x.com/owner",
        )
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/",
        "http://example.com/blog?x=1",
        "https://www.example.com/bio",
        "https://EXAMPLE.com./faq",
        "https://blog.example.net/post",
        "https://www.linkedin.com/in/owner",
        "https://www.linkedin.com/in/owner/",
        "https://www.linkedin.com/in/Owner/details/experience",
        "http://x.com/owner?lang=en",
    ],
)
def test_allowed_urls(policy: UrlPolicy, url: str) -> None:
    policy.check(URL(url))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/", "only http and https"),
        ("gopher://example.com/", "only http and https"),
        ("http://example.com@127.0.0.1/", "user name or password"),
        ("http://user:pw@example.com/", "user name or password"),
        ("http://127.0.0.1/", "address hosts are not allowed: 127.0.0.1 (loopback)"),
        ("http://[::1]/", "address hosts are not allowed: ::1 (loopback)"),
        ("http://[::ffff:127.0.0.1]/", "address hosts are not allowed: ::ffff:7f00:1"),
        ("http://2130706433/", "address hosts are not allowed: 127.0.0.1"),
        ("http://0x7f.1/", "address hosts are not allowed: 127.0.0.1"),
        ("http://0177.0.0.1/", "address hosts are not allowed: 127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        ("http://93.184.216.34/", "address hosts are not allowed: 93.184.216.34"),
        ("http://localhost/", "host not allowed: localhost"),
        ("http://example.com.evil.org/", "host not allowed"),
        ("http://evilexample.com/", "host not allowed"),
        ("https://example.com:8443/", "port 8443 is not allowed"),
        ("https://example.com:22/", "port 22 is not allowed"),
        ("https://www.linkedin.com/in/ownerevil", "only specific pages"),
        ("https://www.linkedin.com/company/acme", "only specific pages"),
        ("https://www.linkedin.com/in/owner/../../company/x", "only specific pages"),
        ("https://linkedin.com/in/owner", "host not allowed"),
        ("https://twitter.com/owner", "host not allowed"),
    ],
)
def test_refused_urls(policy: UrlPolicy, url: str, message: str) -> None:
    with pytest.raises(LiveFetchRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        policy.check(URL(url))


def test_encoded_dot_segments_are_refused_on_prefix_hosts(policy: UrlPolicy) -> None:
    with pytest.raises(ToolNotAllowed):
        policy.check(URL("https://www.linkedin.com/in/owner/%2e%2e/%2e%2e/company/x", encoded=True))


def test_base_url_port_is_allowed() -> None:
    policy = UrlPolicy.from_settings(
        ToolSettings(_env_file=None, live_site_base_url="https://example.com:8443/")
    )
    policy.check(URL("https://example.com:8443/x"))
    with pytest.raises(LiveFetchRefused):
        policy.check(URL("https://example.com:8444/x"))


@pytest.mark.parametrize(
    ("argument", "url"),
    [
        ("blog", "https://example.com/blog"),
        ("/blog/post", "https://example.com/blog/post"),
        ("", None),
        ("https://blog.example.net/a", "https://blog.example.net/a"),
        ("www.linkedin.com/in/owner", "https://www.linkedin.com/in/owner"),
        ("//evil.org/x", "https://evil.org/x"),
        ("http://a.com\\@127.0.0.1/", None),
    ],
)
def test_target_url(policy: UrlPolicy, argument: str, url: str | None) -> None:
    fetcher = LiveFetcher(policy, base_url="https://example.com/")
    if url is None:
        with pytest.raises(ToolInputError):
            fetcher.target_url(argument)
    else:
        assert str(fetcher.target_url(argument)) == url


def test_production_fetcher_has_no_loopback_escape_hatch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("INSECURE_LOOPBACK_PORTS", "LIVE_INSECURE_LOOPBACK_PORTS", "LIVE_ALLOW_LOOPBACK"):
        monkeypatch.setenv(name, "80,443")
    settings = ToolSettings(_env_file=None)
    assert LiveFetcher.from_settings(settings).insecure_loopback_ports == frozenset()
    assert not any("loopback" in name for name in ToolSettings.model_fields)


class FakeDNS(AbstractResolver):
    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in answer
        ]

    async def close(self) -> None:
        pass


async def test_resolver_passes_public_answers_through() -> None:
    resolver = GuardedResolver(FakeDNS(["93.184.216.34", "2606:4700::1"]))
    answers = await resolver.resolve("example.com", 443)
    assert [a["host"] for a in answers] == ["93.184.216.34", "2606:4700::1"]


@pytest.mark.parametrize(
    "answer",
    [
        ["10.0.0.7"],
        ["93.184.216.34", "127.0.0.1"],
        ["169.254.169.254"],
        ["fd00:ec2::254"],
        ["::ffff:127.0.0.1"],
        ["0.0.0.0"],
        ["not-an-address"],
    ],
)
async def test_resolver_refuses_any_bad_address_in_the_answer(answer: list[str]) -> None:
    with pytest.raises(AddressRefused):
        await GuardedResolver(FakeDNS(answer)).resolve("example.com", 443)


async def test_resolver_refuses_numeric_hosts_without_resolving() -> None:
    dns = FakeDNS(["93.184.216.34"])
    with pytest.raises(AddressRefused):
        await GuardedResolver(dns).resolve("0x7f.1", 80)
    assert dns.calls == 0


async def test_loopback_hatch_is_per_port_and_loopback_only() -> None:
    resolver = GuardedResolver(FakeDNS(["127.0.0.1"]), loopback_ports={8080})
    assert (await resolver.resolve("site.test", 8080))[0]["host"] == "127.0.0.1"
    with pytest.raises(AddressRefused):
        await resolver.resolve("site.test", 8081)
    with pytest.raises(AddressRefused):
        await GuardedResolver(FakeDNS(["10.0.0.1"]), loopback_ports={8080}).resolve("a.test", 8080)
    with pytest.raises(AddressRefused):
        await GuardedResolver(FakeDNS(["::ffff:127.0.0.1"]), loopback_ports={8080}).resolve(
            "a.test", 8080
        )


async def test_every_lookup_is_checked_again() -> None:
    dns = FakeDNS(["93.184.216.34"], ["10.0.0.1"])
    resolver = GuardedResolver(dns)
    await resolver.resolve("rebind.test", 80)
    with pytest.raises(AddressRefused):
        await resolver.resolve("rebind.test", 80)
    assert dns.calls == resolver.lookups == 2
