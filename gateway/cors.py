"""CORS for embedding the widget on another origin.

The widget's own files are public: any origin may load them (module scripts need CORS).
The API answers cross-origin requests only from ``ALLOWED_ORIGINS``; preflights are
answered here, before routing. No credentials (cookies) are ever involved: the access
code travels in the body or the query, as in the original relay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from gateway.auth import origin_listed
from gateway.keys import AppKeys

__all__ = ["cors_middleware"]

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
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if permitted:
            _decorate(exc.headers, origin, static)
        raise
    if permitted and not response.prepared:
        _decorate(response.headers, origin, static)
    return response


def _decorate(headers: CIMultiDict[str], origin: str, static: bool) -> None:
    headers["Access-Control-Allow-Origin"] = "*" if static else origin
    headers["Vary"] = "Origin"
    headers["Access-Control-Expose-Headers"] = "Retry-After, X-Has-More, X-Next-Before"
