"""Typed application keys (aiohttp ``AppKey``) shared by the gateway's modules."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from aiohttp import web
from redis.asyncio import Redis

from bus import BusKeys, ChatFeed, ChatLog, JobQueue, Presence, RateLimiter
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

__all__ = ["AppKeys", "BusHandles", "Connections"]


@dataclass(slots=True)
class BusHandles:
    """Everything the gateway uses from the bus, built once at startup."""

    redis: Redis
    keys: BusKeys
    log: ChatLog
    feed: ChatFeed
    limiter: RateLimiter
    presence: Presence
    jobs: JobQueue


@dataclass(slots=True)
class Connections:
    """Open visitor sockets and SSE streams, closed on shutdown."""

    websockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)
    streams: weakref.WeakSet[web.StreamResponse] = field(default_factory=weakref.WeakSet)
    closing: bool = False


class AppKeys:
    """Namespaced keys of the gateway's application state."""

    settings = web.AppKey("gateway.settings", GatewaySettings)
    bus = web.AppKey("gateway.bus", BusHandles)
    metrics = web.AppKey("gateway.metrics", GatewayMetrics)
    connections = web.AppKey("gateway.connections", Connections)
