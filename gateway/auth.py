"""The access-code gate and the Origin allow-list."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from aiohttp import web

from gateway.errors import json_error
from gateway.net import from_trusted_proxy
from gateway.settings import GatewaySettings

__all__ = [
    "check_origin",
    "code_is_valid",
    "is_own_origin",
    "origin_listed",
    "require_code",
    "secret_bytes",
]


def secret_bytes(given: str) -> bytes:
    """``given`` as bytes for a comparison with a secret, whatever it contains.

    Query strings and headers can carry lone surrogates (or bytes aiohttp decoded with
    ``surrogateescape``); they can never equal a secret, and must not raise either.
    """
    return given.encode("utf-8", "surrogatepass")


def code_is_valid(candidate: object, codes: list[bytes]) -> bool:
    """Constant-time check of ``candidate`` against every valid code (no early exit)."""
    if not isinstance(candidate, str) or not candidate:
        return False
    given = secret_bytes(candidate)
    matched = False
    for code in codes:
        matched |= hmac.compare_digest(given, code)
    return matched


def require_code(candidate: object, settings: GatewaySettings) -> None:
    """Raise 401 ``Invalid access code`` unless ``candidate`` is a valid code."""
    if not code_is_valid(candidate, settings.access_codes):
        raise json_error(401, "Invalid access code")


def origin_listed(origin: str, settings: GatewaySettings) -> bool:
    """True when ``origin`` is in ALLOWED_ORIGINS (or the list allows ``*``)."""
    allowed = settings.allowed_origins
    return "*" in allowed or origin.rstrip("/").lower() in allowed


def check_origin(request: web.Request, settings: GatewaySettings) -> None:
    """Raise 403 for a browser handshake from an Origin neither listed nor the gateway's own.

    No ``Origin`` header (a non-browser client) passes; ``*`` in ALLOWED_ORIGINS accepts
    any origin. The gateway's own origin is always accepted (see :func:`is_own_origin`).
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if origin_listed(origin, settings) or is_own_origin(origin, request, settings):
        return
    raise json_error(403, "Origin not allowed")


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def is_own_origin(origin: str, request: web.Request, settings: GatewaySettings) -> bool:
    """True when ``origin`` is the gateway's own, as the browser saw it.

    The host is what a trusted proxy forwards (``X-Forwarded-Host``), else the ``Host``
    header; default ports are the same origin with or without them. A trusted proxy that
    forwards the host without its port (nginx's ``$host``) and no ``X-Forwarded-Port`` has
    hidden the port: then the host name alone must match. Without a proxy, a browser
    always names a non-default port in ``Host``.
    """
    try:
        seen = urlsplit(origin.strip().lower())
        origin_port = seen.port or _DEFAULT_PORTS.get(seen.scheme)
    except ValueError:
        return False
    if not seen.hostname or origin_port is None:
        return False
    proxied = from_trusted_proxy(request, settings.trusted_proxies)
    forwarded = request.headers.get("X-Forwarded-Host") if proxied else None
    host = (forwarded.split(",")[0] if forwarded else request.host).strip().lower()
    try:
        own = urlsplit(f"//{host}")
        own_port = own.port
    except ValueError:
        return False
    if own.hostname != seen.hostname:
        return False
    if own_port is None and proxied:
        port = request.headers.get("X-Forwarded-Port", "")
        if not port.isascii() or not port.isdigit():
            return True  # the proxy hid the port: the host name is the origin's
        own_port = int(port)
    if own_port is None:
        own_port = _DEFAULT_PORTS.get(seen.scheme)
    return own_port == origin_port
