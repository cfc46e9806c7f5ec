"""The access gate (access codes and session tokens) and the Origin allow-list.

A visitor route opens with any of (docs/protocol.md 2):

- a session token (``Authorization: Bearer <token>``, or ``token=`` in the query where a
  header is impossible: WebSocket, EventSource), from ``POST /api/session``;
- an access code (``accessCode`` in the body or query, as the original relay took it):
  one of ``CHAT_PASSWORD``, or a code stored by ``terrarium-ops codes add`` and not
  revoked or expired. With a CAPTCHA configured, a code opens only ``POST /api/session``.

Every check is in memory: stored codes are read from Redis in the background every
``ACCESS_CODES_REFRESH_SECONDS`` (:func:`codes_context`), so a guess costs no Redis read and
a revocation holds within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from bus import BusError
from gateway.errors import json_error
from gateway.keys import AppKeys, RequestKeys
from gateway.net import from_trusted_proxy
from gateway.session_gate import AccessGate, code_is_valid, secret_bytes
from gateway.settings import GatewaySettings

__all__ = [
    "AccessGate",
    "access_holds",
    "check_origin",
    "code_is_valid",
    "codes_context",
    "is_own_origin",
    "origin_listed",
    "presented_token",
    "require_code",
    "secret_bytes",
]

log = structlog.get_logger("gateway.auth")


def presented_token(request: web.Request) -> str | None:
    """The session token a request carries: ``Authorization: Bearer``, else ``token=``."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.query.get("token") or None


def _verdict(request: web.Request, candidate: object) -> str | None:
    """``None`` when the request may pass, else why not (a 401's sentence)."""
    gate = request.app[AppKeys.gate]
    now = time.time()
    token = presented_token(request)
    expired = False
    if token is not None:
        checked = gate.check_token(token, now)
        if checked.code_id is not None and not checked.expired:
            return None
        expired = checked.expired
    if gate.code_id(candidate, now) is not None:
        if gate.codes_open_routes:
            return None
        return "Please start a session first (POST /api/session)"
    if not expired:
        return "Invalid access code"
    if candidate in (None, ""):  # a stale tab, not a guess (gateway.limits)
        request[RequestKeys.session_expired] = True
    return "Session expired"


def access_holds(request: web.Request, candidate: object) -> bool:
    """True when the request's session token, or the access code ``candidate``, is valid."""
    return _verdict(request, candidate) is None


def require_code(candidate: object, request: web.Request) -> None:
    """Raise 401 unless the request carries a valid session token or access code."""
    reason = _verdict(request, candidate)
    if reason is not None:
        raise json_error(401, reason)


async def _refresh(app: web.Application) -> None:
    gate, bus = app[AppKeys.gate], app[AppKeys.bus]
    codes = await bus.access_codes()
    gate.replace_stored(codes)


async def _refresh_loop(app: web.Application, every: float) -> None:
    failing = False
    while True:
        await asyncio.sleep(every)
        try:
            async with asyncio.timeout(max(every, 5.0)):
                await _refresh(app)
            if failing:
                log.info("gateway.access_codes_refreshed")
            failing = False
        except (BusError, TimeoutError):
            if not failing:  # the last codes read stay valid meanwhile
                log.warning("gateway.access_codes_refresh_failed")
            failing = True


@contextlib.asynccontextmanager
async def _codes(app: web.Application) -> AsyncIterator[None]:
    settings = app[AppKeys.settings]
    with contextlib.suppress(BusError, TimeoutError):
        async with asyncio.timeout(settings.request_timeout_seconds):
            await _refresh(app)
    task = asyncio.create_task(
        _refresh_loop(app, settings.access_codes_refresh_seconds), name="gateway.access_codes"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def codes_context(app: web.Application) -> contextlib.AbstractAsyncContextManager[None]:
    """cleanup_ctx: read the stored access codes now, then every few seconds."""
    return _codes(app)


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
