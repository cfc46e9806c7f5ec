"""The error middleware binds the request id for the request's log lines and leaves nothing
behind in the task's context: a WebSocket or SSE stream served in that task keeps that
context for hours."""

from __future__ import annotations

import asyncio
import contextvars

import structlog
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.errors import error_middleware


async def _handler(request: web.Request) -> web.StreamResponse:
    assert "request_id" in structlog.contextvars.get_contextvars()
    return web.Response(text="ok")


async def test_the_request_id_is_bound_for_the_handler_and_gone_from_the_context_after() -> None:
    request = make_mocked_request("GET", "/api/health", headers={"X-Request-Id": "req-12345678"})
    context = contextvars.Context()  # the connection task's own, as aiohttp runs a request
    served = asyncio.get_running_loop().create_task(
        error_middleware(request, _handler), context=context
    )
    response = await served
    assert response.status == 200
    assert [var.name for var in context] == []
