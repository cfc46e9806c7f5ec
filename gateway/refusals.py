"""429 answers a visitor understands: what was too much, and how long to wait."""

from __future__ import annotations

import structlog
from aiohttp import web

from bus import QuotaExceeded, StorageFull
from gateway.errors import STORAGE_RETRY_AFTER_SECONDS, busy, json_error, seconds_text
from gateway.metrics import GatewayMetrics

__all__ = [
    "RETRY_SOCKET_SECONDS",
    "storage_refusal",
    "too_many",
]

log = structlog.get_logger("gateway.refusals")

#: A client at its socket cap (or a full process) is asked to come back after this long.
RETRY_SOCKET_SECONDS = 10

_SENTENCES = {
    "post": "You are sending messages too quickly.",
    "read": "Too many requests from your network.",
    "stream": "Too many connections opened from your network.",
    "failed-code": "Too many wrong access codes from your network.",
    "sockets": "Too many chat connections are open from your network.",
    "queued": "You already have {count} messages waiting for Terra's answer.",
    "bytes": "Your network has sent Terra a lot of messages today.",
}


def too_many(what: str, retry_after_seconds: int, *, count: int = 0) -> web.HTTPException:
    """A 429 with ``Retry-After`` and a sentence saying what and how long."""
    lead = _SENTENCES.get(what, what).format(count=count)
    return json_error(
        429,
        f"{lead} Please wait {seconds_text(retry_after_seconds)} and try again.",
        headers={"Retry-After": str(retry_after_seconds)},
    )


def storage_refusal(
    exc: StorageFull | QuotaExceeded, metrics: GatewayMetrics, chat_id: str
) -> web.HTTPException:
    """The answer to a message the bus would not store, for Terra's and BYO routes alike:
    503 busy (Redis full), 409 (the chat's bytes are spent) or 429 (the client's bytes for
    the day), each quota refusal counted in ``terrarium_rate_limited_total``."""
    if isinstance(exc, QuotaExceeded):
        metrics.rate_limited.labels(f"{exc.scope}-bytes").inc()
        if exc.scope == "chat":
            return json_error(409, "This conversation is full. Please start a new chat to go on.")
        return too_many("bytes", max(1, -(-exc.retry_after_ms // 1000)))
    log.warning("gateway.storage_full", chat_id=chat_id)
    return busy(STORAGE_RETRY_AFTER_SECONDS)
