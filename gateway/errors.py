"""HTTP errors as JSON, WebSocket close codes, and the middleware that maps failures.

::

    GatewayError (an aiohttp HTTPException with a JSON body {"error": ...})
    ├── 400 BadRequest       malformed JSON, missing fields, invalid chat id
    ├── 401 Unauthorized     invalid access code
    ├── 403 Forbidden        Origin not allowed, metrics without the token
    ├── 404 NotFound
    ├── 409 Conflict         nothing to stop
    ├── 413 TooLarge         message or body over its cap
    ├── 415 UnsupportedMedia not JSON
    ├── 429 RateLimited      with Retry-After
    └── 503 Unavailable      Redis unreachable, with Retry-After; or Terra misconfigured
                             (Redis refused: MOVED, CROSSSLOT, NOPERM, ...), said as such

Anything else becomes a 500 with a generic sentence, logged once with the request id.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from enum import IntEnum

import structlog
from aiohttp import web

from bus import BusRejected, BusUnavailable, StorageFull

__all__ = [
    "STORAGE_RETRY_AFTER_SECONDS",
    "CloseCode",
    "busy",
    "error_middleware",
    "json_error",
    "seconds_text",
]

log = structlog.get_logger("gateway.http")

#: Redis above its memory budget for new messages, or at its maxmemory: the visitor tries
#: again after this long.
STORAGE_RETRY_AFTER_SECONDS = 60

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CloseCode(IntEnum):
    """WebSocket close codes the gateway uses. Retryable ones invite a resume."""

    NORMAL = 1000
    ABNORMAL = 1006  # the visitor stopped answering pings: cut, no close frame (never sent)
    POLICY = 1008  # bad access code or missing chat id (terminal, as the original relay)
    SERVICE_RESTART = 1012  # the gateway is shutting down: reconnect (to another one)
    TRY_AGAIN_LATER = 1013  # Redis is unavailable: reconnect with backoff
    SLOW_CONSUMER = 4000  # the socket fell behind its buffer cap: reconnect and resume
    RESYNC = 4001  # reserved: resume impossible, refetch history

    @property
    def retryable(self) -> bool:
        """Whether a client should reconnect after this code."""
        return self not in (CloseCode.NORMAL, CloseCode.POLICY)


def json_error(
    status: int, message: str, *, headers: dict[str, str] | None = None
) -> web.HTTPException:
    """An aiohttp HTTP exception whose body is ``{"error": message}``."""
    exc = web.HTTPException(
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )
    exc.set_status(status)
    return exc


def seconds_text(seconds: int) -> str:
    """``1 second``, ``30 seconds``; from two minutes on, ``59 minutes``, from two hours on,
    ``23 hours`` (rounded up)."""
    if seconds >= 7200:
        return f"{-(-seconds // 3600)} hours"
    if seconds >= 120:
        return f"{-(-seconds // 60)} minutes"
    return f"{seconds} second" if seconds == 1 else f"{seconds} seconds"


def busy(retry_after_seconds: int) -> web.HTTPException:
    """A 503 "Terra is busy" (no room to store new messages) with ``Retry-After``."""
    return json_error(
        503,
        "Terra is busy right now and could not take your message. "
        f"Please try again in {seconds_text(retry_after_seconds)}.",
        headers={"Retry-After": str(retry_after_seconds)},
    )


_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}", re.ASCII)

_STATUS_SENTENCES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported media type",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error with the right status."""
    request_id = request.headers.get("X-Request-Id", "")
    if not _REQUEST_ID.fullmatch(request_id):  # it is logged: nothing odd gets into a log
        request_id = uuid.uuid4().hex
    # Reset, not unbind, when done: unbinding leaves the key in the task's context (set to
    # "unbound"), which a WebSocket or SSE stream, served in that task, keeps for its life.
    bound = structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        sentence = _STATUS_SENTENCES.get(exc.status, exc.reason)
        raise json_error(exc.status, sentence, headers=_passthrough(exc)) from None
    except (BusUnavailable, ConnectionError, TimeoutError) as exc:
        if isinstance(exc, ConnectionError) and _client_gone(request):
            # Bus errors arrive as BusUnavailable; this is the visitor's socket (499, as nginx).
            log.info("gateway.client_gone", path=request.path)
            raise json_error(499, "Client closed the connection") from None
        log.warning("gateway.redis_unavailable", path=request.path, reason=str(exc))
        raise json_error(
            503, "Service temporarily unavailable", headers={"Retry-After": "2"}
        ) from None
    except StorageFull:  # a write at Redis's maxmemory (a message route says it itself)
        log.warning("gateway.storage_full", path=request.path)
        raise busy(STORAGE_RETRY_AFTER_SECONDS) from None
    except BusRejected as exc:  # reachable but refusing: configuration, not an outage
        log.error("gateway.redis_refused", path=request.path, kind=exc.kind, reason=str(exc))
        raise json_error(
            503,
            f"Terra is misconfigured: Redis refused the request ({exc.kind}). "
            "The operator has been told in the logs.",
            headers={"Retry-After": "30"},
        ) from None
    except Exception:
        log.exception("gateway.request_failed", path=request.path, method=request.method)
        raise json_error(500, "Internal server error") from None
    finally:
        structlog.contextvars.reset_contextvars(**bound)
    return response


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _passthrough(exc: web.HTTPException) -> dict[str, str]:
    keep = ("Allow", "Retry-After")
    return {k: v for k, v in exc.headers.items() if k in keep}
