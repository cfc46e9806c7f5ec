"""The gateway's application factory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from bus import GatewayBus, open_gateway_bus
from gateway import auth, session, sse, ws
from gateway.byo import routes as byo
from gateway.byo.streams import ByoStreams
from gateway.cors import cors_middleware, cors_on_prepare
from gateway.errors import error_middleware, json_error
from gateway.keys import AppKeys, Connections, RequestKeys
from gateway.limits import limits_middleware
from gateway.metrics import GatewayMetrics
from gateway.pings import PingWheel
from gateway.routes import ROUTE_FAMILIES, add_routes
from gateway.session_gate import AccessGate
from gateway.settings import GatewaySettings
from gateway.sockets import SocketSlots

__all__ = ["create_app"]

log = structlog.get_logger("gateway.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: Long-lived handlers, exempt from the request deadline (they bound their own setup).
_STREAMING_HANDLERS = frozenset({ws.chat_socket, sse.chat_events})


@web.middleware
async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bound a visitor request's wait on Redis: past the deadline it becomes a 503.

    redis-py retries a hung connection for many times its socket timeout; a visitor's POST
    must not hang that long. A deadline reached while the body is still arriving is the
    client's slowness, not Redis's: 408. A request cut short may have been stored anyway: the client
    retries with the same ``clientMessageId`` and gets the stored Message back.
    """
    if request.match_info.handler in _STREAMING_HANDLERS:
        return await handler(request)
    try:
        async with asyncio.timeout(request.app[AppKeys.settings].request_timeout_seconds):
            return await handler(request)
    except TimeoutError:
        if request.get(RequestKeys.reading_body):
            raise json_error(
                408, "The request body arrived too slowly; please try again."
            ) from None
        raise


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and log each request (path only: query strings may carry the access code)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away mid-request (nginx's "client closed request")
        raise
    finally:
        route = request.match_info.route.resource
        label = route.canonical if route is not None else "unmatched"
        request.app[AppKeys.metrics].observe_request(
            label,
            request.method,
            status,
            time.perf_counter() - started,
            streaming=request.match_info.handler in _STREAMING_HANDLERS,
        )
        if not request.path.endswith(("/metrics", "/healthz", "/readyz")):
            log.info(
                "gateway.request_finished",
                method=request.method,
                path=request.path,
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )


def create_app(settings: GatewaySettings, *, bus: GatewayBus | None = None) -> web.Application:
    """Build the gateway application; ``bus`` overrides the one opened from settings.

    The app owns the bus either way: it is started on startup and closed on cleanup.
    """
    app = web.Application(
        middlewares=[
            access_middleware,
            cors_middleware,
            error_middleware,
            limits_middleware(ROUTE_FAMILIES),
            deadline_middleware,
        ],
        client_max_size=settings.body_size_limit,
    )
    app[AppKeys.settings] = settings
    app[AppKeys.metrics] = GatewayMetrics()
    app[AppKeys.connections] = Connections()
    app[AppKeys.sockets] = SocketSlots(settings.sockets_per_client, settings.max_sockets)
    app[AppKeys.pings] = PingWheel(sse.PING_SECONDS)
    app[AppKeys.heartbeats] = PingWheel(settings.ws_heartbeat_seconds)
    app[AppKeys.reads_in_flight] = Counter()
    app[AppKeys.byo_streams] = ByoStreams(settings.byo_streams_per_client, settings.byo_max_streams)
    app[AppKeys.gate] = AccessGate.from_settings(settings)
    app.cleanup_ctx.append(_bus_context(settings, bus))
    app.cleanup_ctx.append(auth.codes_context)
    app.cleanup_ctx.append(session.captcha_context)
    app.cleanup_ctx.append(byo.http_context)
    app.on_response_prepare.append(cors_on_prepare)
    app.on_shutdown.append(ws.close_all)
    app.on_shutdown.append(byo.close_streams)
    add_routes(app, settings)
    return app


def _bus_context(
    settings: GatewaySettings, injected: GatewayBus | None
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def context(app: web.Application) -> AsyncIterator[None]:
        bus = injected or open_gateway_bus(
            settings,
            queue_size=settings.socket_queue_size,
            queue_bytes=settings.socket_buffer_bytes,
        )
        app[AppKeys.bus] = bus
        async with bus:
            yield

    return context
