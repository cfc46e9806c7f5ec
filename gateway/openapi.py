"""``GET /api/openapi.yaml``: the OpenAPI 3.1 document of the HTTP routes.

The document is ``gateway/openapi.yaml`` (``docs/openapi.yaml`` links to it); the fuzz
test (tests/integration/test_abuse_fuzz.py) generates its requests from it.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["OPENAPI_PATH", "get_openapi"]

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")


async def get_openapi(_request: web.Request) -> web.Response:
    """The document as YAML, cacheable for five minutes."""
    return web.Response(
        body=OPENAPI_PATH.read_bytes(),
        content_type="application/yaml",
        headers={"Cache-Control": "public, max-age=300"},
    )
