"""The client's address, trusting forwarding headers only from configured proxies."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

__all__ = ["client_ip", "client_key", "from_trusted_proxy"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted(address: str, networks: tuple[_Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def from_trusted_proxy(request: web.Request, trusted_proxies: list[str]) -> bool:
    """True when the direct peer is one of the configured proxies."""
    networks = _networks(tuple(trusted_proxies))
    return bool(networks) and _trusted(request.remote or "", networks)


def client_ip(request: web.Request, trusted_proxies: list[str]) -> str:
    """The visitor's IP.

    ``X-Forwarded-For`` is read only when the peer is a trusted proxy, from the right:
    the first address that is not itself a trusted proxy is the client.
    """
    peer = request.remote or "unknown"
    networks = _networks(tuple(trusted_proxies))
    if not networks or not _trusted(peer, networks):
        return peer
    forwarded = request.headers.get("X-Forwarded-For", "")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return request.headers.get("X-Real-IP", peer)


def client_key(ip: str, ipv6_prefix: int = 64) -> str:
    """Whom a budget belongs to: an IPv4 address, or the IPv6 ``/ipv6_prefix`` around ``ip``.

    One IPv6 subscriber holds a whole /64 (or more) and may rotate addresses in it at
    will, so budgets keyed on full IPv6 addresses are no budgets. An IPv4-mapped IPv6
    address counts as its IPv4 address; anything unparsable is its own client.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)
