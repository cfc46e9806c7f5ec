"""Typed application keys (aiohttp ``AppKey``) shared by the gateway's modules."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from bus import GatewayBus
from gateway.byo.streams import ByoStreams
from gateway.captcha import CaptchaVerifier
from gateway.metrics import GatewayMetrics
from gateway.pings import PingWheel
from gateway.session_gate import AccessGate
from gateway.settings import GatewaySettings
from gateway.sockets import SocketSlots

__all__ = ["AppKeys", "Connections", "RequestKeys"]


@dataclass(slots=True)
class Connections:
    """Open visitor sockets and SSE streams, closed on shutdown.

    Plain sets, not weak ones (a weak reference more per socket): each socket's life
    removes it when the socket ends.
    """

    websockets: set[web.WebSocketResponse] = field(default_factory=set)
    streams: set[web.StreamResponse] = field(default_factory=set)
    closing: bool = False


class AppKeys:
    """Namespaced keys of the gateway's application state."""

    settings = web.AppKey("gateway.settings", GatewaySettings)
    bus = web.AppKey("gateway.bus", GatewayBus)
    metrics = web.AppKey("gateway.metrics", GatewayMetrics)
    connections = web.AppKey("gateway.connections", Connections)
    sockets = web.AppKey("gateway.sockets", SocketSlots)
    #: The one timer that pings every SSE stream (gateway.sse).
    pings = web.AppKey("gateway.pings", PingWheel)
    #: The one timer that pings every WebSocket (gateway.ws), every WS_HEARTBEAT_SECONDS.
    heartbeats = web.AppKey("gateway.heartbeats", PingWheel)
    #: Reads being answered, by client (gateway.limits).
    reads_in_flight = web.AppKey("gateway.reads_in_flight", Counter[str])
    #: Bring your own model: the answers streaming, and the HTTP client to providers.
    byo_streams = web.AppKey("gateway.byo_streams", ByoStreams)
    byo_http = web.AppKey("gateway.byo_http", aiohttp.ClientSession)
    #: Valid access codes and session tokens (gateway.auth); the CAPTCHA check, when set.
    gate = web.AppKey("gateway.access_gate", AccessGate)
    captcha = web.AppKey("gateway.captcha", CaptchaVerifier)


class RequestKeys:
    """Namespaced per-request values."""

    #: The client a budget belongs to (IPv4 address or IPv6 prefix).
    client = web.RequestKey("gateway.client", str)
    #: Set while the handler waits for the request body (a deadline then means a slow client).
    reading_body = web.RequestKey("gateway.reading_body", bool)
    #: Set when the request was refused only for a genuine but expired session token
    #: (no access code beside it): not a guess, so no failed-code attempt is spent.
    session_expired = web.RequestKey("gateway.session_expired", bool)
    #: A permitted cross-origin request: its origin, and whether the path is public
    #: (gateway.cors adds the headers when the response is prepared).
    cors = web.RequestKey("gateway.cors", tuple[str, bool])
