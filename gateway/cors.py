"""CORS for embedding the widget on another origin.

The widget's own files are public: any origin may load them (module scripts need CORS).
The API answers cross-origin requests only from ``ALLOWED_ORIGINS``; preflights are
answered here, before routing. No credentials (cookies) are ever involved: the access
code travels in the body or the query, as in the original relay.

The headers are added as the response is prepared (:func:`cors_on_prepare`), not when the
handler returns: a stream (SSE) is prepared inside its handler, and its headers are on the
wire by then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from gateway.auth import origin_listed
from gateway.keys import AppKeys, RequestKeys

__all__ = ["cors_middleware", "cors_on_prepare"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id"
_STATIC_SUFFIXES = ("/widget.js", "/terra")


def _is_static(path: str) -> bool:
    return "/static/" in path or path.endswith(_STATIC_SUFFIXES)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer preflights and add CORS headers for allowed origins."""
    origin = request.headers.get("Origin")
    if origin is None:
        return await handler(request)
    static = _is_static(request.path)
    permitted = static or origin_listed(origin, request.app[AppKeys.settings])
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not permitted:
            return web.json_response({"error": "Origin not allowed"}, status=403)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": "*" if static else origin,
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": _ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    if permitted:
        request[RequestKeys.cors] = (origin, static)
    return await handler(request)


async def cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the CORS headers of a permitted cross-origin request."""
    granted = request.get(RequestKeys.cors)
    if granted is not None:
        _decorate(response.headers, *granted)


def _decorate(headers: CIMultiDict[str], origin: str, static: bool) -> None:
    headers["Access-Control-Allow-Origin"] = "*" if static else origin
    headers["Vary"] = "Origin"
    headers["Access-Control-Expose-Headers"] = "Retry-After, X-Has-More, X-Next-Before"
