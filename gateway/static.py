"""The widget's files: ``/widget.js``, the full-page chat ``/terra``, ``/static/...``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from gateway.errors import json_error

__all__ = ["STATIC_DIR", "serve_file", "static_asset"]

STATIC_DIR = Path(__file__).with_name("static")

#: Entry points change with deployments: revalidate often. Vendored files rarely change.
SHORT_CACHE = "public, max-age=300, must-revalidate"
LONG_CACHE = "public, max-age=86400"


def _file_response(path: Path, cache: str) -> web.FileResponse:
    if not path.is_file():
        raise json_error(404, "Not found")
    # FileResponse sends ETag and Last-Modified and answers conditional requests (304).
    return web.FileResponse(path, headers={"Cache-Control": cache})


def serve_file(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that serves ``static/<name>``."""

    async def handler(_request: web.Request) -> web.StreamResponse:
        return _file_response(STATIC_DIR / name, SHORT_CACHE)

    return handler


async def static_asset(request: web.Request) -> web.StreamResponse:
    """``/static/{path}``: any file under the static folder, never outside it."""
    relative = request.match_info["path"]
    target = (STATIC_DIR / relative).resolve()
    if not target.is_relative_to(STATIC_DIR.resolve()):
        raise json_error(404, "Not found")
    cache = LONG_CACHE if "/vendor/" in f"/{relative}" else SHORT_CACHE
    return _file_response(target, cache)
