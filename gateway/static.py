"""The widget's files: ``/widget.js``, the full-page chat ``/terra``, ``/static/...``.

Text files are sent gzip-compressed to clients that accept it (compressed once per file
version, kept in memory); every file has an ETag and answers ``If-None-Match`` with 304.
The gateway's own HTML pages carry a Content-Security-Policy that allows only this origin
and the exact inline blocks each page contains (by hash).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import mimetypes
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from aiohttp import web

from gateway.errors import json_error
from gateway.keys import AppKeys

__all__ = ["STATIC_DIR", "content_security_policy", "serve_file", "static_asset"]

STATIC_DIR = Path(__file__).with_name("static")

#: Entry points change with deployments: revalidate often. Vendored files rarely change.
SHORT_CACHE = "public, max-age=300, must-revalidate"
LONG_CACHE = "public, max-age=86400"

#: Worth compressing: text. (Images and fonts are compressed already.)
COMPRESSIBLE = {".js", ".mjs", ".html", ".css", ".json", ".md", ".svg", ".txt", ".map"}
TEXT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".md": "text/markdown"}

_INLINE = re.compile(r"<(script|style)(\s[^>]*)?>(.*?)</\1>", re.S | re.I)


@dataclass(frozen=True)
class _Prepared:
    """One version of one file, ready to send."""

    version: tuple[int, int]  # (mtime_ns, size)
    body: bytes
    gzipped: bytes | None
    etag: str
    last_modified: str
    content_type: str
    csp: str | None


_prepared: dict[Path, _Prepared] = {}


def content_security_policy(html: str) -> str:
    """A CSP for one of our pages: this origin only, plus its inline blocks by SHA-256."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for tag, attributes, body in _INLINE.findall(html):
        if tag.lower() == "script" and "src=" in (attributes or ""):
            continue
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[tag.lower()].append(f"'sha256-{digest}'")
    return "; ".join(
        [
            "default-src 'self'",
            " ".join(["script-src 'self'", *hashes["script"]]),
            " ".join(["style-src 'self'", *hashes["style"]]),
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
        ]
    )


def with_captcha(csp: str, sources: list[str]) -> str:
    """``csp`` that also lets the CAPTCHA provider's ``sources`` run its script and frames."""
    if not sources:
        return csp
    origin = " ".join(sources)
    directives = []
    for directive in csp.split("; "):
        name = directive.split(" ", 1)[0]
        if name in ("script-src", "style-src", "connect-src"):
            directive = f"{directive} {origin}"
        directives.append(directive)
    return "; ".join([*directives, f"frame-src 'self' {origin}"])


def _prepare(path: Path) -> _Prepared:
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _prepared.get(path)
    if cached is not None and cached.version == version:
        return cached
    body = path.read_bytes()
    suffix = path.suffix.lower()
    content_type = TEXT_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0]
    content_type = content_type or "application/octet-stream"
    prepared = _Prepared(
        version=version,
        body=body,
        gzipped=gzip.compress(body, 9, mtime=0) if suffix in COMPRESSIBLE else None,
        etag=f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"',
        last_modified=formatdate(stat.st_mtime, usegmt=True),
        content_type=content_type,
        csp=content_security_policy(body.decode("utf-8", "replace")) if suffix == ".html" else None,
    )
    _prepared[path] = prepared
    return prepared


def _accepts_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*") and params.replace(" ", "") != "q=0":
            return True
    return False


def _file_response(request: web.Request, path: Path, cache: str) -> web.Response:
    if not path.is_file():
        raise json_error(404, "Not found")
    prepared = _prepare(path)
    gzipped = prepared.gzipped is not None and _accepts_gzip(request)
    etag = prepared.etag[:-1] + '-gz"' if gzipped else prepared.etag
    headers = {
        "Cache-Control": cache,
        "ETag": etag,
        "Last-Modified": prepared.last_modified,
        "X-Content-Type-Options": "nosniff",
    }
    if prepared.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
    if prepared.csp is not None:
        settings = request.app.get(AppKeys.settings)
        sources = settings.captcha_csp if settings is not None else []
        headers["Content-Security-Policy"] = with_captcha(prepared.csp, sources)
        headers["Referrer-Policy"] = "no-referrer"
    matches = {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}
    if etag in matches or "*" in matches:
        return web.Response(status=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    body = prepared.gzipped if gzipped and prepared.gzipped is not None else prepared.body
    response = web.Response(body=body, headers=headers, content_type=prepared.content_type)
    if prepared.content_type.startswith("text/"):
        response.charset = "utf-8"
    return response


def serve_file(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that serves ``static/<name>``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return _file_response(request, STATIC_DIR / name, SHORT_CACHE)

    return handler


async def static_asset(request: web.Request) -> web.StreamResponse:
    """``/static/{path}``: any file under the static folder, never outside it."""
    relative = request.match_info["path"]
    target = (STATIC_DIR / relative).resolve()
    if not target.is_relative_to(STATIC_DIR.resolve()):
        raise json_error(404, "Not found")
    cache = LONG_CACHE if "/vendor/" in f"/{relative}" else SHORT_CACHE
    return _file_response(request, target, cache)
