"""Parse allow-list host entries: ``host``, ``host:port``, and IPv6 with or without brackets."""

from __future__ import annotations

import ipaddress

from yarl import URL

__all__ = ["HOST_FORMS", "HostEntry", "parse_host_entry"]

#: The accepted forms, as an error message names them.
HOST_FORMS = "host, host:port, IPv6 address, or [IPv6]:port"

HostEntry = tuple[str, int | None]


def _port(text: str, raw: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{raw!r} has no valid port (expected {HOST_FORMS})")
    return int(text)


def parse_host_entry(raw: str) -> HostEntry:
    """``(normalised host, port or None)`` for one entry; ``ValueError`` names the forms."""
    text = raw.strip().rstrip(".").lower()
    if not text or "/" in text or "@" in text:
        raise ValueError(f"{raw!r} is not a host (expected {HOST_FORMS})")
    port: int | None = None
    if text.startswith("["):
        inside, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{raw!r} is not a host (expected {HOST_FORMS})")
        host = inside
        if rest:
            port = _port(rest[1:], raw)
    elif text.count(":") > 1:  # a bare IPv6 address
        host = text
    else:
        host, sep, port_text = text.partition(":")
        if sep:
            port = _port(port_text, raw)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    try:
        normalised = (URL.build(scheme="http", host=host).raw_host or "").rstrip(".")
    except ValueError:
        normalised = ""
    if not normalised:
        raise ValueError(f"{raw!r} is not a host (expected {HOST_FORMS})")
    return normalised, port
