"""The access-code gate and the Origin allow-list."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from aiohttp import web

from gateway.errors import json_error
from gateway.net import from_trusted_proxy
from gateway.settings import GatewaySettings

__all__ = ["check_origin", "code_is_valid", "origin_listed", "require_code", "secret_bytes"]


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
    """Raise 403 for a browser handshake from an Origin outside the allow-list.

    No ``Origin`` header (a non-browser client) passes. With an empty allow-list only the
    gateway's own origin is accepted (its host as a trusted proxy forwards it, else the
    Host header); ``*`` accepts any origin.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if origin_listed(origin, settings):
        return
    origin = origin.rstrip("/").lower()
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded is not None and from_trusted_proxy(request, settings.trusted_proxies):
        host = forwarded
    else:
        host = request.host
    parts = urlsplit(origin)
    if not settings.allowed_origins and parts.netloc == host.lower():
        return
    raise json_error(403, "Origin not allowed")
