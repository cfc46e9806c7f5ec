"""LIVE_ALLOWED_HOSTS accepts host, host:port and IPv6 with or without brackets, and refuses
anything else at start-up with the accepted forms named (never a traceback later)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from yarl import URL

from tools import ToolSettings
from tools.host_entries import parse_host_entry
from tools.live_fetch import LiveFetchRefused, UrlPolicy


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("Example.COM", ("example.com", None)),
        ("example.com.", ("example.com", None)),
        ("blog.example.net:8443", ("blog.example.net", 8443)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("::1", ("::1", None)),
        ("[::1]", ("::1", None)),
        ("[2001:db8::1]:8080", ("2001:db8::1", 8080)),
        ("bücher.example", ("xn--bcher-kva.example", None)),
    ],
)
def test_accepted_forms(raw: str, parsed: tuple[str, int | None]) -> None:
    assert parse_host_entry(raw) == parsed


@pytest.mark.parametrize(
    "raw", ["", "bad host", "a:b", "x:99999", "[::1", "[::1]x", "https://a.example/", "u@a.example"]
)
def test_refused_forms_name_the_accepted_ones(raw: str) -> None:
    with pytest.raises(ValueError, match=r"expected host, host:port"):
        parse_host_entry(raw)


@pytest.mark.parametrize("value", ["127.0.0.1:8080", "[::1]", "::1,blog.example.net:8443"])
def test_settings_and_policy_accept_what_used_to_crash_the_worker(value: str) -> None:
    policy = UrlPolicy.from_settings(ToolSettings(_env_file=None, live_allowed_hosts=value))
    assert policy.hosts


def test_a_bad_entry_fails_when_settings_load() -> None:
    with pytest.raises(ValidationError) as info:
        ToolSettings(_env_file=None, live_allowed_hosts="good.example, bad host")
    (error,) = info.value.errors()
    assert error["loc"] == ("live_allowed_hosts",)


def test_a_host_with_a_port_allows_that_port() -> None:
    policy = UrlPolicy.from_settings(
        ToolSettings(_env_file=None, live_allowed_hosts="blog.example.net:8443")
    )
    policy.check(URL("https://blog.example.net:8443/post"))
    with pytest.raises(LiveFetchRefused):
        policy.check(URL("https://blog.example.net:9000/post"))
