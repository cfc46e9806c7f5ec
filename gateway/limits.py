"""Limits by client: request budgets per route family, failed access codes, open sockets.

A client is an IPv4 address or an IPv6 prefix (``RATE_LIMIT_IPV6_PREFIX``, /64 by
default: one subscriber's whole network, which rotates addresses freely). Budgets are
token buckets in Redis shared by every gateway (:mod:`bus.ratelimit`):

- ``post``: visitor messages and cancels (``RATE_LIMIT_MAX_PER_IP``);
- ``read``: history, transcript, worker state, health (``RATE_LIMIT_READS_PER_IP``,
  default twice ``RATE_LIMIT_MAX_PER_IP``), and at most ``READS_IN_FLIGHT_PER_CLIENT``
  of them answered at once;
- ``stream``: WebSocket and SSE handshakes (``RATE_LIMIT_STREAMS_PER_IP``, default
  ``RATE_LIMIT_MAX_PER_IP``);
- ``failed-code``: failed access-code attempts on any of those, a stricter budget
  (``RATE_LIMIT_FAILED_CODES_PER_IP``); once spent, the client's requests needing a code
  are refused with 429 before the code is even compared.

Open WebSockets and SSE streams are capped per process (:mod:`gateway.sockets`).
Every refusal is a JSON sentence a visitor understands, with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from bus import Budget, RateDecision
from gateway.keys import AppKeys, RequestKeys
from gateway.net import client_ip, client_key
from gateway.refusals import too_many
from gateway.settings import GatewaySettings

__all__ = ["budgets", "client_of", "limits_middleware", "note_failed_code"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def budgets(settings: GatewaySettings) -> dict[str, Budget]:
    """Each family's budget from the settings."""
    window = settings.rate_limit_window_ms
    return {
        "post": Budget(settings.rate_limit_max_per_ip, window),
        "read": Budget(settings.reads_per_client, window),
        "stream": Budget(settings.stream_handshakes_per_client, window),
        "failed-code": Budget(settings.rate_limit_failed_codes_per_ip, window),
    }


def client_of(request: web.Request) -> str:
    """The request's client key (address or IPv6 prefix), computed once per request."""
    if RequestKeys.client in request:
        return request[RequestKeys.client]
    settings = request.app[AppKeys.settings]
    key = client_key(client_ip(request, settings.trusted_proxies), settings.rate_limit_ipv6_prefix)
    request[RequestKeys.client] = key
    return key


def _refuse(request: web.Request, family: str, decision: RateDecision) -> web.HTTPException:
    # The visitor-message budget keeps its original metric label, "ip".
    scope = "ip" if family == "post" else family
    request.app[AppKeys.metrics].rate_limited.labels(scope).inc()
    return too_many(family, decision.retry_after_seconds)


def limits_middleware(families: Mapping[Callable[..., object], str]) -> Middleware:
    """A middleware spending the client's token for the route's family (from ``families``,
    handler -> family; other routes are not budgeted), and counting failed access codes."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        family = families.get(request.match_info.handler)
        if family is None or request.method == "OPTIONS":
            return await handler(request)
        settings = request.app[AppKeys.settings]
        limits = budgets(settings)
        client = client_of(request)
        async with asyncio.timeout(settings.request_timeout_seconds):  # 503 past it
            spent, failed = await request.app[AppKeys.bus].admit(
                client, family, limits[family], limits["failed-code"]
            )
        if not failed.allowed:
            raise _refuse(request, "failed-code", failed)
        if not spent.allowed:
            raise _refuse(request, family, spent)
        in_flight = request.app[AppKeys.reads_in_flight] if family == "read" else None
        if in_flight is not None:
            if in_flight[client] >= settings.concurrent_reads_per_client:
                request.app[AppKeys.metrics].rate_limited.labels("read").inc()
                raise too_many("read", 1)
            in_flight[client] += 1
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 401:
                await note_failed_code(request)
            raise
        finally:
            if in_flight is not None:
                in_flight[client] -= 1
                if in_flight[client] <= 0:
                    del in_flight[client]

    return middleware


async def note_failed_code(request: web.Request) -> None:
    """Spend one of the client's failed access-code attempts (WebSocket: before 1008);
    none for a genuine but expired session token presented alone."""
    if request.get(RequestKeys.session_expired):
        return
    settings = request.app[AppKeys.settings]
    async with asyncio.timeout(settings.request_timeout_seconds):
        await request.app[AppKeys.bus].charge_failed_code(
            client_of(request), budgets(settings)["failed-code"]
        )
